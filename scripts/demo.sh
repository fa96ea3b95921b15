#!/usr/bin/env bash
# The main job from nothing: set up .venv, compress the bundled SmolLM2-135M-Instruct with HQQ INT4, generate.
# Each step ends with the time it took.
set -euo pipefail
cd "$(dirname "$0")/.."
timed() {  # timed "step" command...: runs the command, then prints how long it took
    local what=$1 t0=$SECONDS
    shift
    "$@"
    echo "[$what: $((SECONDS - t0)) s]"
}
timed "set-up" bash scripts/setup_env.sh
timed "compression" .venv/bin/nncf-hqq compress --dst outputs/smollm2-135m-hqq-int4 --overwrite
timed "generation" .venv/bin/nncf-hqq generate outputs/smollm2-135m-hqq-int4 "The capital of France is"
