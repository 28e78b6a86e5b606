#!/usr/bin/env bash
# GPU benchmarks in one go (needs CUDA): DALI mixed decode and FFCV ToDevice loaders, spikingjelly's Triton
# LIF kernel, bf16 channels-last training steps of spikingresformer_ti/_l at 224 px (eager and compiled),
# the DA-SSDP hook's overhead, and the trainer end to end (data-wait share). Writes JSON + PNG per mode to
# $OUT (default bench-out/gpu) and a summary table; budget under 8 minutes on one H200-class GPU.
#
# STATUS: UNTESTED ON A GPU. It was written on a CPU-only machine (no GPU was lent to that session); the
# CPU paths of every command below are tested, the CUDA paths are written to the libraries' documented APIs.
#
# usage: tools/gpu_check.sh            (from anywhere; runs in the repository root)
#        OUT=/tmp/gpu PY=/path/python tools/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out/gpu}
PY=${PY:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
mkdir -p "$OUT"
export DASSDP_BENCH_CACHE=${DASSDP_BENCH_CACHE:-$OUT/cache}
start=$(date +%s)

# --- set-up: CUDA present, project importable (editable install only when it is not) -----------------------
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: torch sees no CUDA device (PY=$PY); run this on a GPU machine" >&2
  exit 2
fi
if ! "$PY" -c "import tools.bench, models, pipelines, dassdp, ffcv, nvidia.dali" 2>/dev/null; then
  echo "gpu_check: installing the project (pip install -e '.[ffcv,dali]')" >&2
  "$PY" -m pip install -q -e '.[ffcv,dali]' || { echo "gpu_check: install failed" >&2; exit 3; }
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
"$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))" \
  | tee "$OUT/torch.txt"

failed=()
bench() {  # bench NAME SECONDS ARGS... : one dassdp-bench run under a hard time limit
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s) ==="
  if ! timeout --signal=INT --kill-after=10 "$limit" "$PY" -m tools.bench.cli "$@" --device cuda \
       --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1; then
    failed+=("$name"); echo "gpu_check: $name failed or timed out; see $OUT/$name.log" >&2
  fi
  tail -n 12 "$OUT/$name.log"
}

# --- data: 3,000 real-photo JPEGs and their ffcv/dali conversions (cached in $DASSDP_BENCH_CACHE) ----------
echo "=== data ==="
timeout 90 "$PY" - <<'EOF' || { echo "gpu_check: data preparation failed" >&2; exit 4; }
from tools.bench.mode_loaders import FULL, converted
from tools.bench.photos import build_tree, default_cache
tree = build_tree(default_cache() / f"photos-{FULL['images']}-{FULL['val_images']}-q{FULL['jpeg_quality']}",
                  FULL["images"], FULL["val_images"], quality=FULL["jpeg_quality"])
print(converted(tree, "ffcv"), converted(tree, "dali"))
EOF

# --- the benchmarks (limits add up to about 6 minutes) -----------------------------------------------------
# loaders: ffcv (ToDevice) and DALI (device_id=0, mixed decode) vs torchvision DataLoader + pinned copy.
bench loaders 60 loaders --set images=3000 --set repeats=3 --set workers=8 --set batch_size=256
# Triton LIF kernel vs the per-step Python loop, then ti (compiled and eager) and L (eager) in bf16.
bench neurons 30 model --set configs= --set neuron_shapes=4x64x64x56x56,4x64x384x14x14
bench model_ti 130 model --set configs=spikingresformer_ti:224:4:64:bf16 --set compile=true \
  --set official=false --set steps_per_repeat=10 --set warmup=2 --set repeats=5 --set neuron_shapes=
bench model_l 60 model --set configs=spikingresformer_l:224:4:32:bf16 --set compile=false \
  --set official=false --set steps_per_repeat=5 --set warmup=2 --set repeats=3 --set neuron_shapes=
# DA-SSDP: hook overhead at the recipe's CIFAR step and dW at ImageNet-L shapes.
bench dassdp 40 dassdp --set steps_per_repeat=10 --set repeats=5 --set warmup=3
# the trainer end to end on the JPEG tree with each backend (bf16, 224 px, DA-SSDP on).
bench e2e 50 e2e --set model=spikingresformer_ti --set size=224 --set batch_size=64 --set workers=8 --set amp=true \
  --set steps=20 --set repeats=2

"$PY" - "$OUT" <<'EOF'
import json, sys, pathlib
from tools.bench.report import format_table
out = pathlib.Path(sys.argv[1])
for p in sorted(out.glob("*.json")):
    doc = json.loads(p.read_text())
    print(f"--- {p.name}"); print(format_table(doc))
EOF
echo "gpu_check: done in $(( $(date +%s) - start )) s; JSON, PNG and logs in $OUT"
if [ ${#failed[@]} -gt 0 ]; then echo "gpu_check: FAILED: ${failed[*]}" >&2; exit 1; fi
