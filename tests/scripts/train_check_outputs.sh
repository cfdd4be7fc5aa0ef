#!/bin/sh
# A tiny vader-train run (2 steps, an evaluation after each) checked by the reference readers
# (scripts/check_outputs.py), then plotted (scripts/plot_rewards.py) when matplotlib is there:
#   train_check_outputs.sh VADER_TRAIN PYTHON3 SOURCE_DIR OUTPUT_DIR
# Exit 77 (ctest skip) when h5py / numpy / safetensors cannot be imported.
set -u
train=$1 py=$2 src=$3 out=$4
if ! "$py" -c "import h5py, numpy, safetensors" 2>/dev/null; then
    echo "SKIP: scripts/check_outputs.py needs h5py, numpy and safetensors"
    exit 77
fi
rm -rf "$out"
"$train" --set model.height=32 --set model.width=32 --set model.frames=2 --set memory.decode_frames=1 \
    --set optim.steps=2 --set output.checkpoint_every=1 --set output.eval_every=1 \
    --set "data.eval_prompts=[a cat on a sofa, a dog on a beach]" --set "output.dir=$out" || exit 1
for f in "$out/samples/step-000001/0/prompt.txt" "$out/samples/step-000002/1/prompt.txt"; do
    [ -f "$f" ] || { echo "missing $f"; exit 1; }
done
"$py" "$src/scripts/check_outputs.py" "$out" --min-eval-rows 2 --skip-missing-modules || exit $?
# the plot too, when matplotlib is there (Agg: no display needed)
if "$py" -c "import matplotlib" 2>/dev/null; then
    env -u DISPLAY "$py" "$src/scripts/plot_rewards.py" "$out/rewards.h5" -o "$out/rewards.png" || exit 1
    [ -s "$out/rewards.png" ] || { echo "plot_rewards.py wrote no PNG"; exit 1; }
else
    echo "note: matplotlib missing: scripts/plot_rewards.py not run"
fi
