#!/bin/sh
# gpu-run-tests.sh — every GPU check of vader in one device-tool call. Runs ON the GPU machine
# from the repository root with .gpu/ carried (made here by scripts/gpu-bundle.sh):
#
#   sh scripts/gpu-run-tests.sh            (device tool: carry [".gpu"], timeout_s 600)
#
# Unpacks .gpu/bundle-*.tar.xz to $VADER_GPU_DIR (/tmp/vader-gpu), puts the bundle's libraries and
# the machine's CUDA wheels (site-packages/nvidia/*/lib: cuBLAS, cuDNN, NCCL, cudart) on
# LD_LIBRARY_PATH, records the machine and an ldd check of every binary, then runs in order,
# each under its own `timeout` and never stopping at a failure:
#   cuda_ops       test_cuda_ops (gtest; XML too)            every CUDA kernel vs the CPU
#   cuda_step      test_cuda_step                            a tiny VADER step, CPU vs GPU
#   memplan        test_bench_memplan Memplan.*dtype/Gpu*    the plan on the GPU (cudaMemGetInfo)
#   train_tiny     vader-train tiny config, device cuda      the trainer end to end, 3 steps
#   fixture.NAME   vader-fixture NAME --device cuda          the 4 model + 8 reward fixtures,
#                                                            and vc2_unet_tiny with --segments
#   memcheck       compute-sanitizer memcheck test_cuda_ops  (FullSizeShapes left out)
#   racecheck      compute-sanitizer racecheck, the shared-memory kernels' tests
#   initcheck      compute-sanitizer initcheck, same subset (only when time is left)
#   bench_tiny     vader-bench --device cuda --steps 1       the embedded tiny config
#   bench_mid      vader-bench, full-size VideoCrafter2 shapes (manifests, random values) at
#                  128x128, 4 frames, DDIM 2, colour reward
#   train_full     vader-train configs/hps.yaml --random-weights: the paper's shapes and HPS
#                  reward, one step of one micro-batch, DDIM 4
# A deadline (VADER_GPU_DEADLINE seconds after the start, default 570) caps every step's
# timeout so the summary is always written inside the device tool's 600 s; a step with no time
# left is recorded as skipped. Follow-up calls can run a part: VADER_GPU_STEPS (an extended
# regex over the step names above, e.g. '^(cuda_ops|fixture\.vc2.*)$'), VADER_GPU_GTEST_FILTER
# (test_cuda_ops' --gtest_filter), and the CUDA environment passes through (CUDA_LAUNCH_BLOCKING=1
# makes an asynchronous kernel fault surface at its own launch's check, naming file and line).
#
# Output: at most 8 files directly in $OUT (the device tool brings back 8 files, 2 folders
# deep): summary.txt (one line per step: PASS / FAIL rc / SKIP, seconds), env.txt (machine,
# libraries, ldd check), cuda_ops.log, cuda_ops.xml, cuda_step.log (cuda_step, memplan,
# train_tiny), fixtures.log, sanitizer.log, bench.log. The exit status is 0 only when no step
# failed; the summary is printed at the end. Without a GPU every step skips, saying so, and the
# script still finishes (a dry run of the bundle: VADER_GPU_DRYRUN_CPU=1 then also runs the
# fixtures on the CPU from the bundle's shared/, which checks the bundle has every file).
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
START=$(date +%s)
DEADLINE=${VADER_GPU_DEADLINE:-570}
OUT=${OUT:-$ROOT/gpu-logs}
D=${VADER_GPU_DIR:-/tmp/vader-gpu}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
ENV=$OUT/env.txt
: >"$SUMMARY"
: >"$ENV"
FAILED=0
STEPLOG=$(mktemp "${TMPDIR:-/tmp}/vader-gpu-step.XXXXXX")
trap 'rm -f "$STEPLOG"' EXIT

elapsed() { echo $(($(date +%s) - START)); }
note() { echo "$*" >>"$SUMMARY"; }

