// fixture.h — one reference case of shared/fixtures (see DESIGN.md "Fixtures"), as the
// fixture runner and the model tests read it: PREFIX.json (config, call, spec, io table),
// PREFIX.weights.safetensors (a weight store with the real key names) and
// PREFIX.io.safetensors (inputs, outputs, grad_out, grad.*, act.*).
#pragma once
#include <cjson/cJSON.h>
#include "weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_fixture {
    char *prefix;         // as given ("/path/shared/fixtures/vc2_unet_tiny")
    const char *name;     // basename of prefix ("vc2_unet_tiny")
    cJSON *json;          // the parsed PREFIX.json (owned)
    vt_weights *weights;  // PREFIX.weights.safetensors
    vt_safetensors *io;   // PREFIX.io.safetensors
} vt_fixture;

// Opens all three files; NULL + error naming the file at fault.
vt_fixture *vt_fixture_open(const char *path_prefix);
void vt_fixture_free(vt_fixture *f);

// ---- io tensors ---------------------------------------------------------------------------
int vt_fixture_io_has(const vt_fixture *f, const char *name);
// io tensor as f32 on the cpu (F32 entries zero-copy and read-only, others converted copies);
// NULL + VT_ERR_KEY naming the fixture and the tensor if absent.
vt_tensor *vt_fixture_io(vt_fixture *f, const char *name);
// io tensor in its stored dtype (e.g. the I64 tokens / timesteps), zero-copy.
vt_tensor *vt_fixture_io_raw(vt_fixture *f, const char *name);
// Names of the io tensors starting with prefix ("grad." -> every gradient; "" -> all), in
// file order. Returns the count; *names (may be NULL to only count) gets a malloc'ed array
// the caller frees (the strings belong to the fixture).
int vt_fixture_io_names(const vt_fixture *f, const char *prefix, const char ***names);

// ---- json ---------------------------------------------------------------------------------
// Value at a dotted path: "config.model_channels", "config.channel_mult.2" (numbers index
// arrays), "io.grad.z" (keys that themselves contain dots are matched whole, longest first).
// NULL (no error set) if absent.
const cJSON *vt_fixture_json(const vt_fixture *f, const char *path);
// Typed getters: VT_OK, or VT_ERR_CONFIG naming the fixture and the path when it is absent or
// of the wrong type. Integers must be integral numbers (true / false read as 1 / 0).
vt_err vt_fixture_json_int(const vt_fixture *f, const char *path, int64_t *out);
vt_err vt_fixture_json_double(const vt_fixture *f, const char *path, double *out);
// The string stays owned by the fixture.
vt_err vt_fixture_json_str(const vt_fixture *f, const char *path, const char **out);
// Array of integers into out[0..max); *n gets the length (error if longer than max).
vt_err vt_fixture_json_ints(const vt_fixture *f, const char *path, int64_t *out, int max, int *n);
// Same lookups on any cJSON node (configs nested in other documents).
const cJSON *vt_json_path(const cJSON *root, const char *path);

#ifdef __cplusplus
}
#endif
