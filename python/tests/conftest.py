"""Shared fixtures: databases in temporary folders, a naive numpy MaxSim
reference, and a real `tessera serve` on a free loopback port."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import tessera

REPO = Path(__file__).resolve().parents[2]


def maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """Naive MaxSim in f64 over the values as stored (f16)."""
    q = query.astype(np.float32).astype(np.float64)
    d = doc.astype(np.float16).astype(np.float64)
    return float((q @ d.T).max(axis=1).sum())


def ranking(query: np.ndarray, docs: dict, k: int) -> list:
    """(id, score) of the k best documents by naive MaxSim, ties by id."""
    scored = sorted(((-maxsim(query, t), i) for i, t in docs.items()))
    return [(i, -s) for s, i in scored[:k]]


def corpus(rng: np.random.Generator, n: int, dim: int, lo: int = 3, hi: int = 40) -> dict:
    """n documents of unit-norm float32 tokens, ids doc-000…"""
    out = {}
    for i in range(n):
        t = rng.standard_normal((int(rng.integers(lo, hi)), dim)).astype(np.float32)
        out[f"doc-{i:04d}"] = t / np.linalg.norm(t, axis=1, keepdims=True)
    return out


def load(col, docs: dict) -> None:
    """Upserts `docs` (from `corpus`) with a text and a payload derived from each id."""
    ids = list(docs)
    col.upsert(
        ids,
        [docs[i] for i in ids],
        texts=[f"passage {i} on topic {int(i[-4:]) % 4}" for i in ids],
        payloads=[{"n": int(i[-4:]), "even": int(i[-4:]) % 2 == 0} for i in ids],
    )


def doc_example(doc: str, heading: str) -> str:
    """The first Python block under `heading` in the repository's `doc`."""
    text = (REPO / doc).read_text()
    m = re.search(rf"{re.escape(heading)}.*?```python\n(.*?)```", text, re.S)
    assert m, f"{doc} has no Python example under {heading!r}"
    return m.group(1)


def run_example(code: str, folder: Path, timeout: int = 120) -> str:
    """Runs `code` as a script in `folder` with this Python; its standard output."""
    script = folder / "example.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], cwd=folder, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


@pytest.fixture
def rng() -> np.random.Generator:
    seed = int(os.environ.get("TESSERA_TEST_SEED", "20261201"))
    print(f"seed {seed} (TESSERA_TEST_SEED)")
    return np.random.default_rng(seed)


@pytest.fixture
def db(tmp_path):
    with tessera.Database(tmp_path / "db") as d:
        yield d


def _tessera_bin() -> Path | None:
    env = os.environ.get("TESSERA_BIN")
    if env:
        return Path(env)
    for p in (REPO / "target/release/tessera", REPO / "target/debug/tessera"):
        if p.exists():
            return p
    found = shutil.which("tessera")
    return Path(found) if found else None


def require_tessera_bin() -> Path:
    """The `tessera` binary (TESSERA_BIN, else target/{release,debug}, else PATH);
    skips the test without one — fails it in CI, where ./test.sh builds it."""
    binary = _tessera_bin()
    if binary is None or not binary.exists():
        msg = "no tessera binary: run `cargo build -p tessera-cli` or set TESSERA_BIN"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return binary


class Server:
    """`tessera serve` on a free port; with `ssl_context` (the client's side of
    a TLS server started with --tls-* in `args`), its URL is https://."""

    def __init__(self, root: Path, api_keys: str | None = None, args: tuple = (), ssl_context=None):
        binary = require_tessera_bin()
        self.backups = root / "backups"
        args = [str(binary), "serve", "--db", str(root / "server-db"), "--http", "127.0.0.1:0", "--no-grpc", *args]
        args += ["--backup-dir", str(self.backups)]
        if api_keys is not None:
            keys = root / "keys"
            keys.write_text(api_keys)
            args += ["--api-keys", str(keys)]
        env = dict(os.environ, TESSERA_LOG="warn")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        # The ready line names the address bound (port 0: a free one, no race).
        line = self.proc.stdout.readline()
        http = next((w[len("http="):] for w in line.split() if w.startswith("http=")), None)
        if http is None:
            self.stop()
            raise RuntimeError(f"tessera serve did not print its ready line: {line!r}")
        self.url = f"{'https' if ssl_context else 'http'}://{http}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1, context=ssl_context).read()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("tessera serve did not answer /health within 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def make_server(tmp_path):
    started = []

    def make(api_keys: str | None = None, args: tuple = (), ssl_context=None) -> Server:
        s = Server(tmp_path, api_keys, args, ssl_context)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random BERT late-interaction model folder (encoder_reference)."""
    import encoder_reference as R

    return R.write_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model", "bert", seed=21)


@pytest.fixture(scope="module")
def model_server(tmp_path_factory, tiny_model):
    """A `tessera serve` started with the tiny model as `--model tiny=…`."""
    s = Server(tmp_path_factory.mktemp("model-server"), args=("--model", f"tiny={tiny_model}"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray instance on loopback with 2 CPUs, shared by the tests that
    need Ray (skipped without it), shut down at the end of the session."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install './python[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()

