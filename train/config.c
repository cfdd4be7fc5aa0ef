// config.c — YAML configs into vt_config (see config.h, configs/README.md).
//
// libyaml's document API gives a node tree with source marks; one table (k_fields) names
// every field with its type, place in the struct and allowed range. The same table drives
// loading, --set overrides, range validation and the dump, so a field is declared once.
#include "train/config.h"
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define MAX_REWARDS 64
#define MAX_OPTIONS 64

// ---- enum names ------------------------------------------------------------------------
static const char *const k_dtype_names[] = {"auto", "fp32", "bf16", "fp16", NULL};
static const char *const k_backprop_names[] = {"last", "rand", "specific", NULL};
static const char *const k_schedule_names[] = {"constant", "warmup", "cosine", NULL};
static const char *const k_dist_names[] = {"auto", "nccl", "mpi", "none", NULL};
static const char *const k_device_names[] = {"auto", "cpu", "cuda", NULL};
static const char *const k_reward_names[] = {"aesthetic", "hps", "hpsv21", "pickscore",
                                             "object_removal", "action", "temporal", "color", NULL};
static const char *const k_decode_names[] = {"-1", "fml", "alt", "all", "index", NULL};

static const char *enum_name(const char *const *names, int v) {
    for (int i = 0; names[i]; i++)
        if (i == v) return names[i];
    return "?";
}
const char *vt_cfg_reward_name(vt_cfg_reward_kind k) { return enum_name(k_reward_names, (int)k); }
const char *vt_cfg_backprop_name(vt_cfg_backprop m) { return enum_name(k_backprop_names, (int)m); }
const char *vt_cfg_decode_name(vt_cfg_decode d) { return enum_name(k_decode_names, (int)d); }
const char *vt_cfg_schedule_name(vt_cfg_schedule s) { return enum_name(k_schedule_names, (int)s); }
const char *vt_cfg_dist_name(vt_cfg_dist d) { return enum_name(k_dist_names, (int)d); }
const char *vt_cfg_device_name(vt_cfg_device d) { return enum_name(k_device_names, (int)d); }
const char *vt_cfg_dtype_name(vt_cfg_dtype d) { return enum_name(k_dtype_names, (int)d); }

// ---- the field table ---------------------------------------------------------------------
typedef enum ftype {
    FT_STR,      // char *, NULL = unset
    FT_BOOL,     // bool
    FT_INT,      // int, range [lo, hi]
    FT_U64,      // uint64_t
    FT_DOUBLE,   // double, finite, range lo/hi (open ends where flagged)
    FT_ENUM,     // int-sized enum, names
    FT_STRLIST,  // char ** at off, int count at off_n
    FT_DECODE,   // vt_cfg_decode at off, int index at off_n
    FT_REWARDS,  // the reward module list (top level)
    FT_OPTIONS,  // vt_config_kv * at off, int count at off_n (reward module)
} ftype;

typedef struct field {
    const char *path;  // "model.unet"; reward module fields: "name", "weight", ...
    ftype type;
    size_t off, off_n;
    const char *const *names;
    double lo, hi;
    bool lo_open, hi_open;
} field;

#define OFF(m) offsetof(vt_config, m)
#define BIG 1e300
static const field k_fields[] = {
    {.path = "model.unet", .type = FT_STR, .off = OFF(model.unet)},
    {.path = "model.vae", .type = FT_STR, .off = OFF(model.vae)},
    {.path = "model.text", .type = FT_STR, .off = OFF(model.text)},
    {.path = "model.random_weights", .type = FT_BOOL, .off = OFF(model.random_weights)},
    {.path = "model.dtype", .type = FT_ENUM, .off = OFF(model.dtype), .names = k_dtype_names},
    {.path = "model.height", .type = FT_INT, .off = OFF(model.height), .lo = 8, .hi = 16384},
    {.path = "model.width", .type = FT_INT, .off = OFF(model.width), .lo = 8, .hi = 16384},
    {.path = "model.frames", .type = FT_INT, .off = OFF(model.frames), .lo = 1, .hi = 4096},
    {.path = "model.fps", .type = FT_INT, .off = OFF(model.fps), .lo = 1, .hi = 1000},
    {.path = "sampler.steps", .type = FT_INT, .off = OFF(sampler.steps), .lo = 1, .hi = 1000},
    {.path = "sampler.eta", .type = FT_DOUBLE, .off = OFF(sampler.eta), .lo = 0, .hi = BIG},
    {.path = "sampler.guidance_scale", .type = FT_DOUBLE, .off = OFF(sampler.guidance_scale), .lo = 0, .hi = BIG},
    {.path = "sampler.backprop_steps", .type = FT_INT, .off = OFF(sampler.backprop_steps), .lo = 1, .hi = 1000},
    {.path = "sampler.backprop_mode", .type = FT_ENUM, .off = OFF(sampler.backprop_mode), .names = k_backprop_names},
    {.path = "sampler.backprop_step", .type = FT_INT, .off = OFF(sampler.backprop_step), .lo = 0, .hi = 999},
    {.path = "lora.rank", .type = FT_INT, .off = OFF(lora.rank), .lo = 1, .hi = 65536},
    {.path = "lora.alpha", .type = FT_DOUBLE, .off = OFF(lora.alpha), .lo = 0, .hi = BIG, .lo_open = true},
    {.path = "lora.dropout", .type = FT_DOUBLE, .off = OFF(lora.dropout), .lo = 0, .hi = 1, .hi_open = true},
    {.path = "lora.targets", .type = FT_STRLIST, .off = OFF(lora.targets), .off_n = OFF(lora.n_targets)},
    {.path = "lora.checkpoint", .type = FT_STR, .off = OFF(lora.checkpoint)},
    {.path = "reward", .type = FT_REWARDS, .off = OFF(reward.modules), .off_n = OFF(reward.n_modules)},
    {.path = "optim.lr", .type = FT_DOUBLE, .off = OFF(optim.lr), .lo = 0, .hi = BIG, .lo_open = true},
    {.path = "optim.beta1", .type = FT_DOUBLE, .off = OFF(optim.beta1), .lo = 0, .hi = 1, .hi_open = true},
    {.path = "optim.beta2", .type = FT_DOUBLE, .off = OFF(optim.beta2), .lo = 0, .hi = 1, .hi_open = true},
    {.path = "optim.weight_decay", .type = FT_DOUBLE, .off = OFF(optim.weight_decay), .lo = 0, .hi = BIG},
    {.path = "optim.eps", .type = FT_DOUBLE, .off = OFF(optim.eps), .lo = 0, .hi = BIG, .lo_open = true},
    {.path = "optim.grad_clip", .type = FT_DOUBLE, .off = OFF(optim.grad_clip), .lo = 0, .hi = BIG},
    {.path = "optim.accumulation", .type = FT_INT, .off = OFF(optim.accumulation), .lo = 1, .hi = INT_MAX},
    {.path = "optim.steps", .type = FT_INT, .off = OFF(optim.steps), .lo = 1, .hi = INT_MAX},
    {.path = "optim.schedule", .type = FT_ENUM, .off = OFF(optim.schedule), .names = k_schedule_names},
    {.path = "optim.warmup_steps", .type = FT_INT, .off = OFF(optim.warmup_steps), .lo = 0, .hi = INT_MAX},
    {.path = "optim.max_bad_steps", .type = FT_INT, .off = OFF(optim.max_bad_steps), .lo = 1, .hi = INT_MAX},
    {.path = "memory.checkpointing", .type = FT_BOOL, .off = OFF(memory.checkpointing)},
    {.path = "memory.decode_frames", .type = FT_DECODE, .off = OFF(memory.decode_frames), .off_n = OFF(memory.decode_index)},
    {.path = "memory.offload", .type = FT_BOOL, .off = OFF(memory.offload)},
    {.path = "memory.saved_dtype", .type = FT_ENUM, .off = OFF(memory.saved_dtype), .names = k_dtype_names},
    {.path = "data.prompt_file", .type = FT_STR, .off = OFF(data.prompt_file)},
    {.path = "data.prompts", .type = FT_STRLIST, .off = OFF(data.prompts), .off_n = OFF(data.n_prompts)},
    {.path = "data.eval_prompts", .type = FT_STRLIST, .off = OFF(data.eval_prompts), .off_n = OFF(data.n_eval_prompts)},
    {.path = "data.batch_size", .type = FT_INT, .off = OFF(data.batch_size), .lo = 1, .hi = 4096},
    {.path = "data.global_batch_size", .type = FT_INT, .off = OFF(data.global_batch_size), .lo = 0, .hi = INT_MAX},
    {.path = "dist.backend", .type = FT_ENUM, .off = OFF(dist.backend), .names = k_dist_names},
    {.path = "dist.timeout", .type = FT_DOUBLE, .off = OFF(dist.timeout), .lo = 0, .hi = BIG},
    {.path = "output.dir", .type = FT_STR, .off = OFF(output.dir)},
    {.path = "output.checkpoint_every", .type = FT_INT, .off = OFF(output.checkpoint_every), .lo = 0, .hi = INT_MAX},
    {.path = "output.eval_every", .type = FT_INT, .off = OFF(output.eval_every), .lo = 0, .hi = INT_MAX},
    {.path = "output.log_every", .type = FT_INT, .off = OFF(output.log_every), .lo = 0, .hi = INT_MAX},
    {.path = "seed", .type = FT_U64, .off = OFF(seed)},
    {.path = "device", .type = FT_ENUM, .off = OFF(device), .names = k_device_names},
};
#define N_FIELDS ((int)(sizeof k_fields / sizeof k_fields[0]))

