// test_safetensors.cpp — the safetensors reader and atomic writer: round trips of every dtype
// and shape (0-d, empty, 5-d), metadata, every shared fixture file, a clean error for each
// kind of corrupt file, and the writer leaving an existing file intact when it fails.
#include "testutil.h"
#include "core/safetensors.h"
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace {

std::string ReadAll(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

void WriteAll(const std::string &path, const std::string &bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), (std::streamsize)bytes.size());
}

// A safetensors image: 8-byte little-endian length (hlen, or the header's size), header, data.
std::string Image(const std::string &header, size_t data_bytes, uint64_t hlen = 0, bool set_hlen = false) {
    uint64_t n = set_hlen ? hlen : header.size();
    std::string s(8, '\0');
    for (int i = 0; i < 8; i++) s[i] = (char)((n >> (8 * i)) & 0xff);
    s += header;
    s += std::string(data_bytes, '\x11');
    return s;
}

vt_tensor *Make(vt_dtype dt, std::vector<int64_t> shape, uint64_t seed) {
    vt_tensor *t = vt_empty(dt, VT_CPU, (int)shape.size(), shape.data());
    unsigned char *p = (unsigned char *)vt_data(t);
    for (size_t i = 0; i < vt_nbytes(t); i++) p[i] = (unsigned char)(vt_hash64(seed, i) & 0xff);
    return t;
}

int CountTempFiles(const std::string &dir) {
    int n = 0;
    DIR *d = opendir(dir.c_str());
    if (!d) return -1;
    while (struct dirent *e = readdir(d))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

}  // namespace

TEST(Safetensors, RoundTripAllDtypesAndShapes) {
    Releaser R;
    std::string path = TempDir() + "/rt.safetensors";
    std::vector<std::string> names = {"z.f32", "a.bf16", "m.f16", "i64", "scalar", "empty", "five", "empty0d", "q\"uo\\te\n"};
    std::vector<vt_tensor *> ts = {
        R(Make(VT_F32, {2, 3}, 1)),      R(Make(VT_BF16, {5}, 2)),    R(Make(VT_F16, {2, 1, 3}, 3)),
        R(Make(VT_I64, {3}, 4)),         R(Make(VT_F32, {}, 5)),      R(Make(VT_F32, {0, 7}, 6)),
        R(Make(VT_F32, {1, 2, 1, 2, 3}, 7)), R(Make(VT_BF16, {3, 0}, 8)), R(Make(VT_F16, {1}, 9)),
    };
    std::vector<const char *> cn;
    for (auto &s : names) cn.push_back(s.c_str());
    const char *mk[] = {"format", "note"}, *mv[] = {"pt", "h\u00e9llo \"x\""};
    ASSERT_VT_OK(vt_st_write(path.c_str(), (int)ts.size(), cn.data(), ts.data(), 2, mk, mv));

    vt_safetensors *f = vt_st_open(path.c_str());
    ASSERT_VT(f);
    EXPECT_EQ(f->data_start % 8, 0u);
    ASSERT_EQ(f->n, (int)ts.size());
    for (size_t i = 0; i < ts.size(); i++) {
        EXPECT_STREQ(f->entries[i].name, cn[i]) << "file order must be the given order";
        const vt_st_entry *e = vt_st_find(f, cn[i]);
        ASSERT_NE(e, nullptr) << cn[i];
        vt_tensor *t = R(vt_st_tensor(f, e));
        ASSERT_VT(t);
        EXPECT_EQ(t->dtype, ts[i]->dtype);
        EXPECT_EQ(t->ndim, ts[i]->ndim);
        for (int d = 0; d < t->ndim; d++) EXPECT_EQ(t->shape[d], ts[i]->shape[d]);
        EXPECT_EQ(t->numel, ts[i]->numel);
        ASSERT_EQ(vt_nbytes(t), vt_nbytes(ts[i]));
        EXPECT_EQ(0, memcmp(vt_data(t), vt_data(ts[i]), vt_nbytes(t))) << cn[i];
        // zero-copy: the bytes are the mapping's
        char *base = (char *)f->map->data;
        EXPECT_TRUE((char *)vt_data(t) >= base && (char *)vt_data(t) <= base + f->map->size);
    }
    EXPECT_EQ(vt_st_find(f, "nope"), nullptr);
    EXPECT_STREQ(vt_st_metadata(f, "format"), "pt");
    EXPECT_STREQ(vt_st_metadata(f, "note"), "h\u00e9llo \"x\"");
    EXPECT_EQ(vt_st_metadata(f, "absent"), nullptr);
    ASSERT_NE(f->metadata_json, nullptr);
    EXPECT_NE(strstr(f->metadata_json, "\"format\":\"pt\""), nullptr);
    // A tensor outlives the file handle: it keeps the mapping alive.
    vt_tensor *keep = vt_st_get(f, "z.f32");
    ASSERT_VT(keep);
    vt_st_close(f);
    EXPECT_EQ(0, memcmp(vt_data(keep), vt_data(ts[0]), vt_nbytes(keep)));
    vt_release(keep);
}

