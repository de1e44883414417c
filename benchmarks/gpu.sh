#!/usr/bin/env bash
# The GPU path, proven in one command on a machine with a CUDA GPU and no package registry:
#
#   make gpu-wheels                  # here, with a registry: the wheels the GPU image lacks, into .wheels/
#   bash benchmarks/gpu.sh           # there, with .wheels/ carried along; results into $OUT (default runs/gpu)
#
# Steps, each logged to $OUT/<step>.log and timed, in the order of what matters most; a step that
# fails is recorded and the next one still runs; a step that would overrun the time left is skipped:
#   install  the carried wheels (--no-deps, --no-index), then proxyaug itself (--no-deps, --no-index)
#   tests    the tensor tests with PROXYAUG_TEST_DEVICE=cuda (host-sync checks, AMP, channels_last,
#            two ranks on one GPU), junit XML in $OUT/tests-cuda.xml
#   speed    python -m benchmarks.speed --preset gpu, one case per call merged into $OUT/speed-gpu.json
#            (a case that overruns its limit leaves the others' figures)
#   scale    the ImageNet estimate from the GPU costs ($OUT/scale-imagenet.md)
#   train    a short training run of the study harness on the GPU (the demo preset, one seed)
# and $OUT/gpu-summary.json: the device, the versions, each step's status and seconds.
#
# BUDGET_S (default 570) is the whole run's limit: a lent machine runs one command for at most 10
# minutes. Pick steps with STEPS="tests speed" (default: all); SPEED_CASES, TEST_FILES and
# TRAIN_ARGS override what those steps run.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-runs/gpu}"
PY="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-570}"
STEPS="${STEPS:-install tests speed scale train}"
SPEED_CASES="${SPEED_CASES:-maps transform thesis formats bank e2e metrics}"
TEST_FILES="${TEST_FILES:-tests/test_device.py tests/test_bank.py tests/test_transform.py tests/test_functional.py tests/test_compile.py tests/test_compose.py tests/test_attention.py tests/test_metrics.py tests/test_dataset.py tests/test_refresh.py tests/test_distributed.py tests/test_engine.py tests/test_metrics_fidelity.py}"
TRAIN_ARGS="${TRAIN_ARGS:---preset demo --seeds 0 --device cuda --out $OUT/train --fresh}"
mkdir -p "$OUT"
START=$SECONDS
SUMMARY="$OUT/steps.jsonl"
: > "$SUMMARY"

log() { echo "[gpu.sh +$((SECONDS - START))s] $*" | tee -a "$OUT/gpu.log"; }
left() { echo $((BUDGET_S - (SECONDS - START))); }

# step NAME LIMIT_S COMMAND...: run COMMAND under `timeout` (at most LIMIT_S and the time left), log it, record it
step() {
  local name=$1 limit=$2 rc t0
  shift 2
  if [ "$(left)" -lt 20 ]; then
    log "$name: skipped (only $(left) s of the ${BUDGET_S} s budget left)"
    echo "{\"step\": \"$name\", \"status\": \"skipped\", \"seconds\": 0}" >> "$SUMMARY"
    return 0
  fi
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  log "$name: $* (limit ${limit} s)"
  t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local status=ok
  [ $rc -ne 0 ] && status="failed (exit $rc$([ $rc -eq 124 ] && echo ', timed out'))"
  log "$name: $status in $((SECONDS - t0)) s; last lines of $name.log:"
  tail -n 4 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$OUT/gpu.log"
  echo "{\"step\": \"$name\", \"status\": \"$status\", \"exit\": $rc, \"seconds\": $((SECONDS - t0))}" >> "$SUMMARY"
}

has() { [[ " $STEPS " == *" $1 "* ]]; }

log "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'nvidia-smi not found')"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

if has install; then
  if ls .wheels/*.whl > /dev/null 2>&1; then
    step install-wheels 120 "$PY" -m pip install --disable-pip-version-check --no-index --no-deps .wheels/*.whl
  else
    log "install-wheels: no .wheels/ here (make gpu-wheels, then carry .wheels); using what the image has"
  fi
  step install-proxyaug 120 "$PY" -m pip install --disable-pip-version-check --no-index --no-deps --no-build-isolation -e .
  "$PY" -m pip check > "$OUT/pip-check.log" 2>&1 || log "pip check reports missing or conflicting requirements (pip-check.log)"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # proxyaug and benchmarks from this tree, installed or not

"$PY" - > "$OUT/environment.json" 2>> "$OUT/gpu.log" <<'EOF'
import importlib.metadata as md, json, platform, torch
names = ["torch", "torchvision", "timm", "kornia", "grad-cam", "torchcam", "captum", "scikit-learn", "scipy", "matplotlib", "pytest", "numpy"]
def v(n):
    try:
        return md.version(n)
    except md.PackageNotFoundError:
        return None
cuda = torch.cuda.is_available()
print(json.dumps({"python": platform.python_version(), "cuda_available": cuda,
                  "device": torch.cuda.get_device_name(0) if cuda else None, "cuda": torch.version.cuda,
                  "versions": {n: v(n) for n in names}}, indent=2))
EOF

if has tests; then
  # shellcheck disable=SC2086
  step tests 240 env PROXYAUG_TEST_DEVICE=cuda "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -rs \
    --junitxml="$OUT/tests-cuda.xml" $TEST_FILES
fi

if has speed; then
  "$PY" -c "import pytorch_grad_cam" 2> /dev/null || { SPEED_CASES="${SPEED_CASES/metrics/}"; log "speed: no pytorch-grad-cam here: its peer rows say 'not installed' and the metrics case is left out"; }
  for case in $SPEED_CASES; do
    step "speed-$case" 150 "$PY" -m benchmarks.speed --preset gpu --cases "$case" --merge --out "$OUT"
  done
fi

if has scale && [ -f "$OUT/speed-gpu.json" ]; then
  step scale 30 "$PY" -m benchmarks.scale_estimate --json "$OUT/speed-gpu.json" --out "$OUT/scale-imagenet.md"
fi

if has train; then
  # shellcheck disable=SC2086
  step train 120 "$PY" -m benchmarks.train $TRAIN_ARGS
fi

"$PY" - "$OUT" "$((SECONDS - START))" "$BUDGET_S" <<'EOF' | tee -a "$OUT/gpu.log"
import json, os, sys
out, seconds, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
env = json.load(open(os.path.join(out, "environment.json"))) if os.path.exists(os.path.join(out, "environment.json")) else {}
steps = [json.loads(line) for line in open(os.path.join(out, "steps.jsonl"))]
summary = {"device": env.get("device"), "environment": env, "seconds": seconds, "budget_s": budget, "steps": steps,
           "files": sorted(f for f in os.listdir(out) if f != "gpu-summary.json")}
json.dump(summary, open(os.path.join(out, "gpu-summary.json"), "w"), indent=2)
print(f"gpu.sh: {sum(s['status'] == 'ok' for s in steps)} of {len(steps)} steps ok in {seconds} s on {env.get('device')}; {out}/gpu-summary.json")
EOF
