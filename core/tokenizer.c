// tokenizer.c — the CLIP BPE tokenizer (see tokenizer.h for the pipeline).
//
// Text is handled as arrays of code points. Every Python step is reimplemented from its
// documented behaviour; the character data (Unicode classes, lower-case mapping, NFC data,
// HTML entity names, ftfy's translation tables) is generated into tokenizer_tables.h.
//
// Known differences from open_clip (Python):
//  * ftfy's mojibake repair (fix_encoding: "cafÃ©" -> "café", "itâ€™s" -> "it's", and odd
//    pairs such as "Å" + U+009D -> "ŝ") is not implemented; text that is valid UTF-8 of what
//    the user meant (every normal prompt) is unaffected. In a differential run against
//    open_clip over 9,000 random strings built from tricky pieces (entities, C1 controls,
//    combining marks, Hangul jamo, final sigma, ligatures, full-width forms, invalid UTF-8),
//    every mismatch was one of these mojibake repairs.
//  * ftfy's terminal-escape pattern uses \d, which in Python also matches non-ASCII decimal
//    digits; here only ASCII digits count.
//  * ftfy splits text longer than 1,000,000 characters into chunks; here lines are never split.
//  * Unicode data is that of the generating Python / regex module (see the table header).
// Input that is not valid UTF-8 is decoded as Python's bytes.decode('utf-8', 'replace') would:
// each maximal invalid subsequence becomes one U+FFFD (which the BPE then encodes as bytes).
#include "tokenizer.h"
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "tokenizer_tables.h"

#define NUM_MERGES (49152 - 256 - 2)  // merges[1 : 49152-256-2+1] in open_clip
#define NUM_BYTE_TOKENS 256
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

// ---------------------------------------------------------------------------------------------
// Growable code-point buffer. Allocation failure sets oom and later pushes are dropped.
typedef struct cpbuf {
    uint32_t *v;
    size_t n, cap;
    bool oom;
} cpbuf;

static void cb_push(cpbuf *b, uint32_t c) {
    if (b->n == b->cap) {
        if (b->oom) return;
        size_t cap = b->cap ? b->cap * 2 : 64;
        uint32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v) { b->oom = true; return; }
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = c;
}
static void cb_push_utf8(cpbuf *b, const char *s);
static void cb_free(cpbuf *b) { free(b->v); memset(b, 0, sizeof *b); }
static void cb_swap(cpbuf *a, cpbuf *b) { cpbuf t = *a; *a = *b; *b = t; }
static bool cb_equal(const cpbuf *a, const cpbuf *b) {
    return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof *a->v) == 0);
}

// ---------------------------------------------------------------------------------------------
// UTF-8, with Python's errors='replace' semantics (maximal subparts of ill-formed sequences).
static void utf8_decode(const unsigned char *s, size_t len, cpbuf *out) {
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) { cb_push(out, c); i++; continue; }
        int need;
        uint32_t cp;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) { need = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2; cp = c & 0x0F;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3; cp = c & 0x07;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else { cb_push(out, 0xFFFD); i++; continue; }
        size_t j = i + 1;
        int k = 0;
        for (; k < need; k++, j++) {
            if (j >= len) break;
            unsigned d = s[j];
            if (d < lo || d > hi) break;
            lo = 0x80; hi = 0xBF;
            cp = (cp << 6) | (d & 0x3F);
        }
        if (k == need) { cb_push(out, cp); i = j; }
        else { cb_push(out, 0xFFFD); i = j; }  // the valid prefix, as one replacement
    }
}

static size_t utf8_put(uint32_t c, unsigned char *o) {
    if (c < 0x80) { o[0] = (unsigned char)c; return 1; }
    if (c < 0x800) { o[0] = 0xC0 | (c >> 6); o[1] = 0x80 | (c & 0x3F); return 2; }
    if (c < 0x10000) {
        o[0] = 0xE0 | (c >> 12); o[1] = 0x80 | ((c >> 6) & 0x3F); o[2] = 0x80 | (c & 0x3F);
        return 3;
    }
    o[0] = 0xF0 | (c >> 18); o[1] = 0x80 | ((c >> 12) & 0x3F);
    o[2] = 0x80 | ((c >> 6) & 0x3F); o[3] = 0x80 | (c & 0x3F);
    return 4;
}

static void cb_push_utf8(cpbuf *b, const char *s) {
    utf8_decode((const unsigned char *)s, strlen(s), b);
}

// ---------------------------------------------------------------------------------------------
// Table look-ups.
static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t c) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        if (c < r[m][0]) hi = m;
        else if (c > r[m][1]) lo = m + 1;
        else return true;
    }
    return false;
}
static const uint32_t *find_pair(const uint32_t (*p)[2], size_t n, uint32_t c) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        if (c < p[m][0]) hi = m;
        else if (c > p[m][0]) lo = m + 1;
        else return p[m];
    }
    return NULL;
}
#define IN(tab, c) in_ranges(tab, COUNT(tab), c)

