// gif.c — see gif.h.
#include "train/gif.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LZW_MAX_CODES 4096
#define LZW_HASH 8192  // open addressing, > 2 x 4096 entries

void vt_gif_palette(uint8_t pal[768]) {
    memset(pal, 0, 768);
    for (int r = 0; r < 6; r++)
        for (int g = 0; g < 7; g++)
            for (int b = 0; b < 6; b++) {
                int i = r * 42 + g * 6 + b;
                pal[3 * i] = (uint8_t)(r * 51);
                pal[3 * i + 1] = (uint8_t)((g * 255 + 3) / 6);
                pal[3 * i + 2] = (uint8_t)(b * 51);
            }
}

uint8_t vt_gif_palette_index(uint8_t r, uint8_t g, uint8_t b) {
    int r6 = (r * 5 + 127) / 255, g7 = (g * 6 + 127) / 255, b6 = (b * 5 + 127) / 255;
    return (uint8_t)(r6 * 42 + g7 * 6 + b6);
}

// ---- growable byte buffer -----------------------------------------------------------------
typedef struct buf {
    uint8_t *p;
    size_t n, cap;
    int oom;
} buf;

static void put(buf *b, const void *src, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put1(buf *b, int v) {
    uint8_t c = (uint8_t)v;
    put(b, &c, 1);
}
static void put16(buf *b, int v) {
    put1(b, v & 0xff);
    put1(b, (v >> 8) & 0xff);
}

// ---- LZW bit writer into sub-blocks -----------------------------------------------------------
typedef struct bits {
    buf *out;
    uint32_t acc;
    int nacc;
    uint8_t block[255];
    int nblock;
} bits;

static void flush_block(bits *w) {
    if (!w->nblock) return;
    put1(w->out, w->nblock);
    put(w->out, w->block, (size_t)w->nblock);
    w->nblock = 0;
}
static void emit(bits *w, int code, int size) {
    w->acc |= (uint32_t)code << w->nacc;
    w->nacc += size;
    while (w->nacc >= 8) {
        w->block[w->nblock++] = (uint8_t)(w->acc & 0xff);
        if (w->nblock == 255) flush_block(w);
        w->acc >>= 8;
        w->nacc -= 8;
    }
}

// LZW of n indices (minimum code size 8) as sub-blocks, then the 0 terminator.
static void lzw(buf *out, const uint8_t *idx, size_t n, int32_t *keys, int16_t *vals) {
    const int clear = 256, eoi = 257;
    bits w = {.out = out};
    int size = 9, next = 258;
    put1(out, 8);
    for (int i = 0; i < LZW_HASH; i++) keys[i] = -1;
    emit(&w, clear, size);
    int prefix = idx[0];
    for (size_t i = 1; i < n; i++) {
        int k = idx[i];
        int32_t key = (prefix << 8) | k;
        uint32_t h = ((uint32_t)key * 2654435761u) >> 19;  // 13 bits
        while (keys[h] != -1 && keys[h] != key) h = (h + 1) & (LZW_HASH - 1);
        if (keys[h] == key) {
            prefix = vals[h];
            continue;
        }
        emit(&w, prefix, size);
        keys[h] = key;
        vals[h] = (int16_t)next;
        // the decoder adds this entry one code later; it widens its codes when the entry it
        // adds is the last one of the current width, so we widen once `next` reaches 1 << size
        if (next == (1 << size) && size < 12) size++;
        next++;
        if (next == LZW_MAX_CODES) {
            emit(&w, clear, size);
            for (int j = 0; j < LZW_HASH; j++) keys[j] = -1;
            size = 9;
            next = 258;
        }
        prefix = k;
    }
    emit(&w, prefix, size);
    // the decoder adds an entry after this last code too (unless it follows a clear)
    if (next != 258 && next == (1 << size) && size < 12) size++;
    emit(&w, eoi, size);
    if (w.nacc > 0) {
        w.block[w.nblock++] = (uint8_t)(w.acc & 0xff);
        if (w.nblock == 255) flush_block(&w);
    }
    flush_block(&w);
    put1(out, 0);
}

vt_err vt_gif_encode(int w, int h, int n, const uint8_t *rgb, int delay_cs, int loop, uint8_t **out, size_t *size) {
    *out = NULL;
    *size = 0;
    if (w < 1 || h < 1 || w > 65535 || h > 65535 || n < 1 || !rgb)
        return vt_error(VT_ERR_ARG, "gif: bad animation %dx%d x %d frames", w, h, n);
    size_t np = (size_t)w * (size_t)h;
    uint8_t *idx = malloc(np);
    int32_t *keys = malloc(LZW_HASH * sizeof *keys);
    int16_t *vals = malloc(LZW_HASH * sizeof *vals);
    buf b = {0};
    uint8_t pal[768];
    vt_gif_palette(pal);
    if (!idx || !keys || !vals) b.oom = 1;
    put(&b, "GIF89a", 6);
    put16(&b, w);
    put16(&b, h);
    put1(&b, 0xF7);  // global colour table, 8 bits colour resolution, 256 entries
    put1(&b, 0);     // background
    put1(&b, 0);     // aspect
    put(&b, pal, 768);
    // NETSCAPE2.0 loop count
    put(&b, "\x21\xFF\x0BNETSCAPE2.0\x03\x01", 16);
    put16(&b, loop);
    put1(&b, 0);
    for (int f = 0; f < n && !b.oom; f++) {
        const uint8_t *p = rgb + (size_t)f * np * 3;
        for (size_t i = 0; i < np; i++) idx[i] = vt_gif_palette_index(p[3 * i], p[3 * i + 1], p[3 * i + 2]);
        put(&b, "\x21\xF9\x04", 3);
        put1(&b, 1 << 2);  // disposal 1: leave in place
        put16(&b, delay_cs);
        put1(&b, 0);  // transparent index (unused)
        put1(&b, 0);
        put1(&b, 0x2C);
        put16(&b, 0);
        put16(&b, 0);
        put16(&b, w);
        put16(&b, h);
        put1(&b, 0);  // no local table, not interlaced
        lzw(&b, idx, np, keys, vals);
    }
    put1(&b, 0x3B);
    free(idx);
    free(keys);
    free(vals);
    if (b.oom) {
        free(b.p);
        return vt_error(VT_ERR_OOM, "gif: %dx%d x %d frames", w, h, n);
    }
    *out = b.p;
    *size = b.n;
    return VT_OK;
}

vt_err vt_gif_write(const char *path, int w, int h, int n, const uint8_t *rgb, int delay_cs, int loop) {
    uint8_t *p;
    size_t sz;
    if (vt_gif_encode(w, h, n, rgb, delay_cs, loop, &p, &sz)) return vt_error_context("%s: ", path);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(p);
        return vt_error(VT_ERR_IO, "%s: %s", tmp, strerror(errno));
    }
    size_t wr = fwrite(p, 1, sz, f);
    free(p);
    if (fclose(f) != 0 || wr != sz || rename(tmp, path) != 0) {
        remove(tmp);
        return vt_error(VT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    return VT_OK;
}
