#!/usr/bin/env bash
# Creates .venv in the repository root and installs nncf-hqq with everything the tests, the CLI and the
# benchmarks need. torch is pinned to the CPU build first: any other torch spec pulls GBs of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0 torchvision==0.28.0
.venv/bin/python -m pip install --quiet -e ".[llm,test]"
