#!/usr/bin/env python3
"""make_openclip_variant_fixtures.py — more open_clip cases in the format of
shared/fixtures/openclip_tiny (DESIGN.md "Fixtures"), with other configs and shapes: text
width / heads / layers, vision image_size / patch_size / width / head_width / layers, embed_dim,
batch size, prompts (long ones cut at 77 tokens, unicode, HTML entities, odd whitespace).

Each case is an open_clip.model.CLIP built from its config with random weights (matrices
N(0, 1/fan_in), LayerNorm scales 1 + 0.1 N, biases 0.1 N), fp32, eval mode, and writes
NAME.json (the keys of openclip_tiny.json: model, config, reference, prompts, call, note, spec,
io; call / note / spec copied from the shared json so the text stays the upstream one),
NAME.weights.safetensors and NAME.io.safetensors (tokens, cond_penultimate, image,
image_embed, text_embed, image_features, text_features, hps_score, grad.image; with --acts also
act.transformer.resblocks.N / act.visual.transformer.resblocks.N, the block outputs).

--check first recomputes the shared openclip_tiny case from its weights and compares every io
tensor (the generator is trusted only when that matches); --run BIN runs vader-fixture on each
case written.

    python3 scripts/make_openclip_variant_fixtures.py --out /tmp/ocvar [--check] \
        [--run build/bin/vader-fixture] [--cases a,b] [--f16-embedding]
    # the small case kept in the repository (tests/fixtures, fp16 token table):
    python3 scripts/make_openclip_variant_fixtures.py --out tests/fixtures --cases openclip_var_small \
        --f16-embedding
"""
import argparse
import json
import math
import os
import sys

import torch
import open_clip
from safetensors.torch import load_file, save_file

import vader_convert_common as common

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("VADER_SHARED") or os.path.join(HERE, "..", "..", "shared")
if not os.path.isdir(SHARED):
    SHARED = "/work/shared"

LONG = ("a photorealistic video of " + " ".join(f"tiny red fox number {i} jumping" for i in range(20))
        + " over a frozen lake at dawn")
PROMPTS_MANY = [
    "a raccoon holding a snowball",
    LONG,  # > 77 tokens: [SOT, 75 ids, EOT]
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u2014 \u201cquoted\u201d  &amp;  &lt;b&gt;bold&lt;/b&gt;   spaces\t\ttabs",
    "\u6771\u4eac\u306e\u591c\u666f, neon \U0001F306 and \uFF26\uFF35\uFF2C\uFF2C\uFF37\uFF29\uFF24\uFF34\uFF28 letters, \ufb01sh",
    "",
]

