"""The built-in ColBERT encoder (`tessera.Encoder`) against an independent numpy
reference of PyLate's encoding (encoder_reference.py), on tiny random models
written in the sentence-transformers / PyLate folder layout.

API under test (python/src/encoder.rs over crates/tessera-encoder):
    enc = tessera.Encoder(path)                 # a model folder
    enc.encode(texts, is_query=False)           # list of float32 (n_tokens, dim) arrays
    enc.dim                                     # output width (last Dense out_features)

Token counts must match exactly; values within 1e-4. The reference's own
self-checks run too.
"""

from __future__ import annotations

import json
import string

import numpy as np
import pytest

import tessera
import encoder_reference as R


ATOL = 1e-4

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world!",
    "A cat sat on the mat; it was known (to the dog).",
    "unknownword and colbert",
    "   tessera: a late-interaction vector database   ",
    "river bank, money bank",
]
# Five words or more: with the ModernBERT models' window (local_attention 8)
# every expansion position still sees a real token (see test_modernbert_fully_masked_rows).
QUERIES = [
    "what is the red planet known as?",
    "the quick brown fox jumps",
    "search engine for late interaction",
    "Hello world, a cat and a dog",
]
SHORT_QUERIES = ["hello", "red planet?", "fox"]
LONG_TEXT = " ".join(R.DEFAULT_WORDS) + " . " + " ".join(reversed(R.DEFAULT_WORDS))

MODERNBERT = dict(layers=3, local_attention=8, global_attn_every_n_layers=2)


def tiny(tmp_path, arch="bert", name="model", seed=11, **kw):
    if arch == "modernbert":
        kw = {**MODERNBERT, **kw}
    return R.write_tiny_model(tmp_path / name, arch, seed=seed, **kw)


def check(path, texts, is_query, atol=ATOL, fully_masked_rows=False):
    """Encodes `texts` with tessera.Encoder and compares with the reference.
    Unless `fully_masked_rows`, the texts must stay clear of the ModernBERT
    edge case of test_modernbert_fully_masked_rows (kept to that one test)."""
    if not fully_masked_rows:
        for t in texts:
            assert R.reference_details(path, t, is_query)["fully_masked_local_rows"] == 0, t
    enc = tessera.Encoder(str(path))
    got = enc.encode(list(texts), is_query=is_query)
    ref = R.reference_encode(path, texts, is_query)
    assert isinstance(got, list) and len(got) == len(texts)
    assert enc.dim == R.reference_dim(path)
    for text, g, r in zip(texts, got, ref):
        assert isinstance(g, np.ndarray) and g.dtype == np.float32, type(g)
        assert g.shape == r.shape, f"{text!r} (is_query={is_query}): {g.shape}, reference {r.shape}"
        err = float(np.abs(g.astype(np.float64) - r).max()) if r.size else 0.0
        assert err <= atol, f"{text!r} (is_query={is_query}): max |diff| {err:.2e}"
    return got


def both(path, docs=DOCS, queries=QUERIES):
    check(path, docs, is_query=False)
    check(path, queries, is_query=True)


# ------------------------------------------------------------------- the encoder


def test_bert(tmp_path):
    both(tiny(tmp_path, "bert"))


@pytest.mark.parametrize("config_style", ["v4", "v5"])
def test_modernbert(tmp_path, config_style):
    """v4: global_rope_theta / local_rope_theta; v5 (transformers 5): layer_types
    + rope_parameters, no flat thetas. Layers 0 and 2 global, 1 local (window ±4)."""
    # Thetas other than transformers' defaults (160000 / 10000), so a config
    # read that falls back to the defaults cannot pass.
    path = tiny(tmp_path, "modernbert", config_style=config_style,
                global_rope_theta=40000.0, local_rope_theta=500.0)
    both(path, docs=DOCS + [LONG_TEXT])


