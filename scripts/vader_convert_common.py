"""Shared helpers of the checkpoint converters (scripts/convert_*.py).

- manifests: shared/manifests/*.txt, one tensor a line: KEY <TAB> [d0, d1, ...] <TAB> dtype,
  '#' starts a comment line. The dtype column is the reference model's dtype; checks compare
  names and shapes exactly and the dtype kind (floating vs integer) only, since a converted
  file stores floating tensors in the --dtype the user asked for.
- loading: torch pickles (.ckpt/.pt/.pth/.bin) with map_location="cpu" and mmap=True (the
  tensors stay in the page cache, not in anonymous memory), weights_only=True unless the
  user passes --trust-pickle; .safetensors; HF sharded checkpoints (*.index.json).
- writing: a streaming safetensors writer: the header first, then one tensor at a time
  converted to the output dtype, so the peak memory is one tensor, not the model. It writes a
  temporary file next to the target and renames it with os.replace (no half-written outputs),
  then re-reads the header with the safetensors package and checks it against the manifest.
- errors: ConversionError; run_main() prints its message to stderr and exits 1.

The C loader (core/safetensors.c) reads F32, BF16, F16 and I64, so floating tensors become
the requested float dtype (float64 too) and integer / bool tensors become int64.
"""
import argparse
import json
import os
import re
import sys
from collections import OrderedDict

import torch

DTYPES = {
    "f32": torch.float32,
    "f16": torch.float16,
    "bf16": torch.bfloat16,
    "keep": None,
}
ST_NAME = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}
ST_KIND = {"F32": "float", "F16": "float", "BF16": "float", "F64": "float", "I64": "int",
           "I32": "int", "I16": "int", "I8": "int", "U8": "int", "BOOL": "int"}


class ConversionError(Exception):
    pass


# ---------------------------------------------------------------- manifests

def _kind_of_name(dtype_name):
    d = dtype_name.lower().replace("torch.", "")
    if d.startswith("float") or d.startswith("bfloat") or d in ("half", "double", "f16", "bf16", "f32"):
        return "float"
    return "int"


def parse_manifest(path):
    """Returns OrderedDict key -> (shape tuple, dtype name). Raises ConversionError on a bad line."""
    out = OrderedDict()
    try:
        f = open(path, "r", encoding="utf-8")
    except OSError as e:
        raise ConversionError("cannot read manifest %s: %s" % (path, e))
    with f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise ConversionError("%s:%d: expected KEY<TAB>[shape]<TAB>dtype, got %r" % (path, n, line))
            key, shape_s, dtype = parts
            try:
                shape = json.loads(shape_s)
                if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
                    raise ValueError
            except ValueError:
                raise ConversionError("%s:%d: bad shape %r for key %s" % (path, n, shape_s, key))
            if key in out:
                raise ConversionError("%s:%d: duplicate key %s" % (path, n, key))
            out[key] = (tuple(shape), dtype.strip())
    if not out:
        raise ConversionError("manifest %s lists no tensors" % path)
    return out


def manifest_header_params(path):
    """The 'N parameters' count of the manifest's first comment, or None."""
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                m = re.search(r"(\d+) parameters", line)
                if m:
                    return int(m.group(1))
            else:
                break
    return None


def manifest_params(manifest):
    total = 0
    for shape, _ in manifest.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def fmt_shape(shape):
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def write_manifest(tensors, path, description):
    """Writes a manifest (the shared/manifests format) of a name -> tensor (or (shape, dtype))
    mapping, in the mapping's order."""
    rows = []
    total = 0
    for k, t in tensors.items():
        if isinstance(t, torch.Tensor):
            shape, dtype = tuple(t.shape), str(t.dtype).replace("torch.", "")
        else:
            shape, dtype = t
        n = 1
        for d in shape:
            n *= int(d)
        total += n
        rows.append("%s\t%s\t%s\n" % (k, fmt_shape(shape), dtype))
    text = "# %s; %d parameters\n" % (description, total) + "".join(rows)
    atomic_write_bytes(path, text.encode("utf-8"))
    return total


