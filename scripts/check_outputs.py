#!/usr/bin/env python3
"""check_outputs.py — checks a vader-train output directory with the reference readers:
rewards.h5 with h5py (the /train and /eval columns of configs/README.md, equal lengths,
finite values, steps in order, /eval steps among the trained ones and its reward/<module>
columns the same as /train's) and every lora-STEP.safetensors with the safetensors package
against peft's key layout (base_model.model.<module path>.lora_A.weight [r, in] /
.lora_B.weight [out, r], pairs complete, rank and targets as the metadata says).

    python3 scripts/check_outputs.py out/tiny-cpu [--manifest ../shared/manifests/videocrafter2_unet.txt]
        [--min-eval-rows N] [--skip-missing-modules]

With --manifest (a full-size run), every LoRA pair's in/out sizes are checked against the
base weight's shape in the manifest. --min-eval-rows N fails when /eval has fewer rows.
Exit status 0 when everything checks out, 1 on problems, 2 on usage errors; with
--skip-missing-modules, 77 (ctest's skip code) when h5py, numpy or safetensors is missing.
"""
import argparse
import glob
import math
import os
import re
import sys

try:
    import h5py
    from safetensors.numpy import load_file
    from safetensors import safe_open
except ImportError as _e:  # reported in main (exit 77 with --skip-missing-modules)
    _MISSING = _e
else:
    _MISSING = None

BASE_COLS = ["step", "reward_mean", "reward_std", "loss", "grad_norm", "lr", "step_time_s", "peak_mem_bytes", "skipped"]
PEFT = re.compile(r"^base_model\.model\.(?P<module>.+\.(?P<target>to_q|to_k|to_v|to_out\.0))\.lora_(?P<ab>[AB])\.weight$")


def check_h5(path, errors):
    with h5py.File(path, "r") as f:
        if "train" not in f:
            errors.append(f"{path}: no /train group")
            return 0, 0
        g = f["train"]
        n = None
        cols = list(BASE_COLS)
        if "reward" in g:
            cols += ["reward/" + k for k in g["reward"].keys()]
        for c in cols:
            if c not in g:
                errors.append(f"{path}: missing /train/{c}")
                continue
            v = g[c][()]
            if n is None:
                n = len(v)
            elif len(v) != n:
                errors.append(f"{path}: /train/{c} has {len(v)} rows, step has {n}")
            if c in ("step", "lr", "step_time_s", "peak_mem_bytes") and not all(math.isfinite(x) for x in v):
                errors.append(f"{path}: /train/{c} has non-finite values")
        steps = g["step"][()] if "step" in g else []
        if len(steps) and list(steps) != list(range(1, len(steps) + 1)):
            errors.append(f"{path}: /train/step is not 1..{len(steps)}")
        if "config" not in f.attrs:
            errors.append(f"{path}: no config attribute on /")
        print(f"{path}: {n} steps, columns {', '.join(cols)}")
        if n:
            r = g["reward_mean"][()]
            print(f"  reward_mean first {r[0]:.5f} last {r[-1]:.5f}")
        module_cols = [c for c in cols if c.startswith("reward/")]
        n_eval = check_eval(f, path, errors, module_cols, list(steps))
        return n or 0, n_eval


EVAL_BASE_COLS = ["step", "reward_mean", "reward_std"]


def check_eval(f, path, errors, module_cols, train_steps):
    """The /eval group: step, reward_mean, reward_std and the /train reward/<module> pairs."""
    if "eval" not in f:
        errors.append(f"{path}: no /eval group")
        return 0
    g = f["eval"]
    cols = EVAL_BASE_COLS + module_cols
    n = None
    for c in cols:
        if c not in g:
            errors.append(f"{path}: missing /eval/{c}")
            continue
        v = g[c][()]
        if v.ndim != 1 or v.dtype.name != "float64":
            errors.append(f"{path}: /eval/{c} is {v.dtype} {list(v.shape)}, expected float64 [n_evals]")
            continue
        if n is None:
            n = len(v)
        elif len(v) != n:
            errors.append(f"{path}: /eval/{c} has {len(v)} rows, /eval/step has {n}")
        if not all(math.isfinite(x) for x in v):
            errors.append(f"{path}: /eval/{c} has non-finite values")
        if c.endswith("_std") and any(x < 0 for x in v):
            errors.append(f"{path}: /eval/{c} has negative values")
    extra = []
    g.visit(lambda name: extra.append(name) if isinstance(g[name], h5py.Dataset) and name not in cols else None)
    for name in extra:
        errors.append(f"{path}: unexpected /eval/{name}")
    steps = list(g["step"][()]) if "step" in g else []
    if any(b <= a for a, b in zip(steps, steps[1:])):
        errors.append(f"{path}: /eval/step is not increasing: {steps}")
    trained = set(train_steps)
    for s in steps:
        if s != int(s) or s not in trained:
            errors.append(f"{path}: /eval/step {s} is not a trained step")
    print(f"{path}: {n or 0} evaluations at steps {[int(s) for s in steps]}")
    if n:
        r = g["reward_mean"][()]
        print(f"  eval reward_mean first {r[0]:.5f} last {r[-1]:.5f}")
    return n or 0


