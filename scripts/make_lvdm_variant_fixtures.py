#!/usr/bin/env python3
"""make_lvdm_variant_fixtures.py — more lvdm fixture cases in the shared/fixtures format
(DESIGN.md "Fixtures"; the layout of shared/fixtures/vc2_unet_tiny and vc2_vae_decoder_tiny),
with other configs and shapes than the shared ones, made by running the upstream PyTorch code
of VideoCrafter2 (lvdm UNetModel, lvdm Decoder + AutoencoderKL's post_quant_conv) on random
weights, fp32, CPU, eval() mode.

The upstream code is not copied: it is imported at run time from a checkout of
github.com/AILab-CVC/VideoCrafter given with --upstream (the directory holding lvdm/ and utils/).

    python3 scripts/make_lvdm_variant_fixtures.py --upstream /tmp/videocrafter --out /tmp/lvdm_variants \
        [--only NAME[,NAME...]] [--check-shared /work/shared/fixtures]

Each case NAME writes NAME.json, NAME.weights.safetensors, NAME.io.safetensors into --out;
`vader-fixture OUT/NAME` checks one. --check-shared first loads the shared vc2_unet_tiny /
vc2_vae_decoder_tiny weights and inputs into the upstream modules built here and compares the
outputs, gradients and activations with the shared io files: it proves that this script calls
upstream the way the shared fixtures were made (exit 1 if not).

Weights: every parameter random (seeded), as in the shared fixtures: matrices and kernels
N(0, 1/fan_in), norm gains 1 + 0.1 N(0, 1), biases 0.2 N(0, 1). The zero-initialised layers
upstream (ResBlock out_layers.3, transformer proj_out, TemporalConvBlock conv4, the output conv)
are random too, so every path changes the output.
"""
import argparse
import json
import os
import re
import sys
import types

import torch
from safetensors.torch import load_file

import vader_convert_common as common

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."


# ---- upstream ------------------------------------------------------------------------------
def import_upstream(path):
    """lvdm's modules, imported from the checkout. utils/utils.py imports cv2 for image I/O that
    these modules never call: a stand-in module keeps OpenCV from being a requirement."""
    sys.path.insert(0, os.path.abspath(path))
    try:
        import cv2  # noqa: F401
    except ImportError:
        sys.modules["cv2"] = types.ModuleType("cv2")
    from lvdm.modules.networks.openaimodel3d import UNetModel
    from lvdm.modules.networks.ae_modules import Decoder
    return UNetModel, Decoder


