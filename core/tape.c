// tape.c — tape autograd, op dispatch and checkpoint segments (see tape.h).
#include "tape.h"
#include "ops.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct vt_tape {
    uint64_t id;
    vt_node **nodes;
    int n, cap;
    vt_tape *prev;  // tape that was current before this one
    vt_tape_stats st;
    vt_dtype saved_dtype;  // of checkpoint segments' activation inputs (vt_tape_set_saved_dtype)
};

static _Thread_local vt_tape *g_current = NULL;
static uint64_t g_next_tape_id = 1;

vt_tape *vt_tape_current(void) { return g_current; }

vt_tape *vt_tape_begin(void) {
    vt_tape *t = calloc(1, sizeof *t);
    if (!t) { vt_error(VT_ERR_OOM, "out of host memory for a tape"); return NULL; }
    t->id = __atomic_fetch_add(&g_next_tape_id, 1, __ATOMIC_RELAXED);
    t->prev = g_current;
    g_current = t;
    return t;
}

void vt_tape_end(vt_tape *t) {
    if (t && g_current == t) g_current = t->prev;
}

// No-grad is a "tape" pointer of NULL made current; the token remembers what to restore.
vt_tape *vt_nograd_begin(void) {
    vt_tape *prev = g_current;
    g_current = NULL;
    return prev;
}
void vt_nograd_end(vt_tape *token) { g_current = token; }

vt_tape_stats vt_tape_stats_get(const vt_tape *t) { return t->st; }

vt_err vt_tape_set_saved_dtype(vt_tape *t, vt_dtype dt) {
    if (!t) return vt_error(VT_ERR_ARG, "vt_tape_set_saved_dtype: no tape");
    if (dt != VT_F32 && dt != VT_BF16 && dt != VT_F16)
        return vt_error(VT_ERR_DTYPE, "tape saved dtype %s: f32, bf16 or f16", vt_dtype_name(dt));
    t->saved_dtype = dt;
    return VT_OK;
}

void vt_requires_grad(vt_tensor *t, int on) {
    if (!t) return;
    t->requires_grad = on;
    t->tape_id = 0;
    t->node = -1;
}

void vt_zero_grad(vt_tensor *t) {
    if (t) vt_clear(&t->grad);
}

static void node_free(vt_tape *t, vt_node *n) {
    if (!n) return;
    for (int i = 0; i < n->n_saved; i++) {
        if (n->saved[i] && t) t->st.saved_bytes -= vt_nbytes(n->saved[i]);
        vt_release(n->saved[i]);
    }
    for (int i = 0; i < n->n_in; i++) vt_release(n->src_leaf[i]);
    vt_release(n->gout);
    if (n->user_free) n->user_free(n->user);
    free(n);
}

void vt_tape_free(vt_tape *t) {
    if (!t) return;
    if (g_current == t) g_current = t->prev;
    for (int i = 0; i < t->n; i++) node_free(t, t->nodes[i]);
    free(t->nodes);
    free(t);
}

static vt_err tape_push(vt_tape *t, vt_node *n, int *index) {
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 256;
        vt_node **nn = realloc(t->nodes, (size_t)cap * sizeof *nn);
        if (!nn) return vt_error(VT_ERR_OOM, "out of host memory growing the tape to %d nodes", cap);
        t->nodes = nn;
        t->cap = cap;
    }
    *index = t->n;
    t->nodes[t->n++] = n;
    t->st.n_nodes++;
    return VT_OK;
}

// Records n on t with out as its result (out then needs gradient); on failure frees both.
static vt_tensor *tape_push_output(vt_tape *t, vt_node *n, vt_tensor *out) {
    int idx = -1;
    if (tape_push(t, n, &idx) != VT_OK) {
        node_free(t, n);
        vt_release(out);
        return NULL;
    }
    out->requires_grad = 1;
    out->tape_id = t->id;
    out->node = idx;
    return out;
}

static void node_save(vt_tape *t, vt_node *n, vt_tensor *x) {
    n->saved[n->n_saved++] = vt_retain(x);
    if (t && x) t->st.saved_bytes += vt_nbytes(x);
}

// Links input i of node n to where its gradient must go.
static void node_link_input(vt_tape *t, vt_node *n, int i, vt_tensor *x) {
    n->src_node[i] = -1;
    n->src_leaf[i] = NULL;
    n->need[i] = 0;
    if (!x) return;
    memcpy(n->in_shape[i], x->shape, sizeof x->shape);
    n->in_ndim[i] = x->ndim;
    n->in_dtype[i] = x->dtype;
    if (!x->requires_grad) return;
    n->need[i] = 1;
    if (x->tape_id == t->id && x->node >= 0) n->src_node[i] = x->node;
    else n->src_leaf[i] = vt_retain(x);
}

