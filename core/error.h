// error.h — the one error type of vader: a code plus a message naming the file, key, op or
// shape at fault. Library code never exits or aborts: it sets the error and returns it
// (or NULL for functions returning a pointer); programs print vt_error_message() and exit.
#pragma once
#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vt_err {
    VT_OK = 0,
    VT_ERR_SHAPE,     // tensor shapes do not fit the op / model
    VT_ERR_DTYPE,     // dtype or device combination not supported
    VT_ERR_OOM,       // allocation failed
    VT_ERR_IO,        // file could not be opened / read / written
    VT_ERR_FORMAT,    // a file's content is malformed (safetensors, json, yaml, gz)
    VT_ERR_KEY,       // a missing, unexpected or mis-shaped weight / config key
    VT_ERR_CONFIG,    // a config value is invalid
    VT_ERR_ARG,       // a bad argument to an API function
    VT_ERR_NUMERIC,   // NaN / Inf where a finite value is needed
    VT_ERR_DEVICE,    // CUDA / cuBLAS / cuDNN / NCCL failure or no device
    VT_ERR_INTERNAL,  // a bug in vader
} vt_err;

// Sets the thread's current error and returns code (so `return vt_error(...)` reads well).
vt_err vt_error(vt_err code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Prepends context ("loading unet.safetensors: ") to the current message; returns the code.
vt_err vt_error_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
vt_err vt_error_code(void);
const char *vt_error_message(void);
const char *vt_err_name(vt_err code);
void vt_error_clear(void);

#ifdef __cplusplus
}
#endif
