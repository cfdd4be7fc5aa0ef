#!/usr/bin/env python3
"""CPU benchmark (not a test): vader's UNet3D forward and forward+backward against PyTorch CPU
on the same config, the same weights and the same inputs, in the same run.

  1. vader-unet_bench builds the model with random weights (+ LoRA r 4 on to_q/to_k/to_v),
     writes them (--save-weights), writes the inputs / output / gradients of its untimed
     warm-up run (--save-io), times --reps repetitions and writes them as JSON.
  2. scripts/lvdm_unet_torch.py builds the same UNet in PyTorch, loads that weight file
     (strict), freezes the base weights (requires_grad False, LoRA parameters True), checks
     out, grad.x and every LoRA gradient against vader's (relative error max|a-b| / max|b|),
     then times the same two things.
  3. Prints min and median ms of each side and the ratio torch / vader (> 1: vader faster).

Both sides use the same thread count: torch.set_num_threads(N) and OMP_NUM_THREADS =
OPENBLAS_NUM_THREADS = N (+ --threads N) for vader. forward = no autograd (vader: no tape, as an
untaped sampling step runs it: LoRA merged and the context's K/V cached once, untimed, unless
--no-fast; torch: torch.no_grad() on the unmerged model); forward+backward = forward recording autograd + backward of
sum(out * grad_out) into x and the LoRA parameters. With --rounds K the two sides alternate
K times (statistics over all reps), which evens out load from other processes.

    python3 scripts/bench_unet_vs_torch.py [--config mid] [--threads 2] [--reps 5] [--rounds 1]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lvdm_unet_torch import UNet3D, rel_err  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_vader(args, workdir, round_idx, save):
    out_json = os.path.join(workdir, f"vader-{round_idx}.json")
    cmd = [args.bin, "--config", args.config, "--frames", str(args.frames), "--size", str(args.size),
           "--batch", str(args.batch), "--ctx", str(args.ctx), "--reps", str(args.reps),
           "--threads", str(args.threads), "--json", out_json]
    if args.mc:
        cmd += ["--mc", str(args.mc)]
    if args.checkpoint:
        cmd += ["--checkpoint"]
    if args.no_fast:
        cmd += ["--no-fast"]
    if save:
        cmd += ["--save-weights", os.path.join(workdir, "weights.safetensors"),
                "--save-io", os.path.join(workdir, "io.safetensors")]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    if args.verbose:
        print(r.stdout, end="")
    with open(out_json) as f:
        return json.load(f)


def build_torch(meta, workdir):
    from safetensors.torch import load_file

    model = UNet3D(meta["config"]).eval()
    lora = meta["lora"]
    model.add_lora(lora["rank"], lora["alpha"], tuple(lora["targets"]))
    model.load_weights(load_file(os.path.join(workdir, "weights.safetensors")))
    model.freeze_base()
    return model


def check_agreement(model, io):
    """Same inputs as vader's warm-up run: returns {name: rel err} for out, grad.x, LoRA grads."""
    x = io["x"].clone().requires_grad_(True)
    out = model(x, io["timesteps"], io["context"], io["fps"])
    out.backward(io["grad_out"])
    errs = {"out": rel_err(out.detach(), io["out"]), "grad.x": rel_err(x.grad, io["grad.x"])}
    prefix = "grad.base_model.model.model.diffusion_model."
    worst, worst_name = 0.0, ""
    params = dict(model.named_parameters())
    n = 0
    for k, ref in io.items():
        if not k.startswith(prefix):
            continue
        e = rel_err(params[k[len(prefix):]].grad, ref)
        n += 1
        if e >= worst:
            worst, worst_name = e, k[5:]
    errs[f"grad.lora (worst of {n})"] = worst
    model.zero_grad(set_to_none=True)
    return errs, worst_name


