#!/usr/bin/env python3
"""Hugging Face checkpoints (CLIP ViT-L/14 for the aesthetic reward, PickScore CLIP-H, YOLOS,
VideoMAE, V-JEPA 2, ...) -> one safetensors file with the HF state-dict names.

    # convert: a pytorch_model.bin / model.safetensors / *.index.json, or a model directory
    python3 scripts/convert_hf.py MODEL_DIR_OR_FILE --out model.safetensors
        [--manifest F] [--dtype f16|bf16|f32|keep] [--strip-prefix P] [--drop REGEX] [--trust-pickle]
        [--rename REGEX=REPLACEMENT]

    # write a manifest (shared/manifests format) of a checkpoint's state dict ...
    python3 scripts/convert_hf.py MODEL_DIR_OR_FILE --write-manifest F [--description TEXT]
    # ... or of transformers' own state dict for a config (built on the meta device: no
    # weights, no download, no memory); the class is the config's "architectures"[0] unless
    # --architecture names one (e.g. CLIPModel, YolosForObjectDetection, VideoMAEForVideoClassification)
    python3 scripts/convert_hf.py --from-config config.json_or_dir --write-manifest F [--architecture NAME]

With --manifest the state dict is checked before writing and the written file after; a
mismatch exits 1 naming every missing / unexpected / mis-shaped key. Old .bin files may hold
buffers newer transformers no longer save (e.g. *.position_ids): --drop 'position_ids$'. Keys
newer transformers renamed are mapped with --rename (re.sub on every key, repeatable), e.g. the
YOLOS checkpoints' mid table: --rename 'encoder\.mid_position_embeddings$=encoder.interpolation.mid_position_embeddings'.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vader_convert_common as C  # noqa: E402


def parse_args(argv):
    p = C.make_parser(__doc__)
    p.add_argument("ckpt", nargs="?", help="model directory, pytorch_model.bin, *.safetensors or *.index.json")
    p.add_argument("--out", default=None, help="output .safetensors path")
    p.add_argument("--manifest", default=None, help="manifest to check against (optional)")
    p.add_argument("--strip-prefix", default="", help="keep only keys under this prefix and remove it")
    p.add_argument("--write-manifest", default=None, metavar="PATH", help="write the state dict's manifest here")
    p.add_argument("--description", default=None, help="first-line comment of the written manifest")
    p.add_argument("--from-config", default=None, metavar="CONFIG",
                   help="take the state dict of a transformers model built from this config.json (or its directory)")
    p.add_argument("--architecture", default=None, help="transformers class for --from-config")
    p.add_argument("--rename", action="append", default=[], metavar="REGEX=REPLACEMENT",
                   help="rename keys (re.sub) before the check; repeatable")
    C.add_common_args(p, "f16")
    a = p.parse_args(argv)
    if bool(a.ckpt) == bool(a.from_config):
        p.error("give exactly one of a checkpoint and --from-config")
    if a.from_config and a.out:
        p.error("--from-config has no weights to write; use it with --write-manifest")
    if not a.out and not a.write_manifest:
        p.error("nothing to do: give --out and/or --write-manifest")
    return a


def config_state_dict(path, architecture=None):
    """name -> (shape, dtype) of transformers' model for a config, built on the meta device."""
    import torch
    import transformers
    cfg_path = os.path.join(path, "config.json") if os.path.isdir(path) else path
    with open(cfg_path, "r", encoding="utf-8") as f:
        raw = json.load(f)
    arch = architecture or (raw.get("architectures") or [None])[0]
    if not arch:
        raise C.ConversionError("%s has no 'architectures'; pass --architecture" % cfg_path)
    cls = getattr(transformers, arch, None)
    if cls is None:
        raise C.ConversionError("transformers has no class %s" % arch)
    config = transformers.AutoConfig.from_pretrained(os.path.dirname(os.path.abspath(cfg_path))) \
        if os.path.basename(cfg_path) == "config.json" else cls.config_class.from_dict(raw)
    with torch.device("meta"):
        model = cls(config)
    return C.OrderedDict((k, (tuple(v.shape), str(v.dtype).replace("torch.", "")))
                         for k, v in model.state_dict().items()), arch


def main(argv=None):
    a = parse_args(argv)
    if a.from_config:
        shapes, arch = config_state_dict(a.from_config, a.architecture)
        shapes = C.OrderedDict((k, v) for k, v in shapes.items()
                               if not any(re.search(p, k) for p in a.drop))
        desc = a.description or "transformers %s state_dict (%s)" % (arch, os.path.basename(os.path.normpath(a.from_config)))
        n = C.write_manifest(shapes, a.write_manifest, desc)
        print("wrote %s: %d tensors, %d parameters" % (a.write_manifest, len(shapes), n))
        return 0
    manifest = C.parse_manifest(a.manifest) if a.manifest else None
    sd = C.state_dict_of(C.load_checkpoint(a.ckpt, a.trust_pickle), strip_module=False)
    if a.strip_prefix:
        sd = C.rename(C.select(sd, a.strip_prefix), a.strip_prefix, "")
    for r in a.rename:
        pat, sep, repl = r.partition("=")
        if not sep or not pat:
            raise C.ConversionError("--rename %r: expected REGEX=REPLACEMENT" % r)
        sd = C.OrderedDict((re.sub(pat, repl, k), v) for k, v in sd.items())
    tensors = C.select(sd, "", a.drop)
    what = "HF checkpoint %s" % a.ckpt
    if manifest is not None:
        C.check_against_manifest(C.tensor_shapes(tensors), manifest, what)
    if a.write_manifest:
        desc = a.description or "state_dict of %s" % os.path.basename(os.path.normpath(a.ckpt))
        C.write_manifest(tensors, a.write_manifest, desc)
        print("wrote %s: %d tensors" % (a.write_manifest, len(tensors)))
    if a.out:
        C.convert_and_write(tensors, manifest, a.out, C.DTYPES[a.dtype],
                            C.metadata_for(__file__, a.ckpt, a.dtype, a.manifest), what)
        print("wrote %s: %d tensors, %s" % (a.out, len(tensors), a.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(C.run_main(main))