def test_modernbert_biases(tmp_path):
    """attention_bias / mlp_bias / norm_bias true: Wqkv.bias, Wo.bias, Wi.bias, *.norm.bias."""
    both(tiny(tmp_path, "modernbert", attention_bias=True, mlp_bias=True, norm_bias=True))


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
@pytest.mark.parametrize("attend", [False, True])
def test_query_expansion(tmp_path, arch, attend):
    """Queries are padded with [MASK] to query_length; every position is kept.
    attend_to_expansion_tokens=False: [MASK] positions are masked out as keys
    (attention mask 0) but still produce outputs; True: attention mask all 1."""
    path = tiny(tmp_path, arch, attend_to_expansion_tokens=attend)
    queries = QUERIES + (SHORT_QUERIES if attend or arch == "bert" else [])
    got = check(path, queries, is_query=True)
    assert all(g.shape[0] == 12 for g in got)


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_no_query_expansion(tmp_path, arch):
    """do_query_expansion=False: no [MASK] padding; a query is [CLS] [Q] tokens [SEP]."""
    path = tiny(tmp_path, arch, do_query_expansion=False, attend_to_expansion_tokens=True)
    got = check(path, QUERIES + SHORT_QUERIES, is_query=True)
    lengths = [len(R.reference_details(path, q, True)["ids"]) for q in QUERIES + SHORT_QUERIES]
    assert [g.shape[0] for g in got] == lengths
    assert got[len(QUERIES)].shape[0] == 4  # "hello": [CLS] [Q] hello [SEP]


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
@pytest.mark.parametrize(
    "prefixes",
    [("[Q] ", "[D] "), ("[unused0]", "[unused1]"), ("", ""), ("[Q] ", "")],
    ids=["added-tokens", "in-vocab", "empty", "query-only"],
)
def test_prefix_tokens(tmp_path, arch, prefixes):
    """The prefix is one token inserted after [CLS] (position 1) and kept in the
    output; an empty prefix inserts nothing and gives that token's place back to
    the text (max length unchanged)."""
    qp, dp = prefixes
    words = R.DEFAULT_WORDS + ["[unused0]", "[unused1]"]
    path = tiny(tmp_path, arch, query_prefix=qp, document_prefix=dp, vocab_words=words,
                do_query_expansion=False)
    got = check(path, ["fox", LONG_TEXT], is_query=False)
    assert got[0].shape[0] == (4 if dp else 3)  # [CLS] ([D]) fox [SEP]
    assert got[1].shape[0] <= 16
    got = check(path, ["fox", LONG_TEXT], is_query=True)
    assert got[0].shape[0] == (4 if qp else 3)
    assert got[1].shape[0] == 12


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_skiplist(tmp_path, arch):
    """Document tokens whose id is a skiplist word's id are dropped (after the
    forward pass); queries keep them; [CLS], the prefix and [SEP] stay."""
    path = tiny(tmp_path, arch)  # skiplist: string.punctuation
    docs = ["Hello, world!", "a (cat) sat; on: the mat.", "...", "fox"]
    got = check(path, docs, is_query=False)
    assert [g.shape[0] for g in got] == [5, 9, 3, 4]
    check(path, ["Hello, world! is it the fox?"], is_query=True)


@pytest.mark.parametrize(
    "skiplist", [["the", ",", "fox"], [], None], ids=["words", "empty-list", "key-absent"]
)
def test_skiplist_settings(tmp_path, skiplist):
    """A listed word is skipped by its vocabulary id; [] skips nothing; a missing
    key means string.punctuation."""
    path = tiny(tmp_path, "bert", skiplist_words=skiplist)
    got = check(path, ["the fox, the dog.", "Hello, world!"], is_query=False)
    expected = {"words": [5, 6], "empty-list": [9, 7], "key-absent": [7, 5]}
    key = "words" if skiplist else ("empty-list" if skiplist == [] else "key-absent")
    assert [g.shape[0] for g in got] == expected[key]


def test_skiplist_word_outside_the_vocabulary_drops_unk(tmp_path):
    """PyLate quirk: convert_tokens_to_ids of a word that is not a token gives the
    [UNK] id, so every [UNK] of a document is skipped."""
    path = tiny(tmp_path, "bert", skiplist_words=["notaword", ","])
    got = check(path, ["unknownword and colbert, zzz"], is_query=False)
    assert got[0].shape[0] == 5  # [CLS] [D] and colbert [SEP]


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_truncation(tmp_path, arch):
    """document_length and query_length count every token: [CLS], the prefix and
    [SEP] (kept last). A truncated query has no expansion tokens."""
    path = tiny(tmp_path, arch, query_length=9, document_length=13, skiplist_words=[])
    got = check(path, [LONG_TEXT, "fox"], is_query=False)
    assert [g.shape[0] for g in got] == [13, 4]
    got = check(path, [LONG_TEXT, "the quick brown fox jumps over the lazy dog"], is_query=True)
    assert [g.shape[0] for g in got] == [9, 9]
    d = R.reference_details(path, LONG_TEXT, False)
    assert d["ids"][-1] == d["sep_id"] and d["ids"][1] == d["prefix_id"]


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_truncation_without_expansion(tmp_path, arch):
    path = tiny(tmp_path, arch, query_length=9, do_query_expansion=False)
    got = check(path, [LONG_TEXT, "fox"], is_query=True)
    assert [g.shape[0] for g in got] == [9, 4]


