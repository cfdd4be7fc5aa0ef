#!/usr/bin/env python3
"""make_videomae_fixture.py — reference cases of the action reward (rewards/action_reward.c),
made by running transformers' VideoMAEForVideoClassification on a tiny random model in the real
key layout (fp32, CPU, eval):

  action_tiny        defaults: frames resampled to the config's num_frames by uniform index
                     sampling (numpy linspace(0, T, N), clipped to T - 1, truncated), each frame
                     preprocessed as VideoMAEImageProcessor on a tensor (shortest edge to S,
                     bilinear antialias, centre crop S, ImageNet mean / std), reward = log p of a
                     class given by name (config id2label), loss = outputs.loss (cross-entropy).
                     Weights with the released checkpoints' q_bias / v_bias names.
  action_vader_tiny  VADER-VideoCrafter's actpred_loss_fn: the frames as they are (the model is
                     built for that count), Resize((S, S)) bilinear antialias, ImageNet mean /
                     std; reward = softmax probability, loss = cross-entropy. Weights with the
                     query.bias / value.bias names of transformers >= 5.

Each writes NAME.json, NAME.weights.safetensors, NAME.io.safetensors (DESIGN.md "Fixtures") into
tests/fixtures/; io: frames, pixel_values (HF layout [B, N, 3, S, S]), logits, reward, loss and
grad.frames = d loss / d frames. It also writes the full-size manifest
tests/manifests/videomae_base_kinetics.txt from transformers' own state dict (meta device) of
MCG-NJU/videomae-base-finetuned-kinetics's config.

    python3 scripts/make_videomae_fixture.py [--out tests/fixtures] [--manifests tests/manifests]
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

import vader_convert_common as common

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
LABELS = ["abseiling", "playing guitar", "juggling fire", "yoga", "zumba"]

TINY = dict(hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=2, image_size=32,
            patch_size=8, num_frames=4, tubelet_size=2, num_channels=3, hidden_act="gelu", layer_norm_eps=1e-12,
            use_mean_pooling=True, qkv_bias=True)


def tiny_model(num_frames):
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification
    cfg = VideoMAEConfig(**dict(TINY, num_frames=num_frames), num_labels=len(LABELS),
                         id2label={i: l for i, l in enumerate(LABELS)}, label2id={l: i for i, l in enumerate(LABELS)})
    model = VideoMAEForVideoClassification(cfg).eval()
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def frames_input(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) * 2.3 - 1.15).float()  # a little outside [-1, 1]


def uniform_indices(T, N):
    # transformers' VideoMAE example sample_frame_indices over the whole clip
    idx = np.linspace(0, T, num=N)
    return np.clip(idx, 0, T - 1).astype(np.int64).tolist()


def preprocess_processor(img, S):
    """VideoMAEImageProcessor on a [n, 3, h, w] tensor in [0, 1]: shortest edge S, bilinear antialias,
    centre crop S at ((h' - S) // 2, (w' - S) // 2), normalise."""
    h, w = img.shape[2], img.shape[3]
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(S * long / short)
    H, W = (new_long, S) if w <= h else (S, new_long)
    x = F.interpolate(img, size=(H, W), mode="bilinear", align_corners=False, antialias=True)
    top, left = (H - S) // 2, (W - S) // 2
    x = x[:, :, top:top + S, left:left + S]
    m = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - m) / s


def preprocess_vader(img, S):
    import torchvision
    x = torchvision.transforms.Resize((S, S), antialias=True)(img)
    return torchvision.transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)(x)


def write_case(out, name, config, options, call, spec, weights, io):
    doc = {
        "model": "vader reward: action (transformers VideoMAEForVideoClassification, tiny)",
        "config": config,
        "reference": {"framework": "PyTorch %s, transformers as installed, CPU, float32, eval()" % torch.__version__,
                      "script": "scripts/make_videomae_fixture.py"},
        "reward": "action",
        "options": options,
        "call": call,
        "spec": spec,
    }
    common.write_fixture(out, name, doc, weights, io)


SPEC_MODEL = ("VideoMAEForVideoClassification: pixel_values [B, T, 3, S, S] -> Conv3d(3, W, kernel = stride = "
              "(tubelet, p, p)) -> flatten(2).transpose(1, 2) (tokens in (t, h, w) order) -> + fixed sinusoid table "
              "get_sinusoid_encoding_table(T/tubelet * (S/p)^2, W) (angle pos / 10000^(2 (j//2) / W), sin even j, "
              "cos odd j, float64 -> float32) -> layers (layernorm_before, query / key (no bias) / value, "
              "output.dense, layernorm_after, intermediate.dense, exact gelu, output.dense; eps layer_norm_eps) -> "
              "mean over tokens -> fc_norm (nn.LayerNorm default eps 1e-5) -> classifier")


def config_json(model):
    c = model.config
    d = {k: getattr(c, k) for k in TINY if hasattr(c, k)}
    d["qv_bias"] = True
    d["num_frames"] = c.num_frames
    d["id2label"] = {str(i): l for i, l in enumerate(LABELS)}
    d.pop("qkv_bias", None)
    return d


