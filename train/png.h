// png.h — a small PNG encoder for the sample frames (vader-sample, evaluation samples):
// 8-bit RGB (colour type 2), no interlace, filter type 0 (None) on every row, the whole image
// in one zlib stream in one IDAT chunk, CRC-32 on every chunk (zlib's crc32).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

// Encodes w x h RGB8 pixels (row-major, 3 bytes a pixel) into a malloc'd PNG (*out, *size).
vt_err vt_png_encode(int w, int h, const uint8_t *rgb, uint8_t **out, size_t *size);
// Same into a file (written to PATH.tmp, then renamed).
vt_err vt_png_write(const char *path, int w, int h, const uint8_t *rgb);

#ifdef __cplusplus
}
#endif