# name: (config, prompts, batch of images (= number of prompts), seed)
CASES = {
    # text heads 8 (head_dim 8), 2 layers; vision 64 / 16 (grid 4), head_width 32 (2 heads)
    "openclip_var_h8": (dict(embed_dim=24,
                             vision_cfg=dict(image_size=64, layers=3, width=64, head_width=32, patch_size=16),
                             text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=8, layers=2)),
                        PROMPTS_MANY, 1),
    # text heads 2, 4 layers, wider; vision 48 / 16 (grid 3), 1 layer, head_width 8 (12 heads)
    "openclip_var_h2": (dict(embed_dim=40,
                             vision_cfg=dict(image_size=48, layers=1, width=96, head_width=8, patch_size=16),
                             text_cfg=dict(context_length=77, vocab_size=49408, width=96, heads=2, layers=4)),
                        PROMPTS_MANY[:2], 2),
    # batch 1, a 1-layer text tower (penultimate = no block at all), non-default mlp widths kept at 4
    "openclip_var_b1": (dict(embed_dim=16,
                             vision_cfg=dict(image_size=32, layers=2, width=32, head_width=16, patch_size=16),
                             text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=4, layers=1)),
                        ["A Fox  WEARING a hat, oil painting!!"], 3),
    # open_clip's defaults where the config is silent: text heads 8, vision head_width 64
    "openclip_var_defaults": (dict(embed_dim=32,
                                   vision_cfg=dict(image_size=32, layers=1, width=64, patch_size=16),
                                   text_cfg=dict(width=64, layers=2)),
                              PROMPTS_MANY[:2], 5),
    # quick_gelu (OpenAI CLIP activation) and mlp_ratio 2 in both towers
    "openclip_var_mlp": (dict(embed_dim=16, quick_gelu=True,
                              vision_cfg=dict(image_size=32, layers=2, width=32, head_width=16, patch_size=16,
                                              mlp_ratio=2.0),
                              text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=4, layers=2,
                                            mlp_ratio=2.0)),
                         PROMPTS_MANY[:3], 6),
    # image_size not a multiple of patch_size (grid = 40 // 16 = 2, the conv drops the rest)
    "openclip_var_grid": (dict(embed_dim=16,
                               vision_cfg=dict(image_size=40, layers=1, width=32, head_width=16, patch_size=16),
                               text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2)),
                          PROMPTS_MANY[:2], 7),
    # the repository case (tests/fixtures, --f16-embedding): text width 4 so the 49408-row table
    # stays small; image 40 / patch 16 (grid 2), vision mlp_ratio 2, 3 text layers, long /
    # unicode / empty prompts
    "openclip_var_small": (dict(embed_dim=16,
                                vision_cfg=dict(image_size=40, layers=2, width=32, head_width=8, patch_size=16,
                                                mlp_ratio=2.0),
                                text_cfg=dict(context_length=77, vocab_size=49408, width=4, heads=2, layers=3)),
                           PROMPTS_MANY[1:], 4),
}


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(math.log(100.0))
            elif p.ndim == 1 and ("ln_" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1] if p.ndim == 2 else p[0].numel()
                if name in ("positional_embedding", "token_embedding.weight", "visual.positional_embedding"):
                    fan_in = p.shape[-1]
                if name in ("text_projection", "visual.proj"):  # x @ P: fan-in is rows
                    fan_in = p.shape[0]
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


def build(config):
    vc = open_clip.model.CLIPVisionCfg(**config["vision_cfg"])
    tc = open_clip.model.CLIPTextCfg(**config["text_cfg"])
    m = open_clip.model.CLIP(config["embed_dim"], vc, tc, quick_gelu=bool(config.get("quick_gelu", False)))
    return m.eval()


def block_outputs(blocks, x, attn_mask, n, tag, acts):
    for i in range(n):
        x = blocks[i](x, attn_mask=attn_mask)
        if acts is not None:
            acts[f"act.{tag}transformer.resblocks.{i}"] = x.detach().clone()
    return x


def compute(model, tokens, image, want_acts=False):
    """Every output of the openclip fixture 'call' (plus the block outputs when asked)."""
    acts = {} if want_acts else None
    with torch.no_grad():
        # VideoCrafter2 FrozenOpenCLIPEmbedder, layer "penultimate": all blocks but the last
        x = model.token_embedding(tokens) + model.positional_embedding
        blocks = model.transformer.resblocks
        x = block_outputs(blocks, x, model.attn_mask, len(blocks) - 1, "", None)
        cond = model.ln_final(x)
    image = image.clone().requires_grad_(True)
    ie = model.encode_image(image)
    te = model.encode_text(tokens)
    fi = torch.nn.functional.normalize(ie, dim=-1)
    ft = torch.nn.functional.normalize(te, dim=-1)
    score = (fi * ft).sum(-1)
    (gimg,) = torch.autograd.grad(score.sum(), image)
    out = {"cond_penultimate": cond, "image_embed": ie, "text_embed": te, "image_features": fi,
           "text_features": ft, "hps_score": score, "grad.image": gimg}
    if want_acts:  # the block outputs of the full text tower and of the vision tower, [B, L, W]
        with torch.no_grad():
            x = model.token_embedding(tokens) + model.positional_embedding
            block_outputs(blocks, x, model.attn_mask, len(blocks), "", acts)
            v = model.visual
            p = v.conv1(image).flatten(2).transpose(1, 2)
            cls = v.class_embedding.expand(p.shape[0], 1, -1)
            xv = v.ln_pre(torch.cat([cls, p], 1) + v.positional_embedding)
            block_outputs(v.transformer.resblocks, xv, None, len(v.transformer.resblocks), "visual.", acts)
        out.update(acts)
    return {k: t.detach().contiguous() for k, t in out.items()}


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / max(b.abs().max(), 1e-30))


