#!/bin/sh
# gpu-bundle.sh — packs what one GPU session (the device tool) needs into .gpu/ (git-ignored;
# name it in the run's carry list): .gpu/bundle-bin.tar.xz holds
#   bin/     the GPU test and program binaries, Release, sm_90 (H100 / H200) only, stripped
#   lib/     every shared library they need that the GPU machine lacks (our Debian libraries:
#            OpenBLAS + gfortran, libyaml, cJSON, HDF5 and its curl/ssl/krb5 chain, Open MPI,
#            gomp, zlib, ...), stripped; NOT glibc / libstdc++ / libgcc_s (the machine's own,
#            newer) and NOT CUDA, cuBLAS, cuDNN, NCCL: those come from the machine's Python
#            wheels (site-packages/nvidia/*/lib), found by scripts/gpu-run-tests.sh
#   MANIFEST.txt  what is inside, with sizes and the CUDA sonames the binaries need
# .gpu/bundle-shared.tar.xz holds
#   shared/  the part of ../shared the GPU steps read (the 4 model fixtures, the tokenizer, the
#            manifests of bench_mid; not weights/): ../shared itself does not travel
# and .gpu/MANIFEST.txt is a copy of the manifest. xz shrinks the binaries and libraries about 5x
# (OpenBLAS alone is 36 MB, 4 MB packed); the fixtures (random fp32) hardly shrink.
# The script then measures what would travel (tracked + untracked-not-ignored files of this
# checkout + .gpu) against the device tool's 64 MiB and fails above 62 MiB.
#
# Usage: scripts/gpu-bundle.sh            (BUILD_DIR=build-gpu, VADER_GPU_ARCH=90, JOBS=nproc,
#                                          VADER_SHARED=../shared)
# Run it in the checkout the session's device calls send (the session's own, not a helper's
# worktree): the device tool sends that checkout, whatever worktree the call comes from.
set -eu
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build-gpu}
ARCH=${VADER_GPU_ARCH:-90}
JOBS=${JOBS:-$(nproc)}
SHARED=${VADER_SHARED:-$ROOT/../shared}
[ -d "$SHARED/fixtures" ] || SHARED=$ROOT/shared
[ -d "$SHARED/fixtures" ] || { echo "gpu-bundle: no shared/fixtures (set VADER_SHARED)" >&2; exit 1; }
BINS="test_cuda_ops test_cuda_step test_bench_memplan vader-fixture vader-bench vader-train"
LIMIT_MIB=${VADER_GPU_LIMIT_MIB:-62}

echo "gpu-bundle: configuring $BUILD_DIR (Release, CUDA on, sm_$ARCH)"
cmake -S . -B "$BUILD_DIR" -G Ninja -DVADER_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES="$ARCH" >/dev/null
echo "gpu-bundle: building $BINS (-j $JOBS)"
# shellcheck disable=SC2086
cmake --build "$BUILD_DIR" -j "$JOBS" --target $BINS

stage=$(mktemp -d "${TMPDIR:-/tmp}/vader-gpu-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/shared/fixtures"
for b in $BINS; do cp "$BUILD_DIR/bin/$b" "$stage/bin/"; done

# Libraries: everything ldd resolves to a file, except the C / C++ runtime (the machine's own)
# and the CUDA libraries (the machine's wheels).
is_system() {
    case "$1" in
        libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*|libutil.so*|ld-linux*) return 0 ;;
        libstdc++.so*|libgcc_s.so*) return 0 ;;
    esac
    return 1
}
is_cuda() {
    case "$1" in
        libcuda.so*|libcudart.so*|libcublas*|libcudnn*|libnccl*|libnvrtc*|libnvJitLink*|libcufft*|libcurand*) return 0 ;;
    esac
    return 1
}
for b in $BINS; do
    ldd "$stage/bin/$b" | awk '/=> \// {print $1, $3}' | while read -r so path; do
        if is_system "$so" || is_cuda "$so"; then continue; fi
        [ -e "$stage/lib/$so" ] || cp -L "$path" "$stage/lib/$so"
    done
done
strip --strip-unneeded "$stage"/bin/* "$stage"/lib/* 2>/dev/null || true

# The shared files the GPU run reads
for fx in vc2_unet_tiny vc2_vae_decoder_tiny openclip_tiny vader_step_tiny; do
    cp "$SHARED/fixtures/$fx".* "$stage/shared/fixtures/"
done
cp -r "$SHARED/tokenizer" "$SHARED/manifests" "$stage/shared/"  # weights/: no GPU step reads it

# Manifest: sizes, and the CUDA sonames (NEEDED entries) the run script must find in the wheels
{
    echo "vader GPU bundle: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | grep -q . && echo '(with uncommitted changes)'), built $(date -u +%Y-%m-%dT%H:%MZ), sm_$ARCH, $(nvcc --version 2>/dev/null | tail -1)"
    echo "CUDA sonames needed (from the wheels): $(for b in "$stage"/bin/*; do readelf -d "$b" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p'; done | sort -u | while read -r so; do is_cuda "$so" && printf '%s ' "$so"; done)"
    echo "  + dlopened by libcudnn.so.9: libcudnn_graph, _ops, _cnn, _heuristic, _engines_precompiled, _engines_runtime_compiled (.so.9; the last needs libnvrtc.so.13); by libcudart: libcuda.so.1 (the driver)"
    echo "sizes (bytes, unpacked):"
    (cd "$stage" && find bin lib shared -type f -exec du -b {} + | sort -k2)
} >"$stage/MANIFEST.txt"

rm -rf .gpu && mkdir -p .gpu
cp "$stage/MANIFEST.txt" .gpu/MANIFEST.txt
echo "gpu-bundle: compressing (xz -6)"
tar -C "$stage" -cf - MANIFEST.txt bin lib | xz -T"$JOBS" -6 >.gpu/bundle-bin.tar.xz
tar -C "$stage" -cf - shared | xz -T"$JOBS" -6 >.gpu/bundle-shared.tar.xz

# What travels: tracked + untracked-not-ignored files, .gpu (carried), shared/ if the checkout has one
tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s + 0}')
inrepo_shared=0
[ -d shared ] && inrepo_shared=$(du -sb shared | cut -f1)
gpu=$(du -sb .gpu | cut -f1)
total=$((tree + inrepo_shared + gpu))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "gpu-bundle: .gpu $(mib "$gpu"): bundle-bin.tar.xz $(mib "$(du -b .gpu/bundle-bin.tar.xz | cut -f1)") (bin $(mib "$(du -sb "$stage/bin" | cut -f1)") + lib $(mib "$(du -sb "$stage/lib" | cut -f1)") unpacked), bundle-shared.tar.xz $(mib "$(du -b .gpu/bundle-shared.tar.xz | cut -f1)") ($(mib "$(du -sb "$stage/shared" | cut -f1)") unpacked)"
echo "gpu-bundle: travels $(mib "$total") of 64 MiB (working tree $(mib "$tree"), in-repo shared/ $(mib "$inrepo_shared"), .gpu $(mib "$gpu"))"
sed -n 2,3p .gpu/MANIFEST.txt
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
    echo "gpu-bundle: more than ${LIMIT_MIB} MiB would travel: the device tool refuses over 64 MiB" >&2
    exit 1
fi
echo "gpu-bundle: ok. Device call: see scripts/README.md (GPU session)"