// ---- kernel registry ---------------------------------------------------------------------
#define VT_MAX_REGISTERED 256
typedef struct registered_kernels {
    const char *name;
    vt_device dev;
    vt_forward_fn forward;
    vt_backward_fn backward;
} registered_kernels;
static registered_kernels g_registry[VT_MAX_REGISTERED];
static int g_n_registered = 0;

vt_err vt_register_kernels(const char *op_name, vt_device dev, vt_forward_fn forward, vt_backward_fn backward) {
    for (int i = 0; i < g_n_registered; i++) {
        if (g_registry[i].dev == dev && strcmp(g_registry[i].name, op_name) == 0) {
            g_registry[i].forward = forward;
            g_registry[i].backward = backward;
            return VT_OK;
        }
    }
    if (g_n_registered == VT_MAX_REGISTERED)
        return vt_error(VT_ERR_ARG, "kernel registry full registering %s", op_name);
    g_registry[g_n_registered++] = (registered_kernels){op_name, dev, forward, backward};
    return VT_OK;
}

static const registered_kernels *find_registered(const vt_op *op, vt_device dev) {
    for (int i = 0; i < g_n_registered; i++)
        if (g_registry[i].dev == dev && strcmp(g_registry[i].name, op->name) == 0) return &g_registry[i];
    return NULL;
}

vt_forward_fn vt_op_forward_fn(const vt_op *op, vt_device dev) {
    if (op->forward[dev]) return op->forward[dev];
    const registered_kernels *r = find_registered(op, dev);
    return r ? r->forward : NULL;
}

vt_backward_fn vt_op_backward_fn(const vt_op *op, vt_device dev) {
    if (op->backward[dev]) return op->backward[dev];
    const registered_kernels *r = find_registered(op, dev);
    return r ? r->backward : NULL;
}

// ---- op profile (VT_OP_PROFILE=1) ----------------------------------------------------------
// Wall time per op, forward and backward separately, printed to stderr at exit: tells which op
// a profiler's BLAS samples belong to (OpenBLAS has no frame pointers to unwind through).
// Off unless the variable is set; kernels called inside a segment's recompute count as
// backward of their op. Not thread-safe across host threads (ops are dispatched from one).
#define PROF_MAX 128
typedef struct prof_entry { const char *name; double fwd_s, bwd_s; int64_t fwd_n, bwd_n; } prof_entry;
static prof_entry g_prof[PROF_MAX];
static int g_prof_n, g_prof_on = -1;

static double prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int prof_cmp(const void *a, const void *b) {
    const prof_entry *x = a, *y = b;
    double u = x->fwd_s + x->bwd_s, v = y->fwd_s + y->bwd_s;
    return u < v ? 1 : u > v ? -1 : 0;
}

static void prof_print(void) {
    double tot = 0;
    for (int i = 0; i < g_prof_n; i++) tot += g_prof[i].fwd_s + g_prof[i].bwd_s;
    qsort(g_prof, (size_t)g_prof_n, sizeof *g_prof, prof_cmp);
    fprintf(stderr, "op profile (VT_OP_PROFILE): %.3f s in ops\n%-22s %10s %8s %10s %8s %6s\n", tot, "op", "fwd s",
            "calls", "bwd s", "calls", "%");
    for (int i = 0; i < g_prof_n; i++) {
        const prof_entry *e = &g_prof[i];
        fprintf(stderr, "%-22s %10.4f %8lld %10.4f %8lld %6.1f\n", e->name, e->fwd_s, (long long)e->fwd_n, e->bwd_s,
                (long long)e->bwd_n, tot > 0 ? 100.0 * (e->fwd_s + e->bwd_s) / tot : 0.0);
    }
}

static int prof_on(void) {
    if (g_prof_on < 0) {
        const char *v = getenv("VT_OP_PROFILE");
        g_prof_on = v && *v && strcmp(v, "0") != 0;
        if (g_prof_on) atexit(prof_print);
    }
    return g_prof_on;
}

