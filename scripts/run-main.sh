#!/bin/sh
# README command 1: install dependencies, build, run the main job. Without a GPU or real
# checkpoints this is the embedded tiny CPU configuration.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
exec ./build/bin/vader-train "$@"
