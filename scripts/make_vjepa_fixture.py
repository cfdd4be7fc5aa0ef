#!/usr/bin/env python3
"""make_vjepa_fixture.py — the reference case of the temporal-consistency reward (V-JEPA 2),
tests/fixtures/temporal_tiny.{json,weights.safetensors,io.safetensors}, made by running
transformers' VJEPA2Model with a tiny random config in the real key layout (fp32, CPU):

  pixel_values         frames [b, 3, t, h, w] in [-1, 1] -> clamp((x + 1) / 2, 0, 1) -> per frame:
                       shortest edge to int(crop * 256 / 224) (bilinear, antialias), centre crop
                       crop x crop at ((size - crop) // 2) as VJEPA2VideoProcessor, ImageNet
                       mean / std -> [b, 3, t, crop, crop] (vader's layout; transformers takes
                       pixel_values_videos [b, t, 3, crop, crop])
  encoder_hidden_state VJEPA2Model(pixel_values_videos, context_mask=[hf_mask.context],
  predictor_output       target_mask=[hf_mask.target]): last_hidden_state and
                       predictor_output.last_hidden_state (full-clip encoder, mask token 1)
  pred.G, target.G     the reward, per fixed mask G (mask.G.context / mask.G.target, the same
                       for every sample): V-JEPA's context encoder on the visible tubelets only
                       (patch embedding -> gather -> the encoder layers with RoPE at the kept
                       ids -> encoder.layernorm), the predictor with mask token G, the target
                       layer_norm(encoder(full clip)) (no affine, eps 1e-5) at the masked ids,
                       detached
  reward, loss         loss_i = mean_G mean |pred.G - target.G| over tokens and channels (L1, as
                       V-JEPA), reward_i = -loss_i, loss = mean_i loss_i
  grad.frames          d loss / d frames (d mean reward / d frames = -grad.frames)

    python3 scripts/make_vjepa_fixture.py [--out tests/fixtures] [--manifests tests/manifests]

It also writes tests/manifests/vjepa2_vitl_fpc64_256.txt from transformers' own state dict of
the default VJEPA2Config (facebook/vjepa2-vitl-fpc64-256) built on the meta device.
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

TINY = dict(
    patch_size=8, crop_size=32, frames_per_clip=4, tubelet_size=2, hidden_size=40, num_attention_heads=2,
    num_hidden_layers=2, mlp_ratio=2.0, layer_norm_eps=1e-6, qkv_bias=True, hidden_act="gelu",
    pred_hidden_size=32, pred_num_attention_heads=2, pred_num_hidden_layers=2, pred_num_mask_tokens=3,
    pred_mlp_ratio=2.0, pred_zero_init_mask_tokens=False, num_pooler_layers=1,
)


def randomise(model):
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.ndim > 1 else p.numel()
                p.copy_(torch.randn(p.shape, generator=g) / max(fan_in, 1) ** 0.5)


def preprocess(frames, crop):
    """frames [b, 3, t, h, w] in [-1, 1] -> [b, 3, t, crop, crop] (see the module docstring)."""
    b, c, t, h, w = frames.shape
    x = frames.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    x = torch.clamp(x * 0.5 + 0.5, 0.0, 1.0)
    S = int(crop * 256 / 224)
    if h <= w:
        nh, nw = S, int(S * w / h)
    else:
        nh, nw = int(S * h / w), S
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - crop) // 2, (nw - crop) // 2  # as transformers' video processor crops
    x = x[:, :, top:top + crop, left:left + crop]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.reshape(b, t, c, crop, crop).permute(0, 2, 1, 3, 4)


def context_encoder(model, pv_btchw, ctx):
    """V-JEPA's context encoder: only the visible tokens enter the blocks, RoPE at their ids."""
    from transformers.models.vjepa2.modeling_vjepa2 import apply_masks
    enc = model.encoder
    x = enc.embeddings(pv_btchw)
    B = x.shape[0]
    cm = ctx.unsqueeze(0).repeat(B, 1)
    x = apply_masks(x, [cm])
    for layer in enc.layer:
        x = layer(x, cm)[0]
    return enc.layernorm(x)