TEST(Safetensors, HeaderTextIsExactAndPadded) {
    Releaser R;
    std::string path = TempDir() + "/hdr.safetensors";
    vt_tensor *a = R(Make(VT_F32, {2}, 1)), *b = R(Make(VT_I64, {1, 1}, 2));
    const char *names[] = {"b", "a"};
    vt_tensor *ts[] = {b, a};
    ASSERT_VT_OK(vt_st_write(path.c_str(), 2, names, ts, 0, nullptr, nullptr));
    std::string s = ReadAll(path);
    ASSERT_GE(s.size(), 8u);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | (unsigned char)s[i];
    EXPECT_EQ((8 + n) % 8, 0u);
    std::string hdr = s.substr(8, n);
    std::string want = "{\"b\":{\"dtype\":\"I64\",\"shape\":[1,1],\"data_offsets\":[0,8]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}";
    EXPECT_EQ(hdr.substr(0, want.size()), want);
    EXPECT_EQ(hdr.find_first_not_of(' ', want.size()), std::string::npos) << "padding must be spaces";
    EXPECT_EQ(s.size(), 8 + n + 16);
}

TEST(Safetensors, ReadsEveryFixtureFile) {
    std::vector<std::string> files;
    for (const char *c : {"vc2_unet_tiny", "vc2_vae_decoder_tiny", "openclip_tiny", "vader_step_tiny"})
        for (const char *k : {".weights.safetensors", ".io.safetensors"}) files.push_back(SharedPath("fixtures/") + c + k);
    files.push_back(SharedPath("weights/aesthetic_mlp_sac_logos_ava1_l14.safetensors"));
    for (auto &p : files) {
        vt_safetensors *f = vt_st_open(p.c_str());
        ASSERT_VT(f) << p;
        EXPECT_GT(f->n, 0) << p;
        double sum = 0;
        for (int i = 0; i < f->n; i++) {
            vt_tensor *t = vt_st_tensor(f, &f->entries[i]);
            ASSERT_VT(t) << p << " " << f->entries[i].name;
            if (t->dtype == VT_F32)
                for (int64_t j = 0; j < t->numel; j++) sum += std::fabs(vt_f32(t)[j]);
            vt_release(t);
        }
        EXPECT_TRUE(std::isfinite(sum)) << p;
        vt_st_close(f);
    }
    vt_safetensors *f = vt_st_open(SharedPath("weights/aesthetic_mlp_sac_logos_ava1_l14.safetensors").c_str());
    ASSERT_VT(f);
    ASSERT_NE(vt_st_metadata(f, "check"), nullptr);
    EXPECT_NE(strstr(vt_st_metadata(f, "check"), "4.88328505"), nullptr);
    const vt_st_entry *e = vt_st_find(f, "layers.0.weight");
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->ndim, 2);
    EXPECT_EQ(e->shape[0], 1024);
    EXPECT_EQ(e->shape[1], 768);
    vt_st_close(f);
}

struct BadCase {
    const char *name;
    std::string bytes;
    const char *expect;  // substring of the message
};

