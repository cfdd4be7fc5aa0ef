#!/usr/bin/env python3
"""make_vader_step_variant_fixtures.py — more cases of one whole VADER training step in the
format of shared/fixtures/vader_step_tiny (DESIGN.md "Fixtures"), with other parameters:
batch B, frames T, latent H x W (non-square too), context length L, DDIM steps S, truncated
backprop K, decode choice, guidance, eta, LoRA rank / alpha / targets, unet_config, vae_config.

The networks are the upstream ones, imported at run time from a VideoCrafter checkout (nothing
of it is copied here): lvdm.modules.networks.openaimodel3d.UNetModel(**unet_config) and
lvdm.modules.networks.ae_modules.Decoder(**vae_config) plus post_quant_conv, and the DDIM
schedule helpers of lvdm.models.utils_diffusion. The step loop itself is written here from the
json's 'schedule' / 'step' / 'truncated_backprop' / 'lora' / 'decode' / 'reward' text; LoRA is
a forward hook on each to_q / to_k / to_v nn.Linear of every CrossAttention, so the state-dict
names are exactly '<path>.lora_A.weight' / '<path>.lora_B.weight'. fp32, eval semantics.

--check first re-runs the shared vader_step_tiny case (its weights, x_T, contexts, fps and
noise.i) and compares every io tensor: variants are written only when that reproduces the
shared io (worst relative error printed, must be < 1e-5). --run BIN runs vader-fixture on each
case written.

    # VideoCrafter checkout (bare mirror from the fetch tool, or any clone):
    git --git-dir=/work/.mirror/AILab-CVC+VideoCrafter/repo archive HEAD | tar -x -C /tmp/videocrafter
    python3 scripts/make_vader_step_variant_fixtures.py --lvdm /tmp/videocrafter --out /tmp/vsvar \
        --check [--cases a,b] [--run build/bin/vader-fixture]
    # the small case kept in the repository:
    python3 scripts/make_vader_step_variant_fixtures.py --lvdm /tmp/videocrafter --out tests/fixtures \
        --cases vader_step_var_small --f16-weights
"""
import argparse
import copy
import json
import os
import re
import sys
import types

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

import vader_convert_common as common

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("VADER_SHARED") or os.path.join(HERE, "..", "..", "shared")
if not os.path.isdir(SHARED):
    SHARED = "/work/shared"
RGB = (0.7, -0.2, 0.5)
SCALE_FACTOR = 0.18215
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

lvdm = types.SimpleNamespace()


def import_lvdm(root):
    # utils/utils.py (imported by ae_modules) imports cv2 for helpers this script never calls
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    sys.path.insert(0, os.path.abspath(root))
    from lvdm.modules.networks.openaimodel3d import UNetModel
    from lvdm.modules.networks.ae_modules import Decoder
    from lvdm.modules.attention import CrossAttention
    from lvdm.models.utils_diffusion import make_beta_schedule, make_ddim_timesteps, make_ddim_sampling_parameters
    lvdm.UNetModel, lvdm.Decoder, lvdm.CrossAttention = UNetModel, Decoder, CrossAttention
    lvdm.make_beta_schedule = make_beta_schedule
    lvdm.make_ddim_timesteps = make_ddim_timesteps
    lvdm.make_ddim_sampling_parameters = make_ddim_sampling_parameters


# ---- models ----------------------------------------------------------------------------------
class VAE(nn.Module):
    """first_stage_model's decode path: decoder(post_quant_conv(z)) (AutoencoderKL.decode)."""

    def __init__(self, vae_config, embed_dim):
        super().__init__()
        self.decoder = lvdm.Decoder(**vae_config)
        self.post_quant_conv = nn.Conv2d(embed_dim, vae_config["z_channels"], 1)

    def forward(self, z):
        return self.decoder(self.post_quant_conv(z))


def lora_hook(mod, inp, out):
    return out + mod.lora_scale * mod.lora_B(mod.lora_A(inp[0]))


