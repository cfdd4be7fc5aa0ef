#!/usr/bin/env python3
"""Tests of the checkpoint converters (scripts/convert_*.py, scripts/vader_convert_common.py).

Plain unittest, no downloads: every checkpoint is made here, in a temporary directory, from a
tiny state dict (a fake VideoCrafter2 model.ckpt following small custom manifests, a
"module."-prefixed open_clip dict, a tiny transformers CLIPModel saved with save_pretrained,
an aesthetic head with the real shapes). Exit status 77 (ctest SKIP_RETURN_CODE) when torch
or safetensors cannot be imported; the transformers tests are skipped without transformers.

    python3 scripts/test_converters.py [-v] [TestClass.test_name ...]
"""
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import unittest

try:
    import torch
    import safetensors  # noqa: F401
    from safetensors.torch import load_file
except ImportError as e:  # CI machines without torch: skip, do not fail
    print("SKIP: %s (the converters need torch and safetensors)" % e)
    sys.exit(77)

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
try:
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
except ImportError:
    transformers = None

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import vader_convert_common as C  # noqa: E402
import convert_aesthetic  # noqa: E402
import convert_hf  # noqa: E402
import convert_openclip  # noqa: E402
import convert_videocrafter2  # noqa: E402

torch.manual_seed(0)