# ---- weights and inputs -----------------------------------------------------------------------
def randomise(module, seed, f16=False):
    """The shared fixtures' scheme: N(0, 1/fan_in) matrices, 1 + 0.1 N gains, 0.2 N biases;
    f16: each value rounded to the nearest float16 (stored as F16 without loss)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            n = torch.randn(p.shape, generator=g)
            if name.endswith(".bias"):
                p.copy_(0.2 * n)
            elif p.ndim == 1:
                p.copy_(1.0 + 0.1 * n)
            else:
                p.copy_(n / (p.numel() / p.shape[0]) ** 0.5)
            if f16:
                p.copy_(p.half().float())


def randn(shape, g):
    return torch.randn(shape, generator=g, dtype=torch.float32)


class ActRecorder:
    """Forward hooks writing act.NAME (a copy: lvdm adds the fps embedding to the time embedding
    in place) in execution order."""

    def __init__(self, root, names):
        self.acts = {}
        self.handles = []
        mods = dict(root.named_modules())
        for n in names:
            self.handles.append(mods[n].register_forward_hook(self._hook(n)))

    def _hook(self, name):
        def fn(_mod, _inp, out):
            self.acts["act." + name] = out.detach().clone()
        return fn

    def remove(self):
        for h in self.handles:
            h.remove()


# ---- UNet ----------------------------------------------------------------------------------
# UNetModel keyword arguments the json records (the shared fixture's config keys, plus the ones a
# variant changes from upstream's defaults).
UNET_BASE = dict(
    in_channels=4, out_channels=4, model_channels=32, attention_resolutions=[2, 1], num_res_blocks=1,
    channel_mult=[1, 2], num_head_channels=16, transformer_depth=1, context_dim=24, use_linear=True,
    use_checkpoint=False, temporal_conv=True, temporal_attention=True, temporal_selfatt_only=True,
    use_relative_position=False, use_causal_attention=False, temporal_length=4, addition_attention=True,
    fps_cond=True,
)

# name: (config changes, B, T, H, W, L, timesteps, fps or None (fps not passed: lvdm's 16))
UNET_VARIANTS = {
    # 3 levels, 2 res blocks, attention at ds 2 only, depth 2 (init_attn and spatial: 2 blocks,
    # block temporal transformers: temporal_transformer_depth = 1), non-square, T 3
    "vc2_unet_deep": (dict(num_res_blocks=2, channel_mult=[1, 2, 2], attention_resolutions=[2], transformer_depth=2,
                           context_dim=16, temporal_length=3),
                      2, 3, 8, 12, 7, [17, 640], [8, 30]),
    # 1x1-conv / Conv1d projections, d_head 8, mc 64, T 6, single sample, 7 tokens
    "vc2_unet_conv": (dict(model_channels=64, use_linear=False, num_head_channels=8, attention_resolutions=[1, 2],
                           context_dim=20, temporal_length=6),
                      1, 6, 4, 8, 3, [3], [24]),
    # every temporal part and fps conditioning off, 3 levels with mult 3, attention at ds 1 and 4
    "vc2_unet_plain": (dict(temporal_conv=False, temporal_attention=False, addition_attention=False, fps_cond=False,
                            channel_mult=[1, 2, 3], attention_resolutions=[1, 4], num_head_channels=32),
                       3, 2, 8, 4, 5, [0, 500, 999], None),
    # heads by count (num_heads 2, num_head_channels -1: d_head = channels / 2), no init_attn
    # (it needs num_head_channels), one frame, fps not passed (16)
    "vc2_unet_heads": (dict(num_heads=2, num_head_channels=-1, addition_attention=False, temporal_length=1),
                       2, 1, 4, 4, 2, [250, 1], None),
    # temporal transformers of depth 2 (temporal_transformer_depth), T 5
    "vc2_unet_tdepth": (dict(temporal_transformer_depth=2, temporal_length=5, attention_resolutions=[1]),
                        1, 5, 4, 4, 4, [333], [12]),
    # causal temporal self-attention (lower-triangular mask; temporal_length must equal T)
    "vc2_unet_causal": (dict(use_causal_attention=True, temporal_length=4, attention_resolutions=[1]),
                        2, 4, 4, 4, 3, [900, 100], [24, 24]),
    # temporal cross-attention on the text (temporal_selfatt_only False): pixel p of sample b
    # attends to the context of frame p // (H*W/T); H*W must be a multiple of T
    "vc2_unet_tcross": (dict(temporal_selfatt_only=False, temporal_length=2, attention_resolutions=[1, 2]),
                        2, 2, 4, 8, 3, [42, 7], [24, 8]),
    # small ones (weights stored as float16, see F16_WEIGHTS; tests/fixtures holds
    # vc2_unet_depth_causal_relpos_tiny, which replaced vc2_unet_depth_causal_tiny there):
    # one level (any H, W: odd 3x5), depth 2 in init_attn / spatial but 1 in the temporal blocks,
    # causal temporal attention, Conv projections, d_head 4, in 6 / out 3 channels
    "vc2_unet_depth_causal_tiny": (dict(channel_mult=[1], attention_resolutions=[1], transformer_depth=2,
                                        num_head_channels=4, use_linear=False, use_causal_attention=True,
                                        temporal_length=3, temporal_conv=False, in_channels=6, out_channels=3,
                                        context_dim=12),
                                   2, 3, 3, 5, 3, [999, 3], [24, 6]),
    # the same with relative positions (replaces it in tests/fixtures: depth 2, causal, Conv
    # projections and the relative-position tables in one case)
    "vc2_unet_depth_causal_relpos_tiny": (dict(channel_mult=[1], attention_resolutions=[1], transformer_depth=2,
                                               num_head_channels=4, use_linear=False, use_causal_attention=True,
                                               use_relative_position=True, temporal_length=3, temporal_conv=False,
                                               in_channels=6, out_channels=3, context_dim=12),
                                          2, 3, 3, 5, 3, [999, 3], [24, 6]),
    # relative positions (lvdm RelativePosition, relative_position_k / _v tables of 2 temporal_length + 1
    # rows in attn1 and attn2 of every TemporalTransformer): T 5 > temporal_length + 1 = 3, so the
    # distances +-3, +-4 are clamped to +-2
    "vc2_unet_relpos": (dict(use_relative_position=True, temporal_length=2, attention_resolutions=[1, 2]),
                        2, 5, 4, 4, 3, [77, 901], [24, 12]),
    # relative positions with the causal mask (T = temporal_length), temporal depth 2
    "vc2_unet_relpos_causal": (dict(use_relative_position=True, use_causal_attention=True, temporal_length=4,
                                    temporal_transformer_depth=2, attention_resolutions=[1]),
                               2, 4, 4, 4, 3, [640, 5], [24, 8]),
    # relative positions in temporal cross-attention (forward only): attn2's table is indexed by
    # clamp(j - i) over the L = 6 text tokens j against the T = 3 frames i
    "vc2_unet_relpos_tcross": (dict(use_relative_position=True, temporal_selfatt_only=False, temporal_length=3,
                                    attention_resolutions=[1]),
                               1, 3, 4, 6, 6, [321], [24]),
    # heads by count with temporal cross-attention on the text (forward only), no fps / init_attn
    "vc2_unet_heads_tcross_tiny": (dict(channel_mult=[1], attention_resolutions=[1], num_heads=2, num_head_channels=-1,
                                        addition_attention=False, temporal_selfatt_only=False, fps_cond=False,
                                        temporal_conv=False, temporal_length=2, context_dim=8),
                                   2, 2, 2, 4, 3, [10, 700], None),
}


# Seeds: 100 + 10 i over the sorted names of the cases that existed before the relative-position
# ones (so regenerating those gives the same files); the later cases have their own.
UNET_SEEDS = {"vc2_unet_relpos": 200, "vc2_unet_relpos_causal": 210, "vc2_unet_relpos_tcross": 220,
              "vc2_unet_depth_causal_relpos_tiny": 230}


def unet_seed(name):
    if name in UNET_SEEDS:
        return UNET_SEEDS[name]
    return 100 + 10 * sorted(n for n in UNET_VARIANTS if n not in UNET_SEEDS).index(name)


def unet_heads(cfg, ch):
    if cfg.get("num_head_channels", -1) == -1:
        return cfg["num_heads"], ch // cfg["num_heads"]
    return ch // cfg["num_head_channels"], cfg["num_head_channels"]


def unet_spec(cfg):
    tdepth = cfg.get("temporal_transformer_depth", 1)
    heads = ("num_heads = channels / num_head_channels, d_head = num_head_channels (inner dim = heads * d_head)"
             if cfg.get("num_head_channels", -1) != -1 else
             "num_head_channels = -1: heads = num_heads, d_head = channels // num_heads (inner dim = heads * d_head)")
    causal = ("causal: a lower-triangular mask over the T frames (frame i attends to frames <= i) in attn1 AND attn2 "
              "of every TemporalTransformer (init_attn included); temporal_length == T"
              if cfg.get("use_causal_attention") else "no causal mask")
    tcross = ("temporal_selfatt_only = false: attn2 of every TemporalTransformer (init_attn included) is "
              "cross-attention on the text context (to_k / to_v take context_dim): with r = H*W / T, token row "
              "(b, pixel p = y*W + x) attends to the context of sample b (the frame p // r copy, all equal); no "
              "causal mask in this branch"
              if not cfg.get("temporal_selfatt_only", True) else
              "temporal_selfatt_only: both attentions of a TemporalTransformer block are self-attention over the T "
              "frames (attn2.to_k / to_v take the inner dim)")
    relpos = ("use_relative_position: attn1 and attn2 of every TemporalTransformer (init_attn included) have "
              "relative_position_k / relative_position_v (lvdm RelativePosition, max_relative_position = "
              "temporal_length = %d): embeddings_table [2 temporal_length + 1, d_head], E[i, j] = "
              "table[clamp(j - i, -temporal_length, temporal_length) + temporal_length] for query i, key j (j runs "
              "over the text tokens in a cross-attention); per head sim = q k^T d_head^-0.5 + (q_i . E_k[i, j]) "
              "d_head^-0.5, then the causal mask (masked_fill -finfo.max) if any, p = softmax(sim), out_i = "
              "sum_j p[i, j] (v_j + E_v[i, j]); the plain einsum path (never xformers)" % cfg.get("temporal_length")
              if cfg.get("use_relative_position") else "no relative position.")
    proj = ("use_linear: Linear proj_in / proj_out in the block transformers" if cfg.get("use_linear") else
            "use_linear = false: SpatialTransformer proj_in / proj_out are Conv2d 1x1 (weights [out, in, 1, 1]), "
            "block TemporalTransformer ones Conv1d kernel 1 ([out, in, 1]): the same maps as Linear")
    return {
        "layout": "x [B, C, T, H, W] is folded to [(B*T), C, H, W] (row b*T + t) after the embeddings; 2-D layers "
                  "work per frame, temporal layers unfold to [B, C, T, H, W]; the output is unfolded back.",
        "timestep_embedding": "sinusoidal, dim = model_channels, half = dim/2, freq_i = exp(-ln(10000) i / half), "
                              "[cos(t freq), sin(t freq)] (cos first), float32; the same function embeds fps.",
        "embeddings": "emb = time_embed.2(SiLU(time_embed.0(te(t))))" +
                      (" + fps_embedding.2(SiLU(fps_embedding.0(te(fps)))) (fps default 16 when not passed)"
                       if cfg.get("fps_cond") else " (fps_cond false: no fps_embedding, fps ignored)") +
                      "; emb and context are repeat_interleave'd per frame.",
        "block_order": "input_blocks.0 Conv2d 3x3 (in -> mc)" +
                       (", then init_attn (a TemporalTransformer, 8 heads of d_head = num_head_channels, depth = "
                        "transformer_depth, Conv1d projections) on its output; that result is the first skip"
                        if cfg.get("addition_attention") else " (no init_attn)") +
                       "; per level num_res_blocks x [ResBlock, + SpatialTransformer" +
                       (" + TemporalTransformer" if cfg.get("temporal_attention") else "") +
                       " when ds is in attention_resolutions], Downsample (Conv2d 3x3 stride 2 pad 1) between "
                       "levels; middle_block = ResBlock, SpatialTransformer" +
                       (", TemporalTransformer" if cfg.get("temporal_attention") else "") +
                       ", ResBlock; output_blocks: levels reversed, num_res_blocks + 1 blocks of cat([h, skip]) -> "
                       "ResBlock (+ transformers when ds in attention_resolutions), Upsample (nearest x2 + Conv2d "
                       "3x3) ending every level but 0; out = out.2(SiLU(out.0(h))).",
        "ResBlock": "h = in_layers.2(SiLU(GN(x))) + emb_layers.1(SiLU(emb)); h = out_layers.3(SiLU(GN(h))); "
                    "h = skip(x) + h (skip_connection 1x1 conv when channels change)" +
                    ("; then temopral_conv (TemporalConvBlock: 4 x [GN, SiLU, Conv3d (3,1,1) pad (1,0,0)] + x) on "
                     "the unfolded tensor" if cfg.get("temporal_conv") else "; temporal_conv false: no temopral_conv"),
        "norms": "GroupNorm 32 groups: ResBlock / out.0 / TemporalConvBlock eps 1e-5, transformer norm eps 1e-6 "
                 "(temporal ones over (C/32, T, H, W) of a sample); LayerNorm norm1..3 eps 1e-5.",
        "heads": heads + ", for every block Spatial/TemporalTransformer.",
        "depths": "SpatialTransformer and init_attn: transformer_depth = %d blocks; block TemporalTransformers: "
                  "temporal_transformer_depth = %d blocks." % (cfg.get("transformer_depth", 1), tdepth),
        "projections": proj + "; init_attn always uses Conv1d projections.",
        "temporal_attention": tcross + "; " + causal + "; " + relpos,
        "attention": "to_q / to_k / to_v Linear without bias, heads head-major in the inner dim, softmax(q k^T "
                     "d_head^-0.5), to_out.0 Linear with bias; GEGLU feed-forward (ff.net.0.proj -> a * gelu(g), "
                     "exact erf GELU, ff.net.2).",
    }


def make_unet(UNetModel, cfg, seed, f16):
    torch.manual_seed(seed)
    kw = dict(cfg)
    m = UNetModel(**kw)
    randomise(m, seed + 1, f16)
    return m.eval()


def unet_act_names(m):
    names = ["time_embed"] + (["fps_embedding"] if m.fps_cond else []) + ["input_blocks.0"]
    if m.addition_attention:
        names.append("init_attn")
    names += ["input_blocks.%d" % i for i in range(1, len(m.input_blocks))]
    names.append("middle_block")
    names += ["output_blocks.%d" % i for i in range(len(m.output_blocks))]
    return names


def lora_target_names(m):
    pat = re.compile(r"\.(to_q|to_k|to_v|to_out\.0)\.weight$")
    return [n for n, _ in m.named_parameters() if pat.search(n)]


def grad_weight_names(m):
    """The weights whose gradients the io stores: the LoRA targets, and the relative-position
    tables when the model has them."""
    pat = re.compile(r"\.(to_q|to_k|to_v|to_out\.0)\.weight$|\.relative_position_[kv]\.embeddings_table$")
    return [n for n, _ in m.named_parameters() if pat.search(n)]


def run_unet(m, x, timesteps, context, fps, grad_out=None, gen=None, grads=True):
    """Forward (+ acts), then the vector-Jacobian product with grad_out (random if None) when grads."""
    x = x.clone().requires_grad_(True)
    context = context.clone().requires_grad_(True)
    targets = grad_weight_names(m)
    params = dict(m.named_parameters())
    for p in m.parameters():
        p.requires_grad_(False)
    for n in targets:
        params[n].requires_grad_(True)
    rec = ActRecorder(m, unet_act_names(m))
    kw = {} if fps is None else {"fps": fps}
    out = m(x, timesteps, context=context, **kw)
    rec.remove()
    io = {"x": x.detach(), "timesteps": timesteps, "context": context.detach()}
    if fps is not None:
        io["fps"] = fps
    io["out"] = out.detach()
    io.update(rec.acts)
    if not grads:
        return io
    if grad_out is None:
        grad_out = randn(out.shape, gen)
    (out * grad_out).sum().backward()
    io = {k: v for k, v in io.items() if not k.startswith("act.")}
    io["grad_out"] = grad_out
    io["grad.x"] = x.grad
    io["grad.context"] = context.grad
    for n in targets:
        io["grad." + n] = params[n].grad
    io.update(rec.acts)
    return io


def unet_case(UNetModel, name, variant, seed):
    changes, B, T, H, W, L, ts, fps = variant
    cfg = dict(UNET_BASE)
    cfg.update(changes)
    f16 = name in F16_WEIGHTS
    m = make_unet(UNetModel, cfg, seed, f16)
    g = torch.Generator().manual_seed(seed + 2)
    x = randn((B, cfg["in_channels"], T, H, W), g)
    context = randn((B, L, cfg["context_dim"]), g)
    timesteps = torch.tensor(ts, dtype=torch.int64)
    fps_t = None if fps is None else torch.tensor(fps, dtype=torch.int64)
    # upstream's temporal cross-attention writes x[j] = block(x[j]) in place: autograd refuses
    # its backward, so those cases have the forward (out, act.*) only
    grads = cfg["temporal_selfatt_only"] or not cfg["temporal_attention"]
    io = run_unet(m, x, timesteps, context, fps_t, gen=g, grads=grads)
    weights = {UNET_PREFIX + k: v.half() if f16 else v for k, v in m.state_dict().items()}
    fps_txt = "fps [B] int64" if fps is not None else "fps not passed (lvdm's default 16%s)" % (
        "" if cfg["fps_cond"] else "; fps_cond is false so it is unused")
    doc = {
        "model": "lvdm.UNetModel (VideoCrafter2 family)",
        "config": cfg,
        "reference": reference(seed, f16),
        "call": "out = unet(x, timesteps, context=context%s); x [B, C, T, H, W] float32, timesteps [B] int64, "
                "context [B, L, context_dim] float32, %s; out [B, out_channels, T, H, W]"
                % (", fps=fps" if fps is not None else "", fps_txt),
        "grads": "grad_out is a fixed random cotangent R; grad.X = d sum(out * R) / d X for the inputs x, context and "
                 "for every to_q / to_k / to_v / to_out.0 weight (the LoRA targets)%s; weight grads are named by the "
                 "state-dict key without the model.diffusion_model. prefix"
                 % (" and every relative_position_k / _v embeddings_table" if cfg["use_relative_position"] else "")
                 if grads else
                 "none: upstream's temporal cross-attention (x[j] = block(x[j]), in place) cannot be backpropagated "
                 "by autograd; this case checks the forward only",
        "activations": "act.NAME = forward output of the top-level module NAME: time_embed%s [B, 4*model_channels] "
                       "(before any sum); input_blocks.i, %smiddle_block, output_blocks.i in the folded [(B*T), C, h, "
                       "w] layout (act.input_blocks.0 is before init_attn)"
                       % (" and fps_embedding" if cfg["fps_cond"] else "", "init_attn, " if cfg["addition_attention"] else ""),
        "weight_prefix": UNET_PREFIX,
        "spec": unet_spec(cfg),
    }
    return doc, weights, io


# ---- VAE decoder ---------------------------------------------------------------------------
VAE_BASE = dict(double_z=True, z_channels=4, resolution=16, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
                num_res_blocks=1, attn_resolutions=[], dropout=0.0)

# name: (ddconfig changes, embed_dim or None (= z_channels), scale_factor, z shape (4-D one frame, or
# 5-D [B, C, T, h, w]: decode_first_stage_2DAE))
VAE_VARIANTS = {
    # 3 levels, 2 res blocks, attention in the up blocks of level 1 (curr_res 8 of resolution 16),
    # z 6 channels, 4 output channels, non-square latent
    "vc2_vae_attn": (dict(ch_mult=[1, 2, 4], num_res_blocks=2, attn_resolutions=[8], z_channels=6, out_ch=4),
                     None, 0.18215, (3, 6, 4, 6)),
    # resolution 18 with 3 levels: upstream's curr_res is 18 // 4 = 4, then 8, 16 (not 18 >> i): the
    # attention sits at level 0; post_quant_conv embed_dim 3 -> z_channels 8; other scale factor
    "vc2_vae_res": (dict(ch_mult=[1, 1, 2], resolution=18, attn_resolutions=[16, 4], z_channels=8, ch=32),
                    3, 0.13025, (1, 3, 3, 5)),
    # a video latent [B, 4, T, h, w] decoded frame by frame (decode_first_stage_2DAE)
    "vc2_vae_video": (dict(ch=64, ch_mult=[1, 1], num_res_blocks=1), None, 0.18215, (2, 4, 3, 4, 4)),
    # small, for tests/fixtures: a video latent, embed_dim 3 -> z 8, resolution 18 (attention at
    # level 0 only), one res block
    "vc2_vae_video_attn_tiny": (dict(ch_mult=[1, 1, 1], resolution=18, attn_resolutions=[16], z_channels=8,
                                     num_res_blocks=1), 3, 0.13025, (1, 3, 2, 2, 3)),
    # no conv in the upsamplers (resamp_with_conv false), no extra res block, 1 output channel
    "vc2_vae_noconv": (dict(ch_mult=[1, 1, 1], num_res_blocks=0, resamp_with_conv=False, out_ch=1),
                       None, 0.18215, (2, 4, 5, 3)),
}

# Cases whose weights are rounded to float16 before upstream runs and stored as F16 (the values
# are exact; every computation is fp32): they live in tests/fixtures, where size matters.
F16_WEIGHTS = {"vc2_unet_depth_causal_tiny", "vc2_unet_depth_causal_relpos_tiny", "vc2_unet_heads_tcross_tiny",
               "vc2_vae_video_attn_tiny"}


class VaeDecode(torch.nn.Module):
    """AutoencoderKL's decode path: post_quant_conv = Conv2d(embed_dim, z_channels, 1), decoder."""

    def __init__(self, Decoder, ddconfig, embed_dim):
        super().__init__()
        self.post_quant_conv = torch.nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self.decoder = Decoder(**ddconfig)

    def forward(self, z):
        return self.decoder(self.post_quant_conv(z))