# step NAME MAX_SECONDS LOG CMD...: runs CMD with its output appended to LOG under
# timeout min(MAX, time left - 10); one summary line.
step() {
    name=$1 max=$2 log=$3
    shift 3
    if [ -n "${VADER_GPU_STEPS:-}" ] && ! echo "$name" | grep -Eq "$VADER_GPU_STEPS"; then
        return 0  # not selected
    fi
    left=$((DEADLINE - $(elapsed) - 10))
    t=$max
    [ "$left" -lt "$t" ] && t=$left
    if [ "$t" -lt 5 ]; then
        note "$(printf '%-34s SKIP  (no time left before the %ss deadline)' "$name" "$DEADLINE")"
        return 0
    fi
    {
        echo
        echo "==== $name (timeout ${t}s): $*"
    } >>"$log"
    s0=$(date +%s)
    timeout -k 5 "$t" "$@" >"$STEPLOG" 2>&1
    rc=$?
    dt=$(($(date +%s) - s0))
    cat "$STEPLOG" >>"$log"
    echo "==== $name: rc=$rc after ${dt}s" >>"$log"
    # gtest exits 0 when its tests skip (no GPU): report that as a skip, not a pass
    skipped=$(grep -c '^\[  SKIPPED \] [A-Za-z]' "$STEPLOG")
    if [ $rc -eq 0 ] && [ "$skipped" -gt 0 ] && grep -q '^\[  PASSED  \] 0 tests' "$STEPLOG"; then
        st=SKIP
    elif [ $rc -eq 0 ]; then
        st=PASS
        [ "$skipped" -gt 0 ] && st="PASS  ($skipped skipped)"
    elif [ $rc -eq 77 ]; then
        st=SKIP
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        st="FAIL  timeout after ${t}s"
        FAILED=1
    else
        st="FAIL  rc=$rc"
        FAILED=1
    fi
    note "$(printf '%-34s %-5s %4ss  (%s)' "$name" "$st" "$dt" "$(basename "$log")")"
    return 0
}

# ---- unpack ------------------------------------------------------------------------------
if [ -f .gpu/bundle-bin.tar.xz ]; then
    rm -rf "$D" && mkdir -p "$D"
    for a in .gpu/bundle-*.tar.xz; do
        if command -v xz >/dev/null 2>&1; then
            xz -dc "$a" | tar -xf - -C "$D"
        else
            python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$a" "$D"
        fi || echo "gpu-run-tests: cannot unpack $a" | tee -a "$SUMMARY"
    done
elif [ -d .gpu/bin ]; then
    D=$ROOT/.gpu  # an unpacked bundle
else
    echo "gpu-run-tests: no .gpu/bundle-bin.tar.xz: run scripts/gpu-bundle.sh here and carry .gpu" | tee -a "$SUMMARY"
    exit 2
fi
# compute-sanitizer and nvcc live there when not on PATH
[ -d /usr/local/cuda/bin ] && PATH=$PATH:/usr/local/cuda/bin
B=$D/bin
export VADER_SHARED="$D/shared"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"

# ---- libraries: the bundle's, then the CUDA wheels' (every folder under site-packages/nvidia
# holding a lib*.so*), then the driver's and a system CUDA's as fallbacks ---------------------
wheels=$(python3 - <<'EOF' 2>/dev/null
import os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
dirs = []
for r in roots:
    for d, _, files in os.walk(r):
        if any(f.startswith("lib") and ".so" in f for f in files) and d not in dirs:
            dirs.append(d)
print(":".join(sorted(dirs)))
EOF
)
fallback=""
for d in /usr/local/nvidia/lib64 /usr/local/cuda/lib64 /usr/local/cuda/lib; do
    [ -d "$d" ] && fallback="$fallback:$d"
