#!/usr/bin/env python3
"""VideoCrafter2 model.ckpt (a torch pickle whose "state_dict" holds model.diffusion_model.*,
first_stage_model.*, cond_stage_model.model.*, schedule buffers ...) -> three safetensors
files in --out, each checked against its manifest before and after writing:

  unet.safetensors          model.diffusion_model.*           shared/manifests/videocrafter2_unet.txt
  vae_decoder.safetensors   first_stage_model.post_quant_conv.* + first_stage_model.decoder.*
                                                              shared/manifests/videocrafter2_vae_decoder.txt
  text_encoder.safetensors  cond_stage_model.model.* (text tower; visual.* is left out)
                            manifest: shared/manifests/openclip_vit_h_14.txt without visual.*,
                            each key prefixed with cond_stage_model.model.

Every file keeps the checkpoint's own key names (prefixes included), so the C models are
built with the prefixes "model.diffusion_model.", "first_stage_model." and
"cond_stage_model.model." exactly as from the original checkpoint. Everything else in the
checkpoint (encoder, quant_conv, betas / alphas_cumprod buffers, ...) is not written.

    python3 scripts/convert_videocrafter2.py model.ckpt --out weights/vc2 [--dtype f16|bf16|f32|keep]
        [--parts unet,vae,text] [--manifest-dir DIR] [--unet-manifest F] [--vae-manifest F]
        [--text-manifest F] [--drop REGEX] [--trust-pickle]

The checkpoint is loaded once with mmap=True (no 10 GB resident copy); each output is
streamed one tensor at a time. Exit status 1 with every missing / unexpected / mis-shaped
key named on a mismatch; nothing is written for a part that does not match.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vader_convert_common as C  # noqa: E402

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.post_quant_conv.", "first_stage_model.decoder.")
TEXT_PREFIX = "cond_stage_model.model."


def text_manifest_from_openclip(manifest):
    """open_clip layout manifest -> the text_encoder.safetensors manifest (no visual.*, keys
    under cond_stage_model.model.)."""
    out = C.OrderedDict()
    for k, v in manifest.items():
        if not k.startswith("visual."):
            out[TEXT_PREFIX + k] = v
    return out


def parse_args(argv):
    p = C.make_parser(__doc__)
    p.add_argument("ckpt", help="VideoCrafter2 model.ckpt (or a .safetensors of the same state dict)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--parts", default="unet,vae,text", help="comma list of unet, vae, text (default all)")
    p.add_argument("--manifest-dir", default=None,
                   help="directory with videocrafter2_unet.txt, videocrafter2_vae_decoder.txt, "
                        "openclip_vit_h_14.txt (default $VADER_SHARED/manifests)")
    p.add_argument("--unet-manifest", default=None)
    p.add_argument("--vae-manifest", default=None)
    p.add_argument("--text-manifest", default=None,
                   help="open_clip-layout manifest; visual.* is left out and the rest prefixed")
    C.add_common_args(p, "f16")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    parts = [s.strip() for s in a.parts.split(",") if s.strip()]
    for s in parts:
        if s not in ("unet", "vae", "text"):
            raise C.ConversionError("--parts: unknown part %r (unet, vae, text)" % s)
    mdir = a.manifest_dir or os.path.join(C.shared_dir(), "manifests")
    mpath = {
        "unet": a.unet_manifest or os.path.join(mdir, "videocrafter2_unet.txt"),
        "vae": a.vae_manifest or os.path.join(mdir, "videocrafter2_vae_decoder.txt"),
        "text": a.text_manifest or os.path.join(mdir, "openclip_vit_h_14.txt"),
    }
    # Parse the manifests first: a missing manifest fails before the 10 GB load.
    manifests = {}
    for s in parts:
        m = C.parse_manifest(mpath[s])
        manifests[s] = text_manifest_from_openclip(m) if s == "text" else m
    dtype = C.DTYPES[a.dtype]
    sd = C.state_dict_of(C.load_checkpoint(a.ckpt, a.trust_pickle))
    errors = []
    for s in parts:
        if s == "unet":
            tensors, name = C.select(sd, UNET_PREFIX, a.drop), "unet.safetensors"
        elif s == "vae":
            tensors = C.OrderedDict()
            for pre in VAE_PREFIXES:
                tensors.update(C.select(sd, pre, a.drop))
            name = "vae_decoder.safetensors"
        else:
            tensors = C.select(sd, TEXT_PREFIX, a.drop, exclude_prefixes=(TEXT_PREFIX + "visual.",))
            name = "text_encoder.safetensors"
        path = os.path.join(a.out, name)
        try:
            n = C.convert_and_write(tensors, manifests[s], path, dtype,
                                    C.metadata_for(__file__, a.ckpt, a.dtype, mpath[s]), "%s (%s)" % (s, name))
        except C.ConversionError as e:
            errors.append(str(e))
            continue
        print("wrote %s: %d tensors, %s" % (path, n, a.dtype))
    if errors:
        raise C.ConversionError("\n".join(errors))
    return 0


if __name__ == "__main__":
    sys.exit(C.run_main(main))