#define ROFF(m) offsetof(vt_config_reward, m)
static const field k_reward_fields[] = {
    {.path = "name", .type = FT_ENUM, .off = ROFF(kind), .names = k_reward_names},
    {.path = "weight", .type = FT_DOUBLE, .off = ROFF(weight), .lo = 0, .hi = BIG, .lo_open = true},
    {.path = "checkpoint", .type = FT_STR, .off = ROFF(checkpoint)},
    {.path = "options", .type = FT_OPTIONS, .off = ROFF(options), .off_n = ROFF(n_options)},
};
#define N_REWARD_FIELDS ((int)(sizeof k_reward_fields / sizeof k_reward_fields[0]))

static const char *const k_sections[] = {"model", "sampler", "lora", "optim", "memory",
                                         "data", "dist", "output", NULL};

static const field *find_field(const field *tab, int n, const char *path) {
    for (int i = 0; i < n; i++)
        if (strcmp(tab[i].path, path) == 0) return &tab[i];
    return NULL;
}
static bool is_section(const char *name) {
    for (int i = 0; k_sections[i]; i++)
        if (strcmp(k_sections[i], name) == 0) return true;
    return false;
}

// ---- small helpers ---------------------------------------------------------------------
static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static void free_strlist(char **list, int n) {
    if (!list) return;
    for (int i = 0; i < n; i++) free(list[i]);
    free(list);
}

static void free_options(vt_config_kv *kv, int n) {
    if (!kv) return;
    for (int i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

static void free_reward(vt_config_reward *r) {
    free(r->checkpoint);
    free_options(r->options, r->n_options);
    memset(r, 0, sizeof *r);
}

static void free_rewards(vt_config_reward *r, int n) {
    if (!r) return;
    for (int i = 0; i < n; i++) free_reward(&r[i]);
    free(r);
}

static void reward_init(vt_config_reward *r) {
    memset(r, 0, sizeof *r);
    r->kind = VT_CFG_REWARD_COUNT;  // unset: a module must be named
    r->weight = 1.0;
}

// A short printable rendering of a scalar for messages: "fast", with escapes, truncated.
static void quote_text(char *buf, size_t cap, const char *s, size_t len) {
    size_t o = 0;
    const size_t limit = 48;
    buf[o++] = '"';
    for (size_t i = 0; i < len && o + 8 < cap; i++) {
        if (i == limit) {
            o += (size_t)snprintf(buf + o, cap - o, "...");
            break;
        }
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", ch);
        } else {
            buf[o++] = (char)ch;
        }
    }
    if (o + 2 > cap) o = cap - 2;
    buf[o++] = '"';
    buf[o] = 0;
}

// ---- context and errors ----------------------------------------------------------------
typedef struct ctx {
    const char *name;        // file name, "<string>", or "--set a.b=c"
    yaml_document_t *doc;
    bool marks;              // node marks are meaningful (false for --set values)
} ctx;

static vt_err cfg_error(const ctx *c, const yaml_node_t *n, vt_err code, const char *path,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static vt_err cfg_error(const ctx *c, const yaml_node_t *n, vt_err code, const char *path,
                        const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->marks && n)
        return vt_error(code, "%s:%lu:%lu: %s%s%s", c->name, (unsigned long)n->start_mark.line + 1,
                        (unsigned long)n->start_mark.column + 1, path ? path : "", path ? ": " : "", msg);
    return vt_error(code, "%s: %s%s%s", c->name, path ? path : "", path ? ": " : "", msg);
}

static void describe(char *buf, size_t cap, const yaml_node_t *n) {
    if (!n) {
        snprintf(buf, cap, "nothing");
    } else if (n->type == YAML_SCALAR_NODE) {
        quote_text(buf, cap, (const char *)n->data.scalar.value, n->data.scalar.length);
    } else if (n->type == YAML_MAPPING_NODE) {
        snprintf(buf, cap, "a mapping");
    } else if (n->type == YAML_SEQUENCE_NODE) {
        snprintf(buf, cap, "a list");
    } else {
        snprintf(buf, cap, "an empty node");
    }
}

static vt_err type_error(const ctx *c, const yaml_node_t *n, const char *path, const char *expected) {
    char got[160];
    describe(got, sizeof got, n);
    return cfg_error(c, n, VT_ERR_CONFIG, path, "expected %s, got %s", expected, got);
}

static const char *scalar(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }
static bool is_plain(const yaml_node_t *n) { return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE; }
static bool is_null(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || !is_plain(n)) return false;
    const char *s = scalar(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}
static bool has_nul(const yaml_node_t *n) { return strlen(scalar(n)) != n->data.scalar.length; }

static yaml_node_t *node_at(const ctx *c, int index) { return yaml_document_get_node(c->doc, index); }

// Checks key node of pair i of mapping m: a scalar, not a repeat of an earlier key.
static vt_err check_key(const ctx *c, const yaml_node_t *m, yaml_node_pair_t *pair, const char *section,
                        const char **out) {
    yaml_node_t *k = node_at(c, pair->key);
    if (!k || k->type != YAML_SCALAR_NODE || has_nul(k)) {
        char got[160];
        describe(got, sizeof got, k);
        return cfg_error(c, k, VT_ERR_KEY, section && *section ? section : NULL, "expected a key name, got %s", got);
    }
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < pair; p++) {
        yaml_node_t *pk = node_at(c, p->key);
        if (pk && pk->type == YAML_SCALAR_NODE && strcmp(scalar(pk), scalar(k)) == 0) {
            char path[256];
            if (section && *section)
                snprintf(path, sizeof path, "%s.%s", section, scalar(k));
            else
                snprintf(path, sizeof path, "%s", scalar(k));
            if (c->marks)
                return cfg_error(c, k, VT_ERR_KEY, path, "duplicate key (first given at line %lu)",
                                 (unsigned long)pk->start_mark.line + 1);
            return cfg_error(c, k, VT_ERR_KEY, path, "duplicate key");
        }
    }
    *out = scalar(k);
    return VT_OK;
}

// "valid keys: a, b, c" for the fields under prefix ("model." -> unet, vae, ...).
static void valid_keys(char *buf, size_t cap, const field *tab, int n, const char *prefix) {
    size_t o = 0, pl = strlen(prefix);
    buf[0] = 0;
    for (int i = 0; i < n && o < cap; i++) {
        if (strncmp(tab[i].path, prefix, pl) != 0) continue;
        const char *rest = tab[i].path + pl;
        if (!pl && strchr(rest, '.')) continue;
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", o ? ", " : "", rest);
    }
}

static void valid_top_keys(char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < N_FIELDS && o < cap; i++) {
        const char *p = k_fields[i].path;
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        // each section once: only when the previous field is in another section
        if (i > 0 && strncmp(k_fields[i - 1].path, p, len) == 0 &&
            (k_fields[i - 1].path[len] == '.' || k_fields[i - 1].path[len] == 0))
            continue;
        o += (size_t)snprintf(buf + o, cap - o, "%s%.*s", o ? ", " : "", (int)len, p);
    }
}

