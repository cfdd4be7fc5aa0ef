// fuzz_safetensors.c — libFuzzer target for the safetensors header parser: any byte string is
// taken as a whole file image; the parser must either accept it (and then every entry must
// lie inside the image, be findable by name, and the metadata be readable) or fail with an
// error, never crash, leak or read out of bounds. Built with -DVADER_FUZZ=ON and clang:
//   CC=clang BUILD_DIR=build-fuzz scripts/build.sh -DVADER_FUZZ=ON -DVADER_CUDA=OFF
//   build-fuzz/bin/fuzz_safetensors -max_total_time=120 corpus/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "core/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vt_safetensors *f = vt_st_parse_buffer(data, size, "fuzz");
    if (!f) {
        // A failure always carries a message.
        if (vt_error_code() == VT_OK || vt_error_message()[0] == 0) abort();
        vt_error_clear();
        return 0;
    }
    size_t data_size = size - f->data_start;
    for (int i = 0; i < f->n; i++) {
        const vt_st_entry *e = &f->entries[i];
        if (e->begin > e->end || e->end > data_size) abort();
        if (e->ndim < 0 || e->ndim > VT_MAX_DIMS) abort();
        if ((e->end - e->begin) != (size_t)vt_dim_prod(e->ndim, e->shape) * vt_dtype_size(e->dtype)) abort();
        if (vt_st_find(f, e->name) != e) abort();
        // touch the bytes: ASan catches anything outside the image
        volatile uint8_t sink = 0;
        if (e->end > e->begin) sink ^= data[f->data_start + e->begin] ^ data[f->data_start + e->end - 1];
        (void)sink;
    }
    for (int i = 0; i < f->n_meta; i++)
        if (vt_st_metadata(f, f->meta_keys[i]) == NULL) abort();
    vt_st_close(f);
    return 0;
}
