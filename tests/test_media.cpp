// test_media.cpp — the PNG and GIF encoders (train/png.h, train/gif.h) read back by the
// independent decoders of media_decode.h: PNG pixels, IHDR and chunk CRCs; GIF header,
// loop count, delays, frame count, palette and every pixel's index after LZW decoding
// (including images long enough for 12-bit codes and table resets).
#include <cstdlib>
#include <cstring>
#include "testutil.h"
#include "media_decode.h"
#include "train/gif.h"
#include "train/png.h"

namespace {

std::vector<uint8_t> Pattern(int w, int h, int n, uint64_t seed, bool noise) {
    std::vector<uint8_t> v((size_t)w * h * 3 * n);
    uint64_t s = seed;
    for (size_t i = 0; i < v.size(); i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        size_t px = i / 3, x = px % w, y = (px / w) % h, f = px / ((size_t)w * h);
        v[i] = noise ? (uint8_t)(s >> 56) : (uint8_t)((x * 7 + y * 3 + f * 50 + (i % 3) * 80) & 0xff);
    }
    return v;
}

TEST(Png, RoundTripsThroughZlib) {
    for (auto dims : std::vector<std::pair<int, int>>{{1, 1}, {7, 5}, {64, 33}}) {
        int w = dims.first, h = dims.second;
        std::vector<uint8_t> rgb = Pattern(w, h, 1, 11, w == 64);
        uint8_t *buf = nullptr;
        size_t n = 0;
        ASSERT_VT_OK(vt_png_encode(w, h, rgb.data(), &buf, &n));
        std::vector<uint8_t> d(buf, buf + n);
        free(buf);
        media::Png p;
        ASSERT_EQ(media::DecodePng(d, &p), "");
        EXPECT_EQ(p.w, w);
        EXPECT_EQ(p.h, h);
        EXPECT_EQ(p.chunks, (std::vector<std::string>{"IHDR", "IDAT", "IEND"}));
        EXPECT_EQ(p.rgb, rgb);
    }
    std::string path = TempDir() + "/x.png";
    std::vector<uint8_t> rgb = Pattern(9, 4, 1, 3, true);
    ASSERT_VT_OK(vt_png_write(path.c_str(), 9, 4, rgb.data()));
    media::Png p;
    ASSERT_EQ(media::DecodePng(media::ReadFile(path), &p), "");
    EXPECT_EQ(p.rgb, rgb);
    uint8_t *b2 = nullptr;
    size_t n2 = 0;
    EXPECT_NE(vt_png_encode(0, 4, rgb.data(), &b2, &n2), VT_OK);
}

TEST(Gif, PaletteIndexIsTheNearestCubeLevel) {
    uint8_t pal[768];
    vt_gif_palette(pal);
    for (int i = 0; i < 252; i++) EXPECT_EQ(vt_gif_palette_index(pal[3 * i], pal[3 * i + 1], pal[3 * i + 2]), i);
    for (int i = 252; i < 256; i++) EXPECT_EQ(pal[3 * i] | pal[3 * i + 1] | pal[3 * i + 2], 0);
    // every channel value maps to the nearest level of its channel
    for (int v = 0; v < 256; v++) {
        int idx = vt_gif_palette_index((uint8_t)v, (uint8_t)v, (uint8_t)v);
        int lr = pal[3 * idx], lg = pal[3 * idx + 1];
        for (int k = 0; k < 6; k++) EXPECT_LE(std::abs(v - lr), std::abs(v - k * 51)) << v;
        for (int k = 0; k < 7; k++) EXPECT_LE(std::abs(v - lg), std::abs(v - (k * 255 + 3) / 6)) << v;
    }
}

void CheckGif(int w, int h, int n, const std::vector<uint8_t> &rgb, int delay, int loop, int expect_bits) {
    uint8_t *buf = nullptr;
    size_t size = 0;
    ASSERT_VT_OK(vt_gif_encode(w, h, n, rgb.data(), delay, loop, &buf, &size));
    std::vector<uint8_t> d(buf, buf + size);
    free(buf);
    media::Gif g;
    ASSERT_EQ(media::DecodeGif(d, &g), "");
    EXPECT_EQ(g.w, w);
    EXPECT_EQ(g.h, h);
    EXPECT_EQ(g.loop, loop);
    ASSERT_EQ((int)g.frames.size(), n);
    for (int f = 0; f < n; f++) EXPECT_EQ(g.delays[f], delay);
    uint8_t pal[768];
    vt_gif_palette(pal);
    ASSERT_EQ(g.palette.size(), 768u);
    EXPECT_EQ(memcmp(g.palette.data(), pal, 768), 0);
    size_t bad = 0;
    for (int f = 0; f < n; f++)
        for (size_t i = 0; i < (size_t)w * h; i++) {
            const uint8_t *p = &rgb[((size_t)f * w * h + i) * 3];
            bad += g.frames[f][i] != vt_gif_palette_index(p[0], p[1], p[2]);
        }
    EXPECT_EQ(bad, 0u);
    if (expect_bits) {
        EXPECT_EQ(g.max_code_bits, expect_bits);
    }
    if (expect_bits == 12) {
        EXPECT_GT(g.clears, n);  // table resets inside the frames
    }
}

TEST(Gif, HeaderFramesAndLzwDecodeBack) {
    CheckGif(1, 1, 1, {10, 200, 30}, 5, 0, 9);
    CheckGif(37, 23, 3, Pattern(37, 23, 3, 5, false), 12, 0, 0);
    // noise: 12-bit codes and several table resets
    CheckGif(160, 120, 2, Pattern(160, 120, 2, 9, true), 4, 3, 12);
    // a flat image: long runs (the code == next case of the decoder)
    std::vector<uint8_t> flat((size_t)100 * 80 * 3, 77);
    CheckGif(100, 80, 1, flat, 10, 0, 0);
}

TEST(Gif, WritesAFile) {
    std::string path = TempDir() + "/x.gif";
    std::vector<uint8_t> rgb = Pattern(16, 8, 4, 1, false);
    ASSERT_VT_OK(vt_gif_write(path.c_str(), 16, 8, 4, rgb.data(), 13, 0));
    media::Gif g;
    ASSERT_EQ(media::DecodeGif(media::ReadFile(path), &g), "");
    EXPECT_EQ(g.frames.size(), 4u);
    uint8_t *buf = nullptr;
    size_t n = 0;
    EXPECT_NE(vt_gif_encode(0, 8, 1, rgb.data(), 1, 0, &buf, &n), VT_OK);
}

}  // namespace
