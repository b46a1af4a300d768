"""A numpy reference for Tessera's built-in ColBERT encoder, and a writer of tiny
random models in the sentence-transformers / PyLate folder layout.

Nothing here imports torch, transformers, safetensors or tokenizers: the model
folder is written by hand (a small safetensors writer, a hand-made
tokenizer.json) and read back by hand, and the forward passes are plain
float64 numpy. The encoding rules are PyLate's, as pinned down in
docs/ENCODER.md (PyLate 1.4.0 + main at 1f1f47c, ``ColBERT.tokenize``
/ ``ColBERT.encode`` / ``Dense``); the BERT and ModernBERT passes follow
transformers' ``BertModel`` and ``ModernBertModel`` in eval mode, with the
eager/SDPA (CPU) attention semantics.

    write_tiny_model(path, arch="bert" | "modernbert", seed=..., ...) -> Path
    reference_encode(path, texts, is_query) -> list[np.ndarray]   # float64
    reference_details(path, text, is_query) -> dict                # ids, masks, ...

The tiny models' tokenizer is a WordPiece over a whole-word vocabulary (no
"##" pieces), so a word is either one vocabulary token or [UNK]; the
reference's own tokenizer (lowercase, split on whitespace and punctuation,
whole-word lookup) is exact for it. Both architectures get that same
tokenizer.json (real ModernBERT checkpoints use a byte-level BPE; the encoder
takes either through the tokenizers crate).
"""

from __future__ import annotations

import json
import math
import string
import struct
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

DEFAULT_WORDS = [
    "the", "a", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "at",
    "from", "it", "this", "that", "cat", "dog", "sat", "mat", "quick", "brown", "fox", "jumps",
    "over", "lazy", "hello", "world", "search", "engine", "vector", "database", "late",
    "interaction", "token", "query", "document", "rust", "python", "tessera", "colbert",
    "river", "bank", "money", "red", "planet", "mars", "known",
]

# Short texts made of DEFAULT_WORDS, for tests that index a few documents.
SAMPLE_TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a cat sat on the mat",
    "river bank and money bank",
    "late interaction search engine for token vectors",
    "the red planet is known as mars",
    "python and rust",
]

# transformers' float32 finfo.min: the value HF writes into masked attention scores.
F32_MIN = float(np.finfo(np.float32).min)

IDENTITY = "torch.nn.modules.linear.Identity"
TANH = "torch.nn.modules.activation.Tanh"
TRANSFORMER_TYPE = "sentence_transformers.models.Transformer"
PYLATE_DENSE_TYPE = "pylate.models.Dense.Dense"
ST_DENSE_TYPE = "sentence_transformers.models.Dense"
NORMALIZE_TYPE = "sentence_transformers.models.Normalize"

# config_sentence_transformers.json keys PyLate reads (ColBERT._load_sbert_model).
PYLATE_KEYS = (
    "query_prefix", "document_prefix", "query_length", "document_length",
    "attend_to_expansion_tokens", "skiplist_words", "do_query_expansion",
)


# --------------------------------------------------------------------------------------
# safetensors, by hand
# --------------------------------------------------------------------------------------