// ---- scalar parsing ----------------------------------------------------------------------
static bool parse_i64(const char *s, long long *out) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (!isdigit((unsigned char)*p)) return false;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q)) return false;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE) return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double *out) {
    if (!*s || isspace((unsigned char)*s)) return false;
    // strtod also takes "inf", "nan" and hex floats; only decimal numbers are numbers here
    for (const char *q = s; *q; q++)
        if (!strchr("0123456789+-.eE", *q)) return false;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end) return false;
    if (errno == ERANGE && fabs(v) > 1) return false;
    if (!isfinite(v)) return false;
    *out = v;
    return true;
}

static void fmt_double(char *buf, size_t cap, double v) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static void range_text(char *buf, size_t cap, const field *f, bool integer) {
    char lo[40], hi[40];
    if (integer) {
        snprintf(lo, sizeof lo, "%.0f", f->lo);
        snprintf(hi, sizeof hi, "%.0f", f->hi);
    } else {
        fmt_double(lo, sizeof lo, f->lo);
        fmt_double(hi, sizeof hi, f->hi);
    }
    const char *what = integer ? "an integer" : "a number";
    bool no_hi = f->hi >= BIG || (integer && f->hi >= INT_MAX);
    if (no_hi)
        snprintf(buf, cap, "%s %s %s", what, f->lo_open ? ">" : ">=", lo);
    else
        snprintf(buf, cap, "%s in %c%s, %s%c", what, f->lo_open ? '(' : '[', lo, hi, f->hi_open ? ')' : ']');
}

static bool in_range(const field *f, double v) {
    if (f->lo_open ? !(v > f->lo) : !(v >= f->lo)) return false;
    if (f->hi < BIG && (f->hi_open ? !(v < f->hi) : !(v <= f->hi))) return false;
    return true;
}

static int enum_lookup(const char *const *names, const char *s) {
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], s) == 0) return i;
    return -1;
}

static void enum_list(char *buf, size_t cap, const char *const *names) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; names[i] && o < cap; i++) {
        if (names == k_decode_names && !strcmp(names[i], "index")) continue;
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? ", " : "", names[i]);
    }
}

// ---- applying nodes to fields --------------------------------------------------------------
static vt_err apply_rewards(const ctx *c, vt_config *cfg, const char *path, yaml_node_t *n);
static vt_err apply_options(const ctx *c, vt_config_reward *r, const char *path, yaml_node_t *n);

static vt_err get_string(const ctx *c, yaml_node_t *n, const char *path, char **out) {
    if (!n || n->type != YAML_SCALAR_NODE) return type_error(c, n, path, "a string");
    if (has_nul(n)) return cfg_error(c, n, VT_ERR_CONFIG, path, "a NUL character in a string");
    if (is_null(n)) {
        *out = NULL;
        return VT_OK;
    }
    if (!*scalar(n)) {
        *out = NULL;
        return VT_OK;
    }
    *out = xstrdup(scalar(n));
    if (!*out) return vt_error(VT_ERR_OOM, "config: out of memory");
    return VT_OK;
}

static vt_err get_strlist(const ctx *c, yaml_node_t *n, const char *path, char ***out, int *count) {
    *out = NULL;
    *count = 0;
    if (n && is_null(n)) return VT_OK;
    if (!n || n->type != YAML_SEQUENCE_NODE) return type_error(c, n, path, "a list of strings");
    size_t len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (len > 1000000) return cfg_error(c, n, VT_ERR_CONFIG, path, "more than 1000000 entries");
    if (!len) return VT_OK;
    char **list = calloc(len, sizeof *list);
    if (!list) return vt_error(VT_ERR_OOM, "config: out of memory");
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *item = node_at(c, n->data.sequence.items.start[i]);
        char ipath[300];
        snprintf(ipath, sizeof ipath, "%s.%zu", path, i);
        char *s = NULL;
        vt_err e = (item && item->type == YAML_SCALAR_NODE && is_null(item))
                       ? type_error(c, item, ipath, "a string")
                       : get_string(c, item, ipath, &s);
        if (e == VT_OK && !s) e = cfg_error(c, item, VT_ERR_CONFIG, ipath, "an empty string");
        if (e != VT_OK) {
            free_strlist(list, (int)i);
            return e;
        }
        list[i] = s;
    }
    *out = list;
    *count = (int)len;
    return VT_OK;
}

// Applies node n to field f of the struct at base (vt_config or vt_config_reward).
static vt_err apply_field(const ctx *c, void *base, const field *f, const char *path, yaml_node_t *n) {
    char *b = (char *)base;
    char rt[128], got[160];
    switch (f->type) {
    case FT_STR: {
        char *s = NULL;
        vt_err e = get_string(c, n, path, &s);
        if (e) return e;
        free(*(char **)(b + f->off));
        *(char **)(b + f->off) = s;
        return VT_OK;
    }
    case FT_BOOL: {
        if (!n || n->type != YAML_SCALAR_NODE || !is_plain(n)) return type_error(c, n, path, "true or false");
        const char *s = scalar(n);
        static const char *const t[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", NULL};
        static const char *const fl[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", NULL};
        if (enum_lookup(t, s) >= 0)
            *(bool *)(b + f->off) = true;
        else if (enum_lookup(fl, s) >= 0)
            *(bool *)(b + f->off) = false;
        else
            return type_error(c, n, path, "true or false");
        return VT_OK;
    }
    case FT_INT: {
        long long v;
        range_text(rt, sizeof rt, f, true);
        if (!n || n->type != YAML_SCALAR_NODE || !is_plain(n) || has_nul(n) || !parse_i64(scalar(n), &v))
            return type_error(c, n, path, rt);
        if (!in_range(f, (double)v)) return type_error(c, n, path, rt);
        *(int *)(b + f->off) = (int)v;
        return VT_OK;
    }
    case FT_U64: {
        const char *s = n && n->type == YAML_SCALAR_NODE && is_plain(n) ? scalar(n) : NULL;
        bool ok = s && *s && !has_nul(n);
        for (const char *q = s; ok && *q; q++) ok = isdigit((unsigned char)*q);
        if (ok) {
            errno = 0;
            unsigned long long v = strtoull(s, NULL, 10);
            ok = errno != ERANGE;
            if (ok) *(uint64_t *)(b + f->off) = (uint64_t)v;
        }
        if (!ok) return type_error(c, n, path, "an integer in [0, 18446744073709551615]");
        return VT_OK;
    }
    case FT_DOUBLE: {
        double v;
        if (!n || n->type != YAML_SCALAR_NODE || !is_plain(n) || has_nul(n) || !parse_double(scalar(n), &v))
            return type_error(c, n, path, "a number");
        if (!in_range(f, v)) {
            range_text(rt, sizeof rt, f, false);
            return type_error(c, n, path, rt);
        }
        *(double *)(b + f->off) = v;
        return VT_OK;
    }
    case FT_ENUM: {
        char list[256], expected[300];
        enum_list(list, sizeof list, f->names);
        if (!n || n->type != YAML_SCALAR_NODE || has_nul(n)) {
            snprintf(expected, sizeof expected, "one of %s", list);
            return type_error(c, n, path, expected);
        }
        int v = enum_lookup(f->names, scalar(n));
        if (v < 0) {
            describe(got, sizeof got, n);
            return cfg_error(c, n, VT_ERR_CONFIG, path, "unknown value %s (valid: %s)", got, list);
        }
        *(int *)(b + f->off) = v;
        return VT_OK;
    }
    case FT_STRLIST: {
        char **list;
        int count;
        vt_err e = get_strlist(c, n, path, &list, &count);
        if (e) return e;
        free_strlist(*(char ***)(b + f->off), *(int *)(b + f->off_n));
        *(char ***)(b + f->off) = list;
        *(int *)(b + f->off_n) = count;
        return VT_OK;
    }
    case FT_DECODE: {
        const char *expected = "-1, fml, alt, all or a frame index >= 0";
        if (!n || n->type != YAML_SCALAR_NODE || has_nul(n)) return type_error(c, n, path, expected);
        const char *s = scalar(n);
        long long v;
        int k = enum_lookup(k_decode_names, s);
        if (k >= 0 && k != VT_CFG_DECODE_INDEX) {
            *(int *)(b + f->off) = k;
            *(int *)(b + f->off_n) = 0;
        } else if (parse_i64(s, &v) && v >= 0 && v <= INT_MAX) {
            *(int *)(b + f->off) = VT_CFG_DECODE_INDEX;
            *(int *)(b + f->off_n) = (int)v;
        } else {
            return type_error(c, n, path, expected);
        }
        return VT_OK;
    }
    case FT_REWARDS:
        return apply_rewards(c, (vt_config *)base, path, n);
    case FT_OPTIONS:
        return apply_options(c, (vt_config_reward *)base, path, n);
    }
    return vt_error(VT_ERR_INTERNAL, "config: field type %d", (int)f->type);
}

static vt_err set_option(vt_config_reward *r, const char *key, const char *value) {
    for (int i = 0; i < r->n_options; i++) {
        if (strcmp(r->options[i].key, key) == 0) {
            char *v = xstrdup(value);
            if (!v) return vt_error(VT_ERR_OOM, "config: out of memory");
            free(r->options[i].value);
            r->options[i].value = v;
            return VT_OK;
        }
    }
    vt_config_kv *kv = realloc(r->options, (size_t)(r->n_options + 1) * sizeof *kv);
    if (!kv) return vt_error(VT_ERR_OOM, "config: out of memory");
    r->options = kv;
    char *k = xstrdup(key), *v = xstrdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return vt_error(VT_ERR_OOM, "config: out of memory");
    }
    kv[r->n_options].key = k;
    kv[r->n_options].value = v;
    r->n_options++;
    return VT_OK;
}

static vt_err option_value(const ctx *c, yaml_node_t *v, const char *path) {
    if (!v || v->type != YAML_SCALAR_NODE) return type_error(c, v, path, "a scalar option value");
    if (has_nul(v)) return cfg_error(c, v, VT_ERR_CONFIG, path, "a NUL character in a string");
    return VT_OK;
}

// options: a mapping of scalar keys to scalar values; replaces the module's options.
static vt_err apply_options(const ctx *c, vt_config_reward *r, const char *path, yaml_node_t *n) {
    vt_config_reward tmp;
    memset(&tmp, 0, sizeof tmp);
    if (n && is_null(n)) goto done;
    if (!n || n->type != YAML_MAPPING_NODE) return type_error(c, n, path, "a mapping of options");
    if (n->data.mapping.pairs.top - n->data.mapping.pairs.start > MAX_OPTIONS)
        return cfg_error(c, n, VT_ERR_CONFIG, path, "more than %d options", MAX_OPTIONS);
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *key;
        vt_err e = check_key(c, n, p, path, &key);
        char kpath[400];
        if (!e && !*key) e = cfg_error(c, node_at(c, p->key), VT_ERR_KEY, path, "an empty option name");
        if (!e) {
            snprintf(kpath, sizeof kpath, "%s.%s", path, key);
            e = option_value(c, node_at(c, p->value), kpath);
        }
        if (!e) e = set_option(&tmp, key, scalar(node_at(c, p->value)));
        if (e) {
            free_options(tmp.options, tmp.n_options);
            return e;
        }
    }
done:
    free_options(r->options, r->n_options);
    r->options = tmp.options;
    r->n_options = tmp.n_options;
    return VT_OK;
}

