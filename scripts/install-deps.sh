#!/bin/sh
# Installs every build and test dependency of vader from Debian packages.
# Idempotent: packages already present are skipped by apt. Run as root (or with sudo).
# CUDA toolkit, cuDNN and NCCL are expected from the CUDA installation (/usr/local/cuda);
# the build turns CUDA off by itself when nvcc is missing.
set -eu
PKGS="build-essential cmake ninja-build pkg-config zlib1g-dev \
  libopenblas-dev libyaml-dev libhdf5-dev libcjson-dev libgtest-dev \
  libopenmpi-dev openmpi-bin python3"
missing=""
for p in $PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