def add_lora(unet, rank, alpha, targets):
    """peft-style LoRA on the named linears of every CrossAttention: y = W x + alpha/r B(A x)."""
    for _, m in unet.named_modules():
        if not isinstance(m, lvdm.CrossAttention):
            continue
        for t in targets:
            lin = m.to_out[0] if t == "to_out.0" else getattr(m, t)
            lin.lora_A = nn.Linear(lin.in_features, rank, bias=False)
            lin.lora_B = nn.Linear(rank, lin.out_features, bias=False)
            lin.lora_scale = alpha / rank
            lin.register_forward_hook(lora_hook)


def build(meta):
    c = meta["case"]
    torch.manual_seed(0)
    unet = lvdm.UNetModel(**meta["unet_config"]).eval()
    targets = meta.get("lora_targets", ["to_q", "to_k", "to_v"])
    add_lora(unet, int(c["rank"]), float(c["alpha"]), targets)
    vae = VAE(meta["vae_config"], meta["unet_config"]["out_channels"]).eval()
    return unet, vae


def randomise(unet, vae, seed):
    """Weights as the shared case has them: matrices N(0, 1/fan_in), biases N(0, 0.2^2), norm
    scales 1 + 0.1 N, lora_B N(0, 0.05^2) (not zero, so d/d lora_A is not zero either)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in (unet, vae):
            norms = {id(m.weight) for m in mod.modules() if isinstance(m, (nn.GroupNorm, nn.LayerNorm))}
            for name, p in mod.named_parameters():
                if id(p) in norms:
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                elif p.ndim == 1:
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
                elif "lora_B" in name:
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(p[0].numel()))


def to_f64(unet, vae):
    """The same networks in float64 (a reference without fp32 rounding; results are stored as
    float32). lvdm pins a few things to float32: UNetModel.dtype, the float32 sinusoidal
    embedding fed to time_embed / fps_embedding, and GroupNormSpecific's x.float(); those are
    redirected at run time, nothing else changes."""
    import lvdm.basics
    lvdm.basics.GroupNormSpecific.forward = nn.GroupNorm.forward
    unet.double()
    vae.double()
    unet.dtype = torch.float64
    for m in (getattr(unet, "time_embed", None), getattr(unet, "fps_embedding", None)):
        if m is not None:
            m.register_forward_pre_hook(lambda mod, a: (a[0].double(),))
    torch.set_default_dtype(torch.float64)


def state_dict(unet, vae):
    sd = {UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
    sd.update({VAE_PREFIX + k: v for k, v in vae.state_dict().items()})
    return {k: v.detach().contiguous() for k, v in sd.items()}


def load_weights(unet, vae, sd):
    u = {k[len(UNET_PREFIX):]: v for k, v in sd.items() if k.startswith(UNET_PREFIX)}
    v = {k[len(VAE_PREFIX):]: t for k, t in sd.items() if k.startswith(VAE_PREFIX)}
    unet.load_state_dict(u, strict=True)
    vae.load_state_dict(v, strict=True)


# ---- schedule (json 'schedule') ----------------------------------------------------------------
def schedule(meta):
    s, c = meta["schedule"], meta["case"]
    T = int(s.get("timesteps", 1000))
    betas = lvdm.make_beta_schedule("linear", T, linear_start=s["linear_start"], linear_end=s["linear_end"])
    alphas_cumprod = np.cumprod(1.0 - betas, axis=0)
    ac = torch.tensor(alphas_cumprod, dtype=torch.float32)  # lvdm registers the buffers as float32
    if s.get("use_scale", True):
        mid = int(s["mid_step"])
        arr = np.concatenate((np.linspace(s["scale_a"], s["scale_b"], mid), np.full(T, s["scale_b"])))
    else:
        arr = np.ones(T + 400)
    scale_arr = torch.tensor(arr, dtype=torch.float32)
    ts = lvdm.make_ddim_timesteps("uniform", int(c["S"]), T, verbose=False)
    sig, a, a_prev = lvdm.make_ddim_sampling_parameters(alphacums=ac, ddim_timesteps=ts, eta=float(c["eta"]),
                                                       verbose=False)
    sc = scale_arr[ts]
    sc_prev = np.asarray([scale_arr[0]] + scale_arr[ts[:-1]].tolist())
    return dict(alphas_cumprod=ac, scale_arr=scale_arr[:T], timesteps=ts, alphas=a, alphas_prev=a_prev, sigmas=sig,
                sqrt_one_minus=np.sqrt(1.0 - a), scale=sc, scale_prev=sc_prev)


# ---- one VADER step (json 'step', 'truncated_backprop', 'decode', 'reward') --------------------
def decode_indices(dec, T, frame_index):
    if dec == "alt":
        return list(range(0, T, 2))
    if dec == "all":
        return list(range(T))
    if dec == "fml":
        return [0, T // 2, T - 1] if T > 2 else list(range(T))
    n = int(dec)
    if n == -1:
        return [frame_index]
    return [range(T)[n]]  # python indexing: "-2" is frame T-2 as in VADER's samples[:, :, n:n+1]


def reward_rgb(meta):
    """The colour projection the json's 'reward' text names (rgb = [r, g, b])."""
    m = re.search(r"rgb = \[([^\]]*)\]", meta.get("reward", ""))
    return tuple(float(v) for v in m.group(1).split(",")) if m else RGB