static bool is_letter(uint32_t c) {
    if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    return IN(tk_letter, c);
}
static bool is_number(uint32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    return IN(tk_number, c);
}
static bool is_space(uint32_t c) { return IN(tk_space, c); }
// Matches none of the pre-split classes (regex \s, and U+0345 under IGNORECASE).
static bool is_split_skip(uint32_t c) { return c == ' ' || IN(tk_split_skip, c); }

static int ccc_of(uint32_t c) {
    if (c < 0x300) return 0;
    const uint32_t *p = find_pair(tk_ccc, COUNT(tk_ccc), c);
    return p ? (int)p[1] : 0;
}

// HTML entity tables: sorted by name (byte order); name compared against a UTF-8 buffer.
typedef struct { const char *name; const char *to; } entity;
static const char *find_entity(const void *tab, size_t n, const char *name) {
    const entity *e = tab;
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        int r = strcmp(name, e[m].name);
        if (r < 0) hi = m;
        else if (r > 0) lo = m + 1;
        else return e[m].to;
    }
    return NULL;
}
// Looks up code points v[0..n) (plus an optional trailing ';') in the HTML5 table.
static const char *html5_lookup(const uint32_t *v, size_t n, bool semi, bool ftfy_upper) {
    char name[40 * 4 + 2];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] >= 0x80) return NULL;  // every entity name is ASCII
        name[k++] = (char)v[i];
    }
    if (semi) name[k++] = ';';
    name[k] = 0;
    const char *r = find_entity(tk_html5, COUNT(tk_html5), name);
    if (!r && ftfy_upper) r = find_entity(tk_ftfy_upper, COUNT(tk_ftfy_upper), name);
    return r;
}

