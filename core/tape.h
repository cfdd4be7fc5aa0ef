// tape.h — reverse-mode autograd on a tape, and the op registry it runs on.
//
// A forward under an active tape records one node per op whose inputs carry gradient
// (requires_grad). backward walks the nodes in reverse creation order (a valid topological
// order), hands each node the gradient of its output and lets the op compute the gradients of
// exactly the inputs that need one; those are accumulated add-or-set into the producing node
// (activations) or into tensor->grad (leaves: LoRA parameters, inputs). Saved tensors and the
// node's gradient are released as soon as the node is done. Frozen weights never have
// requires_grad, so no weight-gradient work is done for them.
//
// With no tape active (no-grad mode) nothing is recorded and nothing is saved.
//
// Checkpoint segments (vt_segment): the segment's function runs without recording; one node
// saves only the segment's inputs and, in backward, re-runs the function on a local tape and
// backpropagates through it. Gradients are bit-identical to the plain tape because the same
// kernels run in the same order.
#pragma once
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VT_MAX_INPUTS 8
#define VT_MAX_SAVED 8
#define VT_PARAM_BYTES 256

typedef struct vt_node vt_node;
typedef struct vt_tape vt_tape;

// Kernels of one op on one device.
//  forward: compute out from in[]; may put extra tensors it wants in backward (softmax
//           probabilities, norm statistics) into n->saved[n->n_saved++] when n->recording.
//  backward: given gout (same shape as out) fill gin[i] (new tensors) for every i with
//           n->need[i]; leave the others NULL. Inputs saved by the op's save mask are in
//           n->saved[] first (in input order), then the output if saved, then the extras.
typedef vt_err (*vt_forward_fn)(vt_node *n, vt_tensor *const *in, vt_tensor *out);
typedef vt_err (*vt_backward_fn)(vt_node *n, const vt_tensor *gout, vt_tensor **gin);

typedef struct vt_op {
    const char *name;
    vt_forward_fn forward[VT_NUM_DEVICES];
    vt_backward_fn backward[VT_NUM_DEVICES];
    unsigned save_inputs;  // bit i: keep input i for backward
    int save_output;       // keep the output for backward
    // Optional: of the save_inputs bits, the ones this node's backward will read, given
    // n->need[] and n->params (called once the inputs are linked). An input left out keeps its
    // slot in n->saved[] as NULL, so the positions stay those of save_inputs. NULL: all of them.
    // (A Linear or Conv with a frozen weight reads its input only for the weight's gradient.)
    unsigned (*saved_needed)(const vt_node *n);
} vt_op;

struct vt_node {
    const vt_op *op;
    int n_in;
    int recording;                      // forward runs under a tape (extras may be saved)
    unsigned char need[VT_MAX_INPUTS];  // input i needs a gradient
    int64_t in_shape[VT_MAX_INPUTS][VT_MAX_DIMS];
    int in_ndim[VT_MAX_INPUTS];
    vt_dtype in_dtype[VT_MAX_INPUTS];
    vt_tensor *saved[VT_MAX_SAVED];
    int n_saved;
    // where each input's gradient goes: a node of the same tape, or a leaf tensor (retained)
    int src_node[VT_MAX_INPUTS];  // -1 if none
    vt_tensor *src_leaf[VT_MAX_INPUTS];
    vt_tensor *gout;  // accumulated gradient of the output
    int64_t out_shape[VT_MAX_DIMS];
    int out_ndim;
    void *user;  // segments: closure; released by the op via user_free
    void (*user_free)(void *user);
    unsigned char params[VT_PARAM_BYTES] __attribute__((aligned(16)));  // op-specific parameter struct
};

// Kernels for a device that the op's static entry leaves NULL (the CUDA backend registers
// its kernels by op name at init, so core stays free of CUDA). Returns VT_ERR_ARG if the table
// is full.
vt_err vt_register_kernels(const char *op_name, vt_device dev, vt_forward_fn forward, vt_backward_fn backward);
// The kernels that will run for op on dev (static entry first, then the registry), or NULL.
vt_forward_fn vt_op_forward_fn(const vt_op *op, vt_device dev);
vt_backward_fn vt_op_backward_fn(const vt_op *op, vt_device dev);

// Runs op on device of in[0]: allocates the output (shape/dtype given), calls the forward and
// records a node when a tape is active and some input requires grad. params (size bytes,
// <= VT_PARAM_BYTES) is copied into the node. NULL inputs (after n_in) are allowed only where
// the op documents an optional input (e.g. bias): pass them as NULL and the op sees NULL.
// Returns the output or NULL + error.
vt_tensor *vt_op_run(const vt_op *op, vt_tensor *const *in, int n_in, const void *params,
                     size_t params_size, vt_dtype out_dtype, int out_ndim, const int64_t *out_shape);

// Tape control. vt_tape_begin makes a new tape current (nesting: the previous one is restored
// by vt_tape_end). A tape with no current tape is "no-grad" mode.
vt_tape *vt_tape_begin(void);
void vt_tape_end(vt_tape *t);
vt_tape *vt_tape_current(void);
// Suspends recording (no-grad) until vt_nograd_end; returns the token to pass back.
vt_tape *vt_nograd_begin(void);
void vt_nograd_end(vt_tape *token);

// Backpropagates gout (same shape as out; NULL means ones) from out through the tape.
// out must have been produced on t. Leaves accumulate into ->grad. Frees nodes as it goes;
// the tape can be freed afterwards (or reused for nothing).
vt_err vt_backward(vt_tape *t, vt_tensor *out, const vt_tensor *gout);
void vt_tape_free(vt_tape *t);

// Statistics for tests and the memory plan.
typedef struct vt_tape_stats {
    int n_nodes;         // nodes recorded
    size_t saved_bytes;  // bytes of saved tensors currently held (counted once per node)
    int n_backward_calls;
} vt_tape_stats;
vt_tape_stats vt_tape_stats_get(const vt_tape *t);
// The dtype checkpoint segments keep their activation inputs in (VT_F32, the default: exact;
// VT_BF16 / VT_F16: packed, see vt_segment). VT_ERR_DTYPE for other dtypes.
vt_err vt_tape_set_saved_dtype(vt_tape *t, vt_dtype dt);

// Marks a tensor as a leaf that wants a gradient.
void vt_requires_grad(vt_tensor *t, int on);
// Frees a leaf's accumulated gradient.
void vt_zero_grad(vt_tensor *t);

// Checkpoint segment: out = fn(ctx, in, n_in). fn must be deterministic (dropout takes its
// seed from ctx) and must not keep references to in[]. ctx must outlive the backward.
// With a saved dtype of bf16 / f16 on the tape (vt_tape_set_saved_dtype), an input that is an
// f32 activation of this tape (not a leaf, not a constant) of at least 4096 elements is kept
// packed in that dtype and widened for the recompute: half the bytes the segments hold between
// forward and backward, and the backward then differentiates at the rounded input (the
// forward's output itself is computed from the unrounded one).
typedef vt_tensor *(*vt_segment_fn)(void *ctx, vt_tensor *const *in, int n_in);
vt_tensor *vt_segment(vt_segment_fn fn, void *ctx, vt_tensor *const *in, int n_in);

#ifdef __cplusplus
}
#endif