def _f32_to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (uint16)."""
    bits = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2")


def write_safetensors(path: Path, tensors: dict, dtype: str = "F32") -> None:
    """Writes `tensors` (name -> float array) as a safetensors file: an 8-byte
    little-endian header length, a JSON header (dtype, shape, data_offsets per
    tensor, names sorted), padded with spaces to a multiple of 8, then the
    little-endian data. dtype: F32, F16 or BF16."""
    header: dict = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name], dtype=np.float32)
        if dtype == "F32":
            raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
        elif dtype == "F16":
            raw = np.ascontiguousarray(a, dtype="<f2").tobytes()
        elif dtype == "BF16":
            raw = _f32_to_bf16_bits(a).tobytes()
        else:
            raise ValueError(f"unsupported dtype {dtype}")
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def read_safetensors(path: Path) -> dict:
    """name -> float64 array, for F32 / F16 / BF16 files."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = body[start:end]
        shape = tuple(info["shape"])
        if info["dtype"] == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif info["dtype"] == "F16":
            a = np.frombuffer(raw, dtype="<f2")
        elif info["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view("<f4")
        else:
            raise ValueError(f"{path}: unsupported dtype {info['dtype']} for {name}")
        out[name] = a.astype(np.float64).reshape(shape)
    return out


# --------------------------------------------------------------------------------------
# the tiny model writer
# --------------------------------------------------------------------------------------

def _dense_specs(dense) -> list:
    """Normalises the `dense` argument: each item (out, bias) or (out, bias,
    activation) or a dict with out, bias, activation ("identity" | "tanh"),
    use_residual, st (True: a sentence_transformers.models.Dense module)."""
    specs = []
    for d in dense:
        if isinstance(d, dict):
            spec = {"out": int(d["out"]), "bias": bool(d.get("bias", False)),
                    "activation": d.get("activation", "identity"),
                    "use_residual": bool(d.get("use_residual", False)), "st": bool(d.get("st", False))}
        else:
            d = tuple(d)
            spec = {"out": int(d[0]), "bias": bool(d[1]), "activation": d[2] if len(d) > 2 else "identity",
                    "use_residual": False, "st": False}
        if spec["activation"] not in ("identity", "tanh"):
            raise ValueError(f"activation {spec['activation']!r}: identity or tanh")
        specs.append(spec)
    return specs


def _vocab(vocab_words, prefixes) -> tuple[list, list]:
    """(WordPiece vocabulary in id order, added prefix tokens in id order)."""
    words = list(SPECIAL_TOKENS) + list(string.punctuation)
    for w in vocab_words:
        if w not in words:
            words.append(w)
    added = []
    for p in prefixes:
        if p and p not in words and p not in added:
            added.append(p)
    return words, added


def _tokenizer_json(vocab: list, added: list, lowercase: bool, stale_sections: bool) -> dict:
    ids = {w: i for i, w in enumerate(vocab)}
    added_tokens = [
        {"id": ids[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for t in SPECIAL_TOKENS
    ]
    # PyLate's tokenizer.add_tokens([prefix]) makes plain (non-special, normalized) added tokens.
    for j, t in enumerate(added):
        added_tokens.append({"id": len(vocab) + j, "content": t, "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": True, "special": False})

    def special(tok):
        return {"id": tok, "ids": [ids[tok]], "tokens": [tok]}

    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": lowercase},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": special("[CLS]"), "[SEP]": special("[SEP]")},
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": ids},
    }
    if stale_sections:
        # What a tokenizer.json saved after use can carry: the last call's
        # truncation / padding. PyLate overrides both on every call (transformers'
        # set_truncation_and_padding), so an encoder must ignore them.
        tok["truncation"] = {"direction": "Right", "max_length": 5, "strategy": "LongestFirst", "stride": 0}
        tok["padding"] = {"strategy": {"Fixed": 24}, "direction": "Right", "pad_to_multiple_of": None,
                          "pad_id": ids["[MASK]"], "pad_type_id": 0, "pad_token": "[MASK]"}
    return tok


def write_tiny_model(
    path,
    arch: str = "bert",
    *,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate: int | None = None,
    query_prefix: str = "[Q] ",
    document_prefix: str = "[D] ",
    query_length: int = 12,
    document_length: int = 16,
    do_query_expansion: bool = True,
    attend_to_expansion_tokens: bool = False,
    skiplist_words: Sequence[str] | None = tuple(string.punctuation),
    dense: Iterable = ((16, False),),
    normalize_module: bool = False,
    normalize_position: str = "end",
    vocab_words: Sequence[str] = DEFAULT_WORDS,
    omit_st_keys: Iterable[str] = (),
    max_position_embeddings: int = 64,
    do_lower_case: bool = False,
    tokenizer_lowercase: bool = True,
    stale_tokenizer_sections: bool = False,
    param_prefix: str = "",
    weights_dtype: str = "F32",
    # ModernBERT only
    global_attn_every_n_layers: int = 2,
    local_attention: int = 8,
    global_rope_theta: float = 160000.0,
    local_rope_theta: float = 10000.0,
    attention_bias: bool = False,
    mlp_bias: bool = False,
    norm_bias: bool = False,
    config_style: str = "v4",
) -> Path:
    """Writes a complete tiny ColBERT model folder at `path` and returns it.

    Layout (as PyLate / sentence-transformers save one): config.json,
    model.safetensors (the bare BertModel / ModernBertModel state dict, no
    "model." prefix unless `param_prefix`), tokenizer.json, tokenizer_config.json,
    special_tokens_map.json, vocab.txt, modules.json, sentence_bert_config.json,
    config_sentence_transformers.json, {i}_Dense/{config.json,model.safetensors}
    and optionally an (empty) Normalize folder.

    dense: items (out, bias) / (out, bias, activation) / dicts (see _dense_specs).
    skiplist_words=None leaves the key out (PyLate then uses string.punctuation);
    omit_st_keys leaves other PyLate keys out (PyLate's defaults apply).
    normalize_position: "end" (after the Dense modules) or "middle" (between the
    Transformer and the first Dense); PyLate drops the module either way.
    config_style (ModernBERT): "v4" (global_rope_theta / local_rope_theta) or
    "v5" (transformers 5: layer_types + rope_parameters, no flat thetas).
    """
    if arch not in ("bert", "modernbert"):
        raise ValueError("arch: bert or modernbert")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    intermediate = intermediate or (2 * hidden if arch == "bert" else 3 * hidden // 2)
    if hidden % heads:
        raise ValueError("hidden must be a multiple of heads")

    vocab, added = _vocab(vocab_words, (query_prefix, document_prefix))
    vocab_size = len(vocab) + len(added)
    ids = {w: i for i, w in enumerate(vocab)}

    def normal(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def norm_weight(n):
        return (1.0 + rng.standard_normal(n) * 0.1).astype(np.float32)

    p: dict = {}
    if arch == "bert":
        p["embeddings.word_embeddings.weight"] = normal(vocab_size, hidden, scale=0.5)
        p["embeddings.position_embeddings.weight"] = normal(max_position_embeddings, hidden, scale=0.5)
        p["embeddings.token_type_embeddings.weight"] = normal(2, hidden, scale=0.5)
        p["embeddings.LayerNorm.weight"] = norm_weight(hidden)
        p["embeddings.LayerNorm.bias"] = normal(hidden, scale=0.05)
        for i in range(layers):
            pre = f"encoder.layer.{i}."
            for name in ("query", "key", "value"):
                p[pre + f"attention.self.{name}.weight"] = normal(hidden, hidden)
                p[pre + f"attention.self.{name}.bias"] = normal(hidden, scale=0.05)
            p[pre + "attention.output.dense.weight"] = normal(hidden, hidden)
            p[pre + "attention.output.dense.bias"] = normal(hidden, scale=0.05)
            p[pre + "attention.output.LayerNorm.weight"] = norm_weight(hidden)
            p[pre + "attention.output.LayerNorm.bias"] = normal(hidden, scale=0.05)
            p[pre + "intermediate.dense.weight"] = normal(intermediate, hidden)
            p[pre + "intermediate.dense.bias"] = normal(intermediate, scale=0.05)
            p[pre + "output.dense.weight"] = normal(hidden, intermediate)
            p[pre + "output.dense.bias"] = normal(hidden, scale=0.05)
            p[pre + "output.LayerNorm.weight"] = norm_weight(hidden)
            p[pre + "output.LayerNorm.bias"] = normal(hidden, scale=0.05)
        # BertModel(add_pooling_layer=True) saves its pooler; the encoder never uses it.
        p["pooler.dense.weight"] = normal(hidden, hidden)
        p["pooler.dense.bias"] = normal(hidden, scale=0.05)
        config = {
            "architectures": ["BertModel"],
            "attention_probs_dropout_prob": 0.1,
            "classifier_dropout": None,
            "gradient_checkpointing": False,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "hidden_size": hidden,
            "initializer_range": 0.02,
            "intermediate_size": intermediate,
            "layer_norm_eps": 1e-12,
            "max_position_embeddings": max_position_embeddings,
            "model_type": "bert",
            "num_attention_heads": heads,
            "num_hidden_layers": layers,
            "pad_token_id": ids["[PAD]"],
            "position_embedding_type": "absolute",
            "torch_dtype": "float32",
            "transformers_version": "4.48.0",
            "type_vocab_size": 2,
            "use_cache": True,
            "vocab_size": vocab_size,
        }
    else:
        p["embeddings.tok_embeddings.weight"] = normal(vocab_size, hidden, scale=0.5)
        p["embeddings.norm.weight"] = norm_weight(hidden)
        if norm_bias:
            p["embeddings.norm.bias"] = normal(hidden, scale=0.05)
        for i in range(layers):
            pre = f"layers.{i}."
            if i > 0:  # ModernBertEncoderLayer: attn_norm is nn.Identity() on layer 0
                p[pre + "attn_norm.weight"] = norm_weight(hidden)
                if norm_bias:
                    p[pre + "attn_norm.bias"] = normal(hidden, scale=0.05)
            p[pre + "attn.Wqkv.weight"] = normal(3 * hidden, hidden)
            if attention_bias:
                p[pre + "attn.Wqkv.bias"] = normal(3 * hidden, scale=0.05)
            p[pre + "attn.Wo.weight"] = normal(hidden, hidden)
            if attention_bias:
                p[pre + "attn.Wo.bias"] = normal(hidden, scale=0.05)
            p[pre + "mlp_norm.weight"] = norm_weight(hidden)
            if norm_bias:
                p[pre + "mlp_norm.bias"] = normal(hidden, scale=0.05)
            p[pre + "mlp.Wi.weight"] = normal(2 * intermediate, hidden)
            if mlp_bias:
                p[pre + "mlp.Wi.bias"] = normal(2 * intermediate, scale=0.05)
            p[pre + "mlp.Wo.weight"] = normal(hidden, intermediate)
            if mlp_bias:
                p[pre + "mlp.Wo.bias"] = normal(hidden, scale=0.05)
        p["final_norm.weight"] = norm_weight(hidden)
        if norm_bias:
            p["final_norm.bias"] = normal(hidden, scale=0.05)
        config = {
            "architectures": ["ModernBertModel"],
            "attention_bias": attention_bias,
            "attention_dropout": 0.0,
            "bos_token_id": ids["[CLS]"],
            "classifier_activation": "gelu",
            "classifier_bias": False,
            "classifier_dropout": 0.0,
            "classifier_pooling": "mean",
            "cls_token_id": ids["[CLS]"],
            "decoder_bias": True,
            "deterministic_flash_attn": False,
            "embedding_dropout": 0.0,
            "eos_token_id": ids["[SEP]"],
            "global_attn_every_n_layers": global_attn_every_n_layers,
            "gradient_checkpointing": False,
            "hidden_activation": "gelu",
            "hidden_size": hidden,
            "initializer_cutoff_factor": 2.0,
            "initializer_range": 0.02,
            "intermediate_size": intermediate,
            "layer_norm_eps": 1e-05,
            "local_attention": local_attention,
            "max_position_embeddings": max_position_embeddings,
            "mlp_bias": mlp_bias,
            "mlp_dropout": 0.0,
            "model_type": "modernbert",
            "norm_bias": norm_bias,
            "norm_eps": 1e-05,
            "num_attention_heads": heads,
            "num_hidden_layers": layers,
            "pad_token_id": ids["[PAD]"],
            "position_embedding_type": "absolute",
            "sep_token_id": ids["[SEP]"],
            "sparse_pred_ignore_index": -100,
            "sparse_prediction": False,
            "vocab_size": vocab_size,
        }
        if config_style == "v4":
            config.update({"global_rope_theta": global_rope_theta, "local_rope_theta": local_rope_theta,
                           "reference_compile": False, "repad_logits_with_grad": False,
                           "torch_dtype": "float32", "transformers_version": "4.48.0"})
        elif config_style == "v5":
            config.update({
                "dtype": "float32",
                "layer_types": ["sliding_attention" if i % global_attn_every_n_layers else "full_attention"
                                for i in range(layers)],
                "rope_parameters": {"full_attention": {"rope_theta": global_rope_theta, "rope_type": "default"},
                                    "sliding_attention": {"rope_theta": local_rope_theta, "rope_type": "default"}},
                "tie_word_embeddings": True,
                "transformers_version": "5.0.0",
            })
        else:
            raise ValueError("config_style: v4 or v5")
    config = dict(sorted(config.items()))
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_safetensors(path / "model.safetensors", {param_prefix + k: v for k, v in p.items()}, weights_dtype)

    # tokenizer files
    (path / "tokenizer.json").write_text(
        json.dumps(_tokenizer_json(vocab, added, tokenizer_lowercase, stale_tokenizer_sections), indent=2) + "\n")
    (path / "vocab.txt").write_text("".join(w + "\n" for w in vocab))
    decoder = {str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True} for t in SPECIAL_TOKENS}
    for j, t in enumerate(added):
        decoder[str(len(vocab) + j)] = {"content": t, "lstrip": False, "normalized": True, "rstrip": False,
                                        "single_word": False, "special": False}
    tok_config = {
        "added_tokens_decoder": decoder,
        "clean_up_tokenization_spaces": True,
        "cls_token": "[CLS]",
        "do_basic_tokenize": True,
        "do_lower_case": tokenizer_lowercase,
        "mask_token": "[MASK]",
        "model_max_length": max_position_embeddings,
        "never_split": None,
        # PyLate sets pad_token_id = mask_token_id, and a save keeps it.
        "pad_token": "[MASK]",
        "sep_token": "[SEP]",
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]",
    }
    if arch == "modernbert":
        tok_config["model_input_names"] = ["input_ids", "attention_mask"]
    (path / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    (path / "special_tokens_map.json").write_text(json.dumps(
        {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[MASK]", "sep_token": "[SEP]",
         "unk_token": "[UNK]"}, indent=2) + "\n")

    # sentence-transformers / PyLate files
    (path / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": document_length - 1 if document_prefix else document_length,
         "do_lower_case": do_lower_case}, indent=2) + "\n")
    st_config = {
        "model_type": "ColBERT",
        "__version__": {"sentence_transformers": "5.3.0", "transformers": "4.48.0", "pytorch": "2.5.1"},
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "MaxSim",
        "query_prefix": query_prefix,
        "document_prefix": document_prefix,
        "query_length": query_length,
        "document_length": document_length,
        "attend_to_expansion_tokens": attend_to_expansion_tokens,
        "skiplist_words": list(skiplist_words) if skiplist_words is not None else None,
        "do_query_expansion": do_query_expansion,
    }
    if skiplist_words is None:
        del st_config["skiplist_words"]
    for k in omit_st_keys:
        if k not in PYLATE_KEYS:
            raise ValueError(f"omit_st_keys: {k!r} is not one of {PYLATE_KEYS}")
        st_config.pop(k, None)
    (path / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2) + "\n")

    modules = [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER_TYPE}]

    def add_normalize():
        i = len(modules)
        modules.append({"idx": i, "name": str(i), "path": f"{i}_Normalize", "type": NORMALIZE_TYPE})
        (path / f"{i}_Normalize").mkdir(exist_ok=True)

    if normalize_module and normalize_position == "middle":
        add_normalize()
    width = hidden
    for spec in _dense_specs(dense):
        i = len(modules)
        folder = path / f"{i}_Dense"
        folder.mkdir(exist_ok=True)
        act = IDENTITY if spec["activation"] == "identity" else TANH
        cfg = {"in_features": width, "out_features": spec["out"], "bias": spec["bias"], "activation_function": act}
        if not spec["st"]:
            cfg["use_residual"] = spec["use_residual"]
        elif spec["use_residual"]:
            raise ValueError("use_residual is a PyLate Dense option, not a sentence-transformers one")
        (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        w = {"linear.weight": normal(spec["out"], width, scale=1.0 / math.sqrt(width))}
        if spec["bias"]:
            w["linear.bias"] = normal(spec["out"], scale=0.3)
        if spec["use_residual"] and spec["out"] != width:
            w["residual.weight"] = normal(spec["out"], width, scale=1.0 / math.sqrt(width))
        write_safetensors(folder / "model.safetensors", w, weights_dtype)
        modules.append({"idx": i, "name": str(i), "path": f"{i}_Dense",
                        "type": ST_DENSE_TYPE if spec["st"] else PYLATE_DENSE_TYPE})
        width = spec["out"]
    if normalize_module and normalize_position == "end":
        add_normalize()
    elif normalize_module and normalize_position not in ("end", "middle"):
        raise ValueError("normalize_position: end or middle")
    (path / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------------------
# reading a model folder back (independently of the writer's internals)
# --------------------------------------------------------------------------------------

def _strip_prefix(params: dict, probe: str) -> dict:
    if probe in params:
        return params
    for name in params:
        if name.endswith("." + probe):
            prefix = name[: -len(probe)]
            return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    raise KeyError(f"no {probe} in the checkpoint")


class _Model:
    def __init__(self, path):
        path = Path(path)
        self.path = path
        self.config = json.loads((path / "config.json").read_text())
        self.arch = self.config["model_type"]
        params = read_safetensors(path / "model.safetensors")
        probe = "embeddings.word_embeddings.weight" if self.arch == "bert" else "embeddings.tok_embeddings.weight"
        self.p = _strip_prefix(params, probe)

        tok = json.loads((path / "tokenizer.json").read_text())
        self.vocab = dict(tok["model"]["vocab"])
        for t in tok["added_tokens"]:
            self.vocab[t["content"]] = t["id"]
        self.unk_id = self.vocab[tok["model"]["unk_token"]]
        norm = tok.get("normalizer") or {}
        self.lowercase = bool(norm.get("lowercase", False))
        sa = norm.get("strip_accents")
        self.strip_accents = self.lowercase if sa is None else bool(sa)
        # Added tokens that the pre-tokenizer would keep whole (never split by punctuation).
        self.added_words = sorted((t["content"] for t in tok["added_tokens"]), key=len, reverse=True)

        tok_cfg_path = path / "tokenizer_config.json"
        tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path.exists() else {}

        def tok_id(key):
            v = tok_cfg.get(key)
            if isinstance(v, dict):
                v = v.get("content")
            return self.vocab.get(v) if v is not None else None

        # ColBERT.__init__: pad id for query expansion = mask, else eos, else pad.
        self.expansion_id = tok_id("mask_token")
        if self.expansion_id is None:
            self.expansion_id = tok_id("eos_token")
        if self.expansion_id is None:
            self.expansion_id = tok_id("pad_token")
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]

        sb_path = path / "sentence_bert_config.json"
        sb = json.loads(sb_path.read_text()) if sb_path.exists() else {}
        self.do_lower_case = bool(sb.get("do_lower_case", False))

        st_path = path / "config_sentence_transformers.json"
        st = json.loads(st_path.read_text()) if st_path.exists() else {}
        # ColBERT.__init__ (PyLate main): a key that is present wins, even "" / [] / 0;
        # an absent key (or JSON null) falls back to the default.
        def get(key, default):
            v = st.get(key)
            return default if v is None else v

        self.query_prefix = get("query_prefix", "[Q] ")
        self.document_prefix = get("document_prefix", "[D] ")
        self.query_length = int(get("query_length", 32))
        self.document_length = int(get("document_length", 180))
        self.do_query_expansion = bool(get("do_query_expansion", True))
        self.attend_to_expansion_tokens = bool(get("attend_to_expansion_tokens", False))
        if not self.do_query_expansion:
            self.attend_to_expansion_tokens = False
        self.skiplist_words = list(get("skiplist_words", list(string.punctuation)))
        # convert_tokens_to_ids(word): exact vocabulary lookup; a miss gives the [UNK] id.
        self.skiplist_ids = {self.vocab.get(w, self.unk_id) for w in self.skiplist_words}
        self.query_prefix_id = self._prefix_id(self.query_prefix)
        self.document_prefix_id = self._prefix_id(self.document_prefix)

        # modules: the Transformer, then Dense and Normalize modules in order.
        # PyLate drops Normalize (sentence-transformers' Normalize acts on a pooled
        # sentence embedding); Tessera L2-normalises each token vector where the
        # module sits, which the evaldata's encoder (Normalize before its
        # projection) needs, and which equals PyLate's wherever it is last.
        self.dense = []
        self.pipeline = []
        for m in json.loads((path / "modules.json").read_text()):
            t = m["type"]
            if t.endswith("Transformer"):
                continue
            if t in (PYLATE_DENSE_TYPE, ST_DENSE_TYPE, "pylate.models.Dense"):
                cfg = json.loads((path / m["path"] / "config.json").read_text())
                w = read_safetensors(path / m["path"] / "model.safetensors")
                self.dense.append((cfg, w))
                self.pipeline.append((cfg, w))
            elif t == NORMALIZE_TYPE:
                self.pipeline.append(None)
        if not self.dense:
            raise ValueError("no Dense module: PyLate would add a randomly initialised one")
        self.dim = int(self.dense[-1][0]["out_features"])

    def _prefix_id(self, prefix: str):
        if prefix == "":
            return None
        if prefix not in self.vocab:
            raise ValueError(f"prefix {prefix!r} is not a token of the tokenizer (PyLate would add it "
                             "with a randomly initialised embedding)")
        return self.vocab[prefix]

    # ---- tokenizer (exact for the tiny whole-word WordPiece vocabulary) ----
    @staticmethod
    def _is_punct(ch: str) -> bool:
        cp = ord(ch)
        if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
            return True
        return unicodedata.category(ch).startswith("P")

    def _words(self, text: str) -> list:
        if self.lowercase:
            text = text.lower()
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        words, cur = [], []
        for ch in text:
            if ch.isspace():
                if cur:
                    words.append("".join(cur))
                    cur = []
            elif self._is_punct(ch):
                if cur:
                    words.append("".join(cur))
                    cur = []
                words.append(ch)
            else:
                cur.append(ch)
        if cur:
            words.append("".join(cur))
        return words

    def content_ids(self, text: str) -> list:
        """Token ids of `text` without [CLS]/[SEP] (no added token may occur in it)."""
        for t in self.added_words:
            if t.strip() and t.strip() in text:
                raise ValueError(f"reference tokenizer: text contains the added token {t!r}")
        return [self.vocab.get(w, self.unk_id) for w in self._words(text)]

    # ---- PyLate ColBERT.tokenize, for one text ----
    def tokenize(self, text: str, is_query: bool):
        # sentence_transformers Transformer.tokenize: strip, then lowercase if do_lower_case.
        text = str(text).strip()
        if self.do_lower_case:
            text = text.lower()
        max_length = self.query_length if is_query else self.document_length
        prefix_id = self.query_prefix_id if is_query else self.document_prefix_id
        max_seq = max_length - 1 if prefix_id is not None else max_length
        content = self.content_ids(text)[: max(max_seq - 2, 0)]  # truncation keeps [CLS] and [SEP]
        ids = [self.cls_id] + content + [self.sep_id]
        attn = [1] * len(ids)
        if is_query and self.do_query_expansion:  # padding="max_length" with pad id = [MASK]
            ids += [self.expansion_id] * (max_seq - len(ids))
            attn += [0] * (max_seq - len(attn))
        if prefix_id is not None:  # insert_prefix_token: after the first token
            ids.insert(1, prefix_id)
            attn.insert(1, 1)
        if is_query and self.attend_to_expansion_tokens:
            attn = [1] * len(ids)
        return np.array(ids), np.array(attn)

    def keep_mask(self, ids: np.ndarray, attn: np.ndarray, is_query: bool) -> np.ndarray:
        if is_query:
            if self.do_query_expansion:
                return np.ones(len(ids), dtype=bool)
            return attn.astype(bool)
        return np.array([i not in self.skiplist_ids for i in ids]) & attn.astype(bool)


_CACHE: dict = {}


def _model(path) -> _Model:
    path = Path(path)
    stamp = tuple(sorted((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in path.rglob("*") if f.is_file()))
    key = (str(path.resolve()), stamp)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _Model(path)
    return _CACHE[key]


# --------------------------------------------------------------------------------------
# forward passes (float64)
# --------------------------------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact (erf) GELU: transformers' "gelu" (GELUActivation)."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * w
    return y + b if b is not None else y


def attention_probs(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Softmax over keys of scores (heads, L, L) where disallowed entries hold
    float32's finfo.min, as transformers' float32 masks leave them (a score
    plus finfo.min rounds to finfo.min): a row with no allowed key becomes
    uniform over all L keys."""
    s = np.where(allowed[None, :, :], scores, F32_MIN)
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


def bert_forward(m: _Model, ids: np.ndarray, attn: np.ndarray) -> np.ndarray:
    c, p = m.config, m.p
    n = len(ids)
    heads = c["num_attention_heads"]
    hd = c["hidden_size"] // heads
    eps = c["layer_norm_eps"]
    if c.get("hidden_act", "gelu") != "gelu":
        raise ValueError("reference: hidden_act must be gelu")
    if c.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("reference: absolute position embeddings only")
    x = (p["embeddings.word_embeddings.weight"][ids]
         + p["embeddings.position_embeddings.weight"][np.arange(n)]
         + p["embeddings.token_type_embeddings.weight"][np.zeros(n, dtype=int)])
    x = layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)
    allowed = np.broadcast_to(attn.astype(bool)[None, :], (n, n))
    for i in range(c["num_hidden_layers"]):
        pre = f"encoder.layer.{i}."

        def lin(name, h):
            return h @ p[pre + name + ".weight"].T + p[pre + name + ".bias"]

        q = lin("attention.self.query", x).reshape(n, heads, hd).transpose(1, 0, 2)
        k = lin("attention.self.key", x).reshape(n, heads, hd).transpose(1, 0, 2)
        v = lin("attention.self.value", x).reshape(n, heads, hd).transpose(1, 0, 2)
        probs = attention_probs(q @ k.transpose(0, 2, 1) / math.sqrt(hd), allowed)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, heads * hd)
        a = layer_norm(lin("attention.output.dense", ctx) + x,
                       p[pre + "attention.output.LayerNorm.weight"], p[pre + "attention.output.LayerNorm.bias"], eps)
        h = gelu(lin("intermediate.dense", a))
        x = layer_norm(lin("output.dense", h) + a,
                       p[pre + "output.LayerNorm.weight"], p[pre + "output.LayerNorm.bias"], eps)
    return x


def _rope(x: np.ndarray, theta: float) -> np.ndarray:
    """GPT-NeoX style (rotate_half) rotary embedding of x (heads, L, hd), positions 0..L-1."""
    hd = x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    freqs = np.arange(x.shape[1], dtype=np.float64)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)
    half = hd // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rot * sin


def modernbert_thetas(c: dict) -> tuple[float, float]:
    """(global, local) RoPE theta from either config dialect."""
    rp = c.get("rope_parameters")
    g = c.get("global_rope_theta")
    l = c.get("local_rope_theta")
    if isinstance(rp, dict):
        g = g if g is not None else (rp.get("full_attention") or {}).get("rope_theta")
        l = l if l is not None else (rp.get("sliding_attention") or {}).get("rope_theta")
    return float(g if g is not None else 160000.0), float(l if l is not None else 10000.0)


def modernbert_forward(m: _Model, ids: np.ndarray, attn: np.ndarray) -> np.ndarray:
    c, p = m.config, m.p
    n = len(ids)
    heads = c["num_attention_heads"]
    H = c["hidden_size"]
    hd = H // heads
    eps = c.get("norm_eps", 1e-5)
    every = c.get("global_attn_every_n_layers", 3)
    window = c.get("local_attention", 128) // 2
    g_theta, l_theta = modernbert_thetas(c)
    layer_types = c.get("layer_types")
    if c.get("hidden_activation", "gelu") != "gelu":
        raise ValueError("reference: hidden_activation must be gelu")

    def ln(name, h):
        return layer_norm(h, p[name + ".weight"], p.get(name + ".bias"), eps)

    def lin(name, h):
        y = h @ p[name + ".weight"].T
        b = p.get(name + ".bias")
        return y + b if b is not None else y

    key_ok = np.broadcast_to(attn.astype(bool)[None, :], (n, n))
    pos = np.arange(n)
    in_window = np.abs(pos[:, None] - pos[None, :]) <= window
    x = ln("embeddings.norm", p["embeddings.tok_embeddings.weight"][ids])
    for i in range(c["num_hidden_layers"]):
        pre = f"layers.{i}."
        local = i % every != 0  # ModernBertAttention: sliding window on these layers
        if layer_types is not None:
            theta = l_theta if layer_types[i] == "sliding_attention" else g_theta
        else:
            theta = l_theta if local else g_theta
        h = x if i == 0 else ln(pre + "attn_norm", x)
        qkv = lin(pre + "attn.Wqkv", h).reshape(n, 3, heads, hd)
        q = _rope(qkv[:, 0].transpose(1, 0, 2), theta)
        k = _rope(qkv[:, 1].transpose(1, 0, 2), theta)
        v = qkv[:, 2].transpose(1, 0, 2)
        allowed = key_ok & in_window if local else key_ok
        probs = attention_probs(q @ k.transpose(0, 2, 1) * hd ** -0.5, allowed)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, H)
        x = x + lin(pre + "attn.Wo", ctx)
        inp, gate = np.split(lin(pre + "mlp.Wi", ln(pre + "mlp_norm", x)), 2, axis=-1)
        x = x + lin(pre + "mlp.Wo", gelu(inp) * gate)
    return ln("final_norm", x)


def apply_dense(m: _Model, x: np.ndarray) -> np.ndarray:
    """PyLate Dense.forward, module after module: act(x W^T + b), plus the
    residual branch (x R^T when in != out, else x) when use_residual; a
    Normalize module (None) L2-normalises each row."""
    for module in m.pipeline:
        if module is None:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            continue
        cfg, w = module
        y = x @ w["linear.weight"].T
        if cfg.get("bias", True):
            y = y + w["linear.bias"]
        act = cfg.get("activation_function", IDENTITY)
        if act == TANH:
            y = np.tanh(y)
        elif act != IDENTITY:
            raise ValueError(f"reference: activation {act}")
        if cfg.get("use_residual", False):
            y = y + (x @ w["residual.weight"].T if cfg["in_features"] != cfg["out_features"] else x)
        x = y
    return x


def _encode_one(m: _Model, text: str, is_query: bool) -> dict:
    ids, attn = m.tokenize(text, is_query)
    forward = bert_forward if m.arch == "bert" else modernbert_forward
    hidden = forward(m, ids, attn)
    x = apply_dense(m, hidden)
    keep = m.keep_mask(ids, attn, is_query)
    x = x[keep]
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # F.normalize(p=2, dim=1)
    return {"ids": ids, "attention_mask": attn, "keep": keep, "embeddings": x}


def reference_encode(path, texts: Sequence[str], is_query: bool) -> list:
    """PyLate's ColBERT.encode(texts, is_query=...) for the tiny model at `path`:
    one float64 (n_tokens, dim) array per text, unit-norm rows."""
    m = _model(path)
    return [_encode_one(m, t, is_query)["embeddings"] for t in texts]


def reference_details(path, text: str, is_query: bool) -> dict:
    """ids / attention_mask fed to the transformer, the kept-positions mask,
    the embeddings, and the ids of the special tokens involved."""
    m = _model(path)
    out = _encode_one(m, text, is_query)
    rows = 0
    if m.arch == "modernbert" and any(i % m.config.get("global_attn_every_n_layers", 3)
                                      for i in range(m.config["num_hidden_layers"])):
        # positions that see no attendable key inside their sliding window (see attention_probs)
        w = m.config.get("local_attention", 128) // 2
        ok = np.flatnonzero(out["attention_mask"])
        rows = sum(1 for i in range(len(out["ids"])) if not np.any(np.abs(ok - i) <= w))
    out.update({
        "fully_masked_local_rows": rows,
        "cls_id": m.cls_id, "sep_id": m.sep_id, "expansion_id": m.expansion_id, "unk_id": m.unk_id,
        "prefix_id": m.query_prefix_id if is_query else m.document_prefix_id,
        "skiplist_ids": sorted(m.skiplist_ids), "dim": m.dim,
        "query_length": m.query_length, "document_length": m.document_length,
    })
    return out


def reference_dim(path) -> int:
    return _model(path).dim