// ---------------------------------------------------------------------------------------------
// html.unescape (Python's html module): &#NNN;? &#xHH;? and &name;? with HTML5 names, names
// without ';' resolved by their longest known prefix (legacy entities such as "&amp").
static bool is_adigit(uint32_t c) { return c >= '0' && c <= '9'; }
static bool is_hex(uint32_t c) { return is_adigit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
static bool is_alnum_ascii(uint32_t c) { return is_adigit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'); }

// Numeric reference at v[i] == '&', v[i+1] == '#'. Returns the length consumed (0: no match)
// and appends the replacement.
static size_t py_charref_numeric(const uint32_t *v, size_t n, size_t i, cpbuf *out) {
    size_t j = i + 2;
    int base = 10;
    if (j < n && (v[j] == 'x' || v[j] == 'X') && j + 1 < n && is_hex(v[j + 1])) { base = 16; j++; }
    else if (!(j < n && is_adigit(v[j]))) return 0;
    uint64_t num = 0;
    bool big = false;
    while (j < n && (base == 16 ? is_hex(v[j]) : is_adigit(v[j]))) {
        uint32_t c = v[j] | 0x20;
        uint32_t d = is_adigit(v[j]) ? v[j] - '0' : c - 'a' + 10;
        if (!big) {
            num = num * (uint64_t)base + d;
            if (num > 0x10FFFF) big = true;
        }
        j++;
    }
    if (j < n && v[j] == ';') j++;
    const uint32_t *inv = big ? NULL : find_pair(tk_invalid_charrefs, COUNT(tk_invalid_charrefs), (uint32_t)num);
    if (inv) cb_push(out, inv[1]);
    else if (big || (num >= 0xD800 && num <= 0xDFFF)) cb_push(out, 0xFFFD);
    else if (IN(tk_invalid_codepoints, (uint32_t)num)) {}
    else cb_push(out, (uint32_t)num);
    return j - i;
}

static void py_html_unescape(const cpbuf *in, cpbuf *out) {
    const uint32_t *v = in->v;
    size_t n = in->n;
    out->n = 0;
    for (size_t i = 0; i < n;) {
        if (v[i] != '&') { cb_push(out, v[i++]); continue; }
        if (i + 1 < n && v[i + 1] == '#') {
            size_t used = py_charref_numeric(v, n, i, out);
            if (used) { i += used; continue; }
            cb_push(out, v[i++]);
            continue;
        }
        // named: [^\t\n\f <&#;]{1,32};?
        size_t j = i + 1;
        while (j < n && j - (i + 1) < 32) {
            uint32_t c = v[j];
            if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';') break;
            j++;
        }
        size_t namelen = j - (i + 1);
        if (namelen == 0) { cb_push(out, v[i++]); continue; }
        bool semi = j < n && v[j] == ';';
        size_t slen = namelen + (semi ? 1 : 0);  // s = name + optional ';'
        const uint32_t *s = v + i + 1;
        const char *rep = html5_lookup(s, namelen, semi, false);
        if (rep) { cb_push_utf8(out, rep); i += 1 + slen; continue; }
        bool done = false;
        for (size_t x = slen - 1; x >= 2 && x < slen; x--) {  // prefixes s[:x], longest first
            rep = html5_lookup(s, x, false, false);
            if (rep) {
                cb_push_utf8(out, rep);
                for (size_t k = x; k < slen; k++) cb_push(out, s[k]);
                done = true;
                break;
            }
        }
        if (!done) {
            cb_push(out, '&');
            for (size_t k = 0; k < slen; k++) cb_push(out, s[k]);
        }
        i += 1 + slen;
    }
}

// ftfy's unescape_html: only &#?[0-9A-Za-z]{1,24}; — names from the HTML5 table (with ';')
// and ftfy's all-caps variants; numeric ones through html.unescape unless it leaves a ';'.
static void ftfy_unescape(const cpbuf *in, cpbuf *out) {
    const uint32_t *v = in->v;
    size_t n = in->n;
    out->n = 0;
    for (size_t i = 0; i < n;) {
        if (v[i] != '&') { cb_push(out, v[i++]); continue; }
        size_t j = i + 1;
        bool hash = j < n && v[j] == '#';
        if (hash) j++;
        size_t a = j;
        while (j < n && is_alnum_ascii(v[j])) j++;
        size_t k = j - a;
        if (k < 1 || k > 24 || j >= n || v[j] != ';') { cb_push(out, v[i++]); continue; }
        size_t mlen = j + 1 - i;  // the whole match "&...;"
        if (!hash) {
            const char *rep = html5_lookup(v + a, k, true, true);
            if (rep) cb_push_utf8(out, rep);
            else for (size_t q = 0; q < mlen; q++) cb_push(out, v[i + q]);
        } else {
            cpbuf m = {0}, r = {0};
            for (size_t q = 0; q < mlen; q++) cb_push(&m, v[i + q]);
            py_html_unescape(&m, &r);
            bool has_semi = false;
            for (size_t q = 0; q < r.n; q++) has_semi |= r.v[q] == ';';
            const cpbuf *src = has_semi ? &m : &r;
            for (size_t q = 0; q < src->n; q++) cb_push(out, src->v[q]);
            if (m.oom || r.oom) out->oom = true;
            cb_free(&m);
            cb_free(&r);
        }
        i += mlen;
    }
}

// ---------------------------------------------------------------------------------------------
// The other ftfy fixers.
static void ftfy_translate(const cpbuf *in, cpbuf *out) {
    // fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes — applied in
    // sequence; each is a per-character mapping whose outputs the later ones do not touch
    // except where chained below.
    out->n = 0;
    cpbuf t1 = {0}, t2 = {0};
    for (size_t i = 0; i < in->n; i++) {  // C1 controls -> sloppy-windows-1252
        uint32_t c = in->v[i];
        cb_push(&t1, (c >= 0x80 && c <= 0x9F) ? tk_c1[c - 0x80][1] : c);
    }
    for (size_t i = 0; i < t1.n; i++) {  // ligatures
        uint32_t c = t1.v[i];
        const char *to = NULL;
        for (size_t k = 0; k < COUNT(tk_ligatures); k++)
            if (tk_ligatures[k].cp == c) { to = tk_ligatures[k].to; break; }
        if (to) cb_push_utf8(&t2, to); else cb_push(&t2, c);
    }
    t1.n = 0;
    for (size_t i = 0; i < t2.n; i++) {  // width
        uint32_t c = t2.v[i];
        const char *to = NULL;
        if (c == 0x3000 || (c >= 0xFF01 && c <= 0xFFEF)) {
            size_t lo = 0, hi = COUNT(tk_width);
            while (lo < hi) {
                size_t m = (lo + hi) / 2;
                if (c < tk_width[m].cp) hi = m;
                else if (c > tk_width[m].cp) lo = m + 1;
                else { to = tk_width[m].to; break; }
            }
        }
        if (to) cb_push_utf8(&t1, to); else cb_push(&t1, c);
    }
    for (size_t i = 0; i < t1.n; i++) {  // curly quotes
        uint32_t c = t1.v[i];
        if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
        else if (c >= 0x201C && c <= 0x201F) c = '"';
        cb_push(out, c);
    }
    if (t1.oom || t2.oom) out->oom = true;
    cb_free(&t1);
    cb_free(&t2);
}

static void ftfy_lines_escapes_controls(const cpbuf *in, cpbuf *out) {
    out->n = 0;
    cpbuf t = {0};
    // fix_line_breaks: \r\n, \r, U+2028, U+2029, U+0085 -> \n
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        if (c == '\r' && i + 1 < in->n && in->v[i + 1] == '\n') { cb_push(&t, '\n'); i++; continue; }
        if (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85) c = '\n';
        cb_push(&t, c);
    }
    // remove_terminal_escapes: ESC [ (digit|;)* letter
    for (size_t i = 0; i < t.n; i++) {
        if (t.v[i] == 0x1B && i + 1 < t.n && t.v[i + 1] == '[') {
            size_t j = i + 2;
            while (j < t.n && (is_adigit(t.v[j]) || t.v[j] == ';')) j++;
            if (j < t.n && t.v[j] < 0x80 && (t.v[j] | 0x20) >= 'a' && (t.v[j] | 0x20) <= 'z') { i = j; continue; }
        }
        uint32_t c = t.v[i];
        // remove_control_chars
        if (c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
            (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC))
            continue;
        cb_push(out, c);
    }
    if (t.oom) out->oom = true;
    cb_free(&t);
}