@pytest.mark.parametrize(
    "dense",
    [
        [(16, True)],
        [(24, False), (8, True)],
        [{"out": 64, "bias": False, "use_residual": True}, {"out": 64, "bias": False, "use_residual": True},
         (16, False)],
        [{"out": 16, "bias": True, "st": True}],
        [{"out": 16, "bias": False, "activation": "tanh"}],
    ],
    ids=["bias", "two-dense", "residual-lateon-style", "sentence-transformers-dense", "tanh"],
)
def test_dense(tmp_path, dense):
    """Dense modules in modules.json order: x W^T (+ b), the config's activation
    (Identity or Tanh), PyLate's use_residual (+ x R^T when in != out, + x
    when equal); then L2 normalisation. dim = last out_features."""
    path = tiny(tmp_path, "bert", dense=dense)
    both(path)
    last = dense[-1]
    assert tessera.Encoder(str(path)).dim == (last["out"] if isinstance(last, dict) else last[0])


@pytest.mark.parametrize("position", ["end", "middle"])
def test_normalize_module_normalises_tokens_where_it_sits(tmp_path, position):
    """A Normalize module L2-normalises each token vector where it sits (the
    evaldata's encoder has one before its projection). Last, it changes
    nothing (outputs are normalised anyway: PyLate, which drops the module,
    agrees); in the middle, the outputs follow the reference and differ from
    the same model without it."""
    plain = tiny(tmp_path, "bert", name="plain", dense=[(24, True), (8, False)])
    with_norm = tiny(tmp_path, "bert", name="norm", dense=[(24, True), (8, False)],
                     normalize_module=True, normalize_position=position)
    a = check(plain, DOCS, is_query=False)
    b = check(with_norm, DOCS, is_query=False)
    same = all(np.allclose(x, y, atol=1e-6) for x, y in zip(a, b))
    assert same == (position == "end")


@pytest.mark.parametrize("arch,prefix", [("bert", "bert."), ("modernbert", "model.")])
def test_checkpoint_name_prefix(tmp_path, arch, prefix):
    """sentence-transformers saves the bare model (no prefix); checkpoints saved
    from a task model carry "bert." / "model."; transformers loads both."""
    both(tiny(tmp_path, arch, param_prefix=prefix))


@pytest.mark.parametrize("dtype", ["F16", "BF16"])
def test_half_precision_weights(tmp_path, dtype):
    """F16 / BF16 weights, computed in f32 (the reference upcasts to f64)."""
    both(tiny(tmp_path, "bert", weights_dtype=dtype))


def test_stale_tokenizer_sections_are_ignored(tmp_path):
    """tokenizer.json can carry a saved truncation (max_length 5) and padding
    (Fixed 24) section; PyLate's tokenizer calls override both."""
    both(tiny(tmp_path, "bert", stale_tokenizer_sections=True), docs=DOCS + [LONG_TEXT])


def test_do_lower_case(tmp_path):
    """sentence_bert_config.json do_lower_case lowercases the text before a
    cased tokenizer (words would be [UNK] otherwise)."""
    path = tiny(tmp_path, "bert", tokenizer_lowercase=False, do_lower_case=True)
    check(path, ["The Quick BROWN Fox"], is_query=False)
    d = R.reference_details(path, "The Quick BROWN Fox", False)
    assert d["unk_id"] not in d["ids"]


