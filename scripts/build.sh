#!/bin/sh
# Configures and builds vader into ${BUILD_DIR:-build}. Extra arguments go to cmake's configure
# step (e.g. -DVADER_SANITIZE=ON). CUDA parts are built whenever nvcc is found.
set -eu
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