def vae_act_names(m):
    pat = re.compile(r"^(post_quant_conv|decoder\.conv_in|decoder\.mid\.(block_1|attn_1|block_2)|"
                     r"decoder\.up\.\d+\.(block|attn)\.\d+|decoder\.up\.\d+\.upsample)$")
    # execution order: mid, then levels from the last to 0, blocks (each with its attention) then upsample
    names = [n for n, _ in m.named_modules() if pat.match(n)]
    head = [n for n in names if not n.startswith("decoder.up.")]
    order = []
    for i in reversed(range(len(m.decoder.up))):
        nb = len(m.decoder.up[i].block)
        for j in range(nb):
            order.append("decoder.up.%d.block.%d" % (i, j))
            if len(m.decoder.up[i].attn):
                order.append("decoder.up.%d.attn.%d" % (i, j))
        if i != 0:
            order.append("decoder.up.%d.upsample" % i)
    return head + order


def run_vae(m, z, scale_factor, grad_out=None, gen=None):
    """decode_first_stage(_2DAE): out = decoder(post_quant_conv(z / scale_factor)) per frame. A
    5-D latent is folded to [(B*T), C, h, w] for the activations (decode_core's layout); the
    output is the per-frame decode stacked on dim 2 (the same values)."""
    z = z.clone().requires_grad_(True)
    for p in m.parameters():
        p.requires_grad_(False)
    rec = ActRecorder(m, vae_act_names(m))
    if z.ndim == 5:
        B, C, T, h, w = z.shape
        zf = (1.0 / scale_factor * z).permute(0, 2, 1, 3, 4).reshape(B * T, C, h, w)
        of = m(zf)
        out = of.reshape(B, T, *of.shape[1:]).permute(0, 2, 1, 3, 4)
        rec.remove()
        with torch.no_grad():  # decode_first_stage_2DAE, the loop VADER runs: same numbers
            loop = torch.cat([m(1.0 / scale_factor * z[:, :, t]).unsqueeze(2) for t in range(T)], dim=2)
        assert torch.allclose(loop, out, rtol=1e-5, atol=1e-5)
    else:
        out = m(1.0 / scale_factor * z)
        rec.remove()
    if grad_out is None:
        grad_out = randn(out.shape, gen)
    (out * grad_out).sum().backward()
    io = {"z": z.detach(), "out": out.detach().contiguous(), "grad_out": grad_out, "grad.z": z.grad}
    io.update(rec.acts)
    return io