done
export LD_LIBRARY_PATH="$D/lib${wheels:+:$wheels}$fallback${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- env.txt: the machine and the library check ------------------------------------------
{
    echo "date: $(date -u)   host: $(uname -a)"
    echo "repo: $(git rev-parse --short HEAD 2>/dev/null || echo '(no git)')   bundle: $(head -1 "$D/MANIFEST.txt" 2>/dev/null)"
    echo "cores: $(nproc)   OMP_NUM_THREADS=$OMP_NUM_THREADS   memory: $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}')"
    echo
    echo "---- nvidia-smi"
    nvidia-smi 2>&1 || echo "(nvidia-smi failed or absent)"
    nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version,compute_cap --format=csv 2>&1
    echo
    echo "---- tools"
    echo "python3: $(command -v python3) $(python3 --version 2>&1)"
    echo "nvcc: $(nvcc --version 2>/dev/null | tail -1)"
    echo "compute-sanitizer: $(compute-sanitizer --version 2>/dev/null | tail -1)"
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' 2>&1 | tail -1
    echo
    echo "---- LD_LIBRARY_PATH"
    echo "$LD_LIBRARY_PATH" | tr ':' '\n'
    echo
    echo "---- the libraries the CUDA code loads (first match on LD_LIBRARY_PATH, else ld.so.cache)"
    for so in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9 libcudnn_graph.so.9 libcudnn_ops.so.9 \
        libcudnn_cnn.so.9 libcudnn_heuristic.so.9 libcudnn_engines_precompiled.so.9 \
        libcudnn_engines_runtime_compiled.so.9 libnvrtc.so.13 libnccl.so.2 libcuda.so.1; do
        hit=""
        for d in $(echo "$LD_LIBRARY_PATH" | tr ':' ' '); do
            if [ -e "$d/$so" ]; then hit=$d/$so; break; fi
        done
        [ -z "$hit" ] && hit=$(ldconfig -p 2>/dev/null | awk -v s="$so" '$1 == s {print $NF; exit}')
        printf '  %-42s %s\n' "$so" "${hit:-MISSING}"
    done
    echo
    echo "---- ldd of every binary: each library from the bundle (lib/), a wheel, or the C/C++ runtime"
} >>"$ENV"
ldd_bad=0
for b in "$B"/*; do
    out=$(ldd "$b" 2>&1)
    echo "$(basename "$b"):" >>"$ENV"
    echo "$out" | while read -r line; do
        case "$line" in
            *"not found"*) echo "  MISSING  $line" ;;
            *"=> $D/lib/"*) echo "  bundle   $line" ;;
            *"=> /"*)
                so=${line%% *}
                case "$so" in
                    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*|libstdc++.so*|libgcc_s.so*)
                        echo "  system   $line" ;;
                    *)
                        p=${line#*=> }
                        p=${p%% *}
                        if echo ":$wheels$fallback:" | grep -q ":$(dirname "$p"):"; then
                            echo "  cuda     $line"
                        else
                            echo "  OUTSIDE  $line   <- neither bundled nor a wheel: absent on a bare GPU machine?"
                        fi ;;
                esac ;;
            *) echo "  -        $line" ;;
        esac
    done >>"$ENV"
    echo "$out" | grep -q "not found" && ldd_bad=1
done
if [ $ldd_bad -eq 0 ]; then
    note "$(printf '%-34s PASS     0s  (env.txt: every library resolves)' ldd)"
else
    note "$(printf '%-34s FAIL  missing libraries (env.txt: MISSING lines)' ldd)"
    FAILED=1
fi
grep -q "OUTSIDE" "$ENV" && note "  note: libraries resolved outside the bundle and the wheels (env.txt: OUTSIDE lines)"

gpus=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU" || true)
if [ "${gpus:-0}" -eq 0 ]; then
    note "no GPU visible (nvidia-smi -L lists none): the CUDA steps below skip, saying so"
fi

# ---- tests -------------------------------------------------------------------------------
step cuda_ops 200 "$OUT/cuda_ops.log" "$B/test_cuda_ops" --gtest_output="xml:$OUT/cuda_ops.xml" \
    --gtest_filter="${VADER_GPU_GTEST_FILTER:-*}"
step cuda_step 90 "$OUT/cuda_step.log" "$B/test_cuda_step"
step memplan 60 "$OUT/cuda_step.log" "$B/test_bench_memplan" \
    --gtest_filter='Memplan.CountsTheDtypeTheRunUses:Memplan.ModelDtypeIsHonouredOrRefused:Memplan.GpuRunUsesTheGpusFreeMemory:Memplan.RefusesTooSmallLimitNamingWhatToChange'
if [ "${gpus:-0}" -gt 0 ]; then
    rm -rf /tmp/vader-gpu-train
    step train_tiny 90 "$OUT/cuda_step.log" "$B/vader-train" configs/tiny-cpu.yaml --set device=cuda \
        --set optim.steps=3 --set output.checkpoint_every=3 --set output.dir=/tmp/vader-gpu-train
    ls -la /tmp/vader-gpu-train >>"$OUT/cuda_step.log" 2>&1
else
    note "$(printf '%-34s SKIP  (no GPU)' train_tiny)"
fi

# fixtures: the model fixtures (shared/) and the reward fixtures (tests/fixtures) on the GPU
fx_dev="--device cuda --skip-without-gpu"
if [ "${gpus:-0}" -eq 0 ] && [ "${VADER_GPU_DRYRUN_CPU:-0}" = 1 ]; then
    fx_dev="--device cpu"  # dry run: the bundle's files, checked on the CPU
    note "fixtures: no GPU and VADER_GPU_DRYRUN_CPU=1: run on the CPU from the bundle's shared/"
fi
for fx in "$VADER_SHARED"/fixtures/*.json tests/fixtures/*.json; do
    [ -e "$fx" ] || continue
    n=$(basename "$fx" .json)
    # shellcheck disable=SC2086
    step "fixture.$n" 60 "$OUT/fixtures.log" "$B/vader-fixture" "${fx%.json}" $fx_dev
done
# shellcheck disable=SC2086
step fixture.vc2_unet_tiny.segments 60 "$OUT/fixtures.log" "$B/vader-fixture" "$VADER_SHARED/fixtures/vc2_unet_tiny" \
    --segments $fx_dev

# compute-sanitizer: memcheck on the op tests (not the full-size shapes: minutes under the
# tool), racecheck and initcheck on the kernels with shared memory and block reductions
SHM_TESTS='CudaOps.Attention*:CudaOps.Softmax:CudaOps.GroupNorm:CudaOps.LayerNormAndL2Normalize:CudaOps.Reductions:CudaOps.NormalizeChannelsAndCosine'
if [ "${gpus:-0}" -gt 0 ] && command -v compute-sanitizer >/dev/null 2>&1; then
    step memcheck 150 "$OUT/sanitizer.log" compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 \
        "$B/test_cuda_ops" --gtest_filter='-CudaOps.FullSizeShapes'
    step racecheck 100 "$OUT/sanitizer.log" compute-sanitizer --tool racecheck \
        --error-exitcode 99 --print-limit 20 "$B/test_cuda_ops" --gtest_filter="$SHM_TESTS"
else
    note "$(printf '%-34s SKIP  (no GPU or no compute-sanitizer)' 'memcheck, racecheck')"
fi

# benchmarks: one timed step each
BJ=/tmp/vader-gpu-bench.json
if [ "${gpus:-0}" -eq 0 ]; then
    note "$(printf '%-34s SKIP  (no GPU)' 'bench_tiny, bench_mid')"
else
step bench_tiny 60 "$OUT/bench.log" "$B/vader-bench" --device cuda --steps 1 --warmup 1 --json "$BJ"
[ -f "$BJ" ] && { echo "---- bench_tiny json"; cat "$BJ"; echo; } >>"$OUT/bench.log" && rm -f "$BJ"
M=$VADER_SHARED/manifests
step bench_mid 150 "$OUT/bench.log" "$B/vader-bench" configs/tiny-cpu.yaml --device cuda --steps 1 --warmup 0 \
    --set "model.unet=$M/videocrafter2_unet.txt" --set "model.vae=$M/videocrafter2_vae_decoder.txt" \
    --set "model.text=$M/openclip_vit_h_14.txt" --set model.height=128 --set model.width=128 --set model.frames=4 \
    --set sampler.steps=2 --json "$BJ"
[ -f "$BJ" ] && { echo "---- bench_mid json"; cat "$BJ"; echo; } >>"$OUT/bench.log" && rm -f "$BJ"
# the issue's full-size run: configs/hps.yaml at 512x320 x 12 frames on random full-size
# weights (--random-weights: the absent checkpoints become the manifests), one optimisation step
# of one micro-batch, DDIM 4 (1 taped) to fit the call
rm -rf /tmp/vader-gpu-full
step train_full 200 "$OUT/bench.log" "$B/vader-train" configs/hps.yaml --random-weights --steps 1 \
    --set device=cuda --set optim.accumulation=1 --set sampler.steps=4 --set output.eval_every=0 \
    --set output.checkpoint_every=0 --set output.dir=/tmp/vader-gpu-full
fi

# initcheck last: only with time to spare
if [ "${gpus:-0}" -gt 0 ] && command -v compute-sanitizer >/dev/null 2>&1; then
    step initcheck 90 "$OUT/sanitizer.log" compute-sanitizer --tool initcheck --error-exitcode 99 --print-limit 20 \
        "$B/test_cuda_ops" --gtest_filter="$SHM_TESTS"
fi

note "total $(elapsed)s; $( [ $FAILED -eq 0 ] && echo 'no step failed' || echo 'FAILURES above')"
echo "==== summary ($OUT/summary.txt)"
cat "$SUMMARY"
exit $FAILED
