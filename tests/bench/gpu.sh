#!/usr/bin/env bash
# `make bench-gpu`: the bench on a CUDA GPU, one JSON line at the end (sized for <= 5 minutes on an H100/H200).
#
# On the GPU machine (Python 3.12, torch + CUDA, no internet), after tests/bench/gpu_prepare.sh filled .whl/
# here and .whl travelled with the working tree:   bash tests/bench/gpu.sh [--out FILE]
# It installs the carried wheels into /tmp/site (pip --no-index), then runs tests/bench/bench.py with
# --device cuda --train-time: model only, decode, the CUDA backends against the fp32 model on the CPU (label and
# novelty-flag agreement), the worker end to end on the embedded broker, and a shortened paper-profile fit
# on the GPU with its full time extrapolated. `--dry` runs the same steps on the CPU with tiny sizes (CI).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if [[ " $* " == *" --dry "* ]]; then  # here, in the project's environment: no wheels, no GPU, generated data
  exec $PYTHON -m tests.bench.bench --device cpu --train-time "$@"
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
[[ -d .whl/data ]] && export FLOWWARDEN_DATA=$PWD/.whl/data
[[ -d .whl/cache ]] && export FLOWWARDEN_BENCH_CACHE=$PWD/.whl/cache
$PYTHON -c 'import torch, sys; torch.cuda.is_available() or sys.exit("bench-gpu: torch sees no CUDA GPU")'
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
exec $PYTHON -m tests.bench.bench --device cuda --train-time --e2e-flows 60000 "$@"