// ---------------------------------------------------------------------------------------------
// NFC: canonical decomposition, canonical ordering, canonical composition (+ Hangul).
#define SBASE 0xAC00
#define LBASE 0x1100
#define VBASE 0x1161
#define TBASE 0x11A7
#define LCOUNT 19
#define VCOUNT 21
#define TCOUNT 28
#define NCOUNT (VCOUNT * TCOUNT)
#define SCOUNT (LCOUNT * NCOUNT)

static uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE && b < TBASE + TCOUNT)
        return a + (b - TBASE);
    if (a >= (1u << 21) || b >= (1u << 21)) return 0;
    uint64_t key = ((uint64_t)a << 21) | b;
    size_t lo = 0, hi = COUNT(tk_comp);
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        if (key < tk_comp[m][0]) hi = m;
        else if (key > tk_comp[m][0]) lo = m + 1;
        else return (uint32_t)tk_comp[m][1];
    }
    return 0;
}

static void nfc(const cpbuf *in, cpbuf *out) {
    cpbuf d = {0};
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        if (c >= SBASE && c < SBASE + SCOUNT) {
            uint32_t s = c - SBASE;
            cb_push(&d, LBASE + s / NCOUNT);
            cb_push(&d, VBASE + (s % NCOUNT) / TCOUNT);
            if (s % TCOUNT) cb_push(&d, TBASE + s % TCOUNT);
            continue;
        }
        size_t lo = 0, hi = COUNT(tk_decomp);
        const uint32_t *e = NULL;
        if (c >= 0xC0) {
            while (lo < hi) {
                size_t m = (lo + hi) / 2;
                if (c < tk_decomp[m][0]) hi = m;
                else if (c > tk_decomp[m][0]) lo = m + 1;
                else { e = tk_decomp[m]; break; }
            }
        }
        if (e) for (uint32_t k = 0; k < e[2]; k++) cb_push(&d, tk_decomp_pool[e[1] + k]);
        else cb_push(&d, c);
    }
    // canonical ordering: stable insertion sort of each run of non-starters by class
    for (size_t i = 1; i < d.n; i++) {
        int ci = ccc_of(d.v[i]);
        if (ci == 0) continue;
        size_t j = i;
        while (j > 0) {
            int cj = ccc_of(d.v[j - 1]);
            if (cj <= ci) break;
            uint32_t t = d.v[j]; d.v[j] = d.v[j - 1]; d.v[j - 1] = t;
            j--;
        }
    }
    out->n = 0;
    if (d.n) {
        cb_push(out, d.v[0]);
        size_t starter = 0;
        int last = ccc_of(d.v[0]) ? 256 : 0;
        for (size_t i = 1; i < d.n; i++) {
            uint32_t c = d.v[i];
            int cc = ccc_of(c);
            uint32_t comp = (out->n > starter) ? compose_pair(out->v[starter], c) : 0;
            if (comp && (last < cc || last == 0) && !(last == 0 && out->n - 1 != starter)) {
                out->v[starter] = comp;
                continue;
            }
            if (cc == 0) starter = out->n;
            last = cc;
            cb_push(out, c);
        }
    }
    if (d.oom) out->oom = true;
    cb_free(&d);
}

// ftfy.fix_text for plain prompts: per line (a '<' disables HTML unescaping from that line on),
// each line fixed until it no longer changes.
static void ftfy_fix_text(const cpbuf *in, cpbuf *out) {
    out->n = 0;
    bool unescape = true;
    cpbuf a = {0}, b = {0};
    for (size_t pos = 0; pos < in->n && !out->oom;) {
        size_t end = pos;
        while (end < in->n && in->v[end] != '\n') end++;
        if (end < in->n) end++;  // the segment keeps its '\n'
        a.n = 0;
        for (size_t i = pos; i < end; i++) {
            if (in->v[i] == '<') unescape = false;
            cb_push(&a, in->v[i]);
        }
        for (int iter = 0; iter < 100 && !a.oom && !b.oom; iter++) {
            cpbuf orig = {0};
            for (size_t i = 0; i < a.n; i++) cb_push(&orig, a.v[i]);
            if (unescape) { ftfy_unescape(&a, &b); cb_swap(&a, &b); }
            ftfy_translate(&a, &b); cb_swap(&a, &b);
            ftfy_lines_escapes_controls(&a, &b); cb_swap(&a, &b);
            nfc(&a, &b); cb_swap(&a, &b);
            bool same = cb_equal(&a, &orig);
            if (orig.oom) a.oom = true;
            cb_free(&orig);
            if (same) break;
        }
        for (size_t i = 0; i < a.n; i++) cb_push(out, a.v[i]);
        if (a.oom || b.oom) out->oom = true;
        pos = end;
    }
    cb_free(&a);
    cb_free(&b);
}