def time_torch(model, io, reps):
    """Wall and process-CPU ms per rep: forward (no_grad), forward+backward."""
    x0, ts, ctx, fps, gout = io["x"], io["timesteps"], io["context"], io["fps"], io["grad_out"]
    t_f, t_fb, c_f, c_fb = [], [], [], []
    for it in range(-1, reps):  # rep -1: warm-up
        c0, t0 = time.process_time(), time.perf_counter()
        with torch.no_grad():
            model(x0, ts, ctx, fps)
        t1, c1 = time.perf_counter(), time.process_time()
        x = x0.clone().requires_grad_(True)
        c2, t2 = time.process_time(), time.perf_counter()
        out = model(x, ts, ctx, fps)
        out.backward(gout)
        t3, c3 = time.perf_counter(), time.process_time()
        del out
        model.zero_grad(set_to_none=True)
        if it >= 0:
            t_f.append((t1 - t0) * 1e3)
            t_fb.append((t3 - t2) * 1e3)
            c_f.append((c1 - c0) * 1e3)
            c_fb.append((c3 - c2) * 1e3)
    return t_f, t_fb, c_f, c_fb


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="mid", help="vader-unet_bench preset (mid, tiny, full) or fixture json")
    ap.add_argument("--mc", type=int, default=0, help="override model_channels")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, default=16, help="latent height = width")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--ctx", type=int, default=77, help="context tokens")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1, help="alternate vader / torch this many times")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--checkpoint", action="store_true", help="vader checkpoint segments (recompute)")
    ap.add_argument("--no-fast", action="store_true", help="vader's untaped forward without the merged LoRA "
                    "and the cached context K/V (by default both are made once, untimed, as vader's sampling "
                    "loop does once per optimisation step)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin", "vader-unet_bench"))
    ap.add_argument("--workdir", default=None, help="keep weights / io / json here (default: a temp dir)")
    ap.add_argument("--json", default=None, help="write the combined results here")
    ap.add_argument("--tol", type=float, default=1e-4, help="agreement tolerance (rel err)")
    ap.add_argument("--verbose", action="store_true", help="show vader-unet_bench's own output")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tmp = None
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        workdir = args.workdir
    else:
        tmp = tempfile.TemporaryDirectory(prefix="vader-unet-bench-")
        workdir = tmp.name

    from safetensors.torch import load_file

    v_f, v_fb, t_f, t_fb = [], [], [], []
    vc_f, vc_fb, tc_f, tc_fb = [], [], [], []  # process CPU time
    meta = model = io = None
    for r in range(args.rounds):
        m = run_vader(args, workdir, r, save=(r == 0))
        v_f += m["forward_ms"]["reps"]
        v_fb += m["forward_backward_ms"]["reps"]
        vc_f += m["forward_cpu_ms"]["reps"]
        vc_fb += m["forward_backward_cpu_ms"]["reps"]
        if r == 0:
            meta = m
            model = build_torch(meta, workdir)
            io = load_file(os.path.join(workdir, "io.safetensors"))
            errs, worst_lora = check_agreement(model, io)
        f, fb, cf, cfb = time_torch(model, io, args.reps)
        t_f += f
        t_fb += fb
        tc_f += cf
        tc_fb += cfb

    c = meta["config"]
    sh = meta["shape"]
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else ["?"] * 3
    print(f"UNet3D {args.config}: mc {c['model_channels']}, mult {c['channel_mult']}, d_head "
          f"{c['num_head_channels']}, attn at {c['attention_resolutions']}, {c['num_res_blocks']} res blocks, "
          f"{meta['n_params'] / 1e6:.1f} M params; x [{sh['batch']}, {c['in_channels']}, {sh['frames']}, "
          f"{sh['size']}, {sh['size']}], context [{sh['batch']}, {sh['ctx']}, {c['context_dim']}]; LoRA r "
          f"{meta['lora']['rank']} on to_q/to_k/to_v")
    print("vader untaped forward: " + (f"LoRA merged + context K/V cached once ({meta['merge_ms']:.1f} ms, untimed)"
                                       if meta.get("fast") else "LoRA branch + K/V projections per forward"))
    print(f"threads {args.threads} (torch {torch.__version__}, {torch.get_num_threads()} threads), "
          f"{args.rounds} round(s) x {args.reps} reps, load average {' '.join(load)}")
    print("agreement (vader vs torch, same weights and inputs): " +
          ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    ok = all(v <= args.tol for v in errs.values())
    if not ok:
        print(f"  MISMATCH above {args.tol:g} (worst LoRA grad: {worst_lora}): the timings compare different "
              "computations")

    def stats(v):
        return min(v), statistics.median(v)

    rows = []
    print(f"{'':18s}{'vader min':>11s}{'median':>9s}{'torch min':>11s}{'median':>9s}"
          f"{'torch/vader min':>17s}{'median':>8s}")
    for name, a, b in (("forward", v_f, t_f), ("forward+backward", v_fb, t_fb),
                       ("forward cpu", vc_f, tc_f), ("fwd+bwd cpu", vc_fb, tc_fb)):
        (am, amed), (bm, bmed) = stats(a), stats(b)
        rows.append({"name": name, "vader_ms": {"min": am, "median": amed, "reps": a},
                     "torch_ms": {"min": bm, "median": bmed, "reps": b},
                     "ratio_torch_over_vader": {"min": bm / am, "median": bmed / amed}})
        print(f"{name:18s}{am:11.1f}{amed:9.1f}{bm:11.1f}{bmed:9.1f}{bm / am:17.2f}{bmed / amed:8.2f}")
    print("(cpu rows: process CPU time, all threads: with --threads 1 on a loaded machine the cost without the "
          "time the core spent on other jobs; with more threads it includes OpenMP spin-waiting)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"vader": meta, "torch_version": torch.__version__, "threads": args.threads,
                       "rounds": args.rounds, "loadavg": load, "agreement": errs, "ok": ok, "results": rows},
                      f, indent=1)
    if tmp:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