def vader_step(unet, vae, meta, inp, sch):
    c = meta["case"]
    S, K, g = len(sch["timesteps"]), int(c["K"]), float(c["guidance"])
    x = inp["x_T"]
    B = x.shape[0]
    size = (B, 1, 1, 1, 1)
    out = {}
    for i, step in enumerate(np.flip(sch["timesteps"])):
        index = S - 1 - i
        taped = i >= S - K
        if i == S - K:
            x = x.detach()  # x entering the first taped step is a constant
        with torch.set_grad_enabled(taped):
            ts = torch.full((B,), int(step), dtype=torch.long)
            e_c = unet(x, ts, context=inp["context"], fps=inp["fps"])
            if g == 1.0:
                e = e_c
            else:
                e_u = unet(x, ts, context=inp["uncond_context"], fps=inp["fps"])
                e = e_u + g * (e_c - e_u)
            a_t = torch.full(size, sch["alphas"][index])
            a_prev = torch.full(size, sch["alphas_prev"][index])
            sigma_t = torch.full(size, sch["sigmas"][index])
            sq1 = torch.full(size, sch["sqrt_one_minus"][index])
            pred_x0 = (x - sq1 * e) / a_t.sqrt()
            dir_xt = (1.0 - a_prev - sigma_t ** 2).sqrt() * e
            noise = sigma_t * inp[f"noise.{i}"]
            pred_x0 = pred_x0 / torch.full(size, sch["scale"][index])
            x = a_prev.sqrt() * torch.full(size, sch["scale_prev"][index]) * pred_x0 + dir_xt + noise
        out[f"step.{i}.x_prev"] = x.detach().clone()
        out[f"step.{i}.pred_x0"] = pred_x0.detach().clone()
    samples = x
    idx = decode_indices(str(c["decode"]), samples.shape[2], inp.get("_frame_index", 0))
    with torch.set_grad_enabled(K > 0):
        z = samples[:, :, idx] / SCALE_FACTOR
        frames = torch.stack([vae(z[:, :, j]) for j in range(z.shape[2])], dim=2)
        img = (frames.clamp(-1, 1) + 1) / 2
        rgb = torch.tensor(reward_rgb(meta)).view(1, 3, 1, 1, 1)
        reward = (img * rgb).sum(1).flatten(1).mean(1)
        loss = -reward.mean()
    lora = [(n, p) for n, p in unet.named_parameters() if ".lora_" in n]
    grads = torch.autograd.grad(loss, [p for _, p in lora], allow_unused=True) if K > 0 else [None] * len(lora)
    for (n, p), gr in zip(lora, grads):
        out["grad." + UNET_PREFIX + n] = (gr if gr is not None else torch.zeros_like(p)).detach().contiguous()
    out.update(samples=samples.detach(), frames=frames.detach(), reward=reward.detach(), loss=loss.detach())
    return out