// " ".join(text.split()) — also strips.
static void whitespace_clean(const cpbuf *in, cpbuf *out) {
    out->n = 0;
    bool pending = false;
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        if (is_space(c)) { pending = out->n > 0; continue; }
        if (pending) { cb_push(out, ' '); pending = false; }
        cb_push(out, c);
    }
}

// str.lower(): full mapping (U+0130 -> "i\u0307") and the final-sigma rule.
static bool case_ignorable(uint32_t c) { return IN(tk_case_ignorable, c); }
static bool cased(uint32_t c) { return IN(tk_cased, c); }
static uint32_t sigma_lower(const cpbuf *in, size_t i) {
    size_t j = i;
    uint32_t c = 0;
    bool found = false;
    while (j > 0) {
        c = in->v[--j];
        if (!case_ignorable(c)) { found = true; break; }
    }
    bool final = found && cased(c);
    if (final) {
        for (j = i + 1; j < in->n; j++) {
            c = in->v[j];
            if (!case_ignorable(c)) break;
        }
        final = j == in->n || !cased(c);
    }
    return final ? 0x3C2 : 0x3C3;
}
static void lower(const cpbuf *in, cpbuf *out) {
    out->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        if (c < 0x80) { cb_push(out, (c >= 'A' && c <= 'Z') ? c + 32 : c); continue; }
        if (c == 0x130) { cb_push(out, 'i'); cb_push(out, 0x307); continue; }
        if (c == 0x3A3) { cb_push(out, sigma_lower(in, i)); continue; }
        const uint32_t *p = find_pair(tk_lower, COUNT(tk_lower), c);
        cb_push(out, p ? p[1] : c);
    }
}

// ---------------------------------------------------------------------------------------------
// Vocabulary: tokens are byte strings with an end-of-word flag ('</w>').
typedef struct token {
    uint32_t off, len;  // bytes in tok->bytes
    uint8_t eow;
} token;

struct vt_tokenizer {
    int nvocab;               // 49408
    token *toks;              // [nvocab - 2] (the two special tokens are not in the table)
    unsigned char *bytes;
    size_t nbytes;
    int32_t *vhash;           // open addressing: token id or -1
    uint32_t vmask;
    uint64_t *mkeys;          // merge pair (a << 32 | b) + 1, 0 = empty
    uint32_t *mrank, *mres;   // rank, merged id
    uint32_t mmask;
    int byte_id[256];         // byte -> id (without '</w>'); +256 for the '</w>' variant
};

static uint32_t hash_bytes(const unsigned char *s, size_t n, int eow) {
    uint32_t h = 2166136261u ^ (uint32_t)eow;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 16777619u; }
    return h;
}
static uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x;
}

static int vocab_find(const vt_tokenizer *t, const unsigned char *s, size_t n, int eow) {
    uint32_t h = hash_bytes(s, n, eow) & t->vmask;
    for (;; h = (h + 1) & t->vmask) {
        int32_t id = t->vhash[h];
        if (id < 0) return -1;
        const token *k = &t->toks[id];
        if (k->len == n && k->eow == eow && memcmp(t->bytes + k->off, s, n) == 0) return id;
    }
}
// Inserts id; a token already present is re-pointed to the later id (Python dict semantics).
static void vocab_insert(vt_tokenizer *t, int id) {
    const token *k = &t->toks[id];
    uint32_t h = hash_bytes(t->bytes + k->off, k->len, k->eow) & t->vmask;
    for (;; h = (h + 1) & t->vmask) {
        int32_t o = t->vhash[h];
        if (o < 0) { t->vhash[h] = id; return; }
        const token *q = &t->toks[o];
        if (q->len == k->len && q->eow == k->eow && memcmp(t->bytes + q->off, t->bytes + k->off, k->len) == 0) {
            t->vhash[h] = id;
            return;
        }
    }
}
static int64_t merge_find(const vt_tokenizer *t, uint32_t a, uint32_t b, uint32_t *res) {
    uint64_t key = (((uint64_t)a << 32) | b) + 1;
    uint32_t h = (uint32_t)mix64(key) & t->mmask;
    for (;; h = (h + 1) & t->mmask) {
        if (t->mkeys[h] == 0) return -1;
        if (t->mkeys[h] == key) { *res = t->mres[h]; return t->mrank[h]; }
    }
}
static void merge_insert(vt_tokenizer *t, uint32_t a, uint32_t b, uint32_t rank, uint32_t res) {
    uint64_t key = (((uint64_t)a << 32) | b) + 1;
    uint32_t h = (uint32_t)mix64(key) & t->mmask;
    for (;; h = (h + 1) & t->mmask) {
        if (t->mkeys[h] == 0 || t->mkeys[h] == key) {
            t->mkeys[h] = key; t->mrank[h] = rank; t->mres[h] = res;
            return;
        }
    }
}

