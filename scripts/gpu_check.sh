#!/usr/bin/env bash
# The prepared GPU check, one command on a machine you have not seen (no registry, no model hub):
#     scripts/gpu_check.sh [--out DIR] [--wheels DIR] [--model NAME] [--cpu-smoke] [-- ARGS for gpu_check.py]
# Checks python, torch and CUDA and prints their versions; installs what vh_bench needs and the
# machine lacks (hydra-core, omegaconf, antlr4, nltk, pycocotools) from the wheel folder (default
# .whl/, made by scripts/fetch_gpu_wheels.sh); then runs `python -m vh_bench.bench.gpu_check`:
# identity checks, `bench launches`, `bench speed` greedy and beam 3 on a random LLaVA-1.5-7B-shaped
# model in float16 (32 layers), writing gpu_check.{json,md} (and the benches' tables) under --out
# (default $OUT, else results/gpu/<date>). Every failure is one line starting "gpu_check: FAILED".
# Budget: no stage starts after GPU_CHECK_BUDGET_S seconds (default 360); the whole run is cut at
# GPU_CHECK_TIMEOUT_S (default 470) so that it ends within 8 minutes.
set -uo pipefail
die() { echo "gpu_check: FAILED: $*" >&2; exit 1; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || die "cannot find the repository root"
cd "$REPO" || die "cannot enter $REPO"
PY=${PYTHON:-python3}
WHEELS=$REPO/.whl
OUT_DIR=${OUT:-}
MODEL=${GPU_CHECK_MODEL:-llava-1.5-7b-shape}
SMOKE=()
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT_DIR=${2:?--out needs a folder}; shift 2 ;;
    --wheels) WHEELS=${2:?--wheels needs a folder}; shift 2 ;;
    --model) MODEL=${2:?--model needs a configs/model name}; shift 2 ;;
    --cpu-smoke) SMOKE=(--cpu-smoke); shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument $1 (see the header of scripts/gpu_check.sh)" ;;
  esac
done
[ -n "$OUT_DIR" ] || OUT_DIR=$REPO/results/gpu/$(date -u +%Y-%m-%d)
mkdir -p "$OUT_DIR" || die "cannot create the output folder $OUT_DIR"

command -v "$PY" >/dev/null 2>&1 || die "no $PY on PATH (set PYTHON=/path/to/python3)"
# One interpreter start for the checks (torch's import is the slow part): python ≥ 3.10, torch,
# versions, CUDA. Exit 3: old python, 4: no torch, 5: no CUDA (not asked for with --cpu-smoke).
NEED_CUDA=1
[ ${#SMOKE[@]} -eq 0 ] || NEED_CUDA=0
NEED_CUDA=$NEED_CUDA "$PY" - <<'PYEOF'
import os, platform, sys
if sys.version_info < (3, 10):
    sys.exit(3)
try:
    import torch
except Exception as exc:
    print(f"gpu_check: importing torch: {type(exc).__name__}: {exc}")  # stdout: the failure stays one line
    sys.exit(4)
cuda = torch.cuda.is_available()
print(f"gpu_check: python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"cuda available: {cuda}" + (f", {torch.cuda.get_device_name(0)}" if cuda else ""))
sys.exit(5 if os.environ["NEED_CUDA"] == "1" and not cuda else 0)
PYEOF
case $? in
  0) ;;
  3) die "$PY is older than Python 3.10" ;;
  4) die "torch does not import with $PY" ;;
  5) die "torch sees no CUDA device (driver, CUDA_VISIBLE_DEVICES?); --cpu-smoke tests the script without one" ;;
  *) die "checking python and torch failed" ;;
esac
if [ $NEED_CUDA -eq 1 ] && command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu_check: nvidia-smi: /'
fi

# Missing Python packages, from the wheel folder (only the missing ones: never shadow what is there).
MISSING=$("$PY" - <<'PYEOF'
import importlib.util
need = {"hydra": "hydra_core", "omegaconf": "omegaconf", "antlr4": "antlr4_python3_runtime", "nltk": "nltk",
        "pycocotools": "pycocotools"}
print(" ".join(wheel for module, wheel in need.items() if importlib.util.find_spec(module) is None))
PYEOF
) || die "checking the installed packages failed"
if [ -n "$MISSING" ]; then
  FILES=()
  for name in $MISSING; do
    found=$(ls "$WHEELS"/"$name"-*.whl 2>/dev/null | head -1)
    [ -n "$found" ] || die "$name is not installed and no $WHEELS/$name-*.whl (run scripts/fetch_gpu_wheels.sh where pip reaches a registry and carry .whl/)"
    FILES+=("$found")
  done
  SITE=${GPU_CHECK_SITE:-/tmp/vh_bench_site}
  echo "gpu_check: installing from $WHEELS into $SITE: $MISSING"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${FILES[@]}" \
    || die "pip could not install the wheels ${FILES[*]}"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export VH_BENCH_CACHE=${VH_BENCH_CACHE:-$REPO/.cache}
# --cpu-smoke: the Triton kernels run interpreted (read by triton when first imported).
[ ${#SMOKE[@]} -eq 0 ] || export TRITON_INTERPRET=${TRITON_INTERPRET:-1}
"$PY" -c 'import hydra, omegaconf, vh_bench.bench.gpu_check' 2>/dev/null \
  || die "vh_bench does not import: $("$PY" -c 'import vh_bench.bench.gpu_check' 2>&1 | tail -1)"

if [ ${#SMOKE[@]} -eq 0 ] && [ ! -f "$REPO/configs/model/$MODEL.yaml" ]; then
  echo "gpu_check: note: configs/model/$MODEL.yaml is not in this checkout; using model=bench (32 layers, float16) instead"
  MODEL=bench
fi
echo "gpu_check: running (model $MODEL, output $OUT_DIR)"
timeout --signal=INT "${GPU_CHECK_TIMEOUT_S:-470}" "$PY" -m vh_bench.bench.gpu_check --out "$OUT_DIR" --model "$MODEL" \
  --budget-s "${GPU_CHECK_BUDGET_S:-360}" ${SMOKE[@]+"${SMOKE[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
rc=$?
[ $rc -eq 124 ] && die "cut at ${GPU_CHECK_TIMEOUT_S:-470} s; what finished is in $OUT_DIR/gpu_check.md"
[ $rc -eq 0 ] || die "gpu_check.py exited $rc; see $OUT_DIR/gpu_check.md"
echo "gpu_check: done: $OUT_DIR/gpu_check.md"
