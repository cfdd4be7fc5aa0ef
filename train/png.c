// png.c — see png.h. Layout: signature, IHDR, IDAT (zlib of the filtered rows), IEND.
#include "train/png.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

// One chunk at p: length, type, data, CRC over type + data. Returns the bytes written.
static size_t put_chunk(uint8_t *p, const char type[4], const uint8_t *data, uint32_t len) {
    put_u32(p, len);
    memcpy(p + 4, type, 4);
    if (len) memcpy(p + 8, data, len);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, p + 4, 4 + len);
    put_u32(p + 8 + len, (uint32_t)crc);
    return 12 + (size_t)len;
}

vt_err vt_png_encode(int w, int h, const uint8_t *rgb, uint8_t **out, size_t *size) {
    *out = NULL;
    *size = 0;
    if (w < 1 || h < 1 || !rgb) return vt_error(VT_ERR_ARG, "png: bad image %dx%d", w, h);
    size_t row = (size_t)w * 3 + 1, raw_n = row * (size_t)h;
    uint8_t *raw = malloc(raw_n);
    uLongf zn = compressBound((uLong)raw_n);
    uint8_t *z = malloc(zn);
    if (!raw || !z) {
        free(raw);
        free(z);
        return vt_error(VT_ERR_OOM, "png: %dx%d", w, h);
    }
    for (int y = 0; y < h; y++) {
        raw[(size_t)y * row] = 0;  // filter None
        memcpy(raw + (size_t)y * row + 1, rgb + (size_t)y * (size_t)w * 3, (size_t)w * 3);
    }
    int zr = compress2(z, &zn, raw, (uLong)raw_n, 6);
    free(raw);
    if (zr != Z_OK || zn > 0x7fffffffu) {
        free(z);
        return vt_error(VT_ERR_INTERNAL, "png: zlib compress2 failed (%d)", zr);
    }
    size_t total = 8 + (12 + 13) + (12 + (size_t)zn) + 12;
    uint8_t *p = malloc(total);
    if (!p) {
        free(z);
        return vt_error(VT_ERR_OOM, "png: %zu bytes", total);
    }
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[13];
    put_u32(ihdr, (uint32_t)w);
    put_u32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;   // bit depth
    ihdr[9] = 2;   // colour type RGB
    ihdr[10] = 0;  // deflate
    ihdr[11] = 0;  // filter method 0
    ihdr[12] = 0;  // no interlace
    size_t o = 0;
    memcpy(p, sig, 8);
    o += 8;
    o += put_chunk(p + o, "IHDR", ihdr, 13);
    o += put_chunk(p + o, "IDAT", z, (uint32_t)zn);
    o += put_chunk(p + o, "IEND", NULL, 0);
    free(z);
    *out = p;
    *size = o;
    return VT_OK;
}

vt_err vt_png_write(const char *path, int w, int h, const uint8_t *rgb) {
    uint8_t *buf;
    size_t n;
    vt_err e = vt_png_encode(w, h, rgb, &buf, &n);
    if (e) return vt_error_context("%s: ", path);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(buf);
        return vt_error(VT_ERR_IO, "%s: %s", tmp, strerror(errno));
    }
    size_t wr = fwrite(buf, 1, n, f);
    free(buf);
    if (fclose(f) != 0 || wr != n || rename(tmp, path) != 0) {
        remove(tmp);
        return vt_error(VT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    return VT_OK;
}
