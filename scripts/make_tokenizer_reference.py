#!/usr/bin/env python3
"""Writes tests/data/tokenizer_reference.h: prompts and the ids open_clip's tokenizer gives them.

Runs the real open_clip tokenizer (open_clip/tokenizer.py: SimpleTokenizer + tokenize()). When
torch is not installed, open_clip's tokenizer module is loaded on its own with a minimal
stand-in for the three torch calls tokenize() makes (zeros / tensor / long), so the ids still
come from open_clip's code. Prompts given as bytes are decoded with errors='replace' first
(what vader does with invalid UTF-8). Also checks the openclip_tiny fixture's tokens.

    python3 scripts/make_tokenizer_reference.py [--shared ../shared] > tests/data/tokenizer_reference.h
"""
import argparse
import importlib.util
import os
import sys
import types

import numpy as np


def load_open_clip_tokenizer():
    try:
        import torch  # noqa: F401
        import open_clip
        return open_clip.tokenize, "open_clip " + getattr(open_clip, "__version__", "?")
    except ImportError:
        pass
    # open_clip installed without torch: load only its tokenizer module.
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        sys.exit("open_clip is not installed (pip install --no-deps open_clip_torch ftfy regex)")
    path = os.path.join(spec.submodule_search_locations[0], "tokenizer.py")
    if "torch" not in sys.modules:
        torch = types.ModuleType("torch")

        class _T(np.ndarray):
            pass
        torch.long = np.int64
        torch.LongTensor = _T
        torch.Tensor = _T
        torch.zeros = lambda *shape, dtype=None: np.zeros(shape, dtype=np.int64)
        torch.tensor = lambda x: np.asarray(x, dtype=np.int64)
        sys.modules["torch"] = torch
    mspec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    ver = "?"
    try:
        from importlib.metadata import version
        ver = version("open_clip_torch")
    except Exception:
        pass
    return mod.tokenize, f"open_clip_torch {ver} tokenizer.py (torch stubbed)"


LONG = ("a breathtaking cinematic aerial shot of a vast mountain range at sunrise with golden light "
        "spilling over jagged snowy peaks while a river winds through a deep green valley below and "
        "flocks of birds glide across the pale blue sky as mist rises from the pine forests and a "
        "small wooden cabin with smoke curling from its chimney sits beside a calm alpine lake that "
        "reflects the clouds, shot on 35mm film, ultra detailed, 8k, trending on artstation, "
        "volumetric lighting, award winning photography, masterpiece")

PROMPTS = [
    "a raccoon holding a snowball",
    "a fox wearing a hat, oil painting",
    "",
    "A cat playing the piano",
    "an astronaut riding a horse on mars, 4k, highly detailed",
    "Hello, World!!! What's up?...",
    "1080p 4k 3.5 2024-01-31 12:30pm 100%",
    "it's don't they're we've I'm you'll he'd IT'S DON'T",
    "''s quote'' \"double\" `back` ''' '",
    "café naïve Ελληνικά Привет 日本語 emoji 🎉",
    "Crème brûlée, Ärger, Øresund, Straße, ŁÓDŹ, İstanbul",
    "ΟΔΟΣ ΣΟΦΙΑ ΑΣ. Σ",
    "ПРИВЕТ МИР, Ёлка",
    "&amp; &lt;b&gt; &quot;hi&quot; &#39;x&#39; &#233; &#xE9; &copy; &hellip;",
    "fish &amp;amp; chips &amp;amp;amp; &eacute;t&EACUTE; &notit; &amp",
    "a <b>bold</b> &amp; move",
    "multiple   spaces\tand\ttabs\n\nand newlines\r\n  ",
    "   leading and trailing   ",
    "it\u2019s \u201cquoted\u201d \ufb01ne \uff21\uff22\uff23\uff11\uff12 \u3000wide",
    "cafe\u0301 n\u0303 A\u030a \u212b \u2126 \ud55c\uad6d\uc5b4 \u1112\u1161\u11ab",
    "zero\u200bwidth soft\u00adhyphen nbsp\u00a0space ctrl\x07bell \ufeffbom",
    "\x1b[31mred\x1b[0m text",
    "<start_of_text>hello<end_of_text> <START_OF_TEXT>",
    "a photo of a dog, trending on artstation, 8k, unreal engine, octane render",
    "$100 @user #hashtag ~tilde~ ^caret^ {braces} [brackets] |pipe| \\back/slash",
    "numbers: ½ ² ³ ⅷ ٣ ४ 一二三",
    "snake_case_words and CamelCaseWords and mixed123abc456",
    "emoji sequences 👍🏽 👨‍👩‍👧 🇯🇵 ❤️",
    "Ǆemal ǅ ﬀ ﬃ Ĳssel",
    "мама мыла раму, Ελλάδα, עברית, العربية, हिन्दी, ไทย, 한국어",
    "ſtart 'ſ <ſtart_of_text>",
    "ypogegrammeni a\u0345b \u0345 \u1fb3 \u1fbc \u03b1\u0345",
    "x" * 300,
    LONG,
    "word " * 80,
    "\n",
    "...",
    "a" ,
    b"invalid \xff\xfe utf8 \xc3 end",
    b"trunc \xe2\x82 mid \xf0\x9f\x8e done \xed\xa0\x80 surrogate \xc0\xaf overlong",
    b"\x80\x81\x85\x9f c1 bytes",
    "c1 chars \x80\x85\x91\x92\x9d",
]