def load_manifest(path):
    shapes = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            key, shape, _ = line.rstrip("\n").split("\t")
            shapes[key] = [int(x) for x in shape.strip("[]").split(",") if x.strip()]
    return shapes


def check_lora(path, errors, manifest=None):
    with safe_open(path, "np") as f:
        meta = f.metadata() or {}
    tensors = load_file(path)
    rank = int(meta.get("lora_rank", "0"))
    targets = set(t for t in meta.get("target_modules", "").split(",") if t)
    pairs = {}
    for name, t in tensors.items():
        m = PEFT.match(name)
        if not m:
            errors.append(f"{path}: {name} is not a peft LoRA key")
            continue
        if t.ndim != 2 or t.dtype.name != "float32":
            errors.append(f"{path}: {name} is {t.dtype} {list(t.shape)}, expected a float32 matrix")
            continue
        tgt = m.group("target").replace(".0", "")
        if targets and tgt not in targets:
            errors.append(f"{path}: {name} targets {tgt}, not in target_modules {sorted(targets)}")
        pairs.setdefault(m.group("module"), {})[m.group("ab")] = t.shape
    for mod, p in pairs.items():
        if set(p) != {"A", "B"}:
            errors.append(f"{path}: {mod} has only lora_{''.join(p)}")
            continue
        r_a, n_in = p["A"]
        n_out, r_b = p["B"]
        if r_a != r_b or (rank and r_a != rank):
            errors.append(f"{path}: {mod} rank A {r_a} B {r_b}, metadata {rank}")
        if manifest is not None:
            base = manifest.get(mod + ".weight")
            if base is None:
                errors.append(f"{path}: {mod}.weight is not in the manifest")
            elif base != [n_out, n_in]:
                errors.append(f"{path}: {mod}: LoRA gives [{n_out}, {n_in}], base weight is {base}")
    print(f"{path}: {len(pairs)} LoRA pairs, rank {rank}, alpha {meta.get('lora_alpha')}, targets {sorted(targets)}")
    return len(pairs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="vader-train output.dir")
    ap.add_argument("--manifest", help="UNet manifest (shared/manifests/videocrafter2_unet.txt) for full-size runs")
    ap.add_argument("--min-eval-rows", type=int, default=0, help="fail when /eval has fewer rows")
    ap.add_argument("--skip-missing-modules", action="store_true",
                    help="exit 77 (ctest skip) instead of failing when h5py / numpy / safetensors is missing")
    a = ap.parse_args()
    if _MISSING is not None:
        print(f"check_outputs.py needs h5py, numpy and safetensors: {_MISSING}", file=sys.stderr)
        return 77 if a.skip_missing_modules else 2
    errors = []
    h5 = os.path.join(a.dir, "rewards.h5")
    if not os.path.exists(h5):
        errors.append(f"{h5}: missing")
    else:
        _, n_eval = check_h5(h5, errors)
        if n_eval < a.min_eval_rows:
            errors.append(f"{h5}: /eval has {n_eval} rows, expected at least {a.min_eval_rows}")
    manifest = load_manifest(a.manifest) if a.manifest else None
    loras = sorted(glob.glob(os.path.join(a.dir, "lora-*.safetensors")))
    if not loras:
        errors.append(f"{a.dir}: no lora-STEP.safetensors")
    for p in loras:
        check_lora(p, errors, manifest)
    for e in errors[:20]:
        print("ERROR", e, file=sys.stderr)
    if len(errors) > 20:
        print(f"... and {len(errors) - 20} more", file=sys.stderr)
    print("OK" if not errors else f"{len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