def vae_case(Decoder, name, variant, seed):
    changes, embed_dim, sf, zshape = variant
    cfg = dict(VAE_BASE)
    cfg.update(changes)
    ed = embed_dim or cfg["z_channels"]
    torch.manual_seed(seed)
    f16 = name in F16_WEIGHTS
    m = VaeDecode(Decoder, cfg, ed)
    randomise(m, seed + 1, f16)
    m.eval()
    g = torch.Generator().manual_seed(seed + 2)
    if len(zshape) == 4:
        assert zshape[1] == ed
    z = randn(zshape, g)
    io = run_vae(m, z, sf, gen=g)
    weights = {VAE_PREFIX + k: v.half() if f16 else v for k, v in m.state_dict().items()}
    L = len(cfg["ch_mult"])
    up = 2 ** (L - 1)
    video = len(zshape) == 5
    doc = {
        "model": "lvdm AutoencoderKL decode path (VideoCrafter2 family)",
        "config": cfg,
        "embed_dim": ed,
        "scale_factor": sf,
        "reference": reference(seed, f16),
        "call": ("out = decoder(post_quant_conv(z / %s)); " % sf) +
                ("z is a video latent [B, %d, T, h, w] decoded frame by frame (decode_first_stage_2DAE: frame t is "
                 "decoder(post_quant_conv(z[:, :, t] / scale_factor)), stacked on dim 2); out [B, %d, T, h*%d, w*%d]"
                 % (ed, cfg["out_ch"], up, up) if video else
                 "z is one latent frame [B, %d, h, w]; out [B, %d, h*%d, w*%d]" % (ed, cfg["out_ch"], up, up)),
        "grads": "grad_out is a fixed random cotangent R; grad.z = d sum(out * R) / d z",
        "activations": "act.NAME = forward output of the named submodule (state-dict naming, without the "
                       "first_stage_model. prefix)" +
                       ("; the video latent is folded to [(B*T), C, h, w] (row b*T + t, decode_core's layout) for "
                        "them" if video else ""),
        "weight_prefix": VAE_PREFIX,
        "spec": {
            "decode_path": "post_quant_conv: Conv2d 1x1 (embed_dim %d -> z_channels %d, bias); then the Decoder."
                           % (ed, cfg["z_channels"]),
            "decoder": "block_in = ch*ch_mult[-1]; conv_in 3x3 (z_channels -> block_in); mid.block_1, mid.attn_1, "
                       "mid.block_2; levels i = n-1 .. 0: num_res_blocks+1 ResnetBlocks (-> ch*ch_mult[i]) each "
                       "followed by up.i.attn.j (AttnBlock) when the level's curr_res is in attn_resolutions, then "
                       "up.i.upsample (nearest x2%s) for i != 0; norm_out, swish, conv_out (-> out_ch). "
                       "Not clamped, no tanh." % (" + conv 3x3" if cfg.get("resamp_with_conv", True) else
                                                  ", no conv: resamp_with_conv false"),
            "attention_levels": "curr_res = resolution // 2^(n-1) at level n-1 (integer division), doubled after "
                                "each upsample: level i has attention iff (resolution // 2^(n-1)) * 2^(n-1-i) is in "
                                "attn_resolutions. It depends on config.resolution only, not on the latent size.",
            "ResnetBlock": "h = conv1(swish(norm1(x))); h = conv2(swish(norm2(h))); x = nin_shortcut(x) (1x1) if "
                           "channels change; x + h.",
            "AttnBlock": "single head over H*W positions, 1x1-conv q, k, v (bias), softmax(q^T k C^-0.5), proj_out; "
                         "x + proj_out(.).",
            "norms": "GroupNorm 32 groups, eps 1e-6, affine; swish(x) = x sigmoid(x).",
        },
    }
    return doc, weights, io


