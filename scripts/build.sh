#!/bin/sh
# Configures and builds vader into ${BUILD_DIR:-build}. Extra arguments go to cmake's configure
# step (e.g. -DVADER_SANITIZE=ON). CUDA parts are built whenever nvcc is found. TARGETS (a
# space-separated list) builds only those targets.
set -eu
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja "$@" >/dev/null
# shellcheck disable=SC2086 # TARGETS is a word list
cmake --build "$BUILD_DIR" -j "$(nproc)" ${TARGETS:+--target $TARGETS}
