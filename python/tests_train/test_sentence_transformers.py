"""`tessera mine-negatives --layout sentence-transformers` trains what it claims.

The output is loaded with `datasets` and fed to a real sentence-transformers
trainer for one step, on a tiny BERT this test builds (random weights, a
word-level tokenizer over the corpus' words: nothing is downloaded). A loss
that records what the trainer handed it checks that the anchor, positive and
negatives reach the loss in that order (MultipleNegativesRankingLoss), and
that `--scores` gives the labels both distillation losses read
(MarginMSELoss, DistillKLDivLoss). Needs torch, sentence-transformers and
datasets (python/tests_train/requirements.txt; test.sh runs this folder in
a venv over Debian's CPU torch) and the CLI in TESSERA_BIN.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (Debian: apt-get install python3-torch)")
st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
datasets = pytest.importorskip("datasets", reason="datasets is not installed")

from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer  # noqa: E402
from sentence_transformers import losses as st_losses  # noqa: E402
from sentence_transformers.models import Pooling, Transformer  # noqa: E402
from sentence_transformers.training_args import SentenceTransformerTrainingArguments  # noqa: E402

DIM = 16
PER_QUERY = 3
WORDS = [f"w{i}" for i in range(60)]


def tessera_bin() -> str:
    b = os.environ.get("TESSERA_BIN")
    if not b or not Path(b).exists():
        pytest.skip("TESSERA_BIN does not name the tessera CLI (test.sh builds it and sets it)")
    return b


def write_bulk(folder: Path, records: list, tokens: list, jsonl: str) -> None:
    folder.mkdir(parents=True)
    with open(folder / jsonl, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    offsets = np.cumsum([0] + [len(t) for t in tokens]).astype(np.uint64)
    np.save(folder / "tokens.npy", np.concatenate(tokens).astype(np.float16))
    np.save(folder / "offsets.npy", offsets)


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    t = rng.standard_normal((n, DIM)).astype(np.float32)
    return t / np.linalg.norm(t, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def mined(tmp_path_factory) -> dict:
    """A corpus of 40 documents and 8 queries with one positive each, mined
    into the sentence-transformers layout with and without --scores."""
    tmp = tmp_path_factory.mktemp("mine")
    rng = np.random.default_rng(7)
    text = lambda n: " ".join(rng.choice(WORDS, size=n))  # noqa: E731
    docs = [{"id": f"d{i}", "text": text(8)} for i in range(40)]
    write_bulk(tmp / "corpus", docs, [unit(rng, int(rng.integers(4, 12))) for _ in docs], "docs.jsonl")
    queries = [{"id": f"q{i}", "text": text(4)} for i in range(8)]
    write_bulk(tmp / "queries", queries, [unit(rng, 4) for _ in queries], "queries.jsonl")
    (tmp / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{5 * i}\t1\n" for i in range(8)))
    b, db = tessera_bin(), str(tmp / "db")
    subprocess.run([b, "ingest", "--db", db, "--collection", "c", str(tmp / "corpus")], check=True, capture_output=True)
    out = {}
    for name, extra in (("plain", []), ("scores", ["--scores"])):
        path = tmp / f"{name}.jsonl"
        subprocess.run(
            [b, "mine-negatives", "--db", db, "--collection", "c", "--queries", str(tmp / "queries"),
             "--qrels", str(tmp / "qrels.tsv"), "--out", str(path), "--range", "1:20",
             "--per-query", str(PER_QUERY), "--exact", "--layout", "sentence-transformers", *extra],
            check=True, capture_output=True,
        )  # fmt: skip
        out[name] = path
    out["positives"] = {q["text"]: docs[5 * i]["text"] for i, q in enumerate(queries)}
    return out


def tiny_model(folder: Path) -> SentenceTransformer:
    """A one-layer BERT with random weights and a word-level tokenizer over WORDS."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from tokenizers.processors import TemplateProcessing
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(special + WORDS)}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=32,
    )  # fmt: skip
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return SentenceTransformer(modules=[Transformer(str(folder)), Pooling(16, "mean")], device="cpu")


def words(model: SentenceTransformer, input_ids) -> list:
    """The texts of a batch of token ids, special tokens dropped."""
    tok = model.tokenizer
    return [tok.decode(ids, skip_special_tokens=True) for ids in input_ids.tolist()]


def train_one_step(model, loss, dataset, tmp: Path) -> None:
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp), max_steps=1, per_device_train_batch_size=len(dataset), report_to=[],
        save_strategy="no", use_cpu=True, dataloader_num_workers=0, learning_rate=1e-3,
    )  # fmt: skip
    SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss).train()


def recording(loss_class):
    """`loss_class` that keeps what the trainer hands it."""

    class Recording(loss_class):
        seen: list = []

        def forward(self, sentence_features, labels):
            self.seen.append(([f["input_ids"] for f in sentence_features], labels))
            return super().forward(sentence_features, labels)

    return Recording


def test_columns_in_the_order_sentence_transformers_reads(mined):
    ds = datasets.load_dataset("json", data_files=str(mined["plain"]), split="train")
    assert ds.column_names == ["anchor", "positive"] + [f"negative_{i}" for i in range(1, PER_QUERY + 1)]
    ds = datasets.load_dataset("json", data_files=str(mined["scores"]), split="train")
    assert ds.column_names[-1] == "label" and ds.column_names[:-1] == ["anchor", "positive"] + [
        f"negative_{i}" for i in range(1, PER_QUERY + 1)
    ]


def test_multiple_negatives_ranking_loss_trains_on_anchor_positive_negatives(mined, tmp_path):
    ds = datasets.load_dataset("json", data_files=str(mined["plain"]), split="train")
    assert len(ds) == 8
    model = tiny_model(tmp_path / "model")
    loss = recording(st_losses.MultipleNegativesRankingLoss)(model)
    train_one_step(model, loss, ds, tmp_path / "out")
    (features, _labels), = loss.seen
    assert len(features) == 2 + PER_QUERY
    anchors, positives = words(model, features[0]), words(model, features[1])
    # Each anchor reached the loss with its own positive (the qrels' document).
    assert sorted(anchors) == sorted(mined["positives"])
    for a, p in zip(anchors, positives):
        assert p == mined["positives"][a], f"{a!r} was trained against {p!r}, not its positive"
    rows = {r["anchor"]: r for r in ds}
    for i in range(PER_QUERY):
        assert words(model, features[2 + i]) == [rows[a][f"negative_{i + 1}"] for a in anchors]


@pytest.mark.parametrize("loss_class", ["MarginMSELoss", "DistillKLDivLoss"])
def test_distillation_losses_read_the_scores(mined, tmp_path, loss_class):
    ds = datasets.load_dataset("json", data_files=str(mined["scores"]), split="train")
    model = tiny_model(tmp_path / "model")
    loss = recording(getattr(st_losses, loss_class))(model)
    train_one_step(model, loss, ds, tmp_path / "out")
    (features, labels), = loss.seen
    assert len(features) == 2 + PER_QUERY  # the label column is not read as a text
    anchors, positives = words(model, features[0]), words(model, features[1])
    rows = {r["anchor"]: r for r in ds}
    expected = np.array([rows[a]["label"] for a in anchors])
    assert labels.shape == (len(ds), 1 + PER_QUERY)
    np.testing.assert_allclose(labels.numpy(), expected, rtol=1e-6)
    for a, p in zip(anchors, positives):
        assert p == mined["positives"][a]
    # Every label is a MaxSim score of 4 unit query tokens against unit document tokens.
    assert np.all(np.abs(expected) <= 4 + 1e-3)