def schedule_io(sch):
    return {"schedule.alphas_cumprod": sch["alphas_cumprod"], "schedule.scale_arr": sch["scale_arr"],
            "ddim.timesteps": torch.tensor(sch["timesteps"], dtype=torch.int64),
            "ddim.alphas": torch.as_tensor(sch["alphas"]).float(),
            "ddim.alphas_prev": torch.as_tensor(sch["alphas_prev"]).float(),
            "ddim.sigmas": torch.as_tensor(sch["sigmas"]).float(), "ddim.scale_arr": torch.as_tensor(sch["scale"]).float(),
            "ddim.scale_arr_prev": torch.as_tensor(sch["scale_prev"]).float()}


def rel_err(a, b):
    a, b = a.double(), b.double()
    m = float(b.abs().max()) if b.numel() else 0.0
    return float((a - b).abs().max()) / m if m > 0 else float((a - b).abs().max()) if a.numel() else 0.0


def check_shared(f64):
    """Re-runs shared vader_step_tiny: the worst relative error over its io. In float64 the
    shared (fp32) io is matched to its own rounding, ~1e-5 on the LoRA gradients (guidance 12
    amplifies the rounding of e_c - e_u); fp32 against fp32 (other torch version) about twice that."""
    pre = os.path.join(SHARED, "fixtures", "vader_step_tiny")
    meta = json.load(open(pre + ".json"))
    unet, vae = build(meta)
    load_weights(unet, vae, load_file(pre + ".weights.safetensors"))
    io = load_file(pre + ".io.safetensors")
    sch = schedule(meta)
    got = schedule_io(sch)
    inp = {k: v.double() if f64 and v.is_floating_point() else v for k, v in io.items()}
    if f64:
        to_f64(unet, vae)
    got.update(vader_step(unet, vae, meta, inp, sch))
    torch.set_default_dtype(torch.float32)
    worst, worst_name = 0.0, ""
    for k in io:
        if k in ("x_T", "context", "uncond_context", "fps") or k.startswith("noise."):
            continue
        if k not in got:
            print("  not computed:", k)
            return False
        e = rel_err(got[k], io[k]) if k != "ddim.timesteps" else float((got[k] != io[k]).any())
        if e > worst:
            worst, worst_name = e, k
    missing = [k for k in got if k not in io]
    if missing:
        print("  computed but not in the shared io:", missing[:5])
    print(f"shared vader_step_tiny regenerated ({'float64' if f64 else 'float32'}): {len(io)} io tensors, "
          f"worst rel err {worst:.3e} ({worst_name})")
    return worst < (2e-5 if f64 else 5e-5) and not missing


# ---- variants ----------------------------------------------------------------------------------
def template():
    return json.load(open(os.path.join(SHARED, "fixtures", "vader_step_tiny.json")))


def variant(name, case=None, unet=None, vae=None, seed=1, **extra):
    t = template()
    c = dict(t["case"])
    c.update(case or {})
    c["name"] = name
    u = dict(t["unet_config"])
    u.update(unet or {})
    v = dict(t["vae_config"])
    v.update(vae or {})
    return dict(case=c, unet_config=u, vae_config=v, seed=seed, **extra)


SMALL_UNET = dict(model_channels=32, channel_mult=[1], attention_resolutions=[2], num_head_channels=8,
                  context_dim=8, temporal_length=3, temporal_conv=False, addition_attention=False)
SMALL_VAE = dict(ch=32, ch_mult=[1], num_res_blocks=0, resolution=8)

