#!/usr/bin/env bash
# The GPU check for the first device lent to the project (issue 24, part 3): install, print
# the device, run the CUDA tests, then time a sweep and extrapolate it to a 51x51 plane.
# Every step has its own timeout and the script goes on after a failing one, reporting it
# and exiting non-zero at the end. --cpu (or LSURF_GPU_CHECK_DEVICE=cpu) runs the same steps
# on the CPU with tiny sizes, so tests/test_gpu_check.py checks the script here.
# LSURF_GPU_CHECK_FAIL=STEP makes that step fail (for the test of the exit code).
set -u
out=${OUT:-runs/gpu-check}
device=${LSURF_GPU_CHECK_DEVICE:-cuda}
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --cpu) device=cpu; shift ;;
    *) echo "gpu_check.sh: unknown option $1; use --out DIR or --cpu" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
report=$out/gpu-check-report.md
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
if [ "$device" = cpu ]; then
  model=resnet20 train_size=500 slice_rows=3 budget=120
else
  model=resnet56 train_size=50000 slice_rows=3 budget=240
fi
failed=0
echo "# lsurf GPU check ($device)" >"$report"

# Install: a torch already importable wins (the device machine cannot reach a package index
# and a venv with torch is over the 64 MiB carry), else the project's own `make install`.
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, lsurf" 2>/dev/null; then
  python=.venv/bin/python
elif python3 -c "import torch" 2>/dev/null; then
  # No pip install of lsurf itself: PYTHONPATH below finds it, and never rewrites
  # whichever environment python3 belongs to.
  python=python3
else
  make install >/dev/null && python=.venv/bin/python
fi
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}

step() {  # step NAME SECONDS COMMAND...: run it under timeout, record pass/fail + tail
  local name=$1 seconds=$2 log=$out/$1.log status
  shift 2
  if [ "${LSURF_GPU_CHECK_FAIL:-}" = "$name" ]; then
    echo "injected failure (LSURF_GPU_CHECK_FAIL=$name)" >"$log"; status=1
  else
    timeout "$seconds" "$@" >"$log" 2>&1; status=$?
  fi
  if [ $status -eq 0 ]; then result=pass; else result="FAIL (exit $status)"; failed=1; fi
  echo "step $name: $result"
  { echo; echo "## step $name: $result"; echo; echo '```'; tail -n 20 "$log"; echo '```'; } >>"$report"
}

step device 60 bash -c "nvidia-smi || echo 'nvidia-smi: not found'; $python -c '
import torch
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda)
print(\"device\", torch.cuda.get_device_name() if torch.cuda.is_available() else \"cpu\")'"
step cuda-tests 240 "$python" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py -s

# The data and a seeded random-init checkpoint of the timed model: the per-point cost does
# not depend on the weights or the coordinates.
work=$out/work
step data 240 bash -c "$python -m lsurf data synth --out $work/data --train-size $train_size \
  --test-size 100 && $python -c '
import torch; from lsurf import models
torch.manual_seed(0); torch.save(models.build(\"$model\").state_dict(), \"$work/model.pt\")'"

rows=$out/timing.rows
: >"$rows"
for precision in fp32 bf16 tf32; do
  if [ "$device" = cpu ] && [ "$precision" = bf16 ]; then continue; fi
  goal=3; [ "$precision" = fp32 ] && goal=10
  points=$((slice_rows * 51)); [ "$device" = cpu ] && points=$((slice_rows * 3))
  cols=$((points / slice_rows))
  cat >"$work/sweep-$precision.yaml" <<YAML
model: {name: $model, checkpoint: $work/model.pt}
data: {root: $work/data, splits: [train], batch_size: 500}
directions: {kind: random, norm: filter, ignore: biasbn, seed: 0}
grid: {x: "-1:1:$cols", y: "-1:1:$slice_rows"}
evaluation: {device: $device, precision: $precision}
output: $work/surface-$precision.h5
YAML
  start=$(date +%s.%N)
  step "timing-$precision" "$budget" "$python" -m lsurf sweep "$work/sweep-$precision.yaml"
  end=$(date +%s.%N)
  if [ "$result" = pass ]; then
    "$python" - "$start" "$end" "$points" "$goal" "$precision" >>"$rows" <<'PY'
import sys
start, end, points = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
goal, precision = float(sys.argv[4]), sys.argv[5]
rate = (end - start) / points  # seconds per point, start-up included: an upper bound
minutes = rate * 2601 / 60
print(f"| {precision} | {points} | {end - start:.3f} | {rate:.6f} | {minutes:.3f} | {goal:g} | {'met' if minutes <= goal else 'missed'} |")
PY
  fi
done
{
  echo; echo "## timing (extrapolated to a 51x51 plane: minutes = s/point x 2601 / 60)"; echo
  echo '| precision | points | seconds | s/point | minutes for 2601 | goal (min) | verdict |'
  echo '| --- | --- | --- | --- | --- | --- | --- |'
  cat "$rows"
} >>"$report"
rm -f "$rows"
tail -n 5 "$report"
echo "report: $report"
exit $failed
