#!/bin/sh
# Runs ON the GPU machine (device tool), from the repository root, with .gpu/ carried (made by
# scripts/gpu-bundle.sh here): the CUDA test binaries, vader-fixture --device cuda on every
# fixture, compute-sanitizer memcheck on test_cuda_ops when present, and one vader-bench run
# (device=cuda; vader-bench itself does not yet build its models on the GPU: see the report).
# Logs go to $OUT (or ./gpu-logs); the exit status is non-zero when any part failed.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-logs}
mkdir -p "$OUT"
nvlib=$(python3 -c 'import nvidia,os;p=os.path.dirname(nvidia.__path__[0]);d=os.path.join(p,"nvidia");print(":".join(os.path.join(d,x,"lib") for x in sorted(os.listdir(d))))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$PWD/.gpu/lib${nvlib:+:$nvlib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export VADER_SHARED=${VADER_SHARED:-$PWD/shared}
[ -d "$VADER_SHARED/fixtures" ] || VADER_SHARED=$PWD/../shared
fail=0
run() {  # run NAME CMD...: log to $OUT/NAME.log, one summary line
  name=$1; shift
  "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  echo "$name: rc=$rc" | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || fail=1
}
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
for t in .gpu/bin/test_cuda_*; do
  [ -x "$t" ] && run "$(basename "$t")" "$t"
done
for fx in "$VADER_SHARED"/fixtures/*.json tests/fixtures/*.json; do
  [ -e "$fx" ] || continue
  n=$(basename "$fx" .json)
  run "fixture_cuda.$n" .gpu/bin/vader-fixture "${fx%.json}" --device cuda
done
if command -v compute-sanitizer >/dev/null 2>&1 && [ -x .gpu/bin/test_cuda_ops ]; then
  run memcheck.test_cuda_ops compute-sanitizer --tool memcheck --error-exitcode 1 .gpu/bin/test_cuda_ops
fi
[ -x .gpu/bin/vader-bench ] && run vader-bench .gpu/bin/vader-bench --set device=cuda --steps 3 --warmup 1 --json "$OUT/bench.json"
exit $fail
