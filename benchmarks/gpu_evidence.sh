#!/usr/bin/env bash
# GPU evidence on the device machine: install the carried wheels (diffusers and what the image
# lacks) into /tmp/site, then run benchmarks/gpu_evidence.py. Usage, from the repository root:
#   benchmarks/gpu_evidence.sh [--models zimage,flux1] [--resolutions 1024x1024,1536x1536] ...
# Wheels: put them in .whl/ (pip download --only-binary=:all: --python-version 3.12 ...).
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
exec python3 benchmarks/gpu_evidence.py "$@"
