#!/usr/bin/env python3
"""make_reward_fixtures.py — reference cases for the reward modules (rewards/), made by running
the upstream PyTorch code on small random models in the real key layout:

  aesthetic_tiny   transformers CLIPModel.get_image_features (vision tower, quick_gelu) ->
                   L2 normalise -> LAION aesthetic MLP (same layer structure, tiny widths),
                   VADER-VideoCrafter's aesthetic_loss_fn preprocessing and L1 loss
  pickscore_tiny   transformers CLIPModel (text + vision, gelu), VADER's pick_score_loss_fn
                   preprocessing (x255, shortest side bicubic antialias, centre crop, /255,
                   normalise), logit_scale.exp() * cosine, loss |1 - score / 100|
  hps_reward_tiny  open_clip CLIP (ViT-H-14 layout, tiny) with VADER's hps_loss_fn
                   preprocessing, score = <image_features, text_features>, loss 1 - score

Each case writes NAME.json, NAME.weights.safetensors and NAME.io.safetensors (the format of
shared/fixtures, DESIGN.md "Fixtures") into tests/fixtures/. grad.frames = d loss / d frames.
The token embedding tables (49408 rows: the prompts are real CLIP BPE ids) are rounded to fp16
and stored as F16 to keep each case under 1 MB; every computation is fp32.

It also writes the full-size manifests (tests/manifests/*.txt: KEY<TAB>[shape]<TAB>float32) of
the HF CLIP models from transformers' own state dict on the meta device, and prints the real
aesthetic head's output on a fixed embedding (tests/test_rewards.cpp embeds the number).

    python3 scripts/make_reward_fixtures.py [--out tests/fixtures] [--manifests tests/manifests]
"""
import math
import os

import torch
import torchvision
from safetensors.torch import load_file

import vader_convert_common as common

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PROMPTS = [
    "a raccoon holding a snowball",
    # longer than 77 tokens: truncated as the tokenizers do ([SOT, 75 ids, EOT])
    "a very long prompt " + " ".join(f"word{i}" for i in range(60)) + " that goes on and on past the context",
]

SPEC_PREPROCESS = (
    "frames [n, 3, h, w] in [-1, 1] -> clamp(x / 2 + 0.5, 0, 1) -> torchvision Resize((S, S)) on a tensor "
    "(bilinear, antialias True: torchvision >= 0.17 default) -> Normalize(mean %s, std %s); S = the vision "
    "tower's image_size (224 for the real models)" % (CLIP_MEAN, CLIP_STD)
)


def seed_all(seed):
    torch.manual_seed(seed)


