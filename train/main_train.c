// vader-train — the training program. Until the training loop lands (issue 6) it runs the
// CPU self-check: a small LoRA'd MLP is built, its gradients are taken on the tape and
// compared with central differences, and a few AdamW-free SGD steps reduce a loss.
#include "core/vt.h"
#include <math.h>
#include <stdio.h>

static vt_tensor *mlp(vt_tensor *x, vt_tensor *w1, vt_tensor *A, vt_tensor *B, vt_tensor *w2) {
    vt_tensor *h = vt_linear_lora(x, w1, NULL, A, B, 1.0f);
    vt_tensor *h2 = vt_square(h);
    vt_tensor *y = vt_linear(h2, w2, NULL);
    vt_tensor *l = vt_square(y);
    vt_release(h);
    vt_release(h2);
    vt_release(y);
    return l;
}

static double sum_all(const vt_tensor *t) {
    double s = 0;
    for (int64_t i = 0; i < t->numel; i++) s += vt_f32(t)[i];
    return s;
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("vader self-check (CPU): the training loop is not built yet; checking the engine core\n");
    vt_rng r;
    vt_rng_seed(&r, 1);
    vt_tensor *x = vt_new_f32(VT_DIMS(8, 16)), *w1 = vt_new_f32(VT_DIMS(32, 16)), *w2 = vt_new_f32(VT_DIMS(4, 32));
    vt_tensor *A = vt_new_f32(VT_DIMS(4, 16)), *B = vt_new_f32(VT_DIMS(32, 4));
    vt_fill_normal(x, &r, 0, 1);
    vt_fill_normal(w1, &r, 0, 0.25f);
    vt_fill_normal(w2, &r, 0, 0.2f);
    vt_fill_normal(A, &r, 0, 0.25f);
    vt_fill_normal(B, &r, 0, 0.1f);
    vt_requires_grad(A, 1);
    vt_requires_grad(B, 1);
    int fail = 0;
    // gradient check on A[0]
    vt_tape *t = vt_tape_begin();
    vt_tensor *l = mlp(x, w1, A, B, w2);
    vt_tensor *s = vt_sum(l);
    vt_tape_end(t);
    if (!s || vt_backward(t, s, NULL) != VT_OK) {
        fprintf(stderr, "vader-train: %s\n", vt_error_message());
        return 1;
    }
    vt_tape_free(t);
    double an = vt_f32(A->grad)[0];
    float orig = vt_f32(A)[0], h = 1e-2f;
    vt_f32(A)[0] = orig + h;
    vt_tensor *lp = mlp(x, w1, A, B, w2);
    vt_f32(A)[0] = orig - h;
    vt_tensor *lm = mlp(x, w1, A, B, w2);
    vt_f32(A)[0] = orig;
    double num = (sum_all(lp) - sum_all(lm)) / (2 * h);
    printf("  d loss / d lora_A[0]: tape %.6f, finite difference %.6f\n", an, num);
    if (fabs(an - num) > 1e-2 * fmax(1.0, fabs(num))) fail = 1;
    vt_release(lp);
    vt_release(lm);
    double first = sum_all(l), last = first;
    vt_release(l);
    vt_release(s);
    for (int step = 0; step < 20; step++) {
        vt_zero_grad(A);
        vt_zero_grad(B);
        t = vt_tape_begin();
        l = mlp(x, w1, A, B, w2);
        s = vt_sum(l);
        vt_tape_end(t);
        if (!s || vt_backward(t, s, NULL) != VT_OK) {
            fprintf(stderr, "vader-train: %s\n", vt_error_message());
            return 1;
        }
        vt_tape_free(t);
        last = vt_f32(s)[0];
        for (int64_t i = 0; i < A->numel; i++) vt_f32(A)[i] -= 1e-3f * vt_f32(A->grad)[i];
        for (int64_t i = 0; i < B->numel; i++) vt_f32(B)[i] -= 1e-3f * vt_f32(B->grad)[i];
        vt_release(l);
        vt_release(s);
    }
    printf("  SGD on the LoRA factors: loss %.5f -> %.5f\n", first, last);
    if (!(last < first)) fail = 1;
    vt_release(x); vt_release(w1); vt_release(w2); vt_release(A); vt_release(B);
    printf(fail ? "self-check FAILED\n" : "self-check passed\n");
    return fail;
}