def c_literal(b):
    out = []
    prev_hex = False
    for x in b:
        c = chr(x)
        if c == '"' or c == "\\":
            out.append("\\" + c)
            prev_hex = False
        elif 0x20 <= x < 0x7F and not (prev_hex and c in "0123456789abcdefABCDEF"):
            out.append(c)
            prev_hex = False
        else:
            out.append(f"\\x{x:02x}")
            prev_hex = True
    return '"' + "".join(out) + '"'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
    args = ap.parse_args()
    tokenize, src = load_open_clip_tokenizer()

    rows = []
    for p in PROMPTS:
        raw = p if isinstance(p, bytes) else p.encode("utf-8")
        text = raw.decode("utf-8", errors="replace")
        ids = np.asarray(tokenize([text])[0]).tolist()
        assert len(ids) == 77
        n = max(i for i, v in enumerate(ids) if v != 0) + 1
        assert ids[n - 1] == 49407, p
        rows.append((raw, ids[:n]))

    fixture = os.path.join(args.shared, "fixtures", "openclip_tiny.io.safetensors")
    try:
        from safetensors.numpy import load_file
        toks = load_file(fixture)["tokens"]
        for i, p in enumerate(["a raccoon holding a snowball", "a fox wearing a hat, oil painting", ""]):
            assert np.asarray(tokenize([p])[0]).tolist() == toks[i].tolist(), f"fixture row {i}"
        fixture_note = "checked against shared/fixtures/openclip_tiny.io.safetensors 'tokens'"
    except Exception as e:  # noqa: BLE001
        fixture_note = f"fixture not checked: {e}"

    w = sys.stdout.write
    w("// tokenizer_reference.h — GENERATED by scripts/make_tokenizer_reference.py; do not edit.\n")
    w(f"// Source: {src}; context_length 77. Ids listed up to and including the last EOT\n")
    w("// (49407, the last non-zero id); every later position is 0. Byte strings that are not valid UTF-8 were decoded\n")
    w(f"// with errors='replace' before tokenizing. The first three are openclip_tiny's prompts\n// ({fixture_note}).\n")
    w("#pragma once\n#include <stddef.h>\n#include <stdint.h>\n\n")
    w("struct TokenizerReference {\n    const char *text;\n    size_t len;\n    int n;\n    int32_t ids[77];\n};\n\n")
    w("static const TokenizerReference kTokenizerReference[] = {\n")
    for raw, ids in rows:
        w(f"    {{{c_literal(raw)}, {len(raw)}, {len(ids)},\n")
        s = "{" + ", ".join(map(str, ids)) + "}},"
        while len(s) > 92:
            cut = s.rfind(", ", 0, 92)
            w("     " + s[:cut + 1] + "\n")
            s = s[cut + 2:]
        w("     " + s + "\n")
    w("};\n")


if __name__ == "__main__":
    main()
