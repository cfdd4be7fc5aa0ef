#!/usr/bin/env python3
"""A whole VADER training step, ours (vader-bench) against PyTorch on the CPU, in one run.

  1. build/bin/vader-bench runs the config (default: the tiny CPU config) in eval mode
     (--no-dropout) with lora_B ~ N(0, 0.1^2) (so d/dA is not zero), writes its random weights
     (--save-weights), the first step's inputs, noise, frame indices, loss and LoRA gradients
     (--save-io) and its timings (--json).
  2. The same step in PyTorch: scripts/lvdm_unet_torch.py for the UNet, the small VAE decoder
     below (written from shared/fixtures/vc2_vae_decoder_tiny.json's spec and checked against
     that fixture first), the DDIM schedule from vader_step_tiny.json's spec, the colour reward.
     Same weights, same x_T / contexts / noise / decoded frames.
  3. Checks loss and every LoRA gradient (relative error max|a-b| / max|b|), then times N
     optimisation steps in PyTorch (same threads) and prints s/step of both and the ratio.

Without --checkpointing both sides run plain autograd (vader-bench gets
memory.checkpointing=false); with it, vader-bench checkpoints every block and PyTorch wraps each
UNet block in torch.utils.checkpoint.

    python3 scripts/bench_step_vs_torch.py [--bench build/bin/vader-bench] [--steps 3]
        [--threads 2] [--set a.b=c ...] [--checkpointing] [--json OUT]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from lvdm_unet_torch import UNet3D, rel_err  # noqa: E402

SHARED = os.environ.get("VADER_SHARED", os.path.join(HERE, "..", "..", "shared"))
if not os.path.isdir(SHARED):
    SHARED = "/work/shared"
RGB = (0.7, -0.2, 0.5)


# ---- VAE decoder (lvdm AutoencoderKL decode path) ------------------------------------------
def gn(ch):
    return nn.GroupNorm(32, ch, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1, self.conv1 = gn(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = gn(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class AttnBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.norm = gn(ch)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(ch, ch, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).reshape(b, c, h * w).transpose(1, 2)
        k = self.k(y).reshape(b, c, h * w)
        v = self.v(y).reshape(b, c, h * w)
        p = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=-1)  # [b, query, key]
        o = torch.bmm(v, p.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(o)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, mult, nrb = cfg["ch"], list(cfg["ch_mult"]), cfg["num_res_blocks"]
        attn_res, res0 = list(cfg.get("attn_resolutions", [])), cfg.get("resolution", 256)
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg["z_channels"], block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = (ResnetBlock(block_in, block_in), AttnBlock(block_in),
                                                                 ResnetBlock(block_in, block_in))
        self.up = nn.ModuleList([nn.Module() for _ in mult])
        for i in reversed(range(len(mult))):
            out = ch * mult[i]
            lv = self.up[i]
            lv.block = nn.ModuleList()
            has_attn = (res0 >> i) in attn_res
            lv.attn = nn.ModuleList() if has_attn else None
            for _ in range(nrb + 1):
                lv.block.append(ResnetBlock(block_in, out))
                block_in = out
                if has_attn:
                    lv.attn.append(AttnBlock(out))
            if i:
                lv.upsample = Upsample(out)
        self.norm_out = gn(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg["out_ch"], 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        x = self.mid.block_2(self.mid.attn_1(self.mid.block_1(x)))
        for i in reversed(range(len(self.up))):
            lv = self.up[i]
            for j, blk in enumerate(lv.block):
                x = blk(x)
                if lv.attn is not None:
                    x = lv.attn[j](x)
            if i:
                x = lv.upsample(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class VAEDecode(nn.Module):
    """first_stage_model: post_quant_conv + decoder; keys as in the checkpoint."""

    def __init__(self, cfg):
        super().__init__()
        self.post_quant_conv = nn.Conv2d(cfg["z_channels"], cfg["z_channels"], 1)
        self.decoder = Decoder(cfg)
        self.scale_factor = cfg.get("scale_factor", 0.18215)

    def forward(self, z):  # one frame [B, 4, h, w]
        return self.decoder(self.post_quant_conv(z / self.scale_factor))

    def decode_video(self, z):  # [B, 4, F, h, w] -> [B, 3, F, H, W], frame by frame
        return torch.stack([self(z[:, :, f]) for f in range(z.shape[2])], dim=2)


def check_vae_fixture(prefix=os.path.join(SHARED, "fixtures", "vc2_vae_decoder_tiny"), tol=1e-4):
    from safetensors.torch import load_file
    with open(prefix + ".json") as f:
        meta = json.load(f)
    cfg = dict(meta["config"], scale_factor=meta.get("scale_factor", 0.18215))
    m = VAEDecode(cfg).eval()
    w = {k[len("first_stage_model."):] if k.startswith("first_stage_model.") else k: v
         for k, v in load_file(prefix + ".weights.safetensors").items()}
    m.load_state_dict(w, strict=True)
    io = load_file(prefix + ".io.safetensors")
    z = io["z"].clone().requires_grad_(True)
    out = m(z)
    (out * io["grad_out"]).sum().backward()
    e_out, e_grad = rel_err(out.detach(), io["out"]), rel_err(z.grad, io["grad.z"])
    ok = e_out <= tol and e_grad <= tol
    print(f"torch VAE decoder vs {os.path.basename(prefix)}: out {e_out:.2e}, grad.z {e_grad:.2e} "
          f"{'OK' if ok else 'MISMATCH'}")
    return ok


# ---- DDIM (vader_step_tiny.json "schedule" / "step") ---------------------------------------
def ddim_schedule(S, eta):
    betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1.0 - betas, 0)
    scale_arr = torch.cat([torch.linspace(1.0, 0.7, 400, dtype=torch.float64), torch.full((1000,), 0.7, dtype=torch.float64)])
    c = 1000 // S
    ts = torch.arange(0, 1000, c) + 1
    a = ac[ts]
    a_prev = torch.cat([ac[:1], ac[ts[:-1]]])
    sig = eta * torch.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    sc = scale_arr[ts]
    sc_prev = torch.cat([scale_arr[:1], scale_arr[ts[:-1]]])
    f = lambda v: v.to(torch.float32)  # noqa: E731
    return dict(ts=ts, a=f(a), a_prev=f(a_prev), sig=f(sig), sc=f(sc), sc_prev=f(sc_prev))


def color_reward(frames):
    img = (frames.clamp(-1, 1) + 1) / 2
    w = torch.tensor(RGB).view(1, 3, 1, 1, 1)
    r = (img * w).sum(1).flatten(1).mean(1)
    return -r.mean(), r


class TorchStep:
    def __init__(self, meta, weights, checkpointing):
        self.unet = UNet3D(dict(meta["unet_config"])).eval()
        c = meta["_cfg"]
        targets = tuple(c["lora_targets"])
        self.unet.add_lora(c["rank"], c["alpha"], targets)
        self.unet.load_weights({k: v for k, v in weights.items()
                                if k.startswith("model.diffusion_model.") or k.startswith("base_model.")})
        self.unet.freeze_base()
        self.vae = VAEDecode(dict(meta["vae_config"])).eval()
        self.vae.load_state_dict({k[len("first_stage_model."):]: v for k, v in weights.items()
                                  if k.startswith("first_stage_model.")}, strict=True)
        for p in self.vae.parameters():
            p.requires_grad_(False)
        self.c = c
        self.sched = ddim_schedule(c["steps"], c["eta"])
        self.ckpt = checkpointing
        if checkpointing:
            from torch.utils.checkpoint import checkpoint
            for blocks in (self.unet.input_blocks, self.unet.output_blocks, [self.unet.middle_block]):
                for blk in blocks:
                    fwd = blk.forward
                    blk.forward = (lambda f: lambda *a: checkpoint(f, *a, use_reentrant=False)
                                   if torch.is_grad_enabled() else f(*a))(fwd)

    def run(self, x_T, ctx, uctx, fps, noise, frame_index):
        c, s = self.c, self.sched
        S, K, g = c["steps"], c["K"], c["guidance"]
        B = x_T.shape[0]
        ctx2, fps2 = torch.cat([ctx, uctx]), torch.cat([fps, fps])
        x = x_T
        for i in range(S):
            index = S - 1 - i
            taped = i >= S - K
            with torch.set_grad_enabled(taped):
                t = torch.full((2 * B,), int(s["ts"][index]), dtype=torch.int64)
                out = self.unet(torch.cat([x, x]), t, ctx2, fps2)
                ec, eu = out[:B], out[B:]
                e = eu + g * (ec - eu)
                a, ap, sg = s["a"][index], s["a_prev"][index], s["sig"][index]
                pred = (x - torch.sqrt(1 - a) * e) / torch.sqrt(a)
                dir_xt = torch.sqrt(1 - ap - sg ** 2) * e
                pred = pred / s["sc"][index]
                x = torch.sqrt(ap) * s["sc_prev"][index] * pred + dir_xt + sg * noise[i]
        z = x[:, :, frame_index]
        if self.ckpt:
            from torch.utils.checkpoint import checkpoint
            frames = torch.stack([checkpoint(self.vae, z[:, :, f], use_reentrant=False) for f in range(z.shape[2])], 2)
        else:
            frames = self.vae.decode_video(z)
        loss, r = color_reward(frames)
        loss.backward()
        return loss.detach(), x.detach()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=os.path.join(HERE, "..", "build", "bin", "vader-bench"))
    ap.add_argument("--config", default=None, help="YAML config (default: the embedded tiny CPU config)")
    ap.add_argument("--set", action="append", default=[], help="config override, repeatable")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from safetensors.torch import load_file

    if not check_vae_fixture():
        return 1
    sets = list(args.set) + [f"memory.checkpointing={'true' if args.checkpointing else 'false'}"]
    with tempfile.TemporaryDirectory() as tmp:
        wpath, iopath, jpath = (os.path.join(tmp, n) for n in ("w.safetensors", "io.safetensors", "bench.json"))
        cmd = [args.bench] + ([args.config] if args.config else []) + sum((["--set", s] for s in sets), []) + [
            "--no-dropout", "--lora-b-std", "0.1", "--warmup", "1", "--steps", str(args.steps), "--threads",
            str(args.threads), "--save-weights", wpath, "--save-io", iopath, "--json", jpath]
        print("$", " ".join(cmd))
        load_before = os.getloadavg()
        r = subprocess.run(cmd, capture_output=True, text=True)
        print(r.stdout, end="")
        if r.returncode:
            print(r.stderr, file=sys.stderr)
            return 1
        with open(jpath) as f:
            meta = json.load(f)
        weights, io = load_file(wpath), load_file(iopath)
    import yaml as _yaml  # noqa: F401  (PyYAML ships with torch's deps on most systems)
    cy = _yaml.safe_load(meta["config_yaml"])
    meta["_cfg"] = dict(rank=cy["lora"]["rank"], alpha=float(cy["lora"]["alpha"]), lora_targets=cy["lora"]["targets"],
                        steps=cy["sampler"]["steps"], eta=float(cy["sampler"]["eta"]), K=cy["sampler"]["backprop_steps"],
                        guidance=float(cy["sampler"]["guidance_scale"]), lr=float(cy["optim"]["lr"]),
                        clip=float(cy["optim"]["grad_clip"]))
    if cy["sampler"]["backprop_mode"] != "last":
        print("bench_step_vs_torch: only backprop_mode last is implemented on the PyTorch side")
        return 1
    step = TorchStep(meta, weights, args.checkpointing)
    S = meta["_cfg"]["steps"]
    noise = [io[f"noise.{i}"] for i in range(S)]
    fi = io["frame_index"].tolist()
    loss, samples = step.run(io["x_T"], io["context"], io["uncond_context"], io["fps"], noise, fi)
    errs = {"loss": rel_err(loss, io["loss"]), "samples": rel_err(samples, io["samples"])}
    params = dict(step.unet.named_parameters())
    gworst, gname, n_g = 0.0, "", 0
    for k, ref in io.items():
        if not k.startswith("grad."):
            continue
        name = k[len("grad.base_model.model.model.diffusion_model."):]
        g = params[name].grad
        e = rel_err(g, ref) if ref.abs().max() > 0 else g.abs().max().item()
        n_g += 1
        if e > gworst:
            gworst, gname = e, name
    errs["lora_grads_worst"] = gworst
    ok = all(v <= args.tol for v in errs.values())
    print(f"agreement: loss ours {io['loss'].item():.6f} torch {loss.item():.6f} (rel {errs['loss']:.2e}), samples rel "
          f"{errs['samples']:.2e}, {n_g} LoRA grads worst rel {gworst:.2e} ({gname}) -> {'OK' if ok else 'MISMATCH'}")
    if not ok:
        return 1
    # timing: optimisation steps as the trainer does them (zero grad, step, clip, AdamW)
    lora = step.unet.lora_parameters()
    opt = torch.optim.AdamW(lora, lr=meta["_cfg"]["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    times, cpu_times = [], []
    for it in range(args.steps + 1):
        x_T = torch.randn(io["x_T"].shape, generator=g)
        nz = [torch.randn(io["x_T"].shape, generator=g) for _ in range(S)]
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        step.run(x_T, io["context"], io["uncond_context"], io["fps"], nz, fi)
        if meta["_cfg"]["clip"] > 0:
            torch.nn.utils.clip_grad_norm_(lora, meta["_cfg"]["clip"])
        opt.step()
        if it:  # the first one is the warm-up
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    load_after = os.getloadavg()
    ours = meta["step_s"]
    ours_min, torch_min = min(ours), min(times)
    ours_med, torch_med = sorted(ours)[len(ours) // 2], sorted(times)[len(times) // 2]
    print(f"s/step ({args.threads} threads, {len(ours)} steps each, checkpointing {'on' if args.checkpointing else 'off'}):"
          f" ours min {ours_min:.4f} / median {ours_med:.4f}, torch min {torch_min:.4f} / median {torch_med:.4f};"
          f" ratio ours/torch {ours_min / torch_min:.3f} (min) {ours_med / torch_med:.3f} (median)")
    ours_cpu = meta.get("step_cpu_s", [])
    if ours_cpu:
        oc_min, tc_min = min(ours_cpu), min(cpu_times)
        oc_med, tc_med = sorted(ours_cpu)[len(ours_cpu) // 2], sorted(cpu_times)[len(cpu_times) // 2]
        print(f"CPU s/step (process CPU time, all threads): ours min {oc_min:.4f} / median {oc_med:.4f}, torch min "
              f"{tc_min:.4f} / median {tc_med:.4f}; ratio ours/torch {oc_min / tc_min:.3f} (min) {oc_med / tc_med:.3f} "
              "(median)")
    print(f"machine load average before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} cores; "
          f"torch {torch.__version__}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(errors=errs, ours_s=ours, torch_s=times, ours_cpu_s=ours_cpu, torch_cpu_s=cpu_times,
                           ratio_min=ours_min / torch_min,
                           ratio_median=ours_med / torch_med, threads=args.threads, checkpointing=args.checkpointing,
                           load_before=load_before, load_after=load_after, torch=torch.__version__), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
