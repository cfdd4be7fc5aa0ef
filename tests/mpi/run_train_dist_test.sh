#!/bin/sh
# run_train_dist_test.sh MODE WORKDIR VADER_TRAIN LORA_COMPARE MPIEXEC [ARGS...]
# vader-train under `MPIEXEC ARGS...` (mpirun -np 2 ...) with the embedded tiny config, one to
# two optimisation steps. MODE:
#   matches_single  2 ranks x accumulation 1 end with bit-identical LoRA on both ranks, equal
#                   (1e-6 relative) to one process with accumulation 2; then a resume on 2
#                   ranks for a second step matches the single process's second step too.
#   rank_errors     rank 1 fails at step 2: every rank exits non-zero, rank 1's message shown
#   rank_dies       rank 1 is SIGKILLed at step 2: the job exits non-zero, no hang
#   rank_hangs      rank 1 hangs at step 2: rank 0's watchdog (dist.timeout 3) ends the job
#   config_differs  rank 1 gets another --set: refused at start-up, naming the ranks
#   batch_split     data.global_batch_size 3 over 2 ranks: refused, listing what works
set -u
mode=$1 work=$2 train=$3 compare=$4
shift 4
rm -rf "$work"
mkdir -p "$work"
tiny="--set data.global_batch_size=2 --set output.checkpoint_every=1 --set dist.timeout=20"

fail() { echo "run_train_dist_test: $mode: FAIL: $*"; exit 1; }

# expect_failure PATTERN COMMAND...: the job must end non-zero within 60 s (not by timeout)
# with PATTERN in its output.
expect_failure() {
    pattern=$1
    shift
    start=$(date +%s)
    timeout 60 "$@" >"$work/out" 2>&1
    rc=$?
    elapsed=$(($(date +%s) - start))
    cat "$work/out"
    echo "run_train_dist_test: $mode: exit $rc after ${elapsed} s"
    [ "$rc" -ne 0 ] || fail "the job exited 0"
    # (a rank killed by SIGKILL makes mpirun exit 137 too: the elapsed time tells a hang)
    [ "$rc" -ne 124 ] && [ "$elapsed" -lt 60 ] || fail "the job hung (killed by timeout)"
    grep -q -- "$pattern" "$work/out" || fail "expected '$pattern' in the output"
    echo "run_train_dist_test: $mode: ok"
    exit 0
}

case $mode in
matches_single)
    # shellcheck disable=SC2086
    "$train" $tiny --set optim.accumulation=2 --set output.dir="$work/single" --steps 2 >"$work/single.log" 2>&1 ||
        { cat "$work/single.log"; fail "single-process run failed"; }
    cat "$work/single.log"
    # shellcheck disable=SC2086
    timeout 60 "$@" "$train" $tiny --set optim.accumulation=1 --set output.dir="$work/multi" --steps 1 \
        --debug-dump-lora "$work/multi/step1" || fail "2-rank run failed"
    "$compare" 0 "$work/multi/step1.rank0.safetensors" "$work/multi/step1.rank1.safetensors" ||
        fail "ranks hold different LoRA weights after step 1"
    "$compare" 1e-6 "$work/single/lora-000001.safetensors" "$work/multi/lora-000001.safetensors" ||
        fail "2 ranks x accumulation 1 differ from 1 process x accumulation 2 after step 1"
    # shellcheck disable=SC2086
    timeout 60 "$@" "$train" $tiny --set optim.accumulation=1 --set output.dir="$work/multi" --steps 2 --resume auto \
        --debug-dump-lora "$work/multi/step2" || fail "2-rank resume failed"
    "$compare" 0 "$work/multi/step2.rank0.safetensors" "$work/multi/step2.rank1.safetensors" ||
        fail "ranks hold different LoRA weights after the resumed step 2"
    "$compare" 1e-5 "$work/single/lora-000002.safetensors" "$work/multi/lora-000002.safetensors" ||
        fail "the resumed 2-rank run differs from 1 process x accumulation 2 after step 2"
    echo "run_train_dist_test: $mode: ok"
    ;;
rank_errors)
    # shellcheck disable=SC2086
    expect_failure "rank 1: vader-train: injected failure at step 2" \
        "$@" "$train" $tiny --set output.dir="$work/out.d" --steps 3 --debug-fail 2:1:error
    ;;
rank_dies)
    # shellcheck disable=SC2086
    expect_failure "" "$@" "$train" $tiny --set output.dir="$work/out.d" --steps 3 --debug-fail 2:1:kill
    ;;
rank_hangs)
    # shellcheck disable=SC2086
    expect_failure "rank 0: .* timed out after 3 s waiting for peers" \
        "$@" "$train" $tiny --set dist.timeout=3 --set output.dir="$work/out.d" --steps 3 --debug-fail 2:1:hang
    ;;
config_differs)
    cat >"$work/rank1_differs.sh" <<EOF
#!/bin/sh
r=\${OMPI_COMM_WORLD_RANK:-\${PMI_RANK:-0}}
if [ "\$r" = 1 ]; then exec "$train" "\$@" --set optim.lr=1e-3; else exec "$train" "\$@"; fi
EOF
    # shellcheck disable=SC2086
    expect_failure "resolved config differs between ranks (1 of 2 differ from rank 0): rank 0 has [0-9a-f]*, rank 1 has" \
        "$@" sh "$work/rank1_differs.sh" $tiny --set output.dir="$work/out.d" --steps 1
    ;;
batch_split)
    expect_failure "data.global_batch_size: batch size 3 cannot be split over 2 ranks x 1 accumulation step.*world sizes that work with 1 accumulation step: 1, 3" \
        "$@" "$train" --set data.global_batch_size=3 --set output.dir="$work/out.d" --steps 1
    ;;
*)
    fail "unknown mode"
    ;;
esac