# ---- writing and the shared-fixture self-check ---------------------------------------------
def reference(seed, f16=False):
    r = {"framework": "PyTorch %s, CPU, float32, modules in eval() mode (every dropout off)" % torch.__version__,
         "seed": seed, "script": "scripts/make_lvdm_variant_fixtures.py (upstream lvdm imported at run time)"}
    if f16:
        r["weights"] = "every weight rounded to float16 before the run and stored as F16 (exact); computed in float32"
    return r


def write_case(out, name, doc, weights, io):
    size = common.write_fixture(out, name, doc, weights, io, report=False)
    print("%-18s %7.0f KB  %d io tensors" % (name, size / 1e3, len(io)))


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def compare(name, got, want_io):
    worst = 0.0
    for k, w in want_io.items():
        if k not in got:
            print("  %s: %s missing here" % (name, k))
            worst = float("inf")
            continue
        if k in ("x", "z", "context", "timesteps", "fps", "grad_out"):
            continue
        e = rel_err(got[k].float(), w.float())
        worst = max(worst, e)
        if e > 1e-5:
            print("  %s: %s rel err %.2e" % (name, k, e))
    extra = sorted(set(got) - set(want_io))
    if extra:
        print("  %s: entries the shared io does not have: %s" % (name, extra[:5]))
    print("%s: upstream here vs shared io: worst rel err %.2e" % (name, worst))
    return worst <= 1e-5 and not extra