def check_against_manifest(shapes, manifest, what):
    """shapes: name -> (shape tuple, kind 'float'/'int'). Raises ConversionError naming every
    missing, unexpected and mis-shaped key (with both shapes)."""
    missing = [k for k in manifest if k not in shapes]
    unexpected = [k for k in shapes if k not in manifest]
    misshaped = []
    for k, (shape, kind) in shapes.items():
        if k not in manifest:
            continue
        mshape, mdtype = manifest[k]
        if tuple(shape) != tuple(mshape):
            misshaped.append("  shape mismatch: %s: checkpoint %s, manifest %s" % (k, fmt_shape(shape), fmt_shape(mshape)))
        elif kind != _kind_of_name(mdtype):
            misshaped.append("  dtype mismatch: %s: checkpoint is %s, manifest says %s" % (k, kind, mdtype))
    if not (missing or unexpected or misshaped):
        return
    lines = ["%s does not match the manifest: %d missing, %d unexpected, %d mis-shaped/mis-typed key(s)"
             % (what, len(missing), len(unexpected), len(misshaped))]
    lines += ["  missing key: %s (manifest %s)" % (k, fmt_shape(manifest[k][0])) for k in missing]
    lines += ["  unexpected key: %s (checkpoint %s, not in the manifest)" % (k, fmt_shape(shapes[k][0])) for k in unexpected]
    lines += misshaped
    raise ConversionError("\n".join(lines))


def tensor_shapes(tensors):
    return OrderedDict((k, (tuple(t.shape), "float" if t.is_floating_point() else "int"))
                       for k, t in tensors.items())


# ---------------------------------------------------------------- loading

def _torch_load(path, trust_pickle):
    kw = dict(map_location="cpu", weights_only=not trust_pickle)
    try:
        return torch.load(path, mmap=True, **kw)
    except RuntimeError as e:
        # mmap needs the zip format (torch >= 1.6 default); legacy files load fully.
        if "zip" not in str(e).lower() and "mmap" not in str(e).lower():
            raise
        return torch.load(path, **kw)


def load_file(path, trust_pickle=False):
    """Loads one checkpoint file into a dict (whatever the pickle holds) or a name -> tensor
    dict (.safetensors)."""
    if not os.path.isfile(path):
        raise ConversionError("no such checkpoint file: %s" % path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file as st_load
        return st_load(path, device="cpu")
    try:
        return _torch_load(path, trust_pickle)
    except ConversionError:
        raise
    except Exception as e:  # UnpicklingError and friends: say what to do
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not trust_pickle and ("weights_only" in str(e) or "Unpickl" in type(e).__name__):
            raise ConversionError(
                "%s: torch.load(weights_only=True) refused the pickle (%s). If you trust the file, "
                "pass --trust-pickle to load it with weights_only=False." % (path, msg))
        raise ConversionError("%s: cannot load: %s" % (path, msg))


def load_checkpoint(path, trust_pickle=False):
    """A file, or a directory holding model.safetensors / pytorch_model.bin (sharded ones via
    their *.index.json too). Returns the raw loaded object (dict)."""
    if os.path.isdir(path):
        for idx in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            p = os.path.join(path, idx)
            if os.path.isfile(p):
                return load_sharded(p, trust_pickle)
        for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            p = os.path.join(path, name)
            if os.path.isfile(p):
                return load_file(p, trust_pickle)
        raise ConversionError("%s: no model.safetensors, pytorch_model.bin or *.index.json in the directory" % path)
    if path.endswith(".index.json"):
        return load_sharded(path, trust_pickle)
    return load_file(path, trust_pickle)


def load_sharded(index_path, trust_pickle=False):
    with open(index_path, "r", encoding="utf-8") as f:
        index = json.load(f)
    base = os.path.dirname(index_path)
    out = OrderedDict()
    for shard in sorted(set(index.get("weight_map", {}).values())):
        sd = state_dict_of(load_file(os.path.join(base, shard), trust_pickle))
        for k, v in sd.items():
            if k in out:
                raise ConversionError("%s: key %s appears in two shards" % (index_path, k))
            out[k] = v
    return out


def state_dict_of(obj, strip_module=True):
    """Finds the name -> tensor dict: the object itself, or its 'state_dict' / 'model' /
    'module' entry; drops a 'module.' prefix (DataParallel / DDP) when every key has it.
    Non-tensor entries (Lightning bookkeeping) are not kept."""
    sd = obj
    for _ in range(3):
        if isinstance(sd, dict) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
            for name in ("state_dict", "model", "module"):
                if isinstance(sd.get(name), dict):
                    sd = sd[name]
                    break
            else:
                break
        else:
            break
    if not isinstance(sd, dict):
        raise ConversionError("checkpoint does not hold a state dict (got %s)" % type(sd).__name__)
    sd = OrderedDict((k, v) for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor))
    if not sd:
        raise ConversionError("checkpoint holds no tensors")
    if strip_module and all(k.startswith("module.") for k in sd):
        sd = OrderedDict((k[len("module."):], v) for k, v in sd.items())
    return sd


