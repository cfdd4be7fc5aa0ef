#!/bin/sh
# Packs what the GPU machine (device tool) needs into .gpu/ (git-ignored, <= 64 MiB): the test
# and bench binaries built here with CUDA on, plus the shared libraries ldd lists that the GPU
# machine lacks (our Debian libraries: OpenBLAS, libyaml, HDF5, cJSON, MPI, gomp, ...). CUDA,
# cuBLAS, cuDNN and NCCL are NOT packed: the GPU machine has them as Python wheels; run there
#   export LD_LIBRARY_PATH=$PWD/.gpu/lib:$(python3 -c 'import nvidia,os;p=os.path.dirname(nvidia.__path__[0]);print(":".join(os.path.join(p,"nvidia",d,"lib") for d in os.listdir(os.path.join(p,"nvidia"))))')
#   for t in .gpu/bin/test_*; do $t; done
# and name .gpu in the device tool's carry list. Usage: scripts/gpu-bundle.sh [binaries...]
set -eu
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
BUILD_DIR=$BUILD_DIR ./scripts/build.sh -DVADER_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
rm -rf .gpu && mkdir -p .gpu/bin .gpu/lib
bins=${*:-$(ls "$BUILD_DIR"/bin/test_cuda_* "$BUILD_DIR"/bin/vader-* 2>/dev/null)}
for b in $bins; do
  cp "$b" .gpu/bin/
  ldd "$b" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) ;;
      libcuda.so*|libcudart.so*|libcublas*|libcudnn*|libnccl*|libnvrtc*|libnvJitLink*) ;;
      *) [ -e ".gpu/lib/$(basename "$lib")" ] || cp -L "$lib" .gpu/lib/ ;;
    esac
  done
done
strip --strip-unneeded .gpu/bin/* .gpu/lib/* 2>/dev/null || true
size=$(du -sm .gpu | cut -f1)
echo "packed .gpu: ${size} MiB"
[ "$size" -le 60 ] || { echo "too large for the device tool (64 MiB): pass fewer binaries" >&2; exit 1; }