def check_shared(UNetModel, Decoder, shared):
    ok = True
    for name, kind in (("vc2_unet_tiny", "unet"), ("vc2_vae_decoder_tiny", "vae")):
        doc = json.load(open(os.path.join(shared, name + ".json")))
        w = load_file(os.path.join(shared, name + ".weights.safetensors"))
        io = load_file(os.path.join(shared, name + ".io.safetensors"))
        if kind == "unet":
            m = UNetModel(**doc["config"]).eval()
            m.load_state_dict({k[len(UNET_PREFIX):]: v for k, v in w.items()}, strict=True)
            got = run_unet(m, io["x"], io["timesteps"], io["context"], io.get("fps"), grad_out=io["grad_out"])
        else:
            cfg = doc["config"]
            m = VaeDecode(Decoder, cfg, w[VAE_PREFIX + "post_quant_conv.weight"].shape[1]).eval()
            m.load_state_dict({k[len(VAE_PREFIX):]: v for k, v in w.items()}, strict=True)
            got = run_vae(m, io["z"], doc["scale_factor"], grad_out=io["grad_out"])
        ok &= compare(name, got, io)
        if list(got.keys()) != list(doc["io"].keys()):
            print("  %s: io order differs from the shared json: %s" % (name, [k for k in got if k not in doc["io"]]))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, help="VideoCrafter checkout (holds lvdm/ and utils/)")
    ap.add_argument("--out", default="lvdm_variants")
    ap.add_argument("--only", default="", help="comma-separated case names")
    ap.add_argument("--check-shared", default="", help="shared/fixtures dir: check this script against it first")
    a = ap.parse_args()
    torch.set_num_threads(2)
    UNetModel, Decoder = import_upstream(a.upstream)
    if a.check_shared and not check_shared(UNetModel, Decoder, a.check_shared):
        sys.exit(1)
    only = set(filter(None, a.only.split(",")))
    for name, v in sorted(UNET_VARIANTS.items()):
        if not only or name in only:
            write_case(a.out, name, *unet_case(UNetModel, name, v, unet_seed(name)))
    for i, (name, v) in enumerate(sorted(VAE_VARIANTS.items())):
        if not only or name in only:
            write_case(a.out, name, *vae_case(Decoder, name, v, 500 + 10 * i))


if __name__ == "__main__":
    main()
