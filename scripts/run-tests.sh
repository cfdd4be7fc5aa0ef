#!/bin/sh
# README command 2: install dependencies, build, run the whole test suite with ctest.
# VADER_SANITIZE=1 builds into build-asan with AddressSanitizer + UBSan and runs it there.
# VADER_CUDA_EMU=1 builds the CUDA backend for the CPU emulator (cuda/emu) into build-emu and runs
# the CUDA tests there: every kernel against the CPU reference without a GPU.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
if [ "${VADER_CUDA_EMU:-0}" = 1 ]; then
  export BUILD_DIR=build-emu
  TARGETS="test_cuda_emu test_cuda_ops test_cuda_step vader-fixture" ./scripts/build.sh -DVADER_CUDA=EMU
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" -R '^(CudaEmu|CudaOps|CudaStep|fixture_cuda)\.' \
    ${CTEST_ARGS:-}
  exit 0
fi
if [ "${VADER_SANITIZE:-0}" = 1 ]; then
  export BUILD_DIR=build-asan
  ./scripts/build.sh -DVADER_SANITIZE=ON -DVADER_CUDA=OFF
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
else
  export BUILD_DIR=build
  ./scripts/build.sh
fi
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" ${CTEST_ARGS:-}
