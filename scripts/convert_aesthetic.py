#!/usr/bin/env python3
"""LAION improved-aesthetic-predictor head (sac+logos+ava1-l14-linearMSE.pth: an MLP state dict
layers.0.weight ... layers.7.bias) -> safetensors with the key names and shapes of
shared/weights/aesthetic_mlp_sac_logos_ava1_l14.safetensors (the file vader ships).

    python3 scripts/convert_aesthetic.py sac+logos+ava1-l14-linearMSE.pth --out aesthetic.safetensors
        [--dtype f32|f16|bf16|keep] [--reference F.safetensors] [--manifest F] [--trust-pickle]

The layout is checked three ways: against the built-in layout below (or --manifest), against
the reference file's names and shapes when it exists (default: the shipped one; exact match
required), and on the written file. Default dtype f32 (the head is 3.7 MB; the shipped file
is f32). Exit status 1, naming every missing / unexpected / mis-shaped key, on a mismatch.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vader_convert_common as C  # noqa: E402

# Linear(768,1024) Dropout Linear(1024,128) Dropout Linear(128,64) Dropout Linear(64,16) Linear(16,1)
LAYOUT = C.OrderedDict()
for _i, (_o, _n) in zip((0, 2, 4, 6, 7), ((1024, 768), (128, 1024), (64, 128), (16, 64), (1, 16))):
    LAYOUT["layers.%d.weight" % _i] = ((_o, _n), "float32")
    LAYOUT["layers.%d.bias" % _i] = ((_o,), "float32")

REFERENCE = "aesthetic_mlp_sac_logos_ava1_l14.safetensors"


def parse_args(argv):
    p = C.make_parser(__doc__)
    p.add_argument("ckpt", help="sac+logos+ava1-l14-linearMSE.pth (or any file of that state dict)")
    p.add_argument("--out", required=True, help="output .safetensors path")
    p.add_argument("--manifest", default=None, help="manifest to check against instead of the built-in layout")
    p.add_argument("--reference", default=None,
                   help="safetensors whose names / shapes must match exactly (default $VADER_SHARED/weights/%s "
                        "when it exists; 'none' to skip)" % REFERENCE)
    C.add_common_args(p, "f32")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    manifest = C.parse_manifest(a.manifest) if a.manifest else LAYOUT
    ref = a.reference
    if ref is None:
        cand = os.path.join(C.shared_dir(), "weights", REFERENCE)
        ref = cand if os.path.isfile(cand) else None
    elif ref == "none":
        ref = None
    ref_manifest = None
    if ref is not None:
        if not os.path.isfile(ref):
            raise C.ConversionError("no such reference file: %s" % ref)
        ref_manifest = C.OrderedDict((k, (s, "float32" if C.ST_KIND.get(d) == "float" else "int64"))
                                     for k, (s, d) in C.read_safetensors_header(ref).items())
    sd = C.state_dict_of(C.load_checkpoint(a.ckpt, a.trust_pickle))
    tensors = C.select(sd, "", a.drop)
    what = "aesthetic head %s" % a.ckpt
    C.check_against_manifest(C.tensor_shapes(tensors), manifest, what)
    if ref_manifest is not None:
        C.check_against_manifest(C.tensor_shapes(tensors), ref_manifest, what + " (vs reference %s)" % ref)
    dtype = C.DTYPES[a.dtype]
    md = C.metadata_for(__file__, a.ckpt, a.dtype, a.manifest)
    md["architecture"] = ("layers.0 Linear(768,1024) -> Dropout(0.2) -> layers.2 Linear(1024,128) -> Dropout(0.2) -> "
                          "layers.4 Linear(128,64) -> Dropout(0.1) -> layers.6 Linear(64,16) -> layers.7 Linear(16,1); "
                          "no activations; eval mode")
    C.convert_and_write(tensors, manifest, a.out, dtype, md, what)
    if ref_manifest is not None:
        C.verify_written(a.out, ref_manifest, dtype, what + " (vs reference %s)" % ref)
    print("wrote %s: %d tensors, %s" % (a.out, len(tensors), a.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(C.run_main(main))