// Every key of the mapping n at path into base through the field table tab[n_tab], where a
// key's field is tab's entry named prefix + key: a config section (prefix "section.") or a
// reward module (prefix ""). An unknown key is an error that lists the valid ones.
static vt_err apply_mapping(const ctx *c, void *base, const field *tab, int n_tab, const char *prefix,
                            const char *path, yaml_node_t *n) {
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *key;
        vt_err e = check_key(c, n, p, path, &key);
        if (e) return e;
        char fpath[300], name[300];
        snprintf(fpath, sizeof fpath, "%s.%s", path, key);
        snprintf(name, sizeof name, "%s%s", prefix, key);
        const field *f = find_field(tab, n_tab, name);
        if (!f) {
            char valid[512];
            valid_keys(valid, sizeof valid, tab, n_tab, prefix);
            return cfg_error(c, node_at(c, p->key), VT_ERR_KEY, fpath, "unknown key (valid keys: %s)", valid);
        }
        e = apply_field(c, base, f, fpath, node_at(c, p->value));
        if (e) return e;
    }
    return VT_OK;
}

// One reward module from a mapping into r (r already initialised / holding values).
static vt_err apply_module(const ctx *c, vt_config_reward *r, const char *path, yaml_node_t *n) {
    if (!n || n->type != YAML_MAPPING_NODE) return type_error(c, n, path, "a mapping (name, weight, checkpoint, options)");
    vt_err e = apply_mapping(c, r, k_reward_fields, N_REWARD_FIELDS, "", path, n);
    if (e) return e;
    if (r->kind == VT_CFG_REWARD_COUNT) {
        char list[256];
        enum_list(list, sizeof list, k_reward_names);
        return cfg_error(c, n, VT_ERR_CONFIG, path, "missing name (one of %s)", list);
    }
    return VT_OK;
}

static vt_err apply_rewards(const ctx *c, vt_config *cfg, const char *path, yaml_node_t *n) {
    vt_config_reward *mods = NULL;
    int count = 0;
    if (!(n && is_null(n))) {
        if (!n || n->type != YAML_SEQUENCE_NODE) return type_error(c, n, path, "a list of reward modules");
        size_t len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
        if (len > MAX_REWARDS) return cfg_error(c, n, VT_ERR_CONFIG, path, "more than %d reward modules", MAX_REWARDS);
        if (len) {
            mods = calloc(len, sizeof *mods);
            if (!mods) return vt_error(VT_ERR_OOM, "config: out of memory");
        }
        for (size_t i = 0; i < len; i++) {
            char ipath[300];
            snprintf(ipath, sizeof ipath, "%s.%zu", path, i);
            reward_init(&mods[i]);
            count = (int)i + 1;
            vt_err e = apply_module(c, &mods[i], ipath, node_at(c, n->data.sequence.items.start[i]));
            if (e) {
                free_rewards(mods, count);
                return e;
            }
        }
    }
    free_rewards(cfg->reward.modules, cfg->reward.n_modules);
    cfg->reward.modules = mods;
    cfg->reward.n_modules = count;
    return VT_OK;
}

static vt_err apply_section(const ctx *c, vt_config *cfg, const char *section, yaml_node_t *n) {
    if (n && is_null(n)) return VT_OK;  // "model:" with nothing under it
    if (!n || n->type != YAML_MAPPING_NODE) return type_error(c, n, section, "a mapping");
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s.", section);
    return apply_mapping(c, cfg, k_fields, N_FIELDS, prefix, section, n);
}

static vt_err apply_root(const ctx *c, vt_config *cfg, yaml_node_t *root) {
    if (!root) return VT_OK;  // empty file: the defaults
    if (is_null(root)) return VT_OK;
    if (root->type != YAML_MAPPING_NODE) return type_error(c, root, NULL, "a mapping at the top level");
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        const char *key;
        vt_err e = check_key(c, root, p, "", &key);
        if (e) return e;
        yaml_node_t *v = node_at(c, p->value);
        if (is_section(key)) {
            e = apply_section(c, cfg, key, v);
        } else {
            const field *f = find_field(k_fields, N_FIELDS, key);
            if (!f) {
                char valid[512];
                valid_top_keys(valid, sizeof valid);
                return cfg_error(c, node_at(c, p->key), VT_ERR_KEY, key, "unknown key (valid keys: %s)", valid);
            }
            e = apply_field(c, cfg, f, key, v);
        }
        if (e) return e;
    }
    return VT_OK;
}