def select(sd, prefix="", drop=(), exclude_prefixes=()):
    """Keys under prefix (kept whole), minus those matching any regex of drop (re.search) or
    starting with any of exclude_prefixes."""
    pats = [re.compile(p) for p in drop]
    out = OrderedDict()
    for k, v in sd.items():
        if not k.startswith(prefix):
            continue
        if any(k.startswith(e) for e in exclude_prefixes):
            continue
        if any(p.search(k) for p in pats):
            continue
        out[k] = v
    return out


def rename(sd, old_prefix, new_prefix):
    return OrderedDict(((new_prefix + k[len(old_prefix):]) if k.startswith(old_prefix) else k, v)
                       for k, v in sd.items())


# ---------------------------------------------------------------- writing

def out_dtype(t, dtype):
    """The dtype t is written in, given the --dtype choice (None = keep)."""
    if t.is_floating_point():
        if dtype is not None:
            return dtype
        return t.dtype if t.dtype in ST_NAME else torch.float32
    return torch.int64


def atomic_write_bytes(path, data):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_safetensors(tensors, path, dtype=None, metadata=None):
    """Streams tensors (name -> tensor) into a safetensors file at path, each converted with
    out_dtype(); atomic (temporary file + os.replace)."""
    if sys.byteorder != "little":
        raise ConversionError("safetensors is little-endian; this writer does not byte-swap")
    names = sorted(tensors)
    header = OrderedDict()
    if metadata:
        header["__metadata__"] = OrderedDict((str(k), str(v)) for k, v in metadata.items())
    offset = 0
    plan = []
    for k in names:
        t = tensors[k]
        dt = out_dtype(t, dtype)
        nbytes = t.numel() * torch.empty((), dtype=dt).element_size()
        header[k] = OrderedDict([("dtype", ST_NAME[dt]), ("shape", [int(d) for d in t.shape]),
                                 ("data_offsets", [offset, offset + nbytes])])
        plan.append((k, dt, nbytes))
        offset += nbytes
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(len(hjson).to_bytes(8, "little"))
            f.write(hjson)
            for k, dt, nbytes in plan:
                t = tensors[k].detach().to(device="cpu", dtype=dt).contiguous().reshape(-1)
                if nbytes:
                    b = t.view(torch.uint8).numpy()
                    assert b.nbytes == nbytes, k
                    f.write(memoryview(b))
                del t
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_safetensors_header(path):
    """name -> (shape, safetensors dtype), read with the safetensors package (an independent
    reader of what save_safetensors wrote)."""
    from safetensors import safe_open
    out = OrderedDict()
    with safe_open(path, framework="pt") as f:
        for k in f.keys():
            sl = f.get_slice(k)
            out[k] = (tuple(sl.get_shape()), sl.get_dtype())
    return out


def verify_written(path, manifest, dtype, what):
    """Re-reads the written file and checks names / shapes against the manifest and float
    tensors' dtype against the requested one."""
    hdr = read_safetensors_header(path)
    check_against_manifest(OrderedDict((k, (s, ST_KIND.get(d, "int"))) for k, (s, d) in hdr.items()),
                           manifest, "written file %s (%s)" % (path, what))
    if dtype is not None:
        want = ST_NAME[dtype]
        bad = [k for k, (s, d) in hdr.items() if ST_KIND.get(d) == "float" and d != want]
        if bad:
            raise ConversionError("written file %s: float tensors not in %s: %s" % (path, want, ", ".join(bad)))
    return hdr


def convert_and_write(tensors, manifest, path, dtype, metadata, what):
    """Check, write, verify. Returns the number of tensors written."""
    if manifest is not None:
        check_against_manifest(tensor_shapes(tensors), manifest, what)
    save_safetensors(tensors, path, dtype, metadata)
    if manifest is not None:
        verify_written(path, manifest, dtype, what)
    return len(tensors)


