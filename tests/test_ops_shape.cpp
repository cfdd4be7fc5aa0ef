// test_ops_shape.cpp — permute, concat, slice, repeat_interleave, embedding and gather_rows:
// forward values against index arithmetic written here, gradients against finite
// differences, shape / range errors by message.
#include "testutil.h"
#include <cstring>

namespace {

vt_tensor *Ids(std::vector<int64_t> shape, std::vector<int64_t> vals) {
    vt_tensor *t = vt_empty(VT_I64, VT_CPU, (int)shape.size(), shape.data());
    std::memcpy(vt_data(t), vals.data(), vals.size() * sizeof(int64_t));
    return t;
}

// Row-major flat index of a multi-index.
int64_t Flat(const vt_tensor *t, std::vector<int64_t> idx) {
    int64_t f = 0;
    for (int i = 0; i < t->ndim; i++) f = f * t->shape[i] + idx[i];
    return f;
}

}  // namespace

TEST(Permute, ForwardAndGradient) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 4}, 1));
    const int perm[3] = {2, 0, 1};
    vt_tensor *y = R(vt_permute(x, 3, perm));
    ASSERT_VT(y);
    ASSERT_EQ(y->shape[0], 4);
    ASSERT_EQ(y->shape[1], 2);
    ASSERT_EQ(y->shape[2], 3);
    for (int64_t a = 0; a < 2; a++)
        for (int64_t b = 0; b < 3; b++)
            for (int64_t c = 0; c < 4; c++)
                EXPECT_EQ(vt_f32(y)[Flat(y, {c, a, b})], vt_f32(x)[Flat(x, {a, b, c})]);
    vt_requires_grad(x, 1);
    ExpectGradsMatch([](auto &in) {
        const int p[3] = {1, 2, 0};
        return vt_permute(in[0], 3, p);
    }, {x});
}

TEST(Permute, FiveDimsVideoLayouts) {
    // [b, c, t, h, w] -> [b, h, w, t, c] (temporal tokens) and back is the identity
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 4, 2, 3}, 2));
    const int to_tokens[5] = {0, 3, 4, 2, 1}, back[5] = {0, 4, 3, 1, 2};
    vt_tensor *y = R(vt_permute(x, 5, to_tokens));
    ASSERT_VT(y);
    for (int64_t b = 0; b < 2; b++)
        for (int64_t c = 0; c < 3; c++)
            for (int64_t t = 0; t < 4; t++)
                for (int64_t h = 0; h < 2; h++)
                    for (int64_t w = 0; w < 3; w++)
                        ASSERT_EQ(vt_f32(y)[Flat(y, {b, h, w, t, c})], vt_f32(x)[Flat(x, {b, c, t, h, w})]);
    vt_tensor *z = R(vt_permute(y, 5, back));
    ASSERT_VT(z);
    EXPECT_TRUE(vt_same_shape(z, x));
    EXPECT_EQ(0, std::memcmp(vt_data(z), vt_data(x), vt_nbytes(x)));
    vt_tensor *s = R(RandN({2, 2, 3, 2, 2}, 3));
    vt_requires_grad(s, 1);
    ExpectGradsMatch([&](auto &in) { return vt_permute(in[0], 5, to_tokens); }, {s});
}

TEST(Permute, Errors) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 4}, 1));
    const int dup[3] = {0, 0, 1};
    EXPECT_EQ(vt_permute(x, 3, dup), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "permute: (0, 0, 1) is not a permutation of the 3 dims of [2, 3, 4]"),
              nullptr)
        << vt_error_message();
    const int two[2] = {1, 0};
    EXPECT_EQ(vt_permute(x, 2, two), nullptr);
    EXPECT_EQ(vt_permute(nullptr, 2, two), nullptr);
}