static void prof_add(const vt_op *op, int bwd, double dt) {
    int i = 0;
    while (i < g_prof_n && g_prof[i].name != op->name) i++;
    if (i == g_prof_n) {
        if (g_prof_n == PROF_MAX) return;
        g_prof[g_prof_n++].name = op->name;
    }
    if (bwd) g_prof[i].bwd_s += dt, g_prof[i].bwd_n++;
    else g_prof[i].fwd_s += dt, g_prof[i].fwd_n++;
}

vt_tensor *vt_op_run(const vt_op *op, vt_tensor *const *in, int n_in, const void *params,
                     size_t params_size, vt_dtype out_dtype, int out_ndim, const int64_t *out_shape) {
    if (n_in > VT_MAX_INPUTS || params_size > VT_PARAM_BYTES) {
        vt_error(VT_ERR_INTERNAL, "op %s: %d inputs / %zu param bytes exceed the node limits", op->name,
                 n_in, params_size);
        return NULL;
    }
    vt_device dev = VT_CPU;
    int have_dev = 0, any_grad = 0;
    for (int i = 0; i < n_in; i++) {
        if (!in[i]) continue;
        if (!have_dev) {
            dev = in[i]->device;
            have_dev = 1;
        } else if (in[i]->device != dev) {
            vt_error(VT_ERR_DTYPE, "op %s: input %d is on %s but input 0 is on %s", op->name, i,
                     vt_device_name(in[i]->device), vt_device_name(dev));
            return NULL;
        }
        any_grad |= in[i]->requires_grad;
    }
    vt_forward_fn forward = vt_op_forward_fn(op, dev);
    if (!forward) {
        vt_error(VT_ERR_DTYPE, "op %s has no %s kernel", op->name, vt_device_name(dev));
        return NULL;
    }
    vt_tensor *out = vt_empty(out_dtype, dev, out_ndim, out_shape);
    if (!out) {
        vt_error_context("op %s: ", op->name);
        return NULL;
    }
    vt_tape *t = g_current;
    int recording = t && any_grad;
    vt_node *n = calloc(1, sizeof *n);
    if (!n) {
        vt_release(out);
        vt_error(VT_ERR_OOM, "op %s: out of host memory for a tape node", op->name);
        return NULL;
    }
    n->op = op;
    n->n_in = n_in;
    n->recording = recording;
    if (params_size) memcpy(n->params, params, params_size);
    memcpy(n->out_shape, out->shape, sizeof out->shape);
    n->out_ndim = out->ndim;
    for (int i = 0; i < n_in; i++) {
        n->src_node[i] = -1;
        if (in[i]) {
            memcpy(n->in_shape[i], in[i]->shape, sizeof in[i]->shape);
            n->in_ndim[i] = in[i]->ndim;
            n->in_dtype[i] = in[i]->dtype;
        }
    }
    if (recording) {
        for (int i = 0; i < n_in; i++) node_link_input(t, n, i, in[i]);
        const unsigned keep = op->saved_needed ? op->saved_needed(n) : op->save_inputs;
        for (int i = 0; i < n_in; i++)
            if (op->save_inputs & (1u << i)) node_save(t, n, keep & (1u << i) ? in[i] : NULL);
        if (op->save_output) node_save(t, n, out);
    }
    int n_saved_before = n->n_saved;
    const double t0 = prof_on() ? prof_now() : 0;
    vt_err e = forward(n, in, out);
    if (t0 > 0) prof_add(op, 0, prof_now() - t0);
    if (e != VT_OK) {
        vt_error_context("op %s: ", op->name);
        node_free(recording ? t : NULL, n);
        vt_release(out);
        return NULL;
    }
    if (!recording) {
        node_free(NULL, n);
        return out;
    }
    for (int i = n_saved_before; i < n->n_saved; i++)  // extras the forward kept
        if (n->saved[i]) t->st.saved_bytes += vt_nbytes(n->saved[i]);
    return tape_push_output(t, n, out);
}

// ---- gradient accumulation ---------------------------------------------------------------
// add-or-set: the first gradient is taken over as is, later ones are added in place.
static vt_err accumulate(vt_tensor **dst, vt_tensor *g) {
    if (!*dst) {
        *dst = g;
        return VT_OK;
    }
    vt_err e = vt_accumulate(*dst, g);
    vt_release(g);
    return e;
}

// ---- checkpoint segments -----------------------------------------------------------------
typedef struct segment_closure {
    vt_segment_fn fn;
    void *ctx;
    // inputs saved packed in the tape's saved dtype: the producing node each one stands for
    // (-1: saved as it was)
    int packed_node[VT_MAX_INPUTS];
} segment_closure;

