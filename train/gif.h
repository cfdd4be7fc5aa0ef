// gif.h — a small animated GIF89a encoder for sample videos: one global 256-entry palette
// (a fixed 6 x 7 x 6 RGB cube, nearest level per channel, no dithering; entries 252..255
// black), a NETSCAPE2.0 loop extension, one graphic control extension (delay, disposal 1)
// and one full-size image per frame, LZW-coded (minimum code size 8, variable codes of 9..12
// bits, a clear code when the 4096-entry table is full) in sub-blocks of <= 255 bytes.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

// The fixed palette (768 bytes: r, g, b of entries 0..255) and the index of a colour in it
// (index = r6 * 42 + g7 * 6 + b6, each channel rounded to its nearest level).
void vt_gif_palette(uint8_t pal[768]);
uint8_t vt_gif_palette_index(uint8_t r, uint8_t g, uint8_t b);

// n frames of w x h RGB8 pixels (frame after frame, row-major, 3 bytes a pixel), delay_cs
// hundredths of a second per frame, loop 0 = forever; into a malloc'd buffer / a file.
vt_err vt_gif_encode(int w, int h, int n, const uint8_t *rgb, int delay_cs, int loop, uint8_t **out, size_t *size);
vt_err vt_gif_write(const char *path, int w, int h, int n, const uint8_t *rgb, int delay_cs, int loop);

#ifdef __cplusplus
}
#endif
