#!/usr/bin/env python3
"""make_yolos_fixture.py — the object_removal reward's reference case and the YOLOS manifests.

  object_removal_tiny   transformers YolosForObjectDetection (tiny random config in the real key
                        layout: mid position embeddings on, a config image size different from
                        the input so both position-embedding tables are bicubic-interpolated),
                        VADER-VideoCrafter's objectDetection_loss_fn preprocessing, then the
                        object_removal reward: confidence = softmax(logits)[..., target],
                        max over detection tokens, max over the frames of each video;
                        reward = -confidence, loss = mean(confidence)
  object_removal_vader_tiny  the same model with aggregation "vader" (VADER's post-processing:
                        the mean of the target's score over the detection tokens whose best
                        real class is the target with a score above the threshold), frames
                        averaged

Each case writes NAME.json, NAME.weights.safetensors and NAME.io.safetensors (the format of
shared/fixtures, DESIGN.md "Fixtures") into tests/fixtures/. grad.frames = d loss / d frames.
It also writes tests/manifests/yolos_base.txt and yolos_tiny.txt from transformers' own state
dicts (meta device) for the hustvl/yolos-base and hustvl/yolos-tiny configs.

    python3 scripts/make_yolos_fixture.py [--out tests/fixtures] [--manifests tests/manifests]
"""
import os

import torch
import torchvision

import vader_convert_common as common

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# COCO detection id2label of the hustvl/yolos-* configs (91 ids, "N/A" for the unused ones)
COCO = ["N/A", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
        "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
        "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A",
        "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
        "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "N/A",
        "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
        "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
        "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote", "keyboard",
        "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase",
        "scissors", "teddy bear", "hair drier", "toothbrush"]

# hustvl/yolos-base and hustvl/yolos-tiny (config.json fields that differ from YolosConfig's defaults)
YOLOS_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                  image_size=[800, 1344], patch_size=16, num_detection_tokens=100,
                  use_mid_position_embeddings=True)
YOLOS_TINY = dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                  image_size=[800, 1333], patch_size=16, num_detection_tokens=100,
                  use_mid_position_embeddings=False)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            image_size=[32, 48], patch_size=8, num_detection_tokens=6, use_mid_position_embeddings=True,
            layer_norm_eps=1e-12, hidden_act="gelu", qkv_bias=True)


def yolos_config(fields):
    from transformers import YolosConfig
    return YolosConfig(id2label={i: n for i, n in enumerate(COCO)},
                       label2id={n: i for i, n in enumerate(COCO) if n != "N/A"}, **fields)


def randomise(model, std=0.2):
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "layernorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def frames_input(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) * 2.3 - 1.15).float()  # a little outside [-1, 1]