CASES = {
    "vader_step_var_b2k2": variant("vader_step_var_b2k2", dict(B=2, K=2, guidance=7.5), seed=2),
    "vader_step_var_kS": variant("vader_step_var_kS", dict(S=5, K=5, decode="alt", eta=0.0), seed=3),
    "vader_step_var_s10": variant("vader_step_var_s10", dict(S=10, K=2, decode="0", guidance=1.0), seed=4),
    "vader_step_var_t6": variant("vader_step_var_t6", dict(T=6, H=8, W=12, L=7, decode="alt", rank=8, alpha=16),
                                 dict(temporal_length=6), seed=5),
    "vader_step_var_rand": variant("vader_step_var_rand", dict(T=3, decode="-1", S=5, K=1), dict(temporal_length=3),
                                   seed=6),
    "vader_step_var_all": variant("vader_step_var_all", dict(T=3, decode="all", H=4, W=6, B=2), dict(temporal_length=3),
                                  seed=7),
    "vader_step_var_neg": variant("vader_step_var_neg", dict(decode="-2", eta=0.5), seed=8),
    "vader_step_var_unet": variant("vader_step_var_unet", dict(S=4, K=2, H=8, W=8, L=77, rank=2, alpha=1),
                                   dict(num_res_blocks=2, transformer_depth=2, channel_mult=[1, 1, 2],
                                        attention_resolutions=[4, 1], num_head_channels=32, context_dim=16),
                                   dict(ch_mult=[1, 2, 2], num_res_blocks=2, attn_resolutions=[8], resolution=32),
                                   seed=9),
    "vader_step_var_nolin": variant("vader_step_var_nolin", dict(S=2, K=1),
                                    dict(use_linear=False, addition_attention=False, fps_cond=False,
                                         attention_resolutions=[2]), seed=10),
    "vader_step_var_out": variant("vader_step_var_out", dict(S=2, K=2, decode="fml", T=4), seed=11,
                                  lora_targets=["to_q", "to_k", "to_v", "to_out.0"]),
    # S = 6 does not divide 1000: lvdm's uniform spacing gives 7 timesteps (c = 166); fps per sample
    "vader_step_var_s6": variant("vader_step_var_s6", dict(B=2, S=6, K=3), seed=13, fps=[8, 30]),
    # num_heads instead of num_head_channels (lvdm: d_head = channels / num_heads), no init_attn,
    # temporal_transformer_depth 2 (its own parameter, transformer_depth stays 1)
    "vader_step_var_heads": variant("vader_step_var_heads", dict(S=2, K=1),
                                    dict(num_head_channels=-1, num_heads=2, addition_attention=False,
                                         temporal_transformer_depth=2), seed=14),
    # decoder z_channels 8: post_quant_conv maps the 4 latent channels (embed_dim) to 8
    "vader_step_var_zch": variant("vader_step_var_zch", dict(S=2, K=1, decode="1"), None, dict(z_channels=8), seed=15),
    # another colour projection in the reward text
    "vader_step_var_rgb": variant("vader_step_var_rgb", dict(S=2, K=2), seed=16, rgb=[0.1, 0.5, -0.3]),
    # the repository case (with --f16-weights): one UNet level, attention (and LoRA) only in the
    # middle block (attention_resolutions [2] never matches ds 1), no temporal conv / init_attn, to
    # stay small; B 2 with fps 8 / 30, T 3, non-square 4 x 6, L 3, S 6 (7 lvdm steps) / K 2, alt,
    # guidance 7.5, rank 8 alpha 16, temporal_transformer_depth 2, decoder z_channels 8, other rgb
    "vader_step_var_small": variant("vader_step_var_small",
                                    dict(B=2, T=3, H=4, W=6, L=3, S=6, K=2, decode="alt", guidance=7.5, eta=1.0,
                                         rank=8, alpha=16),
                                    dict(SMALL_UNET, temporal_transformer_depth=2), dict(SMALL_VAE, z_channels=8),
                                    seed=12, fps=[8, 30], rgb=[0.3, 0.6, -0.4]),
}


