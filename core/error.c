// error.c — thread-local error state (see error.h).
#include "error.h"
#include <stdio.h>
#include <string.h>

#define VT_ERROR_MAX 4096
static _Thread_local vt_err g_code = VT_OK;
static _Thread_local char g_msg[VT_ERROR_MAX];

vt_err vt_error(vt_err code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    g_code = code;
    return code;
}

vt_err vt_error_context(const char *fmt, ...) {
    char prefix[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[VT_ERROR_MAX];
    memcpy(old, g_msg, sizeof old);
    size_t k = strlen(prefix);
    memcpy(g_msg, prefix, k);
    size_t rest = strlen(old);
    if (k + rest >= sizeof g_msg) rest = sizeof g_msg - k - 1;
    memcpy(g_msg + k, old, rest);
    g_msg[k + rest] = 0;
    if (g_code == VT_OK) g_code = VT_ERR_INTERNAL;
    return g_code;
}

vt_err vt_error_code(void) { return g_code; }
const char *vt_error_message(void) { return g_msg; }
void vt_error_clear(void) { g_code = VT_OK; g_msg[0] = 0; }

const char *vt_err_name(vt_err code) {
    switch (code) {
    case VT_OK: return "ok";
    case VT_ERR_SHAPE: return "shape error";
    case VT_ERR_DTYPE: return "dtype error";
    case VT_ERR_OOM: return "out of memory";
    case VT_ERR_IO: return "i/o error";
    case VT_ERR_FORMAT: return "format error";
    case VT_ERR_KEY: return "key error";
    case VT_ERR_CONFIG: return "config error";
    case VT_ERR_ARG: return "argument error";
    case VT_ERR_NUMERIC: return "numeric error";
    case VT_ERR_DEVICE: return "device error";
    case VT_ERR_INTERNAL: return "internal error";
    }
    return "unknown error";
}
