// lora_compare RTOL REF OTHER... — compares f32 safetensors files tensor by tensor (the LoRA
// files of tests/mpi/run_train_dist_test.sh). Every file must have REF's tensor names and shapes;
// a tensor passes when max|a - b| <= RTOL * max|a| (RTOL 0: bit for bit). Prints the worst
// relative difference per file; exits 1 on any mismatch.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/safetensors.h"
#include "core/tensor.h"

static int compare(vt_safetensors *ref, vt_safetensors *other, double rtol) {
    int bad = 0;
    double worst = 0;
    if (other->n != ref->n) {
        printf("%s: %d tensors, %s has %d\n", other->path, other->n, ref->path, ref->n);
        return 1;
    }
    for (int i = 0; i < ref->n && !bad; i++) {
        const char *name = ref->entries[i].name;
        vt_tensor *a = vt_st_get(ref, name), *b = vt_st_get(other, name);
        if (!a || !b || a->dtype != VT_F32 || b->dtype != VT_F32 || a->numel != b->numel) {
            printf("%s: %s missing, not f32 or of another size\n", other->path, name);
            bad = 1;
        } else {
            const float *pa = vt_f32(a), *pb = vt_f32(b);
            double amax = 0, dmax = 0;
            int same = memcmp(pa, pb, sizeof(float) * (size_t)a->numel) == 0;
            for (int64_t k = 0; k < a->numel; k++) {
                amax = fmax(amax, fabs((double)pa[k]));
                dmax = fmax(dmax, fabs((double)pa[k] - (double)pb[k]));
            }
            double rel = amax > 0 ? dmax / amax : dmax;
            if (rel > worst) worst = rel;
            if (rtol == 0 ? !same : !(rel <= rtol)) {
                printf("%s: %s differs: max |a - b| %.3g, max |a| %.3g, relative %.3g > %.3g\n", other->path, name, dmax,
                       amax, rel, rtol);
                bad = 1;
            }
        }
        vt_release(a);
        vt_release(b);
    }
    printf("%s vs %s: %d tensors, worst relative difference %.3g (tolerance %.3g): %s\n", other->path, ref->path,
           ref->n, worst, rtol, bad ? "FAIL" : "ok");
    return bad;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: lora_compare RTOL REF OTHER...\n");
        return 2;
    }
    double rtol = atof(argv[1]);
    vt_safetensors *ref = vt_st_open(argv[2]);
    if (!ref) {
        printf("%s: %s\n", argv[2], vt_error_message());
        return 1;
    }
    int bad = 0;
    for (int i = 3; i < argc; i++) {
        vt_safetensors *o = vt_st_open(argv[i]);
        if (!o) {
            printf("%s: %s\n", argv[i], vt_error_message());
            bad = 1;
            continue;
        }
        bad |= compare(ref, o, rtol);
        vt_st_close(o);
    }
    vt_st_close(ref);
    return bad;
}
