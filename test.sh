#!/usr/bin/env bash
# The whole test suite: the Rust workspace, then the Python package (pytest)
# in a virtual environment that this script makes and fills (.venv, or
# $TESSERA_VENV). Needs Rust (cargo) and Python >= 3.9 with venv; everything
# else comes from crates.io and PyPI.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace
# The Python client's tests start this `tessera serve` (built by the line above).
export TESSERA_BIN="$PWD/target/debug/tessera"
VENV="${TESSERA_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "./python[test,ray]"
"$VENV/bin/python" -m pytest python/tests -q -rs
