// file_writer.h — safetensors files written by a background thread, so the training loop does
// not wait for the disk: a GPU run keeps the GPU busy while lora-/state- checkpoints are
// written, a CPU run keeps its cores on the next step.
//
// A job is a snapshot: vt_st_job_add copies the tensor to the host when it is added (on a GPU
// the one synchronising copy the checkpoint needs), so the optimizer may update the original
// right after. The write itself is vt_st_write's (temp file + rename: atomic, an existing file
// is never half-replaced). One job is written while at most one more waits: a third submit
// blocks until the first is on disk, so the snapshots in memory stay bounded (two). Small tasks
// (vt_file_writer_submit_task: the rewards.h5 rows) share the thread and its order.
// Failures are kept (the first one, naming its file) and returned by the next submit or wait.
#pragma once
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_st_job vt_st_job;

// A file to write at path (copied); NULL on out of memory (error set).
vt_st_job *vt_st_job_new(const char *path);
// Adds tensor name = a host copy of t, taken now (t may change afterwards).
vt_err vt_st_job_add(vt_st_job *j, const char *name, const vt_tensor *t);
// Adds a __metadata__ pair (both strings copied).
vt_err vt_st_job_meta(vt_st_job *j, const char *key, const char *value);
// Writes the file now, in the calling thread (the job stays the caller's).
vt_err vt_st_job_write(const vt_st_job *j);
void vt_st_job_free(vt_st_job *j);

typedef struct vt_file_writer vt_file_writer;

// Starts the writer thread; NULL (error set) if it cannot.
vt_file_writer *vt_file_writer_start(void);
// Queues j; the writer owns it from here (also when an error is returned). Blocks while two
// jobs are already queued. Returns the first failure of an earlier job not yet reported.
vt_err vt_file_writer_submit(vt_file_writer *w, vt_st_job *j);
// Queues a small task (a log row: its arg a copy of the values) run in submit order with the
// jobs by the same thread, so the files it touches are never entered from two threads; the
// writer owns arg and calls free_arg(arg) after run (also on failure; free_arg may be NULL).
// Only checkpoint jobs count towards the two-snapshot bound: a row never waits behind one. A
// failing run's error (its message should name its file) is returned by the next submit / wait.
vt_err vt_file_writer_submit_task(vt_file_writer *w, vt_err (*run)(void *arg), void (*free_arg)(void *arg), void *arg);
// Waits until every queued job is on disk; returns the first failure not yet reported.
vt_err vt_file_writer_wait(vt_file_writer *w);
// Waits for the queue, stops the thread, frees. A failure not yet reported is lost: call
// vt_file_writer_wait first where it matters.
void vt_file_writer_free(vt_file_writer *w);

#ifdef __cplusplus
}
#endif