TEST(Concat, ForwardAndGradients) {
    Releaser R;
    vt_tensor *a = R(RandN({2, 1, 3}, 1)), *b = R(RandN({2, 4, 3}, 2)), *c = R(RandN({2, 2, 3}, 3));
    vt_tensor *xs[3] = {a, b, c};
    vt_tensor *y = R(vt_concat(xs, 3, 1));
    ASSERT_VT(y);
    ASSERT_EQ(y->shape[1], 7);
    for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 7; j++)
            for (int64_t k = 0; k < 3; k++) {
                float ref = j < 1 ? vt_f32(a)[Flat(a, {i, j, k})]
                          : j < 5 ? vt_f32(b)[Flat(b, {i, j - 1, k})]
                                  : vt_f32(c)[Flat(c, {i, j - 5, k})];
                EXPECT_EQ(vt_f32(y)[Flat(y, {i, j, k})], ref);
            }
    for (auto *t : {a, b, c}) vt_requires_grad(t, 1);
    ExpectGradsMatch([](auto &in) { return vt_concat(in.data(), 3, -2); }, {a, b, c});
    // along the first and the last dim
    vt_tensor *d = R(RandN({3, 3}, 4)), *e = R(RandN({1, 3}, 5)), *f = R(RandN({3, 2}, 6));
    for (auto *t : {d, e, f}) vt_requires_grad(t, 1);
    ExpectGradsMatch([](auto &in) { return vt_concat(in.data(), 2, 0); }, {d, e});
    ExpectGradsMatch([](auto &in) { return vt_concat(in.data(), 2, 1); }, {d, f});
}

TEST(Concat, MoreInputsThanANodeHolds) {
    Releaser R;
    std::vector<vt_tensor *> xs;
    for (int i = 0; i < 11; i++) {
        xs.push_back(R(RandN({2, 1 + i % 3}, 10 + i)));
        vt_requires_grad(xs.back(), 1);
    }
    vt_tensor *y = R(vt_concat(xs.data(), 11, 1));
    ASSERT_VT(y);
    int64_t col = 0;
    for (auto *x : xs) {
        for (int64_t r = 0; r < 2; r++)
            for (int64_t j = 0; j < x->shape[1]; j++)
                EXPECT_EQ(vt_f32(y)[r * y->shape[1] + col + j], vt_f32(x)[r * x->shape[1] + j]);
        col += x->shape[1];
    }
    EXPECT_EQ(col, y->shape[1]);
    GradCheckOptions o;
    o.max_elems = 4;
    ExpectGradsMatch([](auto &in) { return vt_concat(in.data(), (int)in.size(), 1); }, xs, o);
}

TEST(Concat, Errors) {
    Releaser R;
    vt_tensor *a = R(RandN({2, 3}, 1)), *b = R(RandN({3, 3}, 2));
    vt_tensor *xs[2] = {a, b};
    EXPECT_EQ(vt_concat(xs, 2, 1), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "concat: input 1 f32 [3, 3] does not match input 0 f32 [2, 3] outside dim 1"),
              nullptr)
        << vt_error_message();
    EXPECT_EQ(vt_concat(xs, 2, 2), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "concat: dim 2 out of range for [2, 3]"), nullptr) << vt_error_message();
    vt_tensor *ys[2] = {a, nullptr};
    EXPECT_EQ(vt_concat(ys, 2, 0), nullptr);
}

TEST(Slice, ForwardGradientAndErrors) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 5, 3}, 1));
    vt_tensor *y = R(vt_slice(x, 1, 1, 3));
    ASSERT_VT(y);
    ASSERT_EQ(y->shape[1], 3);
    for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 3; j++)
            for (int64_t k = 0; k < 3; k++) EXPECT_EQ(vt_f32(y)[Flat(y, {i, j, k})], vt_f32(x)[Flat(x, {i, j + 1, k})]);
    vt_requires_grad(x, 1);
    ExpectGradsMatch([](auto &in) { return vt_slice(in[0], 1, 1, 3); }, {x});
    ExpectGradsMatch([](auto &in) { return vt_slice(in[0], -1, 2, 1); }, {x});
    ExpectGradsMatch([](auto &in) { return vt_slice(in[0], 0, 1, 1); }, {x});
    EXPECT_EQ(vt_slice(x, 1, 3, 3), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "slice: [3, 6) out of range for dim 1 of [2, 5, 3]"), nullptr)
        << vt_error_message();
    // ids slice too (any dtype is copied)
    vt_tensor *ids = R(Ids({4}, {7, 8, 9, 10}));
    vt_tensor *s = R(vt_slice(ids, 0, 2, 2));
    ASSERT_VT(s);
    EXPECT_EQ(s->dtype, VT_I64);
    EXPECT_EQ(vt_i64(s)[0], 9);
    EXPECT_EQ(vt_i64(s)[1], 10);
}