def preprocess(frames, height):
    """VADER-VideoCrafter objectDetection_loss_fn: [n, 3, h, w] in [-1, 1] -> pixel_values."""
    images = ((frames / 2) + 0.5).clamp(0.0, 1.0)
    width = height * images.shape[3] // images.shape[2]
    images = torchvision.transforms.Resize((height, width), antialias=False)(images)
    images = images.permute(0, 2, 3, 1)
    images = (images - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    return images.permute(0, 3, 1, 2)


def confidence(logits, target, aggregation, threshold):
    """[n, D, K+1] logits -> [n] confidence of class `target`."""
    prob = logits.softmax(-1)
    c = prob[..., target]
    if aggregation == "max":
        return c.max(-1).values
    if aggregation == "mean":
        return c.mean(-1)
    # "vader": transformers' post_process_object_detection(threshold) keeps the tokens whose best real
    # class score is > threshold; VADER averages the scores of those labelled `target`
    scores, labels = prob[..., :-1].max(-1)
    keep = ((labels == target) & (scores > threshold)).float()
    cnt = keep.sum(-1)
    return (c * keep).sum(-1) / cnt.clamp(min=1.0)


def write_case(out, name, desc, config, call, spec, weights, io, extra):
    doc = {"model": desc, "config": config,
           "reference": {"framework": "PyTorch %s, transformers as installed, CPU, float32, eval() (dropout off)"
                                      % torch.__version__, "script": "scripts/make_yolos_fixture.py"}}
    doc.update(extra)
    doc["call"] = call
    doc["spec"] = spec
    common.write_fixture(out, name, doc, weights, io)


SPEC = {
    "preprocess": "VADER-VideoCrafter objectDetection_loss_fn: frames [n, 3, h, w] in [-1, 1] -> clamp(x / 2 + 0.5, "
                  "0, 1) -> torchvision Resize((H, H * w // h), antialias=False) (bilinear, align_corners False) -> "
                  "(x - mean) / std with the ImageNet mean %s, std %s (VADER: H = 512)" % (IMAGENET_MEAN, IMAGENET_STD),
    "embeddings": "patch conv (bias, stride p; H // p x W // p patches, flatten(2).transpose(1, 2)); tokens "
                  "[cls_token, patches, detection_tokens] + position_embeddings whose patch part is viewed as "
                  "[1, W, image_size[0] // p, image_size[1] // p] and bicubic-interpolated (align_corners False, no "
                  "antialias) to [H // p, W // p] (always, even at the same size); cls and detection rows kept",
    "encoder": "ViT layers: x += attention.output.dense(MHA(layernorm_before(x))) with attention.attention."
               "{query,key,value}; x += output.dense(gelu(intermediate.dense(layernorm_after(x)))); eps "
               "layer_norm_eps; with use_mid_position_embeddings, after layer i < L - 1 add "
               "mid_position_embeddings[i] (interpolated as above); then vit.layernorm",
    "heads": "last num_detection_tokens tokens -> class_labels_classifier (3 Linear, relu between) -> logits "
             "[n, D, num_labels + 1] (last = no object); bbox_predictor (3 Linear, relu, sigmoid) -> pred_boxes",
    "reward": "confidence c[n, d] = softmax(logits)[..., target]; per frame: max_d (aggregation max), mean_d "
              "(mean), or vader: mean of c over the tokens whose argmax over the real classes is target with "
              "prob > threshold (0 if none); video [b, 3, t, h, w]: frames max or mean over t; reward = "
              "-confidence, loss = mean(confidence)",
}


def make_case(out, name, aggregation, frames_mode, threshold, bias_target):
    from transformers import YolosForObjectDetection
    torch.manual_seed(0)
    cfg = yolos_config(TINY)
    model = YolosForObjectDetection(cfg).eval()
    randomise(model)
    target_name, target = "dog", COCO.index("dog")
    if bias_target:  # make the target the best class of some tokens, so the thresholded path selects some
        with torch.no_grad():
            model.class_labels_classifier.layers[2].bias[target] += 3.0
    height = 24
    B, T, h, w = 2, 2, 40, 64
    frames = frames_input((B, 3, T, h, w), 3).requires_grad_(True)
    flat = frames.permute(0, 2, 1, 3, 4).reshape(B * T, 3, h, w)
    pix = preprocess(flat, height)
    outputs = model(pixel_values=pix)
    logits = outputs.logits
    conf = confidence(logits, target, aggregation, threshold).reshape(B, T)
    conf_v = conf.max(1).values if frames_mode == "max" else conf.mean(1)
    reward = -conf_v
    loss = conf_v.mean()
    (gf,) = torch.autograd.grad(loss, frames)
    io = {"frames": frames, "pixel_values": pix, "logits": logits, "probabilities": logits.softmax(-1),
          "pred_boxes": outputs.pred_boxes, "confidence": conf.reshape(B * T), "reward": reward, "loss": loss,
          "grad.frames": gf}
    opts = {"target": target_name, "aggregation": aggregation, "frames": frames_mode, "height": str(height)}
    if aggregation == "vader":
        opts["threshold"] = str(threshold)
    write_case(out, name,
               "vader reward: object_removal (transformers YolosForObjectDetection, tiny random, mid position "
               "embeddings)",
               cfg.to_diff_dict() | {"image_size": TINY["image_size"]},
               "pixel_values = preprocess(frames as (b t) images); logits = model(pixel_values).logits; confidence "
               "= aggregate(softmax(logits)[..., %d]); reward = -aggregate_t(confidence); loss = mean; grad.frames "
               "= d loss / d frames" % target,
               SPEC, model.state_dict(), io, {"reward": "object_removal", "options": opts})
    return cfg


def write_manifests(out):
    from transformers import YolosForObjectDetection
    os.makedirs(out, exist_ok=True)
    for fname, fields, desc in (("yolos_base.txt", YOLOS_BASE, "hustvl/yolos-base"),
                                ("yolos_tiny.txt", YOLOS_TINY, "hustvl/yolos-tiny")):
        cfg = yolos_config(fields)
        with torch.device("meta"):
            model = YolosForObjectDetection(cfg)
        sd = model.state_dict()
        n = common.write_manifest(sd, os.path.join(out, fname), "%s (transformers YolosForObjectDetection "
                                  "state_dict, %d COCO labels + no-object)" % (desc, len(COCO)))
        print(f"{fname}: {len(sd)} tensors, {n} parameters")


def main():
    a = common.fixture_args(__doc__, threads=1)
    make_case(a.out, "object_removal_tiny", "max", "max", 0.0, False)
    make_case(a.out, "object_removal_vader_tiny", "vader", "mean", 0.2, True)
    write_manifests(a.manifests)


if __name__ == "__main__":
    main()