def randomise(module, std=0.2):
    """Random weights everywhere (LayerNorm scales around 1) so every path matters."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("logit_scale"):
                continue
            if p.ndim == 1 and ("norm" in name or "ln_" in name or "layrnorm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def round_f16(module, names):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in names:
                p.copy_(p.half().float())


def frames_input(n, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    # a little outside [-1, 1] so the clamp is exercised (never exactly on the bounds)
    return (torch.rand(n, 3, h, w, generator=g) * 2.3 - 1.15).float()


def write_case(out, name, model_desc, config, call, spec, weights, io, extra):
    doc = {
        "model": model_desc,
        "config": config,
        "reference": {
            "framework": "PyTorch %s, transformers / open_clip as installed, CPU, float32, eval() (dropout off)"
            % torch.__version__,
            "script": "scripts/make_reward_fixtures.py",
        },
    }
    doc.update(extra)
    doc["call"] = call
    doc["spec"] = spec
    common.write_fixture(out, name, doc, weights, io)


def clip_normalize(x):
    return torchvision.transforms.Normalize(mean=CLIP_MEAN, std=CLIP_STD)(x)


class AestheticMLP(torch.nn.Module):
    """The LAION aesthetic predictor head (improved-aesthetic-predictor), widths as given."""

    def __init__(self, dims):
        super().__init__()
        d = dims
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(d[0], d[1]), torch.nn.Dropout(0.2),
            torch.nn.Linear(d[1], d[2]), torch.nn.Dropout(0.2),
            torch.nn.Linear(d[2], d[3]), torch.nn.Dropout(0.1),
            torch.nn.Linear(d[3], d[4]),
            torch.nn.Linear(d[4], 1),
        )

    def forward(self, embed):
        return self.layers(embed)


def image_features(out):
    # transformers 5 returns a model output whose pooler_output is the projected embedding
    return out if torch.is_tensor(out) else out.pooler_output


def hf_tiny_config(with_text, act):
    from transformers import CLIPConfig
    vision = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=2,
                  image_size=32, patch_size=8, hidden_act=act, layer_norm_eps=1e-5)
    text = dict(vocab_size=49408 if with_text else 64, hidden_size=8, num_attention_heads=2, intermediate_size=16,
                num_hidden_layers=2, max_position_embeddings=77, hidden_act=act, layer_norm_eps=1e-5)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16), vision, text


def make_aesthetic(out):
    from transformers import CLIPModel
    seed_all(0)
    cfg, vision, _ = hf_tiny_config(False, "quick_gelu")
    clip = CLIPModel(cfg).eval()
    randomise(clip)
    head = AestheticMLP([16, 24, 12, 8, 4]).eval()
    randomise(head, 0.3)
    target, scale = 10.0, 0.1

    frames = frames_input(2, 40, 48, 1).requires_grad_(True)
    S = vision["image_size"]
    # VADER-VideoCrafter aesthetic_loss_fn
    im = ((frames / 2) + 0.5).clamp(0, 1)
    im = torchvision.transforms.Resize((S, S))(im)
    pix = clip_normalize(im)
    embed = image_features(clip.get_image_features(pixel_values=pix))
    embed_n = embed / torch.linalg.vector_norm(embed, dim=-1, keepdim=True)
    reward = head(embed_n).squeeze(1)
    loss = (reward - target).abs().mean() * scale
    (gf,) = torch.autograd.grad(loss, frames)

    sd = {k: v for k, v in clip.state_dict().items() if k.startswith("vision_model.") or k == "visual_projection.weight"}
    sd.update(head.state_dict())
    io = {"frames": frames, "pixel_values": pix, "image_embeds": embed, "reward": reward, "loss": loss,
          "grad.frames": gf}
    write_case(out, "aesthetic_tiny",
               "vader reward: aesthetic (transformers CLIPModel vision tower + LAION aesthetic MLP head, tiny)",
               {"vision_config": vision, "projection_dim": 16, "head_dims": [16, 24, 12, 8, 4, 1]},
               "pixel_values = normalize(resize(clamp(frames/2+0.5,0,1))); image_embeds = "
               "clip.get_image_features(pixel_values); reward = mlp(image_embeds / ||image_embeds||).squeeze(1); "
               "loss = mean(|reward - target|) * scale; grad.frames = d loss / d frames",
               {"preprocess": SPEC_PREPROCESS + " (VADER-VideoCrafter aesthetic_loss_fn: no centre crop)",
                "vision": "transformers CLIPVisionTransformer: patch conv (no bias) -> prepend class_embedding -> "
                          "+ position_embedding -> pre_layrnorm -> layers (layer_norm1, q/k/v/out_proj, "
                          "layer_norm2, fc1, quick_gelu, fc2) -> post_layernorm(token 0) -> visual_projection "
                          "(no bias)",
                "head": "layers.0 Linear, Dropout, layers.2 Linear, Dropout, layers.4 Linear, Dropout, layers.6 "
                        "Linear, layers.7 Linear(16, 1); no activations (the real head: 768-1024-128-64-16-1)",
                "loss": "VADER: |reward - target| * grad_scale, target 10, grad_scale 0.1, mean over frames"},
               clip_weights(sd), io,
               {"reward": "aesthetic", "options": {"target": str(target), "scale": str(scale)}})


def clip_weights(sd):
    return dict(sd)


def make_pickscore(out):
    import open_clip
    from transformers import CLIPModel
    seed_all(0)
    cfg, vision, text = hf_tiny_config(True, "gelu")
    model = CLIPModel(cfg).eval()
    randomise(model)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))
    round_f16(model, {"text_model.embeddings.token_embedding.weight"})

    frames = frames_input(2, 40, 56, 2).requires_grad_(True)
    S = vision["image_size"]
    # VADER-VideoCrafter pick_score_loss_fn with 224 -> S
    im = ((frames / 2) + 0.5).clamp(0, 1)
    im = im * 255
    if im.shape[2] < im.shape[3]:
        height = S
        width = im.shape[3] * height // im.shape[2]
    else:
        width = S
        height = im.shape[2] * width // im.shape[3]
    im = torchvision.transforms.Resize((height, width), interpolation=torchvision.transforms.InterpolationMode.BICUBIC,
                                       antialias=True)(im)
    im = im.permute(0, 2, 3, 1)
    startx = width // 2 - (S // 2)
    starty = height // 2 - (S // 2)
    im = im[:, starty:starty + S, startx:startx + S, :]
    im = im * 0.00392156862745098
    im = (im - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    pix = im.permute(0, 3, 1, 2)

    # open_clip's tokenizer gives the ids of the HF CLIPTokenizer (truncation=True, max_length 77);
    # the padding (0 here, to the longest there) does not reach the pooled EOS row (causal mask)
    tokens = open_clip.tokenize(PROMPTS)
    image_embs = image_features(model.get_image_features(pixel_values=pix))
    text_embs = image_features(model.get_text_features(input_ids=tokens))
    ie = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
    te = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
    # VADER takes (text_embs @ image_embs.T)[0]: one prompt per batch, so that row is the diagonal
    scores = model.logit_scale.exp() * (te * ie).sum(-1)
    loss = (1.0 - scores / 100.0).abs().mean()
    (gf,) = torch.autograd.grad(loss, frames)

    sd = model.state_dict()
    sd = {k: (v.half() if k == "text_model.embeddings.token_embedding.weight" else v) for k, v in sd.items()}
    io = {"frames": frames, "pixel_values": pix, "tokens": tokens, "image_embeds": image_embs,
          "text_embeds": text_embs, "reward": scores, "loss": loss, "grad.frames": gf}
    write_case(out, "pickscore_tiny",
               "vader reward: pickscore (transformers CLIPModel, CLIP-H layout, gelu, tiny)",
               {"vision_config": vision, "text_config": text, "projection_dim": 16},
               "pixel_values = PickScore preprocessing(frames); tokens = tokenize(prompts); image_embeds = "
               "get_image_features, text_embeds = get_text_features; reward = logit_scale.exp() * "
               "cos(image_embeds, text_embeds); loss = mean(|1 - reward / 100|); grad.frames = d loss / d frames",
               {"preprocess": "clamp(x/2+0.5,0,1) * 255 -> Resize((h', w')) bicubic antialias with the shorter side "
                              "S and the other side = side * S // shorter (integer) -> centre crop S x S at "
                              "(h'//2 - S//2, w'//2 - S//2) -> * 1/255 -> (x - mean) / std",
                "text": "CLIPTextTransformer: token + position embedding, causal layers, final_layer_norm, pooled "
                        "at the EOS position (first 49407; argmax(ids) when eos_token_id == 2), text_projection "
                        "(no bias)",
                "score": "VADER pick_score_loss_fn: logit_scale.exp() * (normalised text @ normalised image.T)[0]; "
                         "VADER scores one prompt per batch, so that row equals the per-sample diagonal used here",
                "tokens": "prompt 1 is longer than 77 tokens: [SOT, first 75 ids, EOT]",
                "dtype": "text_model.embeddings.token_embedding.weight stored as F16 (the model used the same "
                         "fp16-rounded values)"},
               sd, io, {"reward": "pickscore", "options": {}, "prompts": PROMPTS})


def make_hps(out):
    import open_clip
    from open_clip.model import CLIP
    seed_all(0)
    vision_cfg = dict(image_size=32, layers=2, width=32, head_width=16, patch_size=8)
    text_cfg = dict(context_length=77, vocab_size=49408, width=8, heads=2, layers=2)
    model = CLIP(embed_dim=16, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=False, output_dict=True).eval()
    randomise(model)
    round_f16(model, {"token_embedding.weight"})

    frames = frames_input(2, 40, 48, 3).requires_grad_(True)
    S = vision_cfg["image_size"]
    # VADER-VideoCrafter hps_loss_fn with 224 -> S
    im_pix = ((frames / 2) + 0.5).clamp(0, 1)
    x_var = torchvision.transforms.Resize((S, S))(im_pix)
    x_var = clip_normalize(x_var)
    caption = open_clip.tokenize(PROMPTS)
    outputs = model(x_var, caption)
    image_f, text_f = outputs["image_features"], outputs["text_features"]
    scores = torch.diagonal(image_f @ text_f.T)
    loss = (1.0 - scores).mean()
    (gf,) = torch.autograd.grad(loss, frames)

    sd = {k: (v.half() if k == "token_embedding.weight" else v) for k, v in model.state_dict().items()}
    io = {"frames": frames, "pixel_values": x_var, "tokens": caption, "image_features": image_f,
          "text_features": text_f, "reward": scores, "loss": loss, "grad.frames": gf}
    write_case(out, "hps_reward_tiny", "vader reward: hps (open_clip CLIP, ViT-H-14 layout, tiny)",
               {"embed_dim": 16, "vision_cfg": vision_cfg, "text_cfg": text_cfg},
               "pixel_values = normalize(resize(clamp(frames/2+0.5,0,1))); out = model(pixel_values, "
               "tokenize(prompts)); reward = diag(image_features @ text_features.T); loss = mean(1 - reward); "
               "grad.frames = d loss / d frames",
               {"preprocess": SPEC_PREPROCESS + " (VADER-VideoCrafter hps_loss_fn)",
                "model": "open_clip towers as in shared/fixtures/openclip_tiny.json (exact GELU)",
                "tokens": "prompt 1 is longer than 77 tokens: cut to 77 with the last id forced to EOT",
                "dtype": "token_embedding.weight stored as F16 (the model used the same fp16-rounded values)"},
               sd, io, {"reward": "hps", "options": {}, "prompts": PROMPTS})


def write_manifest(path, title, sd):
    n = common.write_manifest(sd, path, title)
    print(f"{path}: {len(sd)} keys, {n} parameters")


def make_manifests(out):
    from transformers import CLIPConfig, CLIPModel
    # openai/clip-vit-large-patch14 (config.json values)
    l14 = CLIPConfig(
        text_config=dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=12,
                         max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=1024, num_attention_heads=16, intermediate_size=4096, num_hidden_layers=24,
                           image_size=224, patch_size=14, hidden_act="quick_gelu"),
        projection_dim=768)
    # yuvalkirstain/PickScore_v1 = laion/CLIP-ViT-H-14-laion2B-s32B-b79K in the HF layout
    h14 = CLIPConfig(
        text_config=dict(hidden_size=1024, num_attention_heads=16, intermediate_size=4096, num_hidden_layers=24,
                         max_position_embeddings=77, vocab_size=49408, hidden_act="gelu"),
        vision_config=dict(hidden_size=1280, num_attention_heads=16, intermediate_size=5120, num_hidden_layers=32,
                           image_size=224, patch_size=14, hidden_act="gelu"),
        projection_dim=1024)
    with torch.device("meta"):
        ml = CLIPModel(l14)
        mh = CLIPModel(h14)
    sdl = {k: v for k, v in ml.state_dict().items() if k.startswith("vision_model.") or k == "visual_projection.weight"}
    write_manifest(os.path.join(out, "clip_vit_l_14_vision.txt"),
                   "openai/clip-vit-large-patch14 vision tower + visual_projection (transformers CLIPModel layout; "
                   "the aesthetic reward's backbone)", sdl)
    write_manifest(os.path.join(out, "pickscore_clip_h_14.txt"),
                   "yuvalkirstain/PickScore_v1 (CLIP-ViT-H-14, transformers CLIPModel layout, both towers)",
                   mh.state_dict())


def aesthetic_head_reference():
    sd = load_file("/work/shared/weights/aesthetic_mlp_sac_logos_ava1_l14.safetensors")
    head = AestheticMLP([768, 1024, 128, 64, 16]).eval()
    head.load_state_dict(sd)
    i = torch.arange(768, dtype=torch.float64)
    e = torch.sin(0.37 * i + 0.1) + 0.25 * torch.cos(0.011 * i * i)
    e32 = (e / e.norm()).float()
    with torch.no_grad():
        r32 = head(e32[None]).item()
        r64 = head.double()(e32.double()[None]).item()
    print(f"aesthetic head on e_i = normalize(sin(0.37 i + 0.1) + 0.25 cos(0.011 i^2)): fp32 {r32:.9g}, fp64 {r64:.12g}")


def main():
    a = common.fixture_args(__doc__, threads=2)
    make_aesthetic(a.out)
    make_pickscore(a.out)
    make_hps(a.out)
    make_manifests(a.manifests)
    aesthetic_head_reference()


if __name__ == "__main__":
    main()