def make_case(out, name, spec, f64, f16_weights=False):
    t = template()
    meta = copy.deepcopy(t)
    meta["case"], meta["unet_config"], meta["vae_config"] = spec["case"], spec["unet_config"], spec["vae_config"]
    if "rgb" in spec:
        meta["reward"] = re.sub(r"rgb = \[[^\]]*\]", "rgb = [%s]" % ", ".join(str(v) for v in spec["rgb"]),
                                meta["reward"])
    if "lora_targets" in spec:
        meta["lora_targets"] = spec["lora_targets"]
        meta["lora"] = meta["lora"].replace("to_q/to_k/to_v", "/".join(spec["lora_targets"]))
    c = meta["case"]
    unet, vae = build(meta)
    randomise(unet, vae, 100 + spec["seed"])
    if f16_weights:  # stored as F16 (LoRA kept F32): compute with exactly the stored values
        with torch.no_grad():
            for mod in (unet, vae):
                for n, p in mod.named_parameters():
                    if ".lora_" not in n:
                        p.copy_(p.half().float())
    sd = state_dict(unet, vae)
    if f16_weights:
        sd = {k: v if ".lora_" in k else v.half() for k, v in sd.items()}
    g = torch.Generator().manual_seed(200 + spec["seed"])
    B, T, H, W, L = (int(c[k]) for k in "BTHWL")
    zc, cd = meta["unet_config"]["in_channels"], meta["unet_config"]["context_dim"]
    sch = schedule(meta)
    inp = {"x_T": torch.randn(B, zc, T, H, W, generator=g),
           "context": torch.randn(B, L, cd, generator=g),
           "uncond_context": 0.9 * torch.randn(1, L, cd, generator=g).expand(B, L, cd).contiguous(),
           "fps": torch.tensor(spec.get("fps", [24] * B), dtype=torch.int64)}
    for i in range(len(sch["timesteps"])):
        inp[f"noise.{i}"] = torch.randn(B, zc, T, H, W, generator=g)
    if str(c["decode"]) == "-1":  # VADER's random.randint(0, T - 1); the json does not name it
        inp["_frame_index"] = int(torch.randint(0, T, (1,), generator=g))
    if f64:
        to_f64(unet, vae)
        res = vader_step(unet, vae, meta, {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
                                           for k, v in inp.items()}, sch)
        torch.set_default_dtype(torch.float32)
        res = {k: v.float() if v.is_floating_point() else v for k, v in res.items()}
    else:
        res = vader_step(unet, vae, meta, inp, sch)
    io = {k: v for k, v in inp.items() if not k.startswith("_")}
    io.update(schedule_io(sch))
    io.update(res)
    order = ["x_T", "context", "uncond_context", "fps", "samples", "frames", "reward", "loss"]
    order += [k for k in io if k.startswith(("schedule.", "ddim."))]
    order += [f"noise.{i}" for i in range(len(sch["timesteps"]))]
    order += [k for k in io if k.startswith("step.")] + [k for k in io if k.startswith("grad.")]
    io = {k: io[k].contiguous() for k in order}
    meta["io"] = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in io.items()}
    meta["reference"] = {"framework": f"PyTorch {torch.__version__}, CPU, {'float64 (stored as float32)' if f64 else 'float32'}, "
                                      "eval mode (no dropout)",
                         "networks": "lvdm UNetModel / ae_modules.Decoder of AILab-CVC/VideoCrafter",
                         "generator": "scripts/make_vader_step_variant_fixtures.py", "seed": spec["seed"]}
    os.makedirs(out, exist_ok=True)
    pre = os.path.join(out, name)
    save_file(sd, pre + ".weights.safetensors")
    save_file(io, pre + ".io.safetensors")
    with open(pre + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    return pre


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lvdm", default="/tmp/videocrafter", help="VideoCrafter checkout (holds lvdm/)")
    common.add_variant_args(ap, "/tmp/vader_step_variants", [c for c in CASES if c != "vader_step_var_small"],
                            "vader_step_tiny")
    ap.add_argument("--fp32", action="store_true", help="compute the variants in float32 (default float64)")
    ap.add_argument("--f16-weights", action="store_true", help="store the network weights as F16 (LoRA F32)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    import_lvdm(a.lvdm)
    if a.check and not (check_shared(False) and check_shared(True)):
        sys.exit("the generator does not reproduce shared vader_step_tiny")
    fails = 0
    for name in [n for n in a.cases.split(",") if n]:
        pre = make_case(a.out, name, CASES[name], not a.fp32, a.f16_weights)
        print("wrote", pre, flush=True)
        if a.run:
            fails += common.run_fixture(a.run, pre, failures_only=True)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
