// media_decode.h — minimal PNG and GIF readers for the tests (independent of train/png.c and
// train/gif.c): PNG chunks with their CRCs, zlib inflate of the IDAT data, filter type 0
// rows; GIF89a blocks, extensions and a textbook LZW decoder.
#pragma once
#include <zlib.h>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace media {

inline std::vector<uint8_t> ReadFile(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    std::string str = s.str();
    return std::vector<uint8_t>(str.begin(), str.end());
}

inline uint32_t BE32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

struct Png {
    int w = 0, h = 0, depth = 0, color = 0, interlace = 0;
    std::vector<uint8_t> rgb;
    std::vector<std::string> chunks;
};

// Decodes an RGB8 PNG; returns "" or what is wrong.
inline std::string DecodePng(const std::vector<uint8_t> &d, Png *out) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (d.size() < 8 || memcmp(d.data(), sig, 8) != 0) return "bad signature";
    size_t o = 8;
    std::vector<uint8_t> z;
    bool end = false;
    while (!end) {
        if (o + 12 > d.size()) return "truncated chunk";
        uint32_t len = BE32(&d[o]);
        if (o + 12 + len > d.size()) return "chunk runs past the end";
        std::string type(reinterpret_cast<const char *>(&d[o + 4]), 4);
        const uint8_t *data = &d[o + 8];
        uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), &d[o + 4], 4 + len);
        if (crc != BE32(&d[o + 8 + len])) return "CRC mismatch in " + type;
        out->chunks.push_back(type);
        if (type == "IHDR") {
            if (len != 13) return "IHDR length";
            out->w = (int)BE32(data);
            out->h = (int)BE32(data + 4);
            out->depth = data[8];
            out->color = data[9];
            out->interlace = data[12];
        } else if (type == "IDAT") {
            z.insert(z.end(), data, data + len);
        } else if (type == "IEND") {
            end = true;
        }
        o += 12 + len;
    }
    if (out->depth != 8 || out->color != 2 || out->interlace != 0) return "not RGB8 non-interlaced";
    size_t row = (size_t)out->w * 3 + 1;
    std::vector<uint8_t> raw(row * (size_t)out->h);
    uLongf n = (uLongf)raw.size();
    if (uncompress(raw.data(), &n, z.data(), (uLong)z.size()) != Z_OK || n != raw.size()) return "inflate failed";
    out->rgb.resize((size_t)out->w * out->h * 3);
    for (int y = 0; y < out->h; y++) {
        if (raw[y * row] != 0) return "filter type " + std::to_string(raw[y * row]) + " (expected 0)";
        memcpy(&out->rgb[(size_t)y * out->w * 3], &raw[y * row + 1], row - 1);
    }
    return "";
}

struct Gif {
    int w = 0, h = 0, loop = -1;
    std::vector<uint8_t> palette;             // 3 * entries
    std::vector<int> delays;                  // per frame (hundredths)
    std::vector<std::vector<uint8_t>> frames; // indices per frame
    int max_code_bits = 0, clears = 0;        // LZW statistics
};

inline std::string LzwDecode(const std::vector<uint8_t> &data, int min_size, size_t n_out, std::vector<uint8_t> *out,
                             Gif *g) {
    const int clear = 1 << min_size, eoi = clear + 1;
    int size = min_size + 1, next = eoi + 1, prev = -1;
    std::vector<std::vector<uint8_t>> table(4096);
    for (int i = 0; i < clear; i++) table[i] = {(uint8_t)i};
    size_t bitpos = 0;
    bool first_code = true;
    for (;;) {
        if (bitpos + size > data.size() * 8) return "LZW data ends without an end code";
        int code = 0;
        for (int b = 0; b < size; b++, bitpos++)
            if (data[bitpos / 8] >> (bitpos % 8) & 1) code |= 1 << b;
        if (size > g->max_code_bits) g->max_code_bits = size;
        if (first_code && code != clear) return "LZW does not start with a clear code";
        first_code = false;
        if (code == clear) {
            g->clears++;
            size = min_size + 1;
            next = eoi + 1;
            prev = -1;
            continue;
        }
        if (code == eoi) break;
        std::vector<uint8_t> s;
        if (prev < 0) {
            if (code >= clear) return "first code after clear is not a literal";
            s = table[code];
        } else {
            if (code < next) s = table[code];
            else if (code == next) {
                s = table[prev];
                s.push_back(table[prev][0]);
            } else
                return "LZW code " + std::to_string(code) + " beyond the table (" + std::to_string(next) + ")";
            if (next < 4096) {
                table[next] = table[prev];
                table[next].push_back(s[0]);
                next++;
                if (next == (1 << size) && size < 12) size++;
            }
        }
        out->insert(out->end(), s.begin(), s.end());
        prev = code;
    }
    if (out->size() != n_out) return "LZW gave " + std::to_string(out->size()) + " pixels, expected " + std::to_string(n_out);
    return "";
}

inline std::string DecodeGif(const std::vector<uint8_t> &d, Gif *g) {
    if (d.size() < 13 || memcmp(d.data(), "GIF89a", 6) != 0) return "bad header";
    g->w = d[6] | d[7] << 8;
    g->h = d[8] | d[9] << 8;
    size_t o = 13;
    if (d[10] & 0x80) {
        size_t n = (size_t)3 << ((d[10] & 7) + 1);
        if (o + n > d.size()) return "truncated palette";
        g->palette.assign(d.begin() + o, d.begin() + o + n);
        o += n;
    }
    auto sub_blocks = [&](std::vector<uint8_t> *acc) -> bool {
        for (;;) {
            if (o >= d.size()) return false;
            int n = d[o++];
            if (n == 0) return true;
            if (o + n > d.size()) return false;
            if (acc) acc->insert(acc->end(), d.begin() + o, d.begin() + o + n);
            o += n;
        }
    };
    int delay = -1;
    for (;;) {
        if (o >= d.size()) return "no trailer";
        uint8_t b = d[o++];
        if (b == 0x3B) break;
        if (b == 0x21) {
            if (o >= d.size()) return "truncated extension";
            uint8_t label = d[o++];
            std::vector<uint8_t> body;
            if (!sub_blocks(&body)) return "truncated extension data";
            if (label == 0xF9 && body.size() == 4) delay = body[1] | body[2] << 8;
            if (label == 0xFF && body.size() == 11 + 3 && memcmp(body.data(), "NETSCAPE2.0", 11) == 0)
                g->loop = body[12] | body[13] << 8;
        } else if (b == 0x2C) {
            if (o + 9 > d.size()) return "truncated image descriptor";
            int fw = d[o + 4] | d[o + 5] << 8, fh = d[o + 6] | d[o + 7] << 8, packed = d[o + 8];
            o += 9;
            if (fw != g->w || fh != g->h) return "frame is not full size";
            if (packed & 0x80) return "unexpected local palette";
            int min_size = d[o++];
            std::vector<uint8_t> lzw;
            if (!sub_blocks(&lzw)) return "truncated image data";
            std::vector<uint8_t> idx;
            std::string err = LzwDecode(lzw, min_size, (size_t)fw * fh, &idx, g);
            if (!err.empty()) return "frame " + std::to_string(g->frames.size()) + ": " + err;
            g->frames.push_back(idx);
            g->delays.push_back(delay);
        } else {
            return "unknown block " + std::to_string(b);
        }
    }
    return "";
}

}  // namespace media
