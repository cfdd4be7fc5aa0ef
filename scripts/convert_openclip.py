#!/usr/bin/env python3
"""open_clip / HPSv2 / HPSv2.1 checkpoint (.pt / .bin / .safetensors; the state dict may sit
under "state_dict" and carry DataParallel "module." prefixes) -> one safetensors file in the
open_clip layout of shared/manifests/openclip_vit_h_14.txt (checked before and after writing).

    python3 scripts/convert_openclip.py HPS_v2.1_compressed.pt --out hps_v2.1.safetensors
        [--dtype f16|bf16|f32|keep] [--manifest F] [--strip-prefix P] [--drop REGEX]
        [--text-only] [--trust-pickle]

--strip-prefix P keeps only keys under P and removes P (e.g. "cond_stage_model.model." to
take the text tower out of a VideoCrafter2 checkpoint); --text-only leaves visual.* out of
both the output and the manifest. Exit status 1, naming every missing / unexpected /
mis-shaped key, on a mismatch.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vader_convert_common as C  # noqa: E402


def parse_args(argv):
    p = C.make_parser(__doc__)
    p.add_argument("ckpt", help="open_clip / HPSv2 checkpoint file")
    p.add_argument("--out", required=True, help="output .safetensors path")
    p.add_argument("--manifest", default=None, help="default $VADER_SHARED/manifests/openclip_vit_h_14.txt")
    p.add_argument("--strip-prefix", default="", help="keep only keys under this prefix and remove it")
    p.add_argument("--text-only", action="store_true", help="leave visual.* out (text tower only)")
    C.add_common_args(p, "f16")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    mpath = a.manifest or C.default_manifest("openclip_vit_h_14.txt")
    manifest = C.parse_manifest(mpath)
    if a.text_only:
        manifest = C.OrderedDict((k, v) for k, v in manifest.items() if not k.startswith("visual."))
    sd = C.state_dict_of(C.load_checkpoint(a.ckpt, a.trust_pickle))
    if a.strip_prefix:
        sd = C.rename(C.select(sd, a.strip_prefix), a.strip_prefix, "")
    tensors = C.select(sd, "", a.drop, exclude_prefixes=("visual.",) if a.text_only else ())
    n = C.convert_and_write(tensors, manifest, a.out, C.DTYPES[a.dtype],
                            C.metadata_for(__file__, a.ckpt, a.dtype, mpath), "open_clip checkpoint %s" % a.ckpt)
    print("wrote %s: %d tensors, %s" % (a.out, n, a.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(C.run_main(main))