// Segment inputs smaller than this stay f32 (contexts, embeddings: bytes that do not matter).
#define PACK_MIN_NUMEL 4096

// Whether a segment input is kept in t's saved dtype: an f32 activation produced on t (so its
// gradient goes to a node, which a widened copy can stand for: leaves must receive theirs in
// their own ->grad, and constants keep their exact values).
static int packable(const vt_tape *t, const vt_tensor *x) {
    return t->saved_dtype != VT_F32 && x->dtype == VT_F32 && x->requires_grad && x->tape_id == t->id && x->node >= 0 &&
           x->numel >= PACK_MIN_NUMEL;
}

// The packed copy (no history) of x, or NULL + error.
static vt_tensor *cast_untaped(vt_tensor *x, vt_dtype dt) {
    vt_tape *tok = vt_nograd_begin();
    vt_tensor *c = vt_cast(x, dt);
    vt_nograd_end(tok);
    return c;
}

static vt_err segment_forward_unused(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    (void)n; (void)in; (void)out;
    return vt_error(VT_ERR_INTERNAL, "segment nodes are not run through vt_op_run");
}
static const vt_op segment_op = {"segment", {segment_forward_unused, segment_forward_unused}, {NULL, NULL}, 0, 0, NULL};

vt_tensor *vt_segment(vt_segment_fn fn, void *ctx, vt_tensor *const *in, int n_in) {
    for (int i = 0; i < n_in; i++)
        if (!in[i]) return NULL;
    if (n_in > VT_MAX_INPUTS) {
        vt_error(VT_ERR_ARG, "segment: %d inputs, at most %d", n_in, VT_MAX_INPUTS);
        return NULL;
    }
    vt_tape *t = g_current;
    vt_tape *tok = vt_nograd_begin();
    vt_tensor *out = fn(ctx, in, n_in);
    vt_nograd_end(tok);
    if (!out || !t) return out;
    vt_node *n = calloc(1, sizeof *n);
    segment_closure *c = malloc(sizeof *c);
    if (!n || !c) {
        free(n);
        free(c);
        vt_release(out);
        vt_error(VT_ERR_OOM, "segment: out of host memory for a tape node");
        return NULL;
    }
    c->fn = fn;
    c->ctx = ctx;
    n->op = &segment_op;
    n->n_in = n_in;
    n->recording = 1;
    n->user = c;
    n->user_free = free;
    memcpy(n->out_shape, out->shape, sizeof out->shape);
    n->out_ndim = out->ndim;
    for (int i = 0; i < n_in; i++) {
        node_link_input(t, n, i, in[i]);
        c->packed_node[i] = -1;
        vt_tensor *p = NULL;
        if (packable(t, in[i]) && !(p = cast_untaped(in[i], t->saved_dtype)))
            vt_error_clear();  // no memory for the packed copy: keep x itself
        if (p) c->packed_node[i] = in[i]->node;
        node_save(t, n, p ? p : in[i]);
        vt_release(p);
    }
    // The result is treated as needing gradient: parameters inside fn (LoRA) may want one
    // even when no input does.
    return tape_push_output(t, n, out);
}

// ---- backward ----------------------------------------------------------------------------
static vt_err backward_range(vt_tape *t, int hi, int lo);

// Re-runs a segment's function with the tape recording (nodes appended at the end), so its
// inner nodes send their gradients to the same producers, in the same order, as without the
// segment; then walks just those new nodes.
static vt_err segment_backward(vt_tape *t, vt_node *n) {
    segment_closure *c = n->user;
    // packed inputs widened back to f32, each standing for its producing node again
    vt_tensor *in[VT_MAX_INPUTS] = {0};
    for (int i = 0; i < n->n_in; i++) {
        if (c->packed_node[i] < 0) {
            in[i] = vt_retain(n->saved[i]);
            continue;
        }
        if (!(in[i] = cast_untaped(n->saved[i], VT_F32))) {
            for (int j = 0; j < i; j++) vt_release(in[j]);
            return vt_error_context("segment recompute: widening a saved input: ");
        }
        in[i]->requires_grad = 1;
        in[i]->tape_id = t->id;
        in[i]->node = c->packed_node[i];
    }
    vt_tape *saved_current = g_current;
    g_current = t;
    int start = t->n;
    vt_tensor *out = c->fn(c->ctx, in, n->n_in);
    g_current = saved_current;
    for (int i = 0; i < n->n_in; i++) vt_release(in[i]);
    if (!out) return vt_error_context("segment recompute: ");
    vt_err e = VT_OK;
    if (out->tape_id == t->id && out->node >= start) {
        vt_node *on = t->nodes[out->node];
        on->gout = n->gout;
        n->gout = NULL;
        e = backward_range(t, t->n - 1, start);
    }
    vt_release(out);
    // drop what the recompute recorded beyond the output (nodes not reached)
    for (int i = start; i < t->n; i++) {
        node_free(t, t->nodes[i]);
        t->nodes[i] = NULL;
    }
    t->n = start;
    return e;
}

