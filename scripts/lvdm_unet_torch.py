#!/usr/bin/env python3
"""A compact pure-PyTorch VideoCrafter2 3-D UNet (lvdm UNetModel), written from the 'spec' and
'config' entries of shared/fixtures/vc2_unet_tiny.json. It is a second, independent reading of
the spec (the C model in core/models/unet3d.c is the first) and the PyTorch side of
scripts/bench_unet_vs_torch.py.

Module and parameter names are the checkpoint keys without 'model.diffusion_model.'
(model.load_state_dict(stripped) is strict). Optional peft-style LoRA on to_q / to_k / to_v:
y = W x + (alpha / r) * B (A x), parameters '<path>.lora_A.weight' [r, in] and
'<path>.lora_B.weight' [out, r] (peft's saved names without 'base_model.model.' + prefix).
Eval semantics only (no dropout).

    python3 scripts/lvdm_unet_torch.py [FIXTURE_PREFIX]   # checks the fixture, exit 1 on mismatch
"""
import json
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

PREFIX = "model.diffusion_model."
LORA_PREFIX = "base_model.model." + PREFIX


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def gn(ch, eps):
    return nn.GroupNorm(32, ch, eps=eps, affine=True)


class LoRALinear(nn.Module):
    """nn.Linear-like (no bias) with an optional LoRA branch."""

    def __init__(self, in_f, out_f, bias=False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_f, in_f))
        self.bias = nn.Parameter(torch.empty(out_f)) if bias else None
        self.lora_A = None
        self.lora_B = None
        self.scale = 0.0

    def add_lora(self, r, alpha):
        out_f, in_f = self.weight.shape
        self.lora_A = nn.Linear(in_f, r, bias=False)
        self.lora_B = nn.Linear(r, out_f, bias=False)
        bound = 1.0 / math.sqrt(in_f)
        nn.init.uniform_(self.lora_A.weight, -bound, bound)
        nn.init.zeros_(self.lora_B.weight)
        self.scale = alpha / r

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.lora_A is not None:
            y = y + self.scale * self.lora_B(self.lora_A(x))
        return y


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim, heads, d_head):
        super().__init__()
        inner = heads * d_head
        self.heads, self.d_head = heads, d_head
        self.to_q = LoRALinear(query_dim, inner)
        self.to_k = LoRALinear(context_dim, inner)
        self.to_v = LoRALinear(context_dim, inner)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x, context=None):
        ctx = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(ctx), self.to_v(ctx)
        n, lq, _ = q.shape
        lk = k.shape[1]
        h, d = self.heads, self.d_head
        # head-major split of the inner dim: channel = head * d_head + j
        q = q.view(n, lq, h, d).transpose(1, 2)
        k = k.view(n, lk, h, d).transpose(1, 2)
        v = v.view(n, lk, h, d).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, no mask
        o = o.transpose(1, 2).reshape(n, lq, h * d)
        return self.to_out(o)