def make_default(out):
    torch.manual_seed(0)
    model = tiny_model(4)
    N, S = model.config.num_frames, model.config.image_size
    target = 1  # "playing guitar"
    frames = frames_input((2, 3, 6, 40, 48), 1).requires_grad_(True)
    B, _, T, h, w = frames.shape
    idx = uniform_indices(T, N)
    x = frames.permute(0, 2, 1, 3, 4)[:, idx]  # [B, N, 3, h, w]
    img = ((x.reshape(B * N, 3, h, w) / 2) + 0.5).clamp(0, 1)
    px = preprocess_processor(img, S).reshape(B, N, 3, S, S)
    outp = model(pixel_values=px, labels=torch.tensor([target] * B))
    logits = outp.logits
    reward = torch.log_softmax(logits, -1)[:, target]
    loss = outp.loss
    assert torch.allclose(loss, (-reward).mean())
    (gf,) = torch.autograd.grad(loss, frames)
    sd = {}
    for k, v in model.state_dict().items():  # the released checkpoints' names of the q / v biases
        k = k.replace("attention.attention.query.bias", "attention.attention.q_bias")
        k = k.replace("attention.attention.value.bias", "attention.attention.v_bias")
        sd[k] = v
    io = {"frames": frames, "pixel_values": px, "logits": logits, "reward": reward, "loss": loss, "grad.frames": gf}
    write_case(out, "action_tiny", config_json(model), {"class": LABELS[target]},
               "idx = uniform_indices(T, num_frames); pixel_values = processor(clamp(frames[:, :, idx]/2+0.5, 0, 1)) "
               "as [B, N, 3, S, S]; out = model(pixel_values, labels=[class]*B); reward = log_softmax(logits)[:, class]; "
               "loss = out.loss; grad.frames = d loss / d frames",
               {"frames": "frames [B, 3, T, h, w] in [-1, 1]; indices %s = numpy linspace(0, T, N) clipped to T - 1, "
                          "truncated (transformers' VideoMAE example sample_frame_indices over the whole clip)" % idx,
                "preprocess": "VideoMAEImageProcessor on tensors: clamp(x/2+0.5, 0, 1) -> resize shortest edge to S, "
                              "other int(S * long / short), bilinear antialias -> centre crop S at ((h'-S)//2, "
                              "(w'-S)//2) -> Normalize(mean %s, std %s)" % (IMAGENET_MEAN, IMAGENET_STD),
                "model": SPEC_MODEL,
                "weights": "q_bias / v_bias names (MCG-NJU checkpoints); transformers >= 5 renames them to "
                           "query.bias / value.bias on load",
                "class": "by name through the config's id2label"},
               sd, io)


def make_vader(out):
    torch.manual_seed(0)
    T = 4
    model = tiny_model(T)  # VADER: from_pretrained(num_frames = the decoded count)
    S = model.config.image_size
    target = 3
    frames = frames_input((1, 3, T, 36, 44), 2).requires_grad_(True)
    # VADER-VideoCrafter actpred: vid [f, c, h, w] -> preprocess_img per frame -> [1, f, c, S, S]
    vid = frames[0].permute(1, 0, 2, 3)
    img = ((vid / 2) + 0.5).clamp(0, 1)
    px = preprocess_vader(img, S)[None]
    outp = model(pixel_values=px, labels=torch.tensor([target]))
    logits = outp.logits
    reward = torch.softmax(logits, -1)[:, target]
    loss = outp.loss
    (gf,) = torch.autograd.grad(loss, frames)
    io = {"frames": frames, "pixel_values": px, "logits": logits, "reward": reward, "loss": loss, "grad.frames": gf}
    write_case(out, "action_vader_tiny", config_json(model),
               {"class": str(target), "frames": "native", "resize": "square", "reward": "prob"},
               "pixel_values = normalize(Resize((S, S))(clamp(frames/2+0.5, 0, 1))) per frame as [1, T, 3, S, S]; "
               "out = model(pixel_values, labels=[class]); reward = softmax(logits)[:, class]; loss = out.loss; "
               "grad.frames = d loss / d frames",
               {"frames": "all T frames, the model's position table made for T / tubelet tubelets (VADER builds "
                          "VideoMAE with num_frames = the decoded count)",
                "preprocess": "VADER actpred_loss_fn: clamp(x/2+0.5, 0, 1) -> torchvision Resize((S, S), "
                              "antialias=True) (bilinear) -> Normalize(mean %s, std %s)" % (IMAGENET_MEAN, IMAGENET_STD),
                "model": SPEC_MODEL,
                "weights": "transformers >= 5 state-dict names (query.bias / value.bias)",
                "class": "by id"},
               model.state_dict(), io)


def make_manifest(out):
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification
    # MCG-NJU/videomae-base-finetuned-kinetics config.json values
    cfg = VideoMAEConfig(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=12,
                         image_size=224, patch_size=16, num_frames=16, tubelet_size=2, qkv_bias=True,
                         use_mean_pooling=True, layer_norm_eps=1e-12, hidden_act="gelu", num_labels=400)
    with torch.device("meta"):
        model = VideoMAEForVideoClassification(cfg)
    sd = model.state_dict()
    path = os.path.join(out, "videomae_base_kinetics.txt")
    n = common.write_manifest(sd, path, "MCG-NJU/videomae-base-finetuned-kinetics (transformers "
                              "VideoMAEForVideoClassification state dict, transformers >= 5 names: the checkpoint's "
                              "q_bias / v_bias are query.bias / value.bias)")
    print(f"{path}: {len(sd)} keys, {n} parameters")


def main():
    a = common.fixture_args(__doc__, threads=2)
    make_default(a.out)
    make_vader(a.out)
    make_manifest(a.manifests)


if __name__ == "__main__":
    main()