TEST(Safetensors, CorruptFilesGiveCleanErrors) {
    std::string dir = TempDir();
    // A good file to truncate.
    Releaser R;
    vt_tensor *t = R(Make(VT_F32, {64}, 1));
    const char *nm[] = {"w"};
    std::string good = dir + "/good.safetensors";
    ASSERT_VT_OK(vt_st_write(good.c_str(), 1, nm, &t, 0, nullptr, nullptr));
    std::string g = ReadAll(good);

    const std::string ok1 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    std::vector<BadCase> cases = {
        {"empty", "", "too short"},
        {"short", std::string("\x02\x00\x00", 3), "too short"},
        {"truncated_data", g.substr(0, g.size() - 100), "outside the data section"},
        {"truncated_header", g.substr(0, 30), "past the end of the file"},
        {"hlen_past_end", Image("{}", 0, 1000, true), "past the end of the file"},
        {"huge_hlen", Image("{}", 0, 0xffffffffffffffffull, true), "exceeds"},
        {"hlen_over_100mb", Image("{}", 0, 100ull * 1024 * 1024 + 1, true), "exceeds"},
        {"not_json", Image("{not json at all", 0), "not valid JSON"},
        {"not_object", Image("[1, 2, 3]", 0), "not a JSON object"},
        {"trailing", Image("{} xx", 0), "trailing bytes"},
        {"offsets_past_end", Image("{\"a\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 16), "outside the data section"},
        {"begin_after_end", Image("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 16), "outside"},
        {"overlap", Image("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 32), "overlap"},
        {"wrong_bytes", Image("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 16), "needs 12"},
        {"f64", Image("{\"a.weight\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8), "a.weight': dtype F64 is not supported"},
        {"i32", Image("{\"x\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8), "dtype I32"},
        {"bool", Image("{\"x\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[0,1]}}", 8), "dtype BOOL"},
        {"unknown_dtype", Image("{\"x\":{\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,1]}}", 8), "dtype Q4_K"},
        {"no_dtype", Image("{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 8), "no \"dtype\""},
        {"six_dims", Image("{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 8), "6 dims"},
        {"negative_dim", Image("{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 8), "non-negative"},
        {"fraction_dim", Image("{\"x\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 8), "non-negative integer"},
        {"huge_dims", Image("{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 8), "too large"},
        {"bad_offsets", Image("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 8), "data_offsets"},
        {"entry_not_object", Image("{\"x\":3}", 8), "not a JSON object"},
        {"duplicate", Image(ok1 + ",\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16), "twice"},
        {"meta_not_string", Image("{\"__metadata__\":{\"k\":1}}", 0), "not a string"},
        {"meta_not_object", Image("{\"__metadata__\":[]}", 0), "not a JSON object"},
    };
    for (auto &c : cases) {
        std::string p = dir + "/" + c.name + ".safetensors";
        WriteAll(p, c.bytes);
        vt_error_clear();
        vt_safetensors *f = vt_st_open(p.c_str());
        EXPECT_EQ(f, nullptr) << c.name;
        if (f) {
            vt_st_close(f);
            continue;
        }
        EXPECT_TRUE(vt_error_code() == VT_ERR_FORMAT || vt_error_code() == VT_ERR_DTYPE) << c.name;
        EXPECT_NE(strstr(vt_error_message(), p.c_str()), nullptr) << c.name << ": " << vt_error_message();
        EXPECT_NE(strstr(vt_error_message(), c.expect), nullptr) << c.name << ": " << vt_error_message();
        // the same image through the buffer parser
        vt_safetensors *b = vt_st_parse_buffer(c.bytes.data(), c.bytes.size(), c.name);
        EXPECT_EQ(b, nullptr) << c.name;
        vt_st_close(b);
    }
    // A missing file and a directory are i/o errors.
    EXPECT_EQ(vt_st_open((dir + "/absent.safetensors").c_str()), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_IO);
    EXPECT_EQ(vt_st_open(dir.c_str()), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_IO);

    // Edge cases that are valid: empty tensors anywhere, whitespace / NUL padding, holes.
    std::vector<std::string> goods = {
        Image("{}", 0),
        Image("{}      ", 0),
        Image(std::string("{}\0\0", 4), 0),
        Image("{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
        Image("{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]}}", 12),
    };
    for (size_t i = 0; i < goods.size(); i++) {
        vt_safetensors *b = vt_st_parse_buffer(goods[i].data(), goods[i].size(), "good");
        EXPECT_NE(b, nullptr) << i << ": " << vt_error_message();
        vt_st_close(b);
    }
}

TEST(Safetensors, UnalignedDataIsCopied) {
    // header of 3 bytes: the data section starts at byte 11, not 4-aligned
    std::string dir = TempDir();
    std::string hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    std::string img = Image(hdr, 0);
    float v[2] = {1.5f, -2.0f};
    img.append((const char *)v, 8);
    ASSERT_NE((8 + hdr.size()) % 4, 0u);
    std::string p = dir + "/unaligned.safetensors";
    WriteAll(p, img);
    vt_safetensors *f = vt_st_open(p.c_str());
    ASSERT_VT(f);
    vt_tensor *t = vt_st_get(f, "a");
    ASSERT_VT(t);
    EXPECT_EQ((uintptr_t)vt_data(t) % 4, 0u);
    EXPECT_EQ(vt_f32(t)[0], 1.5f);
    EXPECT_EQ(vt_f32(t)[1], -2.0f);
    vt_release(t);
    EXPECT_EQ(vt_st_get(f, "b"), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_KEY);
    vt_st_close(f);
}

TEST(Safetensors, AtomicWriterKeepsOldFileOnFailure) {
    Releaser R;
    std::string dir = TempDir();
    std::string path = dir + "/keep.safetensors";
    vt_tensor *a = R(Make(VT_F32, {16}, 1));
    const char *n1[] = {"a"};
    ASSERT_VT_OK(vt_st_write(path.c_str(), 1, n1, &a, 0, nullptr, nullptr));
    std::string before = ReadAll(path);

    // duplicate names
    vt_tensor *two[] = {a, a};
    const char *dup[] = {"x", "x"};
    EXPECT_EQ(vt_st_write(path.c_str(), 2, dup, two, 0, nullptr, nullptr), VT_ERR_ARG);
    EXPECT_NE(strstr(vt_error_message(), "given twice"), nullptr) << vt_error_message();
    EXPECT_EQ(ReadAll(path), before);
    // duplicate metadata keys, reserved name
    const char *mk[] = {"k", "k"}, *mv[] = {"1", "2"};
    EXPECT_NE(vt_st_write(path.c_str(), 1, n1, &a, 2, mk, mv), VT_OK);
    const char *meta[] = {"__metadata__"};
    EXPECT_NE(vt_st_write(path.c_str(), 1, meta, &a, 0, nullptr, nullptr), VT_OK);
    EXPECT_EQ(ReadAll(path), before);

    // The file size limit makes the write fail half-way (EFBIG): the old file must survive
    // and the temp file must be gone.
    vt_tensor *big = R(Make(VT_F32, {1 << 18}, 2));
    struct rlimit old_lim;
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_lim), 0);
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old_lim;
    lim.rlim_cur = 64 * 1024;
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
    vt_err err = vt_st_write(path.c_str(), 1, n1, &big, 0, nullptr, nullptr);
    setrlimit(RLIMIT_FSIZE, &old_lim);
    signal(SIGXFSZ, old_sig);
    EXPECT_EQ(err, VT_ERR_IO);
    EXPECT_NE(strstr(vt_error_message(), path.c_str()), nullptr) << vt_error_message();
    EXPECT_EQ(ReadAll(path), before);
    EXPECT_EQ(CountTempFiles(dir), 0);

    // An unwritable directory (root ignores permissions: skip that part then).
    std::string ro = dir + "/ro";
    mkdir(ro.c_str(), 0755);
    std::string rpath = ro + "/f.safetensors";
    ASSERT_VT_OK(vt_st_write(rpath.c_str(), 1, n1, &a, 0, nullptr, nullptr));
    std::string rbefore = ReadAll(rpath);
    chmod(ro.c_str(), 0555);
    if (geteuid() != 0) {
        EXPECT_EQ(vt_st_write(rpath.c_str(), 1, n1, &big, 0, nullptr, nullptr), VT_ERR_IO);
        EXPECT_EQ(ReadAll(rpath), rbefore);
    }
    chmod(ro.c_str(), 0755);
    // A directory that does not exist.
    EXPECT_EQ(vt_st_write((dir + "/no/such/dir/f.safetensors").c_str(), 1, n1, &a, 0, nullptr, nullptr), VT_ERR_IO);
    EXPECT_EQ(CountTempFiles(dir), 0);
    EXPECT_EQ(CountTempFiles(ro), 0);

    // And a successful overwrite replaces the content.
    ASSERT_VT_OK(vt_st_write(path.c_str(), 1, n1, &big, 0, nullptr, nullptr));
    EXPECT_NE(ReadAll(path), before);
    EXPECT_EQ(CountTempFiles(dir), 0);
}