def predictor(model, z, ctx, tgt, mask_index):
    """VJEPA2Predictor.forward with an explicit mask token (transformers always uses 1)."""
    pr = model.predictor
    B = z.shape[0]
    cm, tm = ctx.unsqueeze(0).repeat(B, 1), tgt.unsqueeze(0).repeat(B, 1)
    n_ctx = z.shape[1]
    h, pos = pr.embeddings(z, [cm], [tm], mask_index=mask_index)
    order = torch.argsort(pos, dim=1)
    h, pos = pr.sort_tokens(h, pos, order)
    for layer in pr.layer:
        h = layer(h, pos)[0]
    h = pr.layernorm(h)
    h = pr.unsort_tokens(h, order)
    return pr.proj(h[:, n_ctx:])


def make_fixture(out_dir):
    from transformers import VJEPA2Config, VJEPA2Model
    from transformers.models.vjepa2.modeling_vjepa2 import apply_masks
    torch.manual_seed(0)
    cfg = VJEPA2Config(**TINY)
    cfg._attn_implementation = "eager"
    model = VJEPA2Model(cfg).eval()
    randomise(model)
    crop, g, T = cfg.crop_size, cfg.crop_size // cfg.patch_size, 4
    N = (T // cfg.tubelet_size) * g * g
    gen = torch.Generator().manual_seed(7)
    frames = (torch.rand(2, 3, T, 40, 48, generator=gen) * 2.2 - 1.1).requires_grad_(True)
    # two multi-block style masks (fixed here; the module's generator is tested in C)
    masked = [
        [(t * g + y) * g + x for t in range(2) for y in range(1, 3) for x in range(0, 2)],  # one 2x2 tube
        [(t * g + y) * g + x for t in range(2) for y in range(0, 3) for x in range(1, 4)],  # one 3x3 tube
    ]
    masks = []
    for m in masked:
        tgt = torch.tensor(sorted(set(m)), dtype=torch.long)
        ctx = torch.tensor([i for i in range(N) if i not in set(m)], dtype=torch.long)
        masks.append((ctx, tgt))

    pv = preprocess(frames, crop)  # [b, 3, t, crop, crop]
    pv_hf = pv.permute(0, 2, 1, 3, 4)
    io = {"frames": frames.detach().clone(), "pixel_values": pv.detach().clone()}

    # transformers' own forward with a fixed context / target split (per-sample index lists)
    hf_ctx = masks[0][0]
    hf_tgt = masks[0][1]
    B = frames.shape[0]
    with torch.no_grad():
        out = model(pixel_values_videos=pv_hf, context_mask=[hf_ctx.unsqueeze(0).repeat(B, 1)],
                    target_mask=[hf_tgt.unsqueeze(0).repeat(B, 1)])
    io["encoder_hidden_state"] = out.last_hidden_state.clone()
    io["predictor_output"] = out.predictor_output.last_hidden_state.clone()
    io["hf_mask.context"] = hf_ctx.clone()
    io["hf_mask.target"] = hf_tgt.clone()

    # the reward
    with torch.no_grad():
        full = model.encoder(pixel_values_videos=pv_hf).last_hidden_state
        h = F.layer_norm(full, (full.size(-1),))
    losses = []
    for gi, (ctx, tgt) in enumerate(masks):
        z = context_encoder(model, pv_hf, ctx)
        p = predictor(model, z, ctx, tgt, gi)
        tg = apply_masks(h, [tgt.unsqueeze(0).repeat(B, 1)])
        losses.append(torch.abs(p - tg).mean(dim=(1, 2)))
        io["mask.%d.context" % gi] = ctx.clone()
        io["mask.%d.target" % gi] = tgt.clone()
        io["pred.%d" % gi] = p.detach().clone()
        io["target.%d" % gi] = tg.detach().clone()
    per = torch.stack(losses, 0).mean(0)
    reward = -per
    loss = per.mean()
    loss.backward()
    io["reward"] = reward.detach().clone()
    io["loss"] = loss.detach().clone()
    io["grad.frames"] = frames.grad.clone()

    # sanity: transformers' video processor on the same frames (uint8 path) agrees roughly
    note_proc = ""
    try:
        from transformers import VJEPA2VideoProcessor
        proc = VJEPA2VideoProcessor(crop_size=crop)
        vid = (torch.clamp(frames.detach()[0] * 0.5 + 0.5, 0, 1) * 255).permute(1, 0, 2, 3)  # [t, 3, h, w]
        ref = proc(vid, return_tensors="pt")["pixel_values_videos"][0].permute(1, 0, 2, 3)
        d = (ref - pv[0].detach()).abs().max().item()
        note_proc = "VJEPA2VideoProcessor on the same frames x255 differs by max %.3g " % d
    except Exception as exc:  # noqa: BLE001 — the processor is only a cross-check
        note_proc = "VJEPA2VideoProcessor cross-check skipped: %s" % exc

    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    name = "temporal_tiny"
    save_file(weights, os.path.join(out_dir, name + ".weights.safetensors"))
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out_dir, name + ".io.safetensors"))
    config = {k: getattr(cfg, k) for k in TINY}
    doc = {
        "model": "transformers VJEPA2Model (temporal reward, V-JEPA 2 masked prediction)",
        "reward": "temporal",
        "config": config,
        "options": {"frames": 0},
        "masks": 2,
        "call": "scripts/make_vjepa_fixture.py: see its docstring; frames %s" % list(frames.shape),
        "spec": {
            "preprocess": "clamp((x+1)/2,0,1); shortest edge int(crop*256/224) bilinear antialias; centre crop at "
                          "(size-crop)//2; ImageNet mean %s std %s" % (IMAGENET_MEAN, IMAGENET_STD),
            "rope": "head dim D, s = 2*((D//3)//2) channels each for frame/row/col ids (id = t*g*g + h*g + w, "
                    "g = crop/patch), channel j of a section uses omega[j mod s/2], omega_i = 10000^(-i/(s/2)); "
                    "pairs (2i, 2i+1) rotate; the D - 3s last channels are not rotated",
            "loss": "mean over masks of mean |pred - layer_norm(enc(full))[targets]| (L1, eps 1e-5, detached "
                    "target), per sample; reward = -loss; the context encoder sees only the visible tokens",
            "hf_forward": "VJEPA2Model.forward: full-clip encoder, predictor on hf_mask with mask token 1",
            "processor": note_proc,
        },
        "io": {k: list(v.shape) for k, v in io.items()},
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(doc, f, indent=1)
    print("wrote %s/%s.*: loss %.6f, %s" % (out_dir, name, loss.item(), note_proc))


def make_manifest(path):
    from transformers import VJEPA2Config, VJEPA2Model
    with torch.device("meta"):
        model = VJEPA2Model(VJEPA2Config())
    sd = model.state_dict()
    n = sum(v.numel() for v in sd.values())
    with open(path, "w") as f:
        f.write("# facebook/vjepa2-vitl-fpc64-256 (transformers VJEPA2Model state_dict, default VJEPA2Config); "
                "%d parameters\n" % n)
        for k, v in sd.items():
            f.write("%s\t[%s]\tfloat32\n" % (k, ", ".join(str(s) for s in v.shape)))
    print("wrote %s: %d tensors, %d parameters" % (path, len(sd), n))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    p.add_argument("--manifests", default=os.path.join(here, "..", "tests", "manifests"))
    a = p.parse_args()
    make_fixture(a.out)
    make_manifest(os.path.join(a.manifests, "vjepa2_vitl_fpc64_256.txt"))


if __name__ == "__main__":
    main()
