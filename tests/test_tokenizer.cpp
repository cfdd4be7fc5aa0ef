// test_tokenizer.cpp — the CLIP BPE tokenizer against open_clip's ids
// (tests/data/tokenizer_reference.h, scripts/make_tokenizer_reference.py) and the
// openclip_tiny fixture's tokens.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>
#include "core/tokenizer.h"
#include "data/tokenizer_reference.h"
#include "testutil.h"

namespace {

struct Tok {
    vt_tokenizer *t = nullptr;
    Tok() { t = vt_tokenizer_open(SharedPath("tokenizer/bpe_simple_vocab_16e6.txt.gz").c_str()); }
    ~Tok() { vt_tokenizer_free(t); }
};

std::string Show(const std::string &s) {
    std::string o;
    for (unsigned char c : s) {
        if (c >= 0x20 && c < 0x7F) o += (char)c;
        else { char b[8]; snprintf(b, sizeof b, "\\x%02x", c); o += b; }
    }
    return o.size() > 120 ? o.substr(0, 120) + "..." : o;
}

TEST(Tokenizer, VocabSize) {
    Tok tok;
    ASSERT_VT(tok.t);
    EXPECT_EQ(vt_tokenizer_vocab_size(tok.t), 49408);
}

TEST(Tokenizer, MatchesOpenClip) {
    Tok tok;
    ASSERT_VT(tok.t);
    for (const auto &r : kTokenizerReference) {
        std::string text(r.text, r.len);
        int64_t out[77];
        ASSERT_VT_OK(vt_tokenize_n(tok.t, text.data(), text.size(), out, 77));
        std::vector<int64_t> got(out, out + 77), want(77, 0);
        for (int i = 0; i < r.n; i++) want[i] = r.ids[i];
        EXPECT_EQ(got, want) << "prompt: \"" << Show(text) << "\"";
        if (text.find('\0') == std::string::npos) {  // the NUL-terminated entry point agrees
            int64_t out2[77];
            ASSERT_VT_OK(vt_tokenize(tok.t, text.c_str(), out2, 77));
            EXPECT_EQ(0, memcmp(out, out2, sizeof out));
        }
    }
}

// The openclip_tiny fixture's 'tokens' (int64 [3, 77]), read from its safetensors file with a
// minimal header parse.
TEST(Tokenizer, MatchesOpenClipTinyFixture) {
    std::string path = SharedPath("fixtures/openclip_tiny.io.safetensors");
    std::ifstream f(path, std::ios::binary);
    if (!f) GTEST_SKIP() << "no " << path;
    uint64_t hlen = 0;
    f.read(reinterpret_cast<char *>(&hlen), 8);
    ASSERT_TRUE(f && hlen < (1u << 24));
    std::string header(hlen, '\0');
    f.read(&header[0], (std::streamsize)hlen);
    size_t k = header.find("\"tokens\"");
    ASSERT_NE(k, std::string::npos);
    size_t end = header.find('}', k);
    std::string entry = header.substr(k, end - k);
    EXPECT_NE(entry.find("\"I64\""), std::string::npos) << entry;
    EXPECT_NE(entry.find("[3,77]"), std::string::npos) << entry;
    size_t d = entry.find("\"data_offsets\"");
    ASSERT_NE(d, std::string::npos);
    unsigned long long a = 0, b = 0;
    ASSERT_EQ(sscanf(entry.c_str() + entry.find('[', d), "[%llu,%llu]", &a, &b), 2);
    ASSERT_EQ(b - a, 3u * 77u * 8u);
    std::vector<int64_t> want(3 * 77);
    f.seekg((std::streamoff)(8 + hlen + a));
    f.read(reinterpret_cast<char *>(want.data()), (std::streamsize)(b - a));
    ASSERT_TRUE(f);

    Tok tok;
    ASSERT_VT(tok.t);
    const char *prompts[3] = {"a raccoon holding a snowball", "a fox wearing a hat, oil painting", ""};
    for (int i = 0; i < 3; i++) {
        int64_t out[77];
        ASSERT_VT_OK(vt_tokenize(tok.t, prompts[i], out, 77));
        EXPECT_EQ(std::vector<int64_t>(out, out + 77), std::vector<int64_t>(want.begin() + 77 * i, want.begin() + 77 * (i + 1)))
            << prompts[i];
    }
}

TEST(Tokenizer, TruncationKeepsEot) {
    Tok tok;
    ASSERT_VT(tok.t);
    std::string text;
    for (int i = 0; i < 150; i++) text += "word ";
    int64_t out[77];
    ASSERT_VT_OK(vt_tokenize(tok.t, text.c_str(), out, 77));
    EXPECT_EQ(out[0], VT_TOKENIZER_SOT);
    EXPECT_EQ(out[76], VT_TOKENIZER_EOT);
    for (int i = 1; i < 76; i++) EXPECT_EQ(out[i], out[1]) << i;  // "word</w>" every time
    EXPECT_NE(out[1], VT_TOKENIZER_EOT);

    // other context lengths, as open_clip's tokenize(text, context_length)
    int64_t small[5];
    ASSERT_VT_OK(vt_tokenize(tok.t, text.c_str(), small, 5));
    EXPECT_EQ(small[0], VT_TOKENIZER_SOT);
    EXPECT_EQ(small[1], out[1]);
    EXPECT_EQ(small[4], VT_TOKENIZER_EOT);
    int64_t exact[3];  // SOT, one id, EOT: fits exactly
    ASSERT_VT_OK(vt_tokenize(tok.t, "word", exact, 3));
    EXPECT_EQ(exact[1], out[1]);
    EXPECT_EQ(exact[2], VT_TOKENIZER_EOT);
    int64_t one[1];
    ASSERT_VT_OK(vt_tokenize(tok.t, "word", one, 1));
    EXPECT_EQ(one[0], VT_TOKENIZER_EOT);
    EXPECT_EQ(vt_tokenize(tok.t, "word", one, 0), VT_ERR_ARG);
}

TEST(Tokenizer, InvalidUtf8IsReplaced) {
    Tok tok;
    ASSERT_VT(tok.t);
    // Every byte value, lone continuation bytes, truncated and overlong sequences, surrogates,
    // code points past U+10FFFF, NUL bytes inside the buffer.
    std::vector<std::string> cases = {
        std::string("\xff\xfe\xfd", 3), std::string("\x80\xbf", 2), std::string("\xc3", 1),
        std::string("\xe2\x82", 2), std::string("\xf0\x9f\x8e", 3), std::string("\xed\xa0\x80", 3),
        std::string("\xc0\xaf\xe0\x80\xaf", 5), std::string("\xf4\x90\x80\x80\xf8\x88\x80\x80\x80", 9),
        std::string("a\0b\0", 4), std::string("&#\xff;&\xff;", 7),
    };
    std::string all;
    for (int b = 255; b >= 0; b--) all += (char)b;
    cases.push_back(all);
    int64_t out[77];
    for (const auto &s : cases) {
        ASSERT_VT_OK(vt_tokenize_n(tok.t, s.data(), s.size(), out, 77)) << Show(s);
        EXPECT_EQ(out[0], VT_TOKENIZER_SOT);
        bool eot = false;
        for (int i = 1; i < 77; i++) {
            EXPECT_GE(out[i], 0);
            EXPECT_LT(out[i], 49408);
            eot |= out[i] == VT_TOKENIZER_EOT;
        }
        EXPECT_TRUE(eot);
    }
    // A lone invalid byte is U+FFFD, as Python's errors='replace': same ids as the real character.
    int64_t a[77], b[77];
    ASSERT_VT_OK(vt_tokenize(tok.t, "x \xff y", a, 77));
    ASSERT_VT_OK(vt_tokenize(tok.t, "x \xef\xbf\xbd y", b, 77));
    EXPECT_EQ(0, memcmp(a, b, sizeof a));
}

TEST(Tokenizer, MissingFileNamesPath) {
    std::string path = TempDir() + "/no_such_vocab.txt.gz";
    EXPECT_EQ(vt_tokenizer_open(path.c_str()), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_IO);
    EXPECT_NE(std::string(vt_error_message()).find(path), std::string::npos) << vt_error_message();
}

TEST(Tokenizer, CorruptFileNamesPath) {
    std::string dir = TempDir();
    // a truncated gzip stream
    std::ifstream in(SharedPath("tokenizer/bpe_simple_vocab_16e6.txt.gz"), std::ios::binary);
    std::string gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_GT(gz.size(), 1000u);
    std::string trunc = dir + "/truncated.txt.gz";
    std::ofstream(trunc, std::ios::binary).write(gz.data(), (std::streamsize)(gz.size() / 2));
    EXPECT_EQ(vt_tokenizer_open(trunc.c_str()), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_FORMAT) << vt_error_message();
    EXPECT_NE(std::string(vt_error_message()).find(trunc), std::string::npos) << vt_error_message();
    // a file that is not a merges list
    std::string junk = dir + "/junk.txt.gz";
    std::ofstream(junk, std::ios::binary) << "#version: 0.2\nnot a merges file at all\n";
    EXPECT_EQ(vt_tokenizer_open(junk.c_str()), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_FORMAT) << vt_error_message();
    EXPECT_NE(std::string(vt_error_message()).find(junk), std::string::npos) << vt_error_message();
}

}  // namespace