static vt_err backward_range(vt_tape *t, int hi, int lo) {
    for (int k = hi; k >= lo; k--) {
        vt_node *n = t->nodes[k];
        if (!n) continue;
        vt_err e = VT_OK;
        if (n->gout) {
            if (n->op == &segment_op) {
                e = segment_backward(t, n);
            } else {
                vt_device dev = n->gout->device;
                vt_tensor *gin[VT_MAX_INPUTS] = {0};
                vt_backward_fn backward = vt_op_backward_fn(n->op, dev);
                if (!backward) {
                    e = vt_error(VT_ERR_DTYPE, "op %s has no %s backward", n->op->name, vt_device_name(dev));
                } else {
                    const double t0 = prof_on() ? prof_now() : 0;
                    e = backward(n, n->gout, gin);
                    if (t0 > 0) prof_add(n->op, 1, prof_now() - t0);
                    t->st.n_backward_calls++;
                    if (e != VT_OK) vt_error_context("backward of op %s: ", n->op->name);
                }
                for (int i = 0; i < n->n_in; i++) {
                    if (!gin[i]) continue;
                    if (e == VT_OK && !n->need[i]) {
                        vt_release(gin[i]);
                        continue;
                    }
                    if (e == VT_OK && (gin[i]->numel != vt_dim_prod(n->in_ndim[i], n->in_shape[i]))) {
                        char a[VT_SHAPE_BUF], b[VT_SHAPE_BUF];
                        e = vt_error(VT_ERR_INTERNAL, "backward of op %s: gradient of input %d is %s, input is %s",
                                     n->op->name, i, vt_shape_str(gin[i], a, sizeof a),
                                     vt_shape_str_raw(n->in_ndim[i], n->in_shape[i], b, sizeof b));
                    }
                    if (e != VT_OK) {
                        vt_release(gin[i]);
                        continue;
                    }
                    if (n->src_node[i] >= 0) {
                        vt_node *src = t->nodes[n->src_node[i]];
                        if (src) e = accumulate(&src->gout, gin[i]);
                        else vt_release(gin[i]);
                    } else if (n->src_leaf[i]) {
                        e = accumulate(&n->src_leaf[i]->grad, gin[i]);
                    } else {
                        vt_release(gin[i]);
                    }
                }
            }
        }
        node_free(t, n);
        t->nodes[k] = NULL;
        if (e != VT_OK) return e;
    }
    return VT_OK;
}

vt_err vt_backward(vt_tape *t, vt_tensor *out, const vt_tensor *gout) {
    if (!t || !out) return vt_error(VT_ERR_ARG, "vt_backward: no tape or no output");
    if (out->tape_id != t->id || out->node < 0 || out->node >= t->n || !t->nodes[out->node])
        return vt_error(VT_ERR_ARG, "vt_backward: the output was not recorded on this tape "
                                    "(computed without a tape, or from no tensor that requires grad)");
    vt_tensor *g;
    if (gout) {
        if (gout->numel != out->numel) {
            char a[VT_SHAPE_BUF], b[VT_SHAPE_BUF];
            return vt_error(VT_ERR_SHAPE, "vt_backward: gradient %s does not match output %s",
                            vt_shape_str(gout, a, sizeof a), vt_shape_str(out, b, sizeof b));
        }
        g = vt_clone(gout);
    } else {
        g = vt_full(VT_CPU, out->ndim, out->shape, 1.0f);
        if (g && out->device != VT_CPU) {
            vt_tensor *d = vt_to_device(g, out->device);
            vt_release(g);
            g = d;
        }
    }
    if (!g) return vt_error_code();
    vt_tape *saved_current = g_current;
    g_current = NULL;  // backward kernels never record
    vt_node *n = t->nodes[out->node];
    vt_release(n->gout);
    n->gout = g;
    vt_err e = backward_range(t, out->node, 0);
    g_current = saved_current;
    return e;
}