TEST(RepeatInterleave, ForwardAndGradient) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 2}, 1));
    vt_tensor *y = R(vt_repeat_interleave(x, 1, 3));
    ASSERT_VT(y);
    ASSERT_EQ(y->shape[1], 9);
    for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 9; j++)
            for (int64_t k = 0; k < 2; k++) EXPECT_EQ(vt_f32(y)[Flat(y, {i, j, k})], vt_f32(x)[Flat(x, {i, j / 3, k})]);
    vt_requires_grad(x, 1);
    ExpectGradsMatch([](auto &in) { return vt_repeat_interleave(in[0], 1, 3); }, {x});
    ExpectGradsMatch([](auto &in) { return vt_repeat_interleave(in[0], 0, 2); }, {x});
    ExpectGradsMatch([](auto &in) { return vt_repeat_interleave(in[0], -1, 2); }, {x});
    EXPECT_EQ(vt_repeat_interleave(x, 3, 2), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "repeat_interleave: dim 3 out of range for [2, 3, 2]"), nullptr)
        << vt_error_message();
}

TEST(Embedding, ForwardGradientAndRange) {
    Releaser R;
    vt_tensor *w = R(RandN({6, 4}, 1));
    vt_tensor *ids = R(Ids({2, 3}, {5, 0, 2, 2, 5, 1}));  // repeated ids sum their gradients
    vt_tensor *y = R(vt_embedding(w, ids));
    ASSERT_VT(y);
    ASSERT_EQ(y->ndim, 3);
    ASSERT_EQ(y->shape[2], 4);
    for (int64_t m = 0; m < 6; m++)
        for (int64_t c = 0; c < 4; c++) EXPECT_EQ(vt_f32(y)[m * 4 + c], vt_f32(w)[vt_i64(ids)[m] * 4 + c]);
    vt_requires_grad(w, 1);
    ExpectGradsMatch([](auto &in) { return vt_embedding(in[0], in[1]); }, {w, ids});
    // rows never looked up get an exact zero gradient
    vt_tape *t = vt_tape_begin();
    vt_tensor *y2 = R(vt_embedding(w, ids));
    vt_tape_end(t);
    ASSERT_VT_OK(vt_backward(t, y2, nullptr));
    vt_tape_free(t);
    for (int64_t c = 0; c < 4; c++) {
        EXPECT_EQ(vt_f32(w->grad)[3 * 4 + c], 0.0f);
        EXPECT_EQ(vt_f32(w->grad)[2 * 4 + c], 2.0f);
    }
    vt_zero_grad(w);
    vt_tensor *bad = R(Ids({3}, {1, 6, 0}));
    EXPECT_EQ(vt_embedding(w, bad), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "embedding: id 6 (at position 1) out of range for V = 6"), nullptr)
        << vt_error_message();
    vt_tensor *fl = R(RandN({3}, 2));
    EXPECT_EQ(vt_embedding(w, fl), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "ids f32 [3]"), nullptr) << vt_error_message();
    EXPECT_EQ(vt_embedding(w, nullptr), nullptr);
}

TEST(GatherRows, ForwardGradientAndErrors) {
    Releaser R;
    vt_tensor *x = R(RandN({3, 5, 4}, 1));
    vt_tensor *idx = R(Ids({3}, {4, 0, 2}));
    vt_tensor *y = R(vt_gather_rows(x, idx));
    ASSERT_VT(y);
    ASSERT_EQ(y->ndim, 2);
    for (int64_t b = 0; b < 3; b++)
        for (int64_t c = 0; c < 4; c++) EXPECT_EQ(vt_f32(y)[b * 4 + c], vt_f32(x)[Flat(x, {b, vt_i64(idx)[b], c})]);
    vt_requires_grad(x, 1);
    ExpectGradsMatch([](auto &in) { return vt_gather_rows(in[0], in[1]); }, {x, idx});
    vt_tensor *bad = R(Ids({3}, {4, 5, 0}));
    EXPECT_EQ(vt_gather_rows(x, bad), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "gather_rows: index 5 (at position 1) out of range for L = 5"), nullptr)
        << vt_error_message();
    vt_tensor *short_idx = R(Ids({2}, {0, 1}));
    EXPECT_EQ(vt_gather_rows(x, short_idx), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "gather_rows: x [3, 5, 4], index i64 [2]"), nullptr) << vt_error_message();
}