# ---------------------------------------------------------------- command line

def repo_dir():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_dir():
    """$VADER_SHARED, else ../shared next to the repository (the CMake default), else ./shared."""
    env = os.environ.get("VADER_SHARED")
    if env:
        return env
    for cand in (os.path.join(repo_dir(), "..", "shared"), os.path.join(repo_dir(), "shared")):
        if os.path.isdir(cand):
            return os.path.normpath(cand)
    return os.path.normpath(os.path.join(repo_dir(), "..", "shared"))


def default_manifest(name):
    return os.path.join(shared_dir(), "manifests", name)


def add_common_args(p, default_dtype="f16"):
    p.add_argument("--dtype", choices=sorted(DTYPES), default=default_dtype,
                   help="dtype of floating tensors in the output (default %(default)s; keep = as stored, "
                        "float64 -> f32); integer tensors are written as int64")
    p.add_argument("--drop", action="append", default=[], metavar="REGEX",
                   help="drop checkpoint keys matching REGEX (re.search) before the check; repeatable")
    p.add_argument("--trust-pickle", action="store_true",
                   help="torch.load with weights_only=False (only for files you trust)")


def metadata_for(script, src, dtype_name, manifest_path):
    md = OrderedDict([("format", "pt"), ("converter", os.path.basename(script)),
                      ("source", os.path.basename(os.path.normpath(src))), ("dtype", dtype_name)])
    if manifest_path:
        md["manifest"] = os.path.basename(manifest_path)
    return md


def run_main(fn, argv=None):
    """Runs fn(argv) -> int and turns a ConversionError into a message and exit status 1."""
    try:
        return fn(argv)
    except ConversionError as e:
        sys.stderr.write("error: %s\n" % e)
        return 1


def make_parser(description):
    return argparse.ArgumentParser(description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


# ---------------------------------------------------------------- test fixtures (scripts/make_*fixture*.py)

def write_fixture(out, name, doc, weights, io, report=True):
    """Writes one test case in the fixture format (DESIGN.md "Fixtures") into out:
    NAME.weights.safetensors, NAME.io.safetensors and NAME.json = doc plus, last, "io": name ->
    [shape, dtype]. Returns the three files' size in bytes (report: prints it)."""
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    io = {k: v.detach().contiguous() for k, v in io.items()}
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, os.path.join(out, name + ".weights.safetensors"))
    save_file(io, os.path.join(out, name + ".io.safetensors"))
    doc = dict(doc)
    doc["io"] = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in io.items()}
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(out, name + s)) for s in (".json", ".weights.safetensors", ".io.safetensors"))
    if report:
        print(f"{name}: {size / 1e6:.3f} MB")
    return size


def fixture_args(description, threads):
    """The fixture generators' command line: --out (tests/fixtures), --manifests (tests/manifests);
    also sets torch's thread count (the references were made with it)."""
    ap = make_parser(description)
    ap.add_argument("--out", default=os.path.join(repo_dir(), "tests", "fixtures"))
    ap.add_argument("--manifests", default=os.path.join(repo_dir(), "tests", "manifests"))
    a = ap.parse_args()
    torch.set_num_threads(threads)
    return a


def add_variant_args(ap, out, cases, shared):
    """The variant generators' common options (make_*_variant_fixtures.py): --out, --cases (default
    cases, comma-separated), --check (regenerate the shared case first), --run BIN."""
    ap.add_argument("--out", default=out)
    ap.add_argument("--cases", default=",".join(cases))
    ap.add_argument("--check", action="store_true", help="regenerate shared %s first" % shared)
    ap.add_argument("--run", metavar="BIN", help="run this vader-fixture on each case")


def run_fixture(binary, pre, failures_only=False):
    """Runs `binary pre` (vader-fixture on one case), prints its output (failures_only: the lines
    naming a failure or error, at most 20, and the last line) and returns 1 if it failed, else 0."""
    import subprocess
    r = subprocess.run([binary, pre], capture_output=True, text=True)
    if failures_only:
        lines = (r.stdout + r.stderr).strip().splitlines()
        bad = [l for l in lines if "FAIL" in l or "error" in l]
        print("\n".join(bad[:20] + lines[-1:]))
    else:
        print(r.stdout + r.stderr)
    return int(r.returncode != 0)