def test_defaults_when_keys_are_absent(tmp_path):
    """Without PyLate's keys: "[Q] " / "[D] ", query_length 32, document_length 180,
    expansion on, attend off, skiplist string.punctuation."""
    path = tiny(tmp_path, "bert", omit_st_keys=R.PYLATE_KEYS, skiplist_words=None, max_position_embeddings=256)
    got = check(path, QUERIES, is_query=True)
    assert all(g.shape[0] == 32 for g in got)
    long_doc = " ".join([LONG_TEXT] * 3)
    got = check(path, DOCS + [long_doc], is_query=False)
    assert got[-1].shape[0] <= 180 and got[-1].shape[0] > 150


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_batch_independence(tmp_path, arch):
    """A text's vectors do not depend on the other texts of the call (padding)."""
    path = tiny(tmp_path, arch)
    enc = tessera.Encoder(str(path))
    texts = DOCS + [LONG_TEXT]
    together = enc.encode(texts, is_query=False)
    for t, g in zip(texts, together):
        np.testing.assert_allclose(enc.encode([t], is_query=False)[0], g, atol=1e-5)


def test_is_query_defaults_to_false(tmp_path):
    path = tiny(tmp_path, "bert")
    enc = tessera.Encoder(str(path))
    for a, b in zip(enc.encode(DOCS), enc.encode(DOCS, is_query=False)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_empty_text_is_refused(tmp_path, arch):
    """An empty (or all-whitespace) text is refused, naming its position
    (PyLate would encode it as [CLS] prefix [SEP]: nothing a database should
    store or search with), and nothing else in the call is encoded."""
    path = tiny(tmp_path, arch, attend_to_expansion_tokens=True)
    enc = tessera.Encoder(str(path))
    for texts, is_query in [(["fine", ""], False), (["   "], False), ([""], True)]:
        with pytest.raises(tessera.InvalidInputError, match=r"text \d+ is empty"):
            enc.encode(texts, is_query=is_query)
    assert R.reference_encode(path, [""], False)[0].shape[0] == 3


def test_modernbert_fully_masked_rows(tmp_path):
    """Edge case: a short query, expansion without attending to it, and a local
    layer whose window around a [MASK] holds only [MASK]s. transformers' float32
    mask leaves every score of that row at finfo(float32).min, so the row is a
    uniform average over all positions (candle's -inf window mask would instead
    average the in-window positions only)."""
    path = tiny(tmp_path, "modernbert", query_length=14)
    assert R.reference_details(path, "hello", True)["fully_masked_local_rows"] > 0
    check(path, SHORT_QUERIES + ["the quick brown fox jumps"], is_query=True, fully_masked_rows=True)


# ------------------------------------------------ self-checks of the reference


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_reference_outputs_are_unit_norm_and_shaped(tmp_path, arch):
    path = tiny(tmp_path, arch, dense=[(24, True), (8, False)])
    for is_query, texts in ((False, DOCS), (True, QUERIES + SHORT_QUERIES)):
        for t, e in zip(texts, R.reference_encode(path, texts, is_query)):
            assert e.dtype == np.float64 and e.shape[1] == 8
            np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-12)
            if is_query:
                assert e.shape[0] == 12


@pytest.mark.parametrize("attend", [False, True])
def test_reference_token_layout(tmp_path, attend):
    """[CLS] first, the prefix second, [SEP] after the text, [MASK]s after it
    (attention 0 unless attend_to_expansion_tokens)."""
    path = tiny(tmp_path, "bert", attend_to_expansion_tokens=attend)
    d = R.reference_details(path, "hello world", True)
    ids, attn = list(d["ids"]), list(d["attention_mask"])
    assert ids[:5] == [d["cls_id"], d["prefix_id"], ids[2], ids[3], d["sep_id"]]
    assert ids[5:] == [d["expansion_id"]] * 7
    assert attn == [1] * 5 + [int(attend)] * 7
    tok = json.loads((path / "tokenizer.json").read_text())
    assert tok["model"]["vocab"]["[MASK]"] == d["expansion_id"]
    assert {t["content"]: t["id"] for t in tok["added_tokens"]}["[Q] "] == d["prefix_id"]

    d = R.reference_details(path, "Hello, world!", False)
    assert d["ids"][1] == {t["content"]: t["id"] for t in tok["added_tokens"]}["[D] "]
    assert list(d["keep"]) == [True, True, True, False, True, False, True]


