#!/bin/sh
# run_kill_test.sh MODE PATTERN MPIEXEC [ARGS...] PROGRAM
# Runs `MPIEXEC ARGS... PROGRAM MODE` under `timeout 60` and passes when the whole job ended
# non-zero (not 124: a hang killed by timeout fails the test), within the limit, with PATTERN
# in its output. Used by CTest for dist_mpi_test's failure modes (die, hang, error).
set -u
mode=$1
pattern=$2
shift 2
out=$(mktemp)
start=$(date +%s)
timeout 60 "$@" "$mode" >"$out" 2>&1
rc=$?
elapsed=$(( $(date +%s) - start ))
cat "$out"
echo "run_kill_test: mode $mode: exit $rc after ${elapsed} s"
status=0
if [ "$rc" -eq 0 ]; then
    echo "run_kill_test: FAIL: the job exited 0 although rank 1 failed"; status=1
elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "run_kill_test: FAIL: the job hung (killed by timeout)"; status=1
elif ! grep -q -- "$pattern" "$out"; then
    echo "run_kill_test: FAIL: expected '$pattern' in the output"; status=1
fi
rm -f "$out"
exit $status