def run(mod, argv):
    """Runs a converter's main in-process; returns (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = C.run_main(mod.main, argv)
        except SystemExit as e:  # argparse errors
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def write_manifest(path, rows, comment="test manifest"):
    with open(path, "w") as f:
        f.write("# %s\n" % comment)
        for k, shape in rows:
            f.write("%s\t%s\tfloat32\n" % (k, C.fmt_shape(shape)))
    return path


def rand(*shape):
    return torch.randn(*shape) if shape else torch.tensor(2.5)


UNET = [("model.diffusion_model.time_embed.0.weight", (8, 4)),
        ("model.diffusion_model.time_embed.0.bias", (8,)),
        ("model.diffusion_model.input_blocks.0.0.weight", (4, 4, 3, 3))]
VAE = [("first_stage_model.post_quant_conv.weight", (4, 4, 1, 1)),
       ("first_stage_model.post_quant_conv.bias", (4,)),
       ("first_stage_model.decoder.conv_in.weight", (8, 4, 3, 3))]
OPENCLIP = [("positional_embedding", (5, 8)), ("text_projection", (8, 8)), ("logit_scale", ()),
            ("token_embedding.weight", (10, 8)), ("transformer.resblocks.0.attn.in_proj_weight", (24, 8)),
            ("ln_final.weight", (8,)), ("visual.proj", (6, 8)), ("visual.conv1.weight", (6, 3, 2, 2))]


class Base(unittest.TestCase):
    def setUp(self):
        self._td = tempfile.TemporaryDirectory(prefix="vader-conv-")
        self.d = self._td.name

    def tearDown(self):
        self._td.cleanup()

    def p(self, *names):
        return os.path.join(self.d, *names)

    def assert_fails_naming(self, res, *needles):
        rc, out, err = res
        self.assertEqual(rc, 1, "expected failure; stdout=%s stderr=%s" % (out, err))
        for n in needles:
            self.assertIn(n, err)

    def assert_no_temp_files(self, d):
        left = [f for f in os.listdir(d) if ".tmp." in f]
        self.assertEqual(left, [], "temporary files left behind")


class TestCommon(Base):
    def test_manifest_parse_and_check(self):
        m = C.parse_manifest(write_manifest(self.p("m.txt"), [("a", (2, 3)), ("s", ())]))
        self.assertEqual(list(m), ["a", "s"])
        self.assertEqual(m["a"], ((2, 3), "float32"))
        self.assertEqual(m["s"], ((), "float32"))
        C.check_against_manifest({"a": ((2, 3), "float"), "s": ((), "float")}, m, "x")
        with self.assertRaises(C.ConversionError) as cm:
            C.check_against_manifest({"a": ((3, 2), "float"), "t": ((1,), "float")}, m, "ckpt")
        msg = str(cm.exception)
        self.assertIn("1 missing, 1 unexpected, 1 mis-shaped", msg)
        self.assertIn("missing key: s (manifest [])", msg)
        self.assertIn("unexpected key: t (checkpoint [1]", msg)
        self.assertIn("shape mismatch: a: checkpoint [3, 2], manifest [2, 3]", msg)
        with self.assertRaises(C.ConversionError) as cm:
            C.check_against_manifest({"a": ((2, 3), "int"), "s": ((), "float")}, m, "x")
        self.assertIn("dtype mismatch: a", str(cm.exception))

    def test_manifest_bad_lines(self):
        with open(self.p("bad.txt"), "w") as f:
            f.write("# c\nkey.a\t[2, x]\tfloat32\n")
        with self.assertRaises(C.ConversionError) as cm:
            C.parse_manifest(self.p("bad.txt"))
        self.assertIn("bad.txt:2", str(cm.exception))
        self.assertIn("key.a", str(cm.exception))
        with open(self.p("bad2.txt"), "w") as f:
            f.write("a\t[1]\tfloat32\na\t[1]\tfloat32\n")
        with self.assertRaises(C.ConversionError) as cm:
            C.parse_manifest(self.p("bad2.txt"))
        self.assertIn("duplicate key a", str(cm.exception))

    def test_writer_roundtrip(self):
        base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        t = {"scalar": torch.tensor(3.25), "ints": torch.tensor([1, -2, 3], dtype=torch.int32),
             "bool": torch.tensor([True, False]), "empty": torch.zeros(0, 3),
             "transposed": base.t(), "row": base[1], "base": base, "f64": torch.randn(2, 2, dtype=torch.float64),
             "bf": torch.randn(5).to(torch.bfloat16)}
        for name, dt in (("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16), ("keep", None)):
            path = self.p(name + ".safetensors")
            C.save_safetensors(t, path, C.DTYPES[name], {"k": "v", "n": 3})
            back = load_file(path)
            self.assertEqual(sorted(back), sorted(t))
            for k, v in t.items():
                self.assertEqual(tuple(back[k].shape), tuple(v.shape), k)
                if v.is_floating_point():
                    want = C.out_dtype(v, dt)
                    self.assertEqual(back[k].dtype, want, k)
                    self.assertTrue(torch.equal(back[k], v.to(want)), k)
                else:
                    self.assertEqual(back[k].dtype, torch.int64, k)
                    self.assertTrue(torch.equal(back[k], v.to(torch.int64)), k)
            from safetensors import safe_open
            with safe_open(path, "pt") as f:
                self.assertEqual(f.metadata(), {"k": "v", "n": "3"})
        self.assertEqual(load_file(self.p("keep.safetensors"))["bf"].dtype, torch.bfloat16)
        self.assertEqual(load_file(self.p("keep.safetensors"))["f64"].dtype, torch.float32)
        self.assert_no_temp_files(self.d)

    def test_state_dict_unwrap(self):
        w = torch.ones(2)
        sd = C.state_dict_of({"state_dict": {"module.a": w, "module.b.c": w}, "epoch": 1})
        self.assertEqual(list(sd), ["a", "b.c"])
        sd = C.state_dict_of({"state_dict": {"module.a": w, "b": w}})  # not all prefixed: kept
        self.assertEqual(list(sd), ["module.a", "b"])
        with self.assertRaises(C.ConversionError):
            C.state_dict_of({"epoch": 1})

    def test_legacy_pickle_format(self):
        # pre-zip torch.save files cannot be mmap'd: loaded whole instead
        w = torch.randn(2, 3)
        torch.save({"layers.0.weight": w}, self.p("legacy.pth"), _use_new_zipfile_serialization=False)
        m = write_manifest(self.p("m.txt"), [("layers.0.weight", (2, 3))])
        rc, _, err = run(convert_aesthetic, [self.p("legacy.pth"), "--out", self.p("l.safetensors"), "--manifest", m,
                                             "--reference", "none"])
        self.assertEqual(rc, 0, err)
        self.assertTrue(torch.equal(load_file(self.p("l.safetensors"))["layers.0.weight"], w))

    def test_untrusted_pickle(self):
        import argparse
        torch.save({"state_dict": {"a": torch.ones(1)}, "hparams": argparse.Namespace(x=1)}, self.p("h.ckpt"))
        m = write_manifest(self.p("m.txt"), [("a", (1,))])
        res = run(convert_hf, [self.p("h.ckpt"), "--out", self.p("o.safetensors"), "--manifest", m])
        self.assert_fails_naming(res, "--trust-pickle")
        rc, _, err = run(convert_hf, [self.p("h.ckpt"), "--out", self.p("o.safetensors"), "--manifest", m,
                                      "--trust-pickle"])
        self.assertEqual(rc, 0, err)

    def test_real_manifests(self):
        mdir = os.path.join(C.shared_dir(), "manifests")
        if not os.path.isdir(mdir):
            self.skipTest("no shared/manifests at %s" % mdir)
        for name in ("videocrafter2_unet.txt", "videocrafter2_vae_decoder.txt", "openclip_vit_h_14.txt"):
            path = os.path.join(mdir, name)
            m = C.parse_manifest(path)
            self.assertEqual(C.manifest_params(m), C.manifest_header_params(path), name)
        unet = C.parse_manifest(os.path.join(mdir, "videocrafter2_unet.txt"))
        self.assertTrue(all(k.startswith("model.diffusion_model.") for k in unet))
        vae = C.parse_manifest(os.path.join(mdir, "videocrafter2_vae_decoder.txt"))
        self.assertTrue(all(k.startswith(convert_videocrafter2.VAE_PREFIXES) for k in vae))
        oc = C.parse_manifest(os.path.join(mdir, "openclip_vit_h_14.txt"))
        text = convert_videocrafter2.text_manifest_from_openclip(oc)
        self.assertEqual(len(text), sum(1 for k in oc if not k.startswith("visual.")))
        self.assertIn("cond_stage_model.model.token_embedding.weight", text)
        self.assertIn("cond_stage_model.model.transformer.resblocks.23.mlp.c_proj.bias", text)
        self.assertFalse(any(".visual." in k for k in text))


class TestVideoCrafter2(Base):
    def make(self, mutate=None):
        sd = {}
        for k, s in UNET + VAE:
            sd[k] = rand(*s)
        for k, s in OPENCLIP:
            if not k.startswith("visual."):
                sd["cond_stage_model.model." + k] = rand(*s)
        # things the converter must leave out
        sd["first_stage_model.encoder.conv_in.weight"] = rand(8, 3, 3, 3)
        sd["first_stage_model.quant_conv.weight"] = rand(8, 8, 1, 1)
        sd["betas"] = torch.linspace(0, 1, 10, dtype=torch.float64)
        sd["scale_arr"] = rand(10)
        sd["cond_stage_model.model.visual.proj"] = rand(6, 8)  # visual tower, if a ckpt had it
        if mutate:
            mutate(sd)
        torch.save({"state_dict": sd, "epoch": 7, "global_step": 100}, self.p("model.ckpt"))
        md = self.p("manifests")
        os.makedirs(md, exist_ok=True)
        write_manifest(os.path.join(md, "videocrafter2_unet.txt"), UNET)
        write_manifest(os.path.join(md, "videocrafter2_vae_decoder.txt"), VAE)
        write_manifest(os.path.join(md, "openclip_vit_h_14.txt"), OPENCLIP)
        return sd

    def convert(self, *extra):
        return run(convert_videocrafter2, [self.p("model.ckpt"), "--out", self.p("out"),
                                           "--manifest-dir", self.p("manifests")] + list(extra))

    def test_convert_all_dtypes(self):
        sd = self.make()
        expect = {
            "unet.safetensors": [k for k, _ in UNET],
            "vae_decoder.safetensors": [k for k, _ in VAE],
            "text_encoder.safetensors": ["cond_stage_model.model." + k for k, _ in OPENCLIP if not k.startswith("visual.")],
        }
        for dtype, tdt in (("f16", torch.float16), ("bf16", torch.bfloat16), ("f32", torch.float32)):
            args = [] if dtype == "f16" else ["--dtype", dtype]  # f16 is the default
            rc, out, err = self.convert(*args)
            self.assertEqual(rc, 0, err)
            for fname, keys in expect.items():
                got = load_file(self.p("out", fname))
                self.assertEqual(sorted(got), sorted(keys), fname)
                for k in keys:
                    self.assertEqual(got[k].dtype, tdt, k)
                    self.assertEqual(tuple(got[k].shape), tuple(sd[k].shape), k)
                    self.assertTrue(torch.equal(got[k], sd[k].to(tdt)), k)
            self.assertIn("unet.safetensors", out)
            self.assert_no_temp_files(self.p("out"))

    def test_parts_and_explicit_manifests(self):
        self.make()
        rc, _, err = run(convert_videocrafter2, [
            self.p("model.ckpt"), "--out", self.p("o2"), "--parts", "unet,text",
            "--unet-manifest", self.p("manifests", "videocrafter2_unet.txt"),
            "--text-manifest", self.p("manifests", "openclip_vit_h_14.txt"),
            "--manifest-dir", self.p("nowhere")])
        self.assertEqual(rc, 0, err)
        self.assertEqual(sorted(os.listdir(self.p("o2"))), ["text_encoder.safetensors", "unet.safetensors"])
        self.assert_fails_naming(self.convert("--parts", "unet,foo"), "unknown part 'foo'")

    def test_missing_key(self):
        self.make(lambda sd: sd.pop("model.diffusion_model.input_blocks.0.0.weight"))
        res = self.convert()
        self.assert_fails_naming(res, "missing key: model.diffusion_model.input_blocks.0.0.weight (manifest [4, 4, 3, 3])")
        self.assertFalse(os.path.exists(self.p("out", "unet.safetensors")))
        # the parts that match are still written
        self.assertTrue(os.path.exists(self.p("out", "vae_decoder.safetensors")))

    def test_misshaped_key(self):
        self.make(lambda sd: sd.__setitem__("first_stage_model.decoder.conv_in.weight", rand(8, 4, 3, 2)))
        res = self.convert()
        self.assert_fails_naming(res, "first_stage_model.decoder.conv_in.weight: checkpoint [8, 4, 3, 2], manifest [8, 4, 3, 3]")
        self.assertFalse(os.path.exists(self.p("out", "vae_decoder.safetensors")))

    def test_extra_keys(self):
        def mut(sd):
            sd["model.diffusion_model.extra.weight"] = rand(3)
            sd["cond_stage_model.model.attn_mask"] = rand(5, 5)
        self.make(mut)
        res = self.convert()
        self.assert_fails_naming(res, "unexpected key: model.diffusion_model.extra.weight (checkpoint [3]",
                                 "unexpected key: cond_stage_model.model.attn_mask (checkpoint [5, 5]")
        # --drop removes them before the check
        rc, _, err = self.convert("--drop", r"\.extra\.", "--drop", "attn_mask$")
        self.assertEqual(rc, 0, err)

    def test_missing_manifest_fails_before_loading(self):
        self.make()
        res = run(convert_videocrafter2, [self.p("nonexistent.ckpt"), "--out", self.p("o"),
                                          "--manifest-dir", self.p("nowhere")])
        self.assert_fails_naming(res, "cannot read manifest")

    def test_subprocess_exit_status(self):
        self.make(lambda sd: sd.pop("model.diffusion_model.time_embed.0.bias"))
        r = subprocess.run([sys.executable, os.path.join(HERE, "convert_videocrafter2.py"), self.p("model.ckpt"),
                            "--out", self.p("out"), "--manifest-dir", self.p("manifests"), "--parts", "unet"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("missing key: model.diffusion_model.time_embed.0.bias", r.stderr)


class TestOpenClip(Base):
    def make(self, prefix="module.", mutate=None, wrap=True):
        sd = {k: rand(*s) for k, s in OPENCLIP}
        if mutate:
            mutate(sd)
        saved = {prefix + k: v for k, v in sd.items()}
        obj = {"state_dict": saved, "epoch": 3, "name": "hps",
               "optimizer": {"state": {0: {"exp_avg": torch.zeros(2)}}}} if wrap else saved
        torch.save(obj, self.p("hps.pt"))
        return sd, write_manifest(self.p("oc.txt"), OPENCLIP)

    def test_module_prefix(self):
        sd, m = self.make()
        rc, _, err = run(convert_openclip, [self.p("hps.pt"), "--out", self.p("o.safetensors"), "--manifest", m,
                                            "--dtype", "f32"])
        self.assertEqual(rc, 0, err)
        got = load_file(self.p("o.safetensors"))
        self.assertEqual(sorted(got), sorted(sd))
        for k in sd:
            self.assertTrue(torch.equal(got[k], sd[k]), k)
        self.assertEqual(got["logit_scale"].shape, torch.Size([]))

    def test_plain_dict_text_only_f16(self):
        sd, m = self.make(prefix="", wrap=False)
        rc, _, err = run(convert_openclip, [self.p("hps.pt"), "--out", self.p("t.safetensors"), "--manifest", m,
                                            "--text-only"])
        self.assertEqual(rc, 0, err)
        got = load_file(self.p("t.safetensors"))
        self.assertEqual(sorted(got), sorted(k for k in sd if not k.startswith("visual.")))
        self.assertTrue(all(v.dtype == torch.float16 for v in got.values()))
        self.assertTrue(torch.equal(got["token_embedding.weight"], sd["token_embedding.weight"].half()))

    def test_strip_prefix(self):
        sd, m = self.make(prefix="cond_stage_model.model.", wrap=True)
        rc, _, err = run(convert_openclip, [self.p("hps.pt"), "--out", self.p("s.safetensors"), "--manifest", m,
                                            "--strip-prefix", "cond_stage_model.model."])
        self.assertEqual(rc, 0, err)
        self.assertEqual(sorted(load_file(self.p("s.safetensors"))), sorted(sd))

    def test_bad_shape_and_missing(self):
        def mut(sd):
            sd["visual.proj"] = rand(8, 6)
            del sd["ln_final.weight"]
        _, m = self.make(mutate=mut)
        res = run(convert_openclip, [self.p("hps.pt"), "--out", self.p("o.safetensors"), "--manifest", m])
        self.assert_fails_naming(res, "shape mismatch: visual.proj: checkpoint [8, 6], manifest [6, 8]",
                                 "missing key: ln_final.weight (manifest [8])")
        self.assertFalse(os.path.exists(self.p("o.safetensors")))


@unittest.skipIf(transformers is None, "transformers is not installed")
class TestHF(Base):
    def tiny_clip(self):
        cfg = transformers.CLIPConfig(
            text_config=dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                             pad_token_id=1),
            vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                               image_size=8, patch_size=4),
            projection_dim=8)
        torch.manual_seed(1)
        return transformers.CLIPModel(cfg).eval()

    def test_save_pretrained_both_formats(self):
        model = self.tiny_clip()
        ref = model.state_dict()
        model.save_pretrained(self.p("st"))  # model.safetensors
        # pytorch_model.bin as older transformers wrote it (newer ones only write safetensors)
        os.makedirs(self.p("bin"))
        bin_file = self.p("bin", "pytorch_model.bin")
        torch.save(ref, bin_file)
        # manifest of transformers' own state dict, built from the config on the meta device
        rc, _, err = run(convert_hf, ["--from-config", self.p("st"), "--write-manifest", self.p("clip.txt")])
        self.assertEqual(rc, 0, err)
        m = C.parse_manifest(self.p("clip.txt"))
        self.assertEqual({k: v[0] for k, v in m.items()}, {k: tuple(v.shape) for k, v in ref.items()})
        self.assertEqual(C.manifest_header_params(self.p("clip.txt")), C.manifest_params(m))
        for src in (self.p("st"), bin_file, self.p("st", "model.safetensors")):
            out = self.p("o.safetensors")
            rc, _, err = run(convert_hf, [src, "--out", out, "--manifest", self.p("clip.txt"), "--dtype", "f32"])
            self.assertEqual(rc, 0, err)
            got = load_file(out)
            self.assertEqual(sorted(got), sorted(ref))
            for k, v in ref.items():
                self.assertEqual(got[k].dtype, torch.float32 if v.is_floating_point() else torch.int64, k)
                self.assertTrue(torch.equal(got[k], v.to(got[k].dtype)), k)
        # bf16 output; a manifest written from the checkpoint equals the one from the config
        rc, _, err = run(convert_hf, [bin_file, "--out", self.p("b.safetensors"), "--dtype", "bf16",
                                      "--write-manifest", self.p("clip2.txt")])
        self.assertEqual(rc, 0, err)
        self.assertEqual(C.parse_manifest(self.p("clip2.txt")), m)
        self.assertTrue(all(v.dtype == torch.bfloat16 for v in load_file(self.p("b.safetensors")).values()
                            if v.is_floating_point()))
        # the converted file loads back into the model
        m2 = self.tiny_clip()
        m2.load_state_dict(load_file(out), strict=True)

    def test_manifest_mismatch(self):
        model = self.tiny_clip()
        model.save_pretrained(self.p("st"))
        sd = model.state_dict()
        k_missing = "text_model.final_layer_norm.weight"
        k_shape = "visual_projection.weight"
        rows = [(k, tuple(v.shape)) for k, v in sd.items() if k != k_missing]
        rows = [(k, (3, 3) if k == k_shape else s) for k, s in rows] + [("extra.bias", (4,))]
        write_manifest(self.p("bad.txt"), rows)
        res = run(convert_hf, [self.p("st"), "--out", self.p("o.safetensors"), "--manifest", self.p("bad.txt")])
        self.assert_fails_naming(res, "missing key: extra.bias (manifest [4])",
                                 "unexpected key: %s" % k_missing,
                                 "shape mismatch: %s: checkpoint %s, manifest [3, 3]" % (k_shape, C.fmt_shape(sd[k_shape].shape)))
        self.assertFalse(os.path.exists(self.p("o.safetensors")))

    def test_sharded(self):
        model = self.tiny_clip()
        model.save_pretrained(self.p("sh"), max_shard_size="20KB")
        self.assertTrue(os.path.isfile(self.p("sh", "model.safetensors.index.json")))
        rc, _, err = run(convert_hf, [self.p("sh"), "--out", self.p("o.safetensors"), "--dtype", "keep"])
        self.assertEqual(rc, 0, err)
        got = load_file(self.p("o.safetensors"))
        self.assertEqual(sorted(got), sorted(model.state_dict()))

    def test_usage_errors(self):
        rc, _, _ = run(convert_hf, ["--from-config", self.p("x"), "--out", self.p("o")])
        self.assertEqual(rc, 2)
        rc, _, _ = run(convert_hf, [self.p("x")])
        self.assertEqual(rc, 2)


class TestAesthetic(Base):
    def make(self, mutate=None):
        sd = {k: rand(*s) for k, (s, _) in convert_aesthetic.LAYOUT.items()}
        if mutate:
            mutate(sd)
        torch.save(sd, self.p("sac+logos+ava1-l14-linearMSE.pth"))
        return sd

    def ref(self):
        path = os.path.join(C.shared_dir(), "weights", convert_aesthetic.REFERENCE)
        if not os.path.isfile(path):
            self.skipTest("no shipped aesthetic head at %s" % path)
        return path

    def test_matches_shipped_file(self):
        ref = self.ref()
        sd = self.make()
        rc, _, err = run(convert_aesthetic, [self.p("sac+logos+ava1-l14-linearMSE.pth"), "--out", self.p("a.safetensors")])
        self.assertEqual(rc, 0, err)
        got, shipped = load_file(self.p("a.safetensors")), load_file(ref)
        self.assertEqual(sorted(got), sorted(shipped))
        for k in shipped:
            self.assertEqual(got[k].shape, shipped[k].shape, k)
            self.assertEqual(got[k].dtype, shipped[k].dtype, k)  # f32 by default, like the shipped file
            self.assertTrue(torch.equal(got[k], sd[k]), k)
        # the shipped head itself goes through the converter unchanged
        rc, _, err = run(convert_aesthetic, [ref, "--out", self.p("b.safetensors"), "--reference", ref])
        self.assertEqual(rc, 0, err)
        again = load_file(self.p("b.safetensors"))
        self.assertTrue(all(torch.equal(again[k], shipped[k]) for k in shipped))

    def test_bad_head(self):
        self.make(lambda sd: (sd.__setitem__("layers.7.weight", rand(2, 16)), sd.pop("layers.0.bias")))
        res = run(convert_aesthetic, [self.p("sac+logos+ava1-l14-linearMSE.pth"), "--out", self.p("a.safetensors"),
                                      "--reference", "none"])
        self.assert_fails_naming(res, "shape mismatch: layers.7.weight: checkpoint [2, 16], manifest [1, 16]",
                                 "missing key: layers.0.bias (manifest [1024])")
        self.assertFalse(os.path.exists(self.p("a.safetensors")))

    def test_reference_mismatch(self):
        self.make()
        bad_ref = self.p("ref.safetensors")
        C.save_safetensors({"layers.0.weight": torch.zeros(1024, 768)}, bad_ref)
        res = run(convert_aesthetic, [self.p("sac+logos+ava1-l14-linearMSE.pth"), "--out", self.p("a.safetensors"),
                                      "--reference", bad_ref])
        self.assert_fails_naming(res, "vs reference", "unexpected key: layers.7.bias")

    def test_custom_manifest(self):
        torch.save({"layers.0.weight": rand(2, 3)}, self.p("h.pth"))
        m = write_manifest(self.p("m.txt"), [("layers.0.weight", (2, 3))])
        rc, _, err = run(convert_aesthetic, [self.p("h.pth"), "--out", self.p("a.safetensors"), "--manifest", m,
                                             "--reference", "none", "--dtype", "f16"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(load_file(self.p("a.safetensors"))["layers.0.weight"].dtype, torch.float16)


if __name__ == "__main__":
    unittest.main()