def test_reference_depends_on_what_the_tests_check(tmp_path):
    """The settings the encoder tests vary do change the reference's output (so
    a wrong implementation of them cannot pass by accident)."""
    def out(name, arch, texts, is_query, **kw):
        return R.reference_encode(tiny(tmp_path, arch, name=name, **kw), texts, is_query)

    def differ(a, b):
        return any(x.shape != y.shape or np.abs(x - y).max() > 1e-3 for x, y in zip(a, b))

    base = out("m0", "modernbert", [LONG_TEXT], False)
    assert differ(base, out("m1", "modernbert", [LONG_TEXT], False, local_attention=128))  # the window
    assert differ(base, out("m2", "modernbert", [LONG_TEXT], False, local_rope_theta=160000.0))  # local theta
    assert differ(base, out("m3", "modernbert", [LONG_TEXT], False, global_rope_theta=10000.0))  # global theta
    assert not differ(base, out("m4", "modernbert", [LONG_TEXT], False, config_style="v5"))
    q = out("b0", "bert", SHORT_QUERIES, True)
    assert differ(q, out("b1", "bert", SHORT_QUERIES, True, attend_to_expansion_tokens=True))
    assert differ(out("b2", "bert", DOCS, False, query_prefix="[Q] ", document_prefix="[D] "),
                  out("b3", "bert", DOCS, False, query_prefix="[Q] ", document_prefix="[unused1]",
                      vocab_words=R.DEFAULT_WORDS + ["[unused1]"]))


def test_reference_is_deterministic(tmp_path):
    a = tiny(tmp_path, "modernbert", name="a", seed=5)
    b = tiny(tmp_path, "modernbert", name="b", seed=5)
    for f in ("model.safetensors", "1_Dense/model.safetensors", "tokenizer.json", "config.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    c = tiny(tmp_path, "modernbert", name="c", seed=6)
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_safetensors_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(1)
    tensors = {"b.weight": rng.standard_normal((3, 5)), "a": rng.standard_normal(7), "c.bias": np.zeros(0)}
    R.write_safetensors(tmp_path / "t.safetensors", tensors, dtype)
    raw = (tmp_path / "t.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0
    header = json.loads(raw[8 : 8 + n])
    assert header["b.weight"]["shape"] == [3, 5] and header["b.weight"]["dtype"] == dtype
    back = R.read_safetensors(tmp_path / "t.safetensors")
    rtol = {"F32": 1e-7, "F16": 1e-3, "BF16": 8e-3}[dtype]
    for k, v in tensors.items():
        np.testing.assert_allclose(back[k], v, rtol=rtol, atol=1e-6)


def test_model_folder_layout(tmp_path):
    path = tiny(tmp_path, "modernbert", dense=[(24, True), {"out": 8, "bias": False, "st": True}],
                normalize_module=True, config_style="v5")
    modules = json.loads((path / "modules.json").read_text())
    assert [m["type"] for m in modules] == [R.TRANSFORMER_TYPE, R.PYLATE_DENSE_TYPE, R.ST_DENSE_TYPE, R.NORMALIZE_TYPE]
    assert [m["path"] for m in modules] == ["", "1_Dense", "2_Dense", "3_Normalize"]
    assert json.loads((path / "1_Dense/config.json").read_text()) == {
        "in_features": 32, "out_features": 24, "bias": True,
        "activation_function": "torch.nn.modules.linear.Identity", "use_residual": False}
    assert set(R.read_safetensors(path / "2_Dense/model.safetensors")) == {"linear.weight"}
    names = set(R.read_safetensors(path / "model.safetensors"))
    assert "layers.0.attn_norm.weight" not in names and "layers.1.attn_norm.weight" in names
    assert {"embeddings.tok_embeddings.weight", "embeddings.norm.weight", "layers.0.attn.Wqkv.weight",
            "layers.0.attn.Wo.weight", "layers.0.mlp_norm.weight", "layers.0.mlp.Wi.weight",
            "layers.0.mlp.Wo.weight", "final_norm.weight"} <= names
    config = json.loads((path / "config.json").read_text())
    assert config["layer_types"] == ["full_attention", "sliding_attention", "full_attention"]
    assert "global_rope_theta" not in config
    st = json.loads((path / "config_sentence_transformers.json").read_text())
    assert {k: st[k] for k in R.PYLATE_KEYS} == {
        "query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 12, "document_length": 16,
        "attend_to_expansion_tokens": False, "skiplist_words": list(string.punctuation),
        "do_query_expansion": True}