def check_shared():
    """Recomputes shared openclip_tiny with this generator's code path: must match its io."""
    pre = os.path.join(SHARED, "fixtures", "openclip_tiny")
    meta = json.load(open(pre + ".json"))
    model = build(meta["config"])
    sd = load_file(pre + ".weights.safetensors")
    model.load_state_dict(sd, strict=True)
    io = load_file(pre + ".io.safetensors")
    tokens = open_clip.tokenize(meta["prompts"])
    worst = 0.0
    print("tokens identical:", bool(torch.equal(tokens, io["tokens"])))
    ok = torch.equal(tokens, io["tokens"])
    got = compute(model, io["tokens"], io["image"])
    for k, v in got.items():
        e = rel_err(v, io[k])
        worst = max(worst, e)
        print(f"  {k:18s} {e:.3e}")
    print(f"shared openclip_tiny regenerated: worst rel err {worst:.3e}")
    return ok and worst < 1e-5


def make_case(out, name, config, prompts, seed, f16_embedding, acts):
    torch.manual_seed(seed)
    model = build(config)
    randomise(model, 1000 + seed)
    if f16_embedding:  # the stored table is F16: compute with exactly the values stored
        with torch.no_grad():
            model.token_embedding.weight.copy_(model.token_embedding.weight.half().float())
    tokens = open_clip.tokenize(prompts)
    S = config["vision_cfg"]["image_size"]
    g = torch.Generator().manual_seed(2000 + seed)
    image = torch.randn(len(prompts), 3, S, S, generator=g)
    got = compute(model, tokens, image, acts)
    io = {"tokens": tokens.contiguous(), "image": image.contiguous()}
    io.update(got)
    order = ["tokens", "cond_penultimate", "image", "image_embed", "text_embed", "image_features",
             "text_features", "hps_score", "grad.image"] + sorted(k for k in io if k.startswith("act."))
    io = {k: io[k] for k in order}
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if f16_embedding:
        sd["token_embedding.weight"] = sd["token_embedding.weight"].half()
    tmpl = json.load(open(os.path.join(SHARED, "fixtures", "openclip_tiny.json")))
    meta = {
        "model": tmpl["model"],
        "config": config,
        "reference": {"framework": f"PyTorch {torch.__version__}, open_clip_torch {open_clip.__version__}, CPU, "
                                   "float32, modules in eval() mode (every dropout off)",
                      "seed": seed,
                      "generator": "scripts/make_openclip_variant_fixtures.py"},
        "prompts": prompts,
        "call": tmpl["call"],
        "note": tmpl["note"] + ("; token_embedding.weight is stored as F16 (computed with those values)"
                                if f16_embedding else ""),
        "spec": tmpl["spec"],
        "io": {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in io.items()},
    }
    os.makedirs(out, exist_ok=True)
    pre = os.path.join(out, name)
    save_file(sd, pre + ".weights.safetensors")
    save_file(io, pre + ".io.safetensors")
    with open(pre + ".json", "w") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
    return pre


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_variant_args(ap, "/tmp/openclip_variants", [c for c in CASES if c != "openclip_var_small"],
                            "openclip_tiny")
    ap.add_argument("--f16-embedding", action="store_true", help="store token_embedding.weight as F16")
    ap.add_argument("--acts", action="store_true", help="also write act.* block outputs")
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.check and not check_shared():
        sys.exit("the generator does not reproduce shared openclip_tiny")
    fails = 0
    for name in a.cases.split(","):
        config, prompts, seed = CASES[name]
        pre = make_case(a.out, name, config, prompts, seed, a.f16_embedding, a.acts)
        print("wrote", pre)
        if a.run:
            fails += common.run_fixture(a.run, pre)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
