#!/usr/bin/env bash
# The main job from nothing: set up .venv, compress the bundled SmolLM2-135M-Instruct with HQQ INT4, generate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/nncf-hqq compress --dst outputs/smollm2-135m-hqq-int4 --overwrite
.venv/bin/nncf-hqq generate outputs/smollm2-135m-hqq-int4 "The capital of France is"