// ---- parsing -----------------------------------------------------------------------------
// YAML forbids tabs in indentation; libyaml's messages for them are obscure, so they are
// found first and reported at the tab.
static vt_err check_tabs(const char *name, const char *text) {
    unsigned long line = 1;
    const char *p = text;
    while (*p) {
        const char *s = p;
        const char *tab = NULL;
        while (*p == ' ' || *p == '\t') {
            if (*p == '\t' && !tab) tab = p;
            p++;
        }
        bool content = *p && *p != '\n' && *p != '\r';
        if (tab && content)
            return vt_error(VT_ERR_FORMAT, "%s:%lu:%lu: a tab character in indentation (indent with spaces)", name,
                            line, (unsigned long)(tab - s) + 1);
        while (*p && *p != '\n') p++;
        if (*p == '\n') p++;
        line++;
    }
    return VT_OK;
}

// libyaml takes time quadratic in the flow nesting depth ("[[[[..."), so deep nesting, which
// no config needs, is refused before parsing. Quoted scalars (a quote that starts a token)
// and comments are skipped; brackets inside plain scalars count, hence the generous limit.
#define MAX_FLOW_DEPTH 64
static vt_err check_nesting(const char *name, const char *text) {
    unsigned long line = 1, col = 0;
    int depth = 0;
    char prev = '\n';
    for (const char *p = text; *p; p++) {
        char ch = *p;
        col++;
        bool token_start = prev == '\n' || prev == ' ' || prev == '\t' || strchr("[{,:-", prev);
        if (ch == '\n') {
            line++;
            col = 0;
        } else if (ch == '#' && (prev == '\n' || prev == ' ' || prev == '\t')) {
            while (p[1] && p[1] != '\n') p++;
        } else if ((ch == '"' || ch == '\'') && token_start) {
            // to the closing quote; "\x" escapes in double quotes, '' in single quotes
            for (p++; *p; p++) {
                if (*p == '\n') {
                    line++;
                    col = 0;
                } else {
                    col++;
                }
                if (ch == '"' && *p == '\\' && p[1]) {
                    p++;
                    col++;
                } else if (*p == ch) {
                    if (ch == '\'' && p[1] == '\'') {
                        p++;
                        col++;
                    } else {
                        break;
                    }
                }
            }
            if (!*p) break;
        } else if (ch == '[' || ch == '{') {
            if (++depth > MAX_FLOW_DEPTH)
                return vt_error(VT_ERR_FORMAT, "%s:%lu:%lu: lists / mappings nested more than %d deep", name, line, col,
                                MAX_FLOW_DEPTH);
        } else if ((ch == ']' || ch == '}') && depth > 0) {
            depth--;
        }
        prev = *p;
    }
    return VT_OK;
}

static vt_err parser_error(const char *name, yaml_parser_t *parser) {
    if (parser->error == YAML_MEMORY_ERROR) return vt_error(VT_ERR_OOM, "%s: out of memory parsing YAML", name);
    const char *problem = parser->problem ? parser->problem : "unknown error";
    if (parser->context)
        return vt_error(VT_ERR_FORMAT, "%s:%lu:%lu: malformed YAML: %s %s (line %lu)", name,
                        (unsigned long)parser->problem_mark.line + 1, (unsigned long)parser->problem_mark.column + 1,
                        problem, parser->context, (unsigned long)parser->context_mark.line + 1);
    return vt_error(VT_ERR_FORMAT, "%s:%lu:%lu: malformed YAML: %s", name,
                    (unsigned long)parser->problem_mark.line + 1, (unsigned long)parser->problem_mark.column + 1,
                    problem);
}

// Parses one YAML document from text into doc (caller deletes it on VT_OK). A stream with
// no document gives an empty doc (root NULL); more than one document is an error.
static vt_err parse_document(const char *name, const char *text, size_t len, yaml_document_t *doc) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) return vt_error(VT_ERR_OOM, "%s: out of memory", name);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, doc)) {
        vt_err e = parser_error(name, &parser);
        yaml_parser_delete(&parser);
        return e;
    }
    if (yaml_document_get_root_node(doc)) {
        yaml_document_t extra;
        if (!yaml_parser_load(&parser, &extra)) {
            vt_err e = parser_error(name, &parser);
            yaml_document_delete(doc);
            yaml_parser_delete(&parser);
            return e;
        }
        yaml_node_t *r2 = yaml_document_get_root_node(&extra);
        if (r2) {
            vt_err e = vt_error(VT_ERR_FORMAT, "%s:%lu:%lu: more than one YAML document (one config a file)", name,
                                (unsigned long)r2->start_mark.line + 1, (unsigned long)r2->start_mark.column + 1);
            yaml_document_delete(&extra);
            yaml_document_delete(doc);
            yaml_parser_delete(&parser);
            return e;
        }
        yaml_document_delete(&extra);
    }
    yaml_parser_delete(&parser);
    return VT_OK;
}

// ---- public API --------------------------------------------------------------------------
static const char *const k_default_targets[] = {"to_q", "to_k", "to_v"};

vt_err vt_config_defaults(vt_config *cfg) {
    if (!cfg) return vt_error(VT_ERR_ARG, "vt_config_defaults: cfg is NULL");
    memset(cfg, 0, sizeof *cfg);
    // Defaults follow VADER-VideoCrafter (train_t2v_lora.py and its run scripts).
    cfg->model.random_weights = false;
    cfg->model.dtype = VT_CFG_DTYPE_AUTO;
    cfg->model.height = 320;
    cfg->model.width = 512;
    cfg->model.frames = 12;
    cfg->model.fps = 24;
    cfg->sampler.steps = 25;
    cfg->sampler.eta = 1.0;
    cfg->sampler.guidance_scale = 12.0;
    cfg->sampler.backprop_steps = 1;
    cfg->sampler.backprop_mode = VT_CFG_BACKPROP_LAST;
    cfg->sampler.backprop_step = 0;
    cfg->lora.rank = 16;
    cfg->lora.alpha = 8.0;  // peft's LoraConfig default, which VADER leaves as is
    cfg->lora.dropout = 0.01;
    cfg->optim.lr = 2e-4;
    cfg->optim.beta1 = 0.9;
    cfg->optim.beta2 = 0.999;
    cfg->optim.weight_decay = 1e-2;
    cfg->optim.eps = 1e-8;
    cfg->optim.grad_clip = 1.0;
    cfg->optim.accumulation = 1;
    cfg->optim.steps = 10000;
    cfg->optim.schedule = VT_CFG_SCHED_CONSTANT;
    cfg->optim.warmup_steps = 0;
    cfg->optim.max_bad_steps = 5;
    cfg->memory.checkpointing = true;
    cfg->memory.decode_frames = VT_CFG_DECODE_RANDOM;
    cfg->memory.decode_index = 0;
    cfg->memory.offload = false;
    cfg->memory.saved_dtype = VT_CFG_DTYPE_AUTO;
    cfg->data.batch_size = 1;
    cfg->data.global_batch_size = 0;
    cfg->dist.backend = VT_CFG_DIST_AUTO;
    cfg->dist.timeout = 300.0;
    cfg->output.checkpoint_every = 100;
    cfg->output.eval_every = 10;
    cfg->output.log_every = 1;
    cfg->seed = 20230211;
    cfg->device = VT_CFG_DEVICE_AUTO;
    int nt = (int)(sizeof k_default_targets / sizeof k_default_targets[0]);
    cfg->lora.targets = calloc((size_t)nt, sizeof(char *));
    cfg->output.dir = xstrdup("out");
    if (!cfg->lora.targets || !cfg->output.dir) goto oom;
    for (int i = 0; i < nt; i++) {
        cfg->lora.targets[i] = xstrdup(k_default_targets[i]);
        cfg->lora.n_targets = i + 1;
        if (!cfg->lora.targets[i]) goto oom;
    }
    return VT_OK;
oom:
    vt_config_free(cfg);
    return vt_error(VT_ERR_OOM, "config: out of memory");
}

vt_err vt_config_load_string(vt_config *cfg, const char *yaml, const char *name) {
    if (!cfg) return vt_error(VT_ERR_ARG, "vt_config_load_string: cfg is NULL");
    if (!name) name = "<string>";
    vt_err e = vt_config_defaults(cfg);
    if (e) return e;
    if (!yaml) return vt_error(VT_ERR_ARG, "vt_config_load_string: yaml is NULL");
    e = check_tabs(name, yaml);
    if (!e) e = check_nesting(name, yaml);
    if (e) return e;
    yaml_document_t doc;
    e = parse_document(name, yaml, strlen(yaml), &doc);
    if (e) return e;
    ctx c = {name, &doc, true};
    e = apply_root(&c, cfg, yaml_document_get_root_node(&doc));
    yaml_document_delete(&doc);
    if (e) {
        vt_config_free(cfg);
        vt_config_defaults(cfg);  // cfg is back to the defaults; the message stays
    }
    return e;
}