// bytes_to_unicode(): the printable bytes map to themselves, the others to 256, 257, ...
static void byte_unicode_order(int order[256], uint32_t cp_of[256]) {
    int n = 0;
    bool in_bs[256] = {0};
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
            in_bs[b] = true; order[n++] = b; cp_of[b] = (uint32_t)b;
        }
    int extra = 0;
    for (int b = 0; b < 256; b++)
        if (!in_bs[b]) { order[n++] = b; cp_of[b] = 256u + (uint32_t)extra++; }
}

void vt_tokenizer_free(vt_tokenizer *t) {
    if (!t) return;
    free(t->toks); free(t->bytes); free(t->vhash);
    free(t->mkeys); free(t->mrank); free(t->mres);
    free(t);
}

int vt_tokenizer_vocab_size(const vt_tokenizer *t) { return t ? t->nvocab : 0; }

static unsigned char *read_gz(const char *path, size_t *len) {
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        vt_error(VT_ERR_IO, "tokenizer: cannot open '%s': %s", path, errno ? strerror(errno) : "gzopen failed");
        return NULL;
    }
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (!buf) { gzclose(f); vt_error(VT_ERR_OOM, "tokenizer: out of memory reading '%s'", path); return NULL; }
        if (cap - n < (1 << 16)) {
            unsigned char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); buf = NULL; continue; }
            buf = nb; cap *= 2;
        }
        int r = gzread(f, buf + n, (unsigned)(cap - n - 1));
        if (r < 0) {
            int code;
            const char *msg = gzerror(f, &code);
            vt_error(VT_ERR_FORMAT, "tokenizer: '%s' is not a readable gzip file: %s", path, msg ? msg : "?");
            free(buf); gzclose(f);
            return NULL;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    int code;
    gzerror(f, &code);
    int cr = gzclose(f);
    if (code != Z_OK || cr != Z_OK) {
        vt_error(VT_ERR_FORMAT, "tokenizer: '%s' is a truncated or corrupt gzip file", path);
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

// Parses one merge part (bytes_to_unicode text, optional '</w>') into raw bytes.
static bool parse_part(const unsigned char *s, size_t n, const int byte_of_cp[512], unsigned char *dst,
                       uint32_t *dlen, uint8_t *eow) {
    *eow = 0;
    if (n >= 4 && memcmp(s + n - 4, "</w>", 4) == 0) { *eow = 1; n -= 4; }
    cpbuf cps = {0};
    utf8_decode(s, n, &cps);
    bool ok = !cps.oom && cps.n > 0;
    *dlen = 0;
    for (size_t i = 0; ok && i < cps.n; i++) {
        if (cps.v[i] >= 512 || byte_of_cp[cps.v[i]] < 0) ok = false;
        else dst[(*dlen)++] = (unsigned char)byte_of_cp[cps.v[i]];
    }
    cb_free(&cps);
    return ok;
}

vt_tokenizer *vt_tokenizer_open(const char *path) {
    if (!path) { vt_error(VT_ERR_ARG, "tokenizer: NULL path"); return NULL; }
    size_t len = 0;
    unsigned char *text = read_gz(path, &len);
    if (!text) return NULL;

    vt_tokenizer *t = calloc(1, sizeof *t);
    int ntok = 2 * NUM_BYTE_TOKENS + NUM_MERGES;
    if (t) {
        t->nvocab = ntok + 2;
        t->toks = calloc((size_t)ntok, sizeof *t->toks);
        t->bytes = malloc(len + 2 * NUM_BYTE_TOKENS);
        t->vmask = (1u << 17) - 1;
        t->vhash = malloc((t->vmask + 1) * sizeof *t->vhash);
        t->mmask = (1u << 17) - 1;
        t->mkeys = calloc(t->mmask + 1, sizeof *t->mkeys);
        t->mrank = malloc((t->mmask + 1) * sizeof *t->mrank);
        t->mres = malloc((t->mmask + 1) * sizeof *t->mres);
    }
    uint32_t *mpart = malloc(2 * NUM_MERGES * sizeof *mpart);  // per merge: ids of the two parts
    if (!t || !t->toks || !t->bytes || !t->vhash || !t->mkeys || !t->mrank || !t->mres || !mpart) {
        free(text); free(mpart); vt_tokenizer_free(t);
        vt_error(VT_ERR_OOM, "tokenizer: out of memory loading '%s'", path);
        return NULL;
    }
    memset(t->vhash, 0xFF, (t->vmask + 1) * sizeof *t->vhash);

    int order[256];
    uint32_t cp_of[256];
    int byte_of_cp[512];
    byte_unicode_order(order, cp_of);
    for (int i = 0; i < 512; i++) byte_of_cp[i] = -1;
    for (int b = 0; b < 256; b++) byte_of_cp[cp_of[b]] = b;

    size_t nb = 0;
    for (int i = 0; i < NUM_BYTE_TOKENS; i++) {
        int b = order[i];
        t->bytes[nb] = (unsigned char)b;
        t->toks[i] = (token){(uint32_t)nb, 1, 0};
        t->toks[i + NUM_BYTE_TOKENS] = (token){(uint32_t)nb, 1, 1};
        nb++;
        t->byte_id[b] = i;
    }
    for (int i = 0; i < 2 * NUM_BYTE_TOKENS; i++) vocab_insert(t, i);

    // Lines: [0] is the header, merges are lines 1 .. NUM_MERGES.
    size_t p = 0;
    while (p < len && text[p] != '\n') p++;
    const char *err = NULL;
    int line = 1;
    for (int m = 0; m < NUM_MERGES && !err; m++, line++) {
        if (p >= len) { err = "too few merge lines"; break; }
        p++;  // past '\n'
        size_t s = p;
        while (p < len && text[p] != '\n') p++;
        // split on ASCII whitespace into exactly two parts
        size_t a0, a1, b0, b1, q = s;
        while (q < p && (text[q] == ' ' || text[q] == '\t' || text[q] == '\r' || text[q] == '\v' || text[q] == '\f')) q++;
        a0 = q;
        while (q < p && !(text[q] == ' ' || text[q] == '\t' || text[q] == '\r' || text[q] == '\v' || text[q] == '\f')) q++;
        a1 = q;
        while (q < p && (text[q] == ' ' || text[q] == '\t' || text[q] == '\r' || text[q] == '\v' || text[q] == '\f')) q++;
        b0 = q;
        while (q < p && !(text[q] == ' ' || text[q] == '\t' || text[q] == '\r' || text[q] == '\v' || text[q] == '\f')) q++;
        b1 = q;
        while (q < p && (text[q] == ' ' || text[q] == '\t' || text[q] == '\r' || text[q] == '\v' || text[q] == '\f')) q++;
        if (a1 == a0 || b1 == b0 || q != p) { err = "a merge line does not hold two symbols"; break; }
        uint32_t la, lb;
        uint8_t ea, eb;
        unsigned char *dst = t->bytes + nb;
        if (!parse_part(text + a0, a1 - a0, byte_of_cp, dst, &la, &ea) ||
            !parse_part(text + b0, b1 - b0, byte_of_cp, dst + la, &lb, &eb)) {
            err = "a merge symbol is not in the byte alphabet";
            break;
        }
        int ia = vocab_find(t, dst, la, ea);
        int ib = vocab_find(t, dst + la, lb, eb);
        int id = 2 * NUM_BYTE_TOKENS + m;
        t->toks[id] = (token){(uint32_t)nb, la + lb, (uint8_t)(ea | eb)};
        nb += la + lb;
        vocab_insert(t, id);
        mpart[2 * m] = ia < 0 ? UINT32_MAX : (uint32_t)ia;
        mpart[2 * m + 1] = ib < 0 ? UINT32_MAX : (uint32_t)ib;
    }
    free(text);
    if (err) {
        free(mpart); vt_tokenizer_free(t);
        vt_error(VT_ERR_FORMAT, "tokenizer: '%s' line %d: %s (expected a header and %d merges)", path, line + 1, err,
                 NUM_MERGES);
        return NULL;
    }
    // Ranks keyed on the final ids of the two parts (later duplicates win, like a dict).
    for (int m = 0; m < NUM_MERGES; m++) {
        if (mpart[2 * m] == UINT32_MAX || mpart[2 * m + 1] == UINT32_MAX) continue;
        const token *k = &t->toks[2 * NUM_BYTE_TOKENS + m];
        int res = vocab_find(t, t->bytes + k->off, k->len, k->eow);
        merge_insert(t, mpart[2 * m], mpart[2 * m + 1], (uint32_t)m, (uint32_t)res);
    }
    free(mpart);
    return t;
}

// ---------------------------------------------------------------------------------------------
// Tokenization.
typedef struct idsink {
    int64_t *out;
    int ctx;
    long n;  // ids produced so far (may exceed ctx)
} idsink;
static void sink_put(idsink *s, int64_t id) {
    if (s->n < s->ctx) s->out[s->n] = id;
    s->n++;
}

// BPE of one pre-split piece (raw UTF-8 bytes).
static vt_err bpe_piece(const vt_tokenizer *t, const unsigned char *s, size_t n, idsink *sink) {
    uint32_t stackbuf[64];
    uint32_t *w = n <= 64 ? stackbuf : malloc(n * sizeof *w);
    if (!w) return vt_error(VT_ERR_OOM, "tokenizer: out of memory");
    for (size_t i = 0; i < n; i++) w[i] = (uint32_t)t->byte_id[s[i]];
    w[n - 1] += NUM_BYTE_TOKENS;  // last symbol carries '</w>'
    size_t len = n;
    while (len > 1) {
        int64_t best = -1;
        uint32_t ba = 0, bb = 0, bres = 0;
        for (size_t i = 0; i + 1 < len; i++) {
            uint32_t res;
            int64_t r = merge_find(t, w[i], w[i + 1], &res);
            if (r >= 0 && (best < 0 || r < best)) { best = r; ba = w[i]; bb = w[i + 1]; bres = res; }
        }
        if (best < 0) break;
        size_t o = 0;
        for (size_t i = 0; i < len;) {
            if (i + 1 < len && w[i] == ba && w[i + 1] == bb) { w[o++] = bres; i += 2; }
            else w[o++] = w[i++];
        }
        len = o;
    }
    for (size_t i = 0; i < len; i++) sink_put(sink, w[i]);
    if (w != stackbuf) free(w);
    return VT_OK;
}

// Case-insensitive literal match as the regex module's IGNORECASE does it for these
// patterns (simple case folding: 's' also matches U+017F LONG S).
static bool ci_eq(uint32_t c, char p) {
    if (c == (uint32_t)(unsigned char)p) return true;
    if (p >= 'a' && p <= 'z' && c == (uint32_t)(p - 32)) return true;
    if (p == 's' && c == 0x17F) return true;
    return false;
}
static size_t match_lit(const cpbuf *b, size_t i, const char *lit) {
    size_t k = 0;
    for (; lit[k]; k++)
        if (i + k >= b->n || !ci_eq(b->v[i + k], lit[k])) return 0;
    return k;
}

static vt_err encode_pieces(const vt_tokenizer *t, const cpbuf *b, idsink *sink) {
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    unsigned char small[256];
    for (size_t i = 0; i < b->n;) {
        size_t len = 0;
        int special = -1;
        if ((len = match_lit(b, i, "<start_of_text>"))) special = VT_TOKENIZER_SOT;
        else if ((len = match_lit(b, i, "<end_of_text>"))) special = VT_TOKENIZER_EOT;
        if (len) {
            // the BPE cache holds the exact special strings only
            bool exact = true;
            const char *lit = special == VT_TOKENIZER_SOT ? "<start_of_text>" : "<end_of_text>";
            for (size_t k = 0; k < len; k++) exact &= b->v[i + k] == (uint32_t)(unsigned char)lit[k];
            if (!exact) special = -1;
        }
        for (size_t k = 0; !len && k < COUNT(contractions); k++) len = match_lit(b, i, contractions[k]);
        if (!len && is_letter(b->v[i])) {
            while (i + len < b->n && is_letter(b->v[i + len])) len++;
        }
        if (!len && is_number(b->v[i])) len = 1;
        if (!len && !is_split_skip(b->v[i])) {
            while (i + len < b->n) {
                uint32_t c = b->v[i + len];
                if (is_split_skip(c) || is_letter(c) || is_number(c)) break;
                len++;
            }
        }
        if (!len) { i++; continue; }  // whitespace (or U+0345)
        if (special >= 0) { sink_put(sink, special); i += len; continue; }
        size_t nbytes = 4 * len;
        unsigned char *u = nbytes <= sizeof small ? small : malloc(nbytes);
        if (!u) return vt_error(VT_ERR_OOM, "tokenizer: out of memory");
        size_t m = 0;
        for (size_t k = 0; k < len; k++) m += utf8_put(b->v[i + k], u + m);
        vt_err e = bpe_piece(t, u, m, sink);
        if (u != small) free(u);
        if (e) return e;
        i += len;
    }
    return VT_OK;
}

vt_err vt_tokenize_n(vt_tokenizer *t, const char *text, size_t n, int64_t *out, int ctx) {
    if (!t || !out || (!text && n)) return vt_error(VT_ERR_ARG, "vt_tokenize: NULL argument");
    if (ctx < 1) return vt_error(VT_ERR_ARG, "vt_tokenize: context_length %d < 1", ctx);
    cpbuf a = {0}, b = {0};
    utf8_decode((const unsigned char *)text, n, &a);
    ftfy_fix_text(&a, &b);                       // ftfy.fix_text
    py_html_unescape(&b, &a);                    // html.unescape twice
    py_html_unescape(&a, &b);
    whitespace_clean(&b, &a);                    // strip + split/join
    lower(&a, &b);                               // .lower()
    vt_err e = VT_OK;
    if (a.oom || b.oom) e = vt_error(VT_ERR_OOM, "vt_tokenize: out of memory");
    idsink sink = {out, ctx, 0};
    if (!e) {
        sink_put(&sink, VT_TOKENIZER_SOT);
        e = encode_pieces(t, &b, &sink);
    }
    cb_free(&a);
    cb_free(&b);
    if (e) return e;
    sink_put(&sink, VT_TOKENIZER_EOT);
    if (sink.n > ctx) out[ctx - 1] = VT_TOKENIZER_EOT;
    for (long i = sink.n; i < ctx; i++) out[i] = 0;
    return VT_OK;
}

vt_err vt_tokenize(vt_tokenizer *t, const char *text, int64_t *out, int ctx) {
    return vt_tokenize_n(t, text, text ? strlen(text) : 0, out, ctx);
}
