#!/usr/bin/env bash
# Download the wheels scripts/gpu_check.sh installs on a GPU machine that has no package registry
# (python 3.12 there, with torch, transformers, triton, pandas, matplotlib, tqdm, safetensors, numpy,
# PyYAML, packaging, click, joblib, regex already installed): exactly the packages vh_bench needs and
# that machine lacks, pinned to the versions tested here. Run where pip reaches a registry:
#     scripts/fetch_gpu_wheels.sh [DIR]        # default .whl/ (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-python3}
PYVER=${GPU_PYTHON_VERSION:-3.12}
mkdir -p "$DEST"
# Binary wheels for the GPU machine's interpreter, whatever this machine runs.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" \
  "hydra-core==1.3.8" "omegaconf==2.3.1" "nltk==3.10.4" "pycocotools==2.0.11"
# antlr4-python3-runtime 4.9.3 (hydra's parser) is published as a source archive only: build its
# pure-Python wheel here (it runs on any Python 3).
if ! ls "$DEST"/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1; then
  "$PY" -m pip wheel --quiet --no-deps -w "$DEST" "antlr4-python3-runtime==4.9.3"
fi
ls -1 "$DEST"/*.whl