vt_err vt_config_load(vt_config *cfg, const char *path) {
    if (!cfg || !path) return vt_error(VT_ERR_ARG, "vt_config_load: NULL argument");
    vt_err e = vt_config_defaults(cfg);
    if (e) return e;
    FILE *f = fopen(path, "rb");
    if (!f) return vt_error(VT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return vt_error(VT_ERR_OOM, "%s: out of memory", path);
    }
    for (;;) {
        if (len + 1 >= cap) {
            if (cap > ((size_t)1 << 30)) {
                free(buf);
                fclose(f);
                return vt_error(VT_ERR_FORMAT, "%s: larger than 1 GiB, not a config", path);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return vt_error(VT_ERR_OOM, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
        if (got == 0) break;
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return vt_error(VT_ERR_IO, "%s: read error", path);
    }
    buf[len] = 0;
    if (memchr(buf, 0, len)) {
        free(buf);
        return vt_error(VT_ERR_FORMAT, "%s: a NUL byte in the file (not a YAML text file)", path);
    }
    vt_config_free(cfg);  // load_string starts again from fresh defaults
    e = vt_config_load_string(cfg, buf, path);
    free(buf);
    return e;
}

// Navigates a --set path and applies the value node.
static vt_err set_path(const ctx *c, vt_config *cfg, const char *path, yaml_node_t *v) {
    if (is_section(path)) return apply_section(c, cfg, path, v);
    const field *f = find_field(k_fields, N_FIELDS, path);
    if (f) return apply_field(c, cfg, f, path, v);
    if (strncmp(path, "reward.", 7) == 0) {
        const char *p = path + 7;
        char *end;
        if (!isdigit((unsigned char)*p))
            return cfg_error(c, NULL, VT_ERR_KEY, path, "expected reward.INDEX[.FIELD]");
        errno = 0;
        unsigned long idx = strtoul(p, &end, 10);
        if (errno || (*end && *end != '.'))
            return cfg_error(c, NULL, VT_ERR_KEY, path, "expected reward.INDEX[.FIELD]");
        int n = cfg->reward.n_modules;
        if (idx > (unsigned long)n)
            return cfg_error(c, NULL, VT_ERR_KEY, path, "no reward module %lu (there are %d; index %d appends one)",
                             idx, n, n);
        if (idx == (unsigned long)n) {
            if (n >= MAX_REWARDS) return cfg_error(c, NULL, VT_ERR_CONFIG, path, "more than %d reward modules", MAX_REWARDS);
            vt_config_reward *m = realloc(cfg->reward.modules, (size_t)(n + 1) * sizeof *m);
            if (!m) return vt_error(VT_ERR_OOM, "config: out of memory");
            cfg->reward.modules = m;
            reward_init(&m[n]);
            cfg->reward.n_modules = n + 1;
        }
        vt_config_reward *r = &cfg->reward.modules[idx];
        char mpath[64];
        snprintf(mpath, sizeof mpath, "reward.%lu", idx);
        if (!*end) {  // the whole module
            vt_config_reward fresh;
            reward_init(&fresh);
            vt_err e = apply_module(c, &fresh, mpath, v);
            if (e) {
                free_reward(&fresh);
                return e;
            }
            free_reward(r);
            *r = fresh;
            return VT_OK;
        }
        const char *rest = end + 1;
        if (strncmp(rest, "options.", 8) == 0 && rest[8]) {
            vt_err e = option_value(c, v, path);
            if (e) return e;
            return set_option(r, rest + 8, scalar(v));
        }
        const field *rf = find_field(k_reward_fields, N_REWARD_FIELDS, rest);
        if (!rf) {
            char valid[256];
            valid_keys(valid, sizeof valid, k_reward_fields, N_REWARD_FIELDS, "");
            return cfg_error(c, NULL, VT_ERR_KEY, path, "unknown key (valid keys: %s, options.KEY)", valid);
        }
        return apply_field(c, r, rf, path, v);
    }
    const char *dot = strchr(path, '.');
    char valid[512];
    if (dot) {
        char sec[64];
        snprintf(sec, sizeof sec, "%.*s", (int)(dot - path) < 60 ? (int)(dot - path) : 60, path);
        if (is_section(sec)) {
            char prefix[70];
            snprintf(prefix, sizeof prefix, "%s.", sec);
            valid_keys(valid, sizeof valid, k_fields, N_FIELDS, prefix);
            return cfg_error(c, NULL, VT_ERR_KEY, path, "unknown key (valid keys: %s)", valid);
        }
    }
    valid_top_keys(valid, sizeof valid);
    return cfg_error(c, NULL, VT_ERR_KEY, path, "unknown key (valid top-level keys: %s)", valid);
}

vt_err vt_config_set(vt_config *cfg, const char *assignment) {
    if (!cfg || !assignment) return vt_error(VT_ERR_ARG, "vt_config_set: NULL argument");
    char name[512];
    snprintf(name, sizeof name, "--set %s", assignment);
    const char *eq = strchr(assignment, '=');
    if (!eq) return vt_error(VT_ERR_ARG, "%s: expected PATH=VALUE", name);
    // the path, trimmed
    const char *ps = assignment, *pe = eq;
    while (ps < pe && isspace((unsigned char)*ps)) ps++;
    while (pe > ps && isspace((unsigned char)pe[-1])) pe--;
    if (pe == ps) return vt_error(VT_ERR_ARG, "%s: empty path before '='", name);
    if (pe - ps > 255) return vt_error(VT_ERR_KEY, "%s: path too long", name);
    char path[256];
    memcpy(path, ps, (size_t)(pe - ps));
    path[pe - ps] = 0;
    const char *value = eq + 1;
    bool blank = true;
    for (const char *q = value; *q; q++)
        if (!isspace((unsigned char)*q)) blank = false;
    if (blank) value = "~";  // "a.b=" unsets a string or empties a list; a type error for numbers
    yaml_document_t doc;
    vt_err e = check_nesting(name, value);
    if (e) return e;
    e = parse_document(name, value, strlen(value), &doc);
    if (e) return e;
    ctx c = {name, &doc, false};
    yaml_node_t *v = yaml_document_get_root_node(&doc);
    vt_config tmp;
    e = vt_config_copy(&tmp, cfg);
    if (!e) {
        e = set_path(&c, &tmp, path, v);
        if (e) {
            vt_config_free(&tmp);
        } else {
            vt_config_free(cfg);
            *cfg = tmp;
        }
    }
    yaml_document_delete(&doc);
    return e;
}

static vt_err dup_strlist(char ***dst, char *const *src, int n) {
    *dst = NULL;
    if (!n) return VT_OK;
    *dst = calloc((size_t)n, sizeof(char *));
    if (!*dst) return VT_ERR_OOM;
    for (int i = 0; i < n; i++)
        if (!((*dst)[i] = xstrdup(src[i]))) return VT_ERR_OOM;
    return VT_OK;
}

static vt_err dup_str(char **dst, const char *src) {
    *dst = NULL;
    if (!src) return VT_OK;
    return (*dst = xstrdup(src)) ? VT_OK : VT_ERR_OOM;
}

vt_err vt_config_copy(vt_config *dst, const vt_config *src) {
    if (!dst || !src) return vt_error(VT_ERR_ARG, "vt_config_copy: NULL argument");
    *dst = *src;
    // clear every owned pointer first so a failure part-way frees only what was copied
    dst->model.unet = dst->model.vae = dst->model.text = NULL;
    dst->lora.targets = NULL;
    dst->lora.checkpoint = NULL;
    dst->reward.modules = NULL;
    dst->reward.n_modules = 0;
    dst->data.prompt_file = NULL;
    dst->data.prompts = dst->data.eval_prompts = NULL;
    dst->output.dir = NULL;
    int nt = src->lora.n_targets, np = src->data.n_prompts, ne = src->data.n_eval_prompts;
    dst->lora.n_targets = dst->data.n_prompts = dst->data.n_eval_prompts = 0;
    vt_err e = VT_OK;
    if (!e) e = dup_str(&dst->model.unet, src->model.unet);
    if (!e) e = dup_str(&dst->model.vae, src->model.vae);
    if (!e) e = dup_str(&dst->model.text, src->model.text);
    if (!e) e = dup_str(&dst->lora.checkpoint, src->lora.checkpoint);
    if (!e) e = dup_str(&dst->data.prompt_file, src->data.prompt_file);
    if (!e) e = dup_str(&dst->output.dir, src->output.dir);
    if (!e) {
        e = dup_strlist(&dst->lora.targets, src->lora.targets, nt);
        dst->lora.n_targets = nt;  // partially filled lists hold NULLs, which free() takes
    }
    if (!e) {
        e = dup_strlist(&dst->data.prompts, src->data.prompts, np);
        dst->data.n_prompts = np;
    }
    if (!e) {
        e = dup_strlist(&dst->data.eval_prompts, src->data.eval_prompts, ne);
        dst->data.n_eval_prompts = ne;
    }
    if (!e && src->reward.n_modules) {
        dst->reward.modules = calloc((size_t)src->reward.n_modules, sizeof(vt_config_reward));
        if (!dst->reward.modules) e = VT_ERR_OOM;
        for (int i = 0; !e && i < src->reward.n_modules; i++) {
            const vt_config_reward *s = &src->reward.modules[i];
            vt_config_reward *d = &dst->reward.modules[i];
            dst->reward.n_modules = i + 1;
            d->kind = s->kind;
            d->weight = s->weight;
            e = dup_str(&d->checkpoint, s->checkpoint);
            for (int j = 0; !e && j < s->n_options; j++)
                if (set_option(d, s->options[j].key, s->options[j].value)) e = VT_ERR_OOM;
        }
    }
    if (e) {
        vt_config_free(dst);
        return vt_error(VT_ERR_OOM, "config: out of memory");
    }
    return VT_OK;
}

void vt_config_free(vt_config *cfg) {
    if (!cfg) return;
    free(cfg->model.unet);
    free(cfg->model.vae);
    free(cfg->model.text);
    free_strlist(cfg->lora.targets, cfg->lora.n_targets);
    free(cfg->lora.checkpoint);
    free_rewards(cfg->reward.modules, cfg->reward.n_modules);
    free(cfg->data.prompt_file);
    free_strlist(cfg->data.prompts, cfg->data.n_prompts);
    free_strlist(cfg->data.eval_prompts, cfg->data.n_eval_prompts);
    free(cfg->output.dir);
    memset(cfg, 0, sizeof *cfg);
}

const char *vt_config_reward_option(const vt_config_reward *r, const char *key) {
    if (!r || !key) return NULL;
    for (int i = 0; i < r->n_options; i++)
        if (strcmp(r->options[i].key, key) == 0) return r->options[i].value;
    return NULL;
}

// ---- validation ----------------------------------------------------------------------------
static vt_err invalid(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static vt_err invalid(const char *path, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return vt_error(VT_ERR_CONFIG, "config: %s: %s", path, msg);
}

static int enum_count(const char *const *names) {
    int n = 0;
    while (names[n]) n++;
    return n;
}

// Per-field checks (ranges, enum values) for a struct not necessarily built from YAML.
static vt_err check_fields(const void *base, const field *tab, int n, const char *prefix) {
    const char *b = (const char *)base;
    char rt[128], path[300];
    for (int i = 0; i < n; i++) {
        const field *f = &tab[i];
        snprintf(path, sizeof path, "%s%s", prefix, f->path);
        switch (f->type) {
        case FT_INT: {
            int v = *(const int *)(b + f->off);
            if (!in_range(f, v)) {
                range_text(rt, sizeof rt, f, true);
                return invalid(path, "expected %s, got %d", rt, v);
            }
            break;
        }
        case FT_DOUBLE: {
            double v = *(const double *)(b + f->off);
            if (!isfinite(v) || !in_range(f, v)) {
                range_text(rt, sizeof rt, f, false);
                return invalid(path, "expected %s, got %g", rt, v);
            }
            break;
        }
        case FT_ENUM: {
            int v = *(const int *)(b + f->off);
            if (v < 0 || v >= enum_count(f->names)) {
                if (f->names == k_reward_names) return invalid(path, "not set");
                return invalid(path, "invalid value %d", v);
            }
            break;
        }
        case FT_DECODE: {
            int k = *(const int *)(b + f->off), idx = *(const int *)(b + f->off_n);
            if (k < 0 || k > VT_CFG_DECODE_INDEX) return invalid(path, "invalid value %d", k);
            if (k == VT_CFG_DECODE_INDEX && idx < 0) return invalid(path, "frame index %d < 0", idx);
            break;
        }
        case FT_STRLIST: {
            char *const *list = *(char *const *const *)(b + f->off);
            int cnt = *(const int *)(b + f->off_n);
            if (cnt < 0 || (cnt > 0 && !list)) return invalid(path, "corrupt list (count %d)", cnt);
            for (int j = 0; j < cnt; j++)
                if (!list[j] || !*list[j]) return invalid(path, "entry %d is empty", j);
            break;
        }
        case FT_OPTIONS: {
            const vt_config_kv *kv = *(const vt_config_kv *const *)(b + f->off);
            int cnt = *(const int *)(b + f->off_n);
            if (cnt < 0 || (cnt > 0 && !kv)) return invalid(path, "corrupt options (count %d)", cnt);
            for (int j = 0; j < cnt; j++)
                if (!kv[j].key || !*kv[j].key || !kv[j].value) return invalid(path, "option %d is empty", j);
            break;
        }
        default:
            break;
        }
    }
    return VT_OK;
}

vt_err vt_config_validate(const vt_config *cfg) {
    if (!cfg) return vt_error(VT_ERR_ARG, "vt_config_validate: cfg is NULL");
    vt_err e = check_fields(cfg, k_fields, N_FIELDS, "");
    if (e) return e;
    // model
    if (cfg->model.height % 8) return invalid("model.height", "%d is not a multiple of 8 (the VAE downsamples by 8)", cfg->model.height);
    if (cfg->model.width % 8) return invalid("model.width", "%d is not a multiple of 8 (the VAE downsamples by 8)", cfg->model.width);
    if (!cfg->model.random_weights) {
        if (!cfg->model.unet) return invalid("model.unet", "not set (a checkpoint path, or model.random_weights: true)");
        if (!cfg->model.vae) return invalid("model.vae", "not set (a checkpoint path, or model.random_weights: true)");
        if (!cfg->model.text) return invalid("model.text", "not set (a checkpoint path, or model.random_weights: true)");
    }
    // sampler
    int steps = cfg->sampler.steps, K = cfg->sampler.backprop_steps;
    if (K > steps) return invalid("sampler.backprop_steps", "%d is more than sampler.steps (%d)", K, steps);
    if (cfg->sampler.backprop_mode == VT_CFG_BACKPROP_SPECIFIC && cfg->sampler.backprop_step + K > steps)
        return invalid("sampler.backprop_step",
                       "%d + sampler.backprop_steps (%d) is more than sampler.steps (%d): the taped steps are "
                       "backprop_step .. backprop_step + K - 1",
                       cfg->sampler.backprop_step, K, steps);
    // memory
    if (cfg->memory.offload)
        return invalid("memory.offload",
                       "true is not supported: the text tower is freed once the prompts are encoded, and every "
                       "other model is in use at the step's memory peak (decode + reward + backward), so keeping "
                       "them on the host would not lower it; set false (see configs/README.md \"Memory\")");
    // lora
    if (cfg->lora.n_targets < 1) return invalid("lora.targets", "empty: no module would get LoRA");
    // reward
    if (cfg->reward.n_modules < 1 || !cfg->reward.modules)
        return invalid("reward", "no reward modules (a list of {name, weight, checkpoint, options})");
    for (int i = 0; i < cfg->reward.n_modules; i++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "reward.%d.", i);
        const vt_config_reward *r = &cfg->reward.modules[i];
        e = check_fields(r, k_reward_fields, N_REWARD_FIELDS, prefix);
        if (e) return e;
        if (r->kind == VT_CFG_REWARD_OBJECT_REMOVAL && !vt_config_reward_option(r, "target")) {
            char path[80];
            snprintf(path, sizeof path, "reward.%d.options.target", i);
            return invalid(path, "object_removal needs the class to remove (e.g. target: book)");
        }
        if (r->kind == VT_CFG_REWARD_ACTION && !vt_config_reward_option(r, "class")) {
            char path[80];
            snprintf(path, sizeof path, "reward.%d.options.class", i);
            return invalid(path, "action needs the Kinetics class to reward (e.g. class: \"playing guitar\")");
        }
        if ((r->kind == VT_CFG_REWARD_ACTION || r->kind == VT_CFG_REWARD_TEMPORAL) &&
            (cfg->memory.decode_frames == VT_CFG_DECODE_RANDOM || cfg->memory.decode_frames == VT_CFG_DECODE_INDEX))
            return invalid("memory.decode_frames", "reward %s scores a clip: decode fml, alt or all frames, not one",
                           vt_cfg_reward_name(r->kind));
    }
    // optim
    if (cfg->optim.schedule != VT_CFG_SCHED_CONSTANT && cfg->optim.warmup_steps > cfg->optim.steps)
        return invalid("optim.warmup_steps", "%d is more than optim.steps (%d)", cfg->optim.warmup_steps, cfg->optim.steps);
    if (cfg->optim.schedule == VT_CFG_SCHED_WARMUP && cfg->optim.warmup_steps < 1)
        return invalid("optim.warmup_steps", "schedule warmup needs warmup_steps >= 1");
    // memory
    if (cfg->memory.decode_frames == VT_CFG_DECODE_INDEX && cfg->memory.decode_index >= cfg->model.frames)
        return invalid("memory.decode_frames", "frame %d, but model.frames is %d", cfg->memory.decode_index,
                       cfg->model.frames);
    // data
    bool file = cfg->data.prompt_file != NULL, list = cfg->data.n_prompts > 0;
    if (!file && !list) return invalid("data", "no prompts: set data.prompt_file or data.prompts");
    if (file && list) return invalid("data", "both data.prompt_file and data.prompts are set: give one");
    // dist / device
    if (cfg->dist.backend == VT_CFG_DIST_NCCL && cfg->device == VT_CFG_DEVICE_CPU)
        return invalid("dist.backend", "nccl needs device cuda (or auto), not cpu");
    // output
    if (!cfg->output.dir) return invalid("output.dir", "not set");
    return VT_OK;
}

// ---- dump and hash -------------------------------------------------------------------------
typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_printf(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *s, const char *fmt, ...) {
    if (s->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(s->p ? s->p + s->n : NULL, s->p ? s->cap - s->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            s->oom = true;
            return;
        }
        if (s->p && s->n + (size_t)k < s->cap) {
            s->n += (size_t)k;
            return;
        }
        size_t cap = s->cap ? s->cap : 1024;
        while (cap <= s->n + (size_t)k) cap *= 2;
        char *np = realloc(s->p, cap);
        if (!np) {
            s->oom = true;
            return;
        }
        s->p = np;
        s->cap = cap;
    }
}

// A double-quoted YAML string (loads back byte for byte).
static void sb_quoted(sbuf *s, const char *str) {
    if (!str) {
        sb_printf(s, "null");
        return;
    }
    sb_printf(s, "\"");
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_printf(s, "\\%c", *p);
        else if (*p == '\n')
            sb_printf(s, "\\n");
        else if (*p == '\t')
            sb_printf(s, "\\t");
        else if (*p < 0x20 || *p == 0x7f)
            sb_printf(s, "\\x%02x", *p);
        else
            sb_printf(s, "%c", *p);
    }
    sb_printf(s, "\"");
}

static void dump_field(sbuf *s, const void *base, const field *f, const char *key, const char *indent) {
    const char *b = (const char *)base;
    char num[40];
    sb_printf(s, "%s%s:", indent, key);
    switch (f->type) {
    case FT_STR:
        sb_printf(s, " ");
        sb_quoted(s, *(char *const *)(b + f->off));
        break;
    case FT_BOOL: sb_printf(s, " %s", *(const bool *)(b + f->off) ? "true" : "false"); break;
    case FT_INT: sb_printf(s, " %d", *(const int *)(b + f->off)); break;
    case FT_U64: sb_printf(s, " %llu", (unsigned long long)*(const uint64_t *)(b + f->off)); break;
    case FT_DOUBLE:
        fmt_double(num, sizeof num, *(const double *)(b + f->off));
        sb_printf(s, " %s", num);
        break;
    case FT_ENUM: {
        int v = *(const int *)(b + f->off);
        sb_printf(s, " %s", v >= 0 && v < enum_count(f->names) ? f->names[v] : "null");
        break;
    }
    case FT_DECODE: {
        int k = *(const int *)(b + f->off);
        if (k == VT_CFG_DECODE_INDEX)
            sb_printf(s, " %d", *(const int *)(b + f->off_n));
        else
            sb_printf(s, " \"%s\"", k >= 0 && k < VT_CFG_DECODE_INDEX ? k_decode_names[k] : "-1");
        break;
    }
    case FT_STRLIST: {
        char *const *list = *(char *const *const *)(b + f->off);
        int cnt = *(const int *)(b + f->off_n);
        if (cnt <= 0 || !list) {
            sb_printf(s, " []");
            break;
        }
        for (int i = 0; i < cnt; i++) {
            sb_printf(s, "\n%s  - ", indent);
            sb_quoted(s, list[i] ? list[i] : "");
        }
        break;
    }
    case FT_OPTIONS: {
        const vt_config_kv *kv = *(const vt_config_kv *const *)(b + f->off);
        int cnt = *(const int *)(b + f->off_n);
        if (cnt <= 0 || !kv) {
            sb_printf(s, " {}");
            break;
        }
        for (int i = 0; i < cnt; i++) {
            sb_printf(s, "\n%s  ", indent);
            sb_quoted(s, kv[i].key ? kv[i].key : "");
            sb_printf(s, ": ");
            sb_quoted(s, kv[i].value ? kv[i].value : "");
        }
        break;
    }
    case FT_REWARDS: {
        const vt_config *cfg = (const vt_config *)base;
        if (cfg->reward.n_modules <= 0 || !cfg->reward.modules) {
            sb_printf(s, " []");
            break;
        }
        for (int i = 0; i < cfg->reward.n_modules; i++) {
            const vt_config_reward *r = &cfg->reward.modules[i];
            for (int j = 0; j < N_REWARD_FIELDS; j++) {
                sb_printf(s, "\n%s", j == 0 ? "  - " : "");
                dump_field(s, r, &k_reward_fields[j], k_reward_fields[j].path, j == 0 ? "" : "    ");
            }
        }
        break;
    }
    }
}

char *vt_config_dump(const vt_config *cfg) {
    if (!cfg) {
        vt_error(VT_ERR_ARG, "vt_config_dump: cfg is NULL");
        return NULL;
    }
    sbuf s = {0};
    const char *section = "";
    size_t seclen = 0;
    for (int i = 0; i < N_FIELDS; i++) {
        const field *f = &k_fields[i];
        const char *dot = strchr(f->path, '.');
        if (!dot) {
            section = "";
            seclen = 0;
            dump_field(&s, cfg, f, f->path, "");
            sb_printf(&s, "\n");
            continue;
        }
        size_t len = (size_t)(dot - f->path);
        if (len != seclen || strncmp(section, f->path, len) != 0) {
            section = f->path;
            seclen = len;
            sb_printf(&s, "%.*s:\n", (int)len, f->path);
        }
        dump_field(&s, cfg, f, dot + 1, "  ");
        sb_printf(&s, "\n");
    }
    if (s.oom || !s.p) {
        free(s.p);
        vt_error(VT_ERR_OOM, "config: out of memory");
        return NULL;
    }
    return s.p;
}

uint64_t vt_config_hash(const vt_config *cfg) {
    char *text = vt_config_dump(cfg);
    if (!text) return 0;
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    free(text);
    return h;
}