class GEGLU(nn.Module):
    def __init__(self, dim, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * dim_out)

    def forward(self, x):
        a, g = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(g)  # exact erf GELU


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, d_head, context_dim):
        super().__init__()
        # context_dim None: attn2 is self-attention (temporal transformers)
        self.cross = context_dim is not None
        self.attn1 = CrossAttention(dim, dim, heads, d_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim if self.cross else dim, heads, d_head)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x, context=None):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context if self.cross else None) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Per frame: [(B*T), C, H, W], tokens = the H*W pixels (index y*W + x)."""

    def __init__(self, ch, heads, d_head, depth, context_dim):
        super().__init__()
        inner = heads * d_head
        self.norm = gn(ch, 1e-6)
        self.proj_in = nn.Linear(ch, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, d_head, context_dim) for _ in range(depth)])
        self.proj_out = nn.Linear(inner, ch)

    def forward(self, x, context):
        n, c, h, w = x.shape
        x_in = x
        x = self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c)
        x = self.proj_in(x)
        for blk in self.transformer_blocks:
            x = blk(x, context)
        x = self.proj_out(x)
        return x.reshape(n, h, w, c).permute(0, 3, 1, 2) + x_in


class TemporalTransformer(nn.Module):
    """On [B, C, T, H, W]: tokens = the T frames of one pixel (row b*H*W + y*W + x);
    both attentions are self-attention. Without use_linear, proj_in / proj_out are kernel-1
    Conv1d (init_attn)."""

    def __init__(self, ch, heads, d_head, depth, use_linear):
        super().__init__()
        inner = heads * d_head
        self.norm = gn(ch, 1e-6)
        if use_linear:
            self.proj_in = nn.Linear(ch, inner)
            self.proj_out = nn.Linear(inner, ch)
        else:
            self.proj_in = nn.Conv1d(ch, inner, 1)
            self.proj_out = nn.Conv1d(inner, ch, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, d_head, None) for _ in range(depth)])

    @staticmethod
    def _lin(m, x):  # Linear or kernel-1 Conv1d as a matrix on the last dim
        w = m.weight if m.weight.dim() == 2 else m.weight.squeeze(-1)
        return F.linear(x, w, m.bias)

    def forward(self, x):
        b, c, t, h, w = x.shape
        x_in = x
        x = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)
        x = self._lin(self.proj_in, x)
        for blk in self.transformer_blocks:
            x = blk(x)
        x = self._lin(self.proj_out, x)
        return x.reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2) + x_in


def fold(x):  # [B, C, T, H, W] -> [(B*T), C, H, W]
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def unfold(x, b):  # [(B*T), C, H, W] -> [B, C, T, H, W]
    n, c, h, w = x.shape
    return x.reshape(b, n // b, c, h, w).permute(0, 2, 1, 3, 4)


class TemporalConvBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()

        def conv():
            return nn.Conv3d(ch, ch, (3, 1, 1), padding=(1, 0, 0))

        self.conv1 = nn.Sequential(gn(ch, 1e-5), nn.SiLU(), conv())
        self.conv2 = nn.Sequential(gn(ch, 1e-5), nn.SiLU(), nn.Dropout(0.1), conv())
        self.conv3 = nn.Sequential(gn(ch, 1e-5), nn.SiLU(), nn.Dropout(0.1), conv())
        self.conv4 = nn.Sequential(gn(ch, 1e-5), nn.SiLU(), nn.Dropout(0.1), conv())

    def forward(self, x):
        return self.conv4(self.conv3(self.conv2(self.conv1(x)))) + x


class ResBlock(nn.Module):
    def __init__(self, ch, out_ch, emb_dim, temporal_conv):
        super().__init__()
        self.in_layers = nn.Sequential(gn(ch, 1e-5), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_ch))
        self.out_layers = nn.Sequential(gn(out_ch, 1e-5), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip_connection = nn.Identity() if ch == out_ch else nn.Conv2d(ch, out_ch, 1)
        if temporal_conv:
            self.temopral_conv = TemporalConvBlock(out_ch)  # sic, the checkpoint spelling
        else:
            self.temopral_conv = None

    def forward(self, x, emb, b):
        h = self.in_layers(x)
        h = h + self.emb_layers(emb)[:, :, None, None]
        h = self.out_layers(h)
        h = self.skip_connection(x) + h
        if self.temopral_conv is not None:
            h = fold(self.temopral_conv(unfold(h, b)))
        return h


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x, emb, context, b):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, b)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, TemporalTransformer):
                x = fold(layer(unfold(x, b)))
            else:
                x = layer(x)
        return x


class UNet3D(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        for key, want in (("use_relative_position", False), ("use_causal_attention", False),
                          ("temporal_selfatt_only", True)):
            if cfg.get(key, want) != want:
                raise ValueError(f"lvdm_unet_torch: {key}={cfg[key]} is not implemented")
        self.cfg = dict(cfg)
        mc = cfg["model_channels"]
        dh = cfg["num_head_channels"]
        depth = cfg.get("transformer_depth", 1)
        ctx_dim = cfg["context_dim"]
        attn_res = list(cfg["attention_resolutions"])
        nrb = cfg["num_res_blocks"]
        mult = list(cfg["channel_mult"])
        tconv = cfg.get("temporal_conv", True)
        tattn = cfg.get("temporal_attention", True)
        use_linear = cfg.get("use_linear", True)
        self.fps_cond = cfg.get("fps_cond", True)
        self.addition_attention = cfg.get("addition_attention", True)
        emb_dim = 4 * mc
        self.mc = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if self.fps_cond:
            self.fps_embedding = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def attn_layers(ch):
            out = [SpatialTransformer(ch, ch // dh, dh, depth, ctx_dim)]
            if tattn:
                out.append(TemporalTransformer(ch, ch // dh, dh, depth, use_linear))
            return out

        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(cfg["in_channels"], mc, 3, padding=1))])
        if self.addition_attention:
            self.init_attn = TimestepEmbedSequential(TemporalTransformer(mc, 8, dh, depth, False))
        chans = [mc]
        ch, ds = mc, 1
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers = [ResBlock(ch, m * mc, emb_dim, tconv)]
                ch = m * mc
                if ds in attn_res:
                    layers += attn_layers(ch)
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, ch, emb_dim, tconv), *attn_layers(ch), ResBlock(ch, ch, emb_dim, tconv))
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(nrb + 1):
                layers = [ResBlock(ch + chans.pop(), m * mc, emb_dim, tconv)]
                ch = m * mc
                if ds in attn_res:
                    layers += attn_layers(ch)
                if level and i == nrb:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(gn(ch, 1e-5), nn.SiLU(), nn.Conv2d(ch, cfg["out_channels"], 3, padding=1))

    # ---- LoRA -------------------------------------------------------------------------------
    def lora_modules(self, targets=("to_q", "to_k", "to_v")):
        return [(n, m) for n, m in self.named_modules()
                if isinstance(m, LoRALinear) and n.rsplit(".", 1)[-1] in targets]

    def add_lora(self, rank=4, alpha=4.0, targets=("to_q", "to_k", "to_v")):
        for _, m in self.lora_modules(targets):
            m.add_lora(rank, alpha)

    def lora_parameters(self):
        return [p for n, p in self.named_parameters() if ".lora_" in n]

    def freeze_base(self):
        """requires_grad False on every base weight, True on LoRA parameters."""
        for n, p in self.named_parameters():
            p.requires_grad_(".lora_" in n)

    def load_weights(self, tensors):
        """Loads a {key: tensor} dict with checkpoint names (prefix optional) and, if LoRA is on,
        peft names ('base_model.model.model.diffusion_model.<path>.lora_A.weight'). Strict both
        ways: every model parameter must be given, every given key must be used."""
        sd = {}
        for k, v in tensors.items():
            if k.startswith(LORA_PREFIX):
                k = k[len(LORA_PREFIX):]
            elif k.startswith(PREFIX):
                k = k[len(PREFIX):]
            sd[k] = v
        self.load_state_dict(sd, strict=True)

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, x, timesteps, context, fps=None):
        b, _, t, _, _ = x.shape
        emb = self.time_embed(timestep_embedding(timesteps, self.mc))
        if self.fps_cond:
            if fps is None:
                fps = torch.full_like(timesteps, 16)
            emb = emb + self.fps_embedding(timestep_embedding(fps, self.mc))
        emb = emb.repeat_interleave(t, dim=0)
        context = context.repeat_interleave(t, dim=0)
        h = fold(x)
        hs = []
        for i, block in enumerate(self.input_blocks):
            h = block(h, emb, context, b)
            if i == 0 and self.addition_attention:
                h = self.init_attn(h, emb, context, b)
            hs.append(h)
        h = self.middle_block(h, emb, context, b)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, context, b)
        return unfold(self.out(h), b)


def rel_err(a, b):
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-30)


def check_fixture(prefix="/work/shared/fixtures/vc2_unet_tiny", tol=1e-5, verbose=True):
    """Loads PREFIX.json / .weights.safetensors / .io.safetensors, runs forward and backward of
    sum(out * grad_out) and compares out, grad.x, grad.context and every grad.<weight> in the io
    file (relative error max|a-b| / max|b|). Returns (ok, {name: rel_err})."""
    from safetensors.torch import load_file

    with open(prefix + ".json") as f:
        meta = json.load(f)
    model = UNet3D(meta["config"]).eval()
    model.load_weights(load_file(prefix + ".weights.safetensors"))
    io = load_file(prefix + ".io.safetensors")
    for p in model.parameters():
        p.requires_grad_(False)
    wgrads = {k[5:]: v for k, v in io.items() if k.startswith("grad.") and k not in ("grad.x", "grad.context")}
    params = dict(model.named_parameters())
    for k in wgrads:
        params[k].requires_grad_(True)
    x = io["x"].clone().requires_grad_(True)
    ctx = io["context"].clone().requires_grad_(True)
    out = model(x, io["timesteps"], ctx, io["fps"])
    (out * io["grad_out"]).sum().backward()
    errs = {"out": rel_err(out.detach(), io["out"]), "grad.x": rel_err(x.grad, io["grad.x"]),
            "grad.context": rel_err(ctx.grad, io["grad.context"])}
    for k, ref in wgrads.items():
        errs["grad." + k] = rel_err(params[k].grad, ref)
    ok = all(e <= tol for e in errs.values())
    if verbose:
        worst = max(errs, key=errs.get)
        for k in ("out", "grad.x", "grad.context"):
            print(f"  {k:14s} rel err {errs[k]:.3e}")
        print(f"  {len(wgrads)} weight grads: worst {worst} {errs[worst]:.3e}")
        print(f"{prefix}: {'OK' if ok else 'MISMATCH'} (tol {tol:g})")
    return ok, errs


if __name__ == "__main__":
    torch.manual_seed(0)
    ok, _ = check_fixture(*(sys.argv[1:2] or []))
    sys.exit(0 if ok else 1)
