// file_writer.c — background safetensors writes (see file_writer.h).
#include "train/file_writer.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/safetensors.h"

// ---- jobs --------------------------------------------------------------------------------
struct vt_st_job {
    char *path;
    int n, cap;  // tensors
    char **names;
    vt_tensor **ts;  // host snapshots, owned
    int n_meta, cap_meta;
    char **mk, **mv;
};

vt_st_job *vt_st_job_new(const char *path) {
    vt_st_job *j = calloc(1, sizeof *j);
    if (j) j->path = strdup(path);
    if (!j || !j->path) {
        free(j);
        vt_error(VT_ERR_OOM, "checkpoint %s: out of host memory", path);
        return NULL;
    }
    return j;
}

// Grows *a (elements of size sa) and *b (sb) to hold entry n; 1 when out of memory. The arrays
// are passed as the addresses of their pointers (void * here: C has no generic pointer-to-
// pointer), written back through memcpy so each keeps its own type.
static int grow(void *a, size_t sa, void *b, size_t sb, int n, int *cap) {
    if (n < *cap) return 0;
    int nc = *cap ? 2 * *cap : 16;
    void *pa, *pb;
    memcpy(&pa, a, sizeof pa);
    memcpy(&pb, b, sizeof pb);
    void *na = realloc(pa, (size_t)nc * sa);
    if (na) memcpy(a, &na, sizeof na);
    void *nb = na ? realloc(pb, (size_t)nc * sb) : NULL;
    if (nb) memcpy(b, &nb, sizeof nb);
    if (!na || !nb) return 1;
    *cap = nc;
    return 0;
}

vt_err vt_st_job_add(vt_st_job *j, const char *name, const vt_tensor *t) {
    if (!t) return vt_error(VT_ERR_ARG, "checkpoint %s: tensor %s is NULL", j->path, name);
    if (grow(&j->names, sizeof *j->names, &j->ts, sizeof *j->ts, j->n, &j->cap))
        return vt_error(VT_ERR_OOM, "checkpoint %s: out of host memory", j->path);
    char *nm = strdup(name);
    // a copy in every case: a host tensor may be updated in place by the next optimizer step
    vt_tensor *snap = t->device == VT_CPU ? vt_clone(t) : vt_to_device(t, VT_CPU);
    if (!nm || !snap) {
        free(nm);
        vt_release(snap);
        return vt_error_context("checkpoint %s: snapshot of %s: ", j->path, name);
    }
    j->names[j->n] = nm;
    j->ts[j->n++] = snap;
    return VT_OK;
}

vt_err vt_st_job_meta(vt_st_job *j, const char *key, const char *value) {
    if (grow(&j->mk, sizeof *j->mk, &j->mv, sizeof *j->mv, j->n_meta, &j->cap_meta))
        return vt_error(VT_ERR_OOM, "checkpoint %s: out of host memory", j->path);
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return vt_error(VT_ERR_OOM, "checkpoint %s: out of host memory", j->path);
    }
    j->mk[j->n_meta] = k;
    j->mv[j->n_meta++] = v;
    return VT_OK;
}

vt_err vt_st_job_write(const vt_st_job *j) {
    vt_err e = vt_st_write(j->path, j->n, (const char *const *)j->names, j->ts, j->n_meta,
                           (const char *const *)j->mk, (const char *const *)j->mv);
    return e ? vt_error_context("%s: ", j->path) : VT_OK;
}

void vt_st_job_free(vt_st_job *j) {
    if (!j) return;
    for (int i = 0; i < j->n; i++) {
        free(j->names[i]);
        vt_release(j->ts[i]);
    }
    for (int i = 0; i < j->n_meta; i++) {
        free(j->mk[i]);
        free(j->mv[i]);
    }
    free(j->names);
    free(j->ts);
    free(j->mk);
    free(j->mv);
    free(j->path);
    free(j);
}

// ---- the writer thread ---------------------------------------------------------------------
// A queue of tasks in submit order (one thread runs them: rows of an HDF5 file land in order
// and the library is never entered from two threads). Snapshots are bounded: at most
// SNAPSHOTS_MAX checkpoint jobs in the queue (one being written + one waiting); small tasks
// (log rows) are bounded by TASKS_MAX only, so a row never waits behind a checkpoint write.
#define SNAPSHOTS_MAX 2
#define TASKS_MAX 4096

typedef struct task {
    vt_err (*run)(void *arg);
    void (*free_arg)(void *arg);
    void *arg;
    int snapshot;  // counts towards SNAPSHOTS_MAX
    struct task *next;
} task;

struct vt_file_writer {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t changed;  // a task queued or finished, or stop asked
    task *head, *tail;       // head is the one running (it leaves the queue when done)
    int count, snapshots;
    int stop;
    vt_err failed;  // first unreported failure and its message
    char *failed_msg;
};

static void *writer_main(void *arg) {
    vt_file_writer *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->count && !w->stop) pthread_cond_wait(&w->changed, &w->lock);
        if (!w->count) break;  // stop asked and nothing left
        task *k = w->head;
        pthread_mutex_unlock(&w->lock);
        vt_err e = k->run(k->arg);  // the error state is thread-local: this thread's own
        char *msg = e ? strdup(vt_error_message()) : NULL;
        vt_error_clear();
        if (k->free_arg) k->free_arg(k->arg);
        pthread_mutex_lock(&w->lock);
        if (e && !w->failed) {
            w->failed = e;
            w->failed_msg = msg;
        } else {
            free(msg);
        }
        w->head = k->next;
        if (!w->head) w->tail = NULL;
        w->count--;
        w->snapshots -= k->snapshot;
        free(k);
        pthread_cond_broadcast(&w->changed);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

vt_file_writer *vt_file_writer_start(void) {
    vt_file_writer *w = calloc(1, sizeof *w);
    if (!w) {
        vt_error(VT_ERR_OOM, "file writer: out of host memory");
        return NULL;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->changed, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        pthread_cond_destroy(&w->changed);
        pthread_mutex_destroy(&w->lock);
        free(w);
        vt_error(VT_ERR_INTERNAL, "file writer: cannot start a thread");
        return NULL;
    }
    return w;
}

// The kept failure as this thread's error (then forgotten); VT_OK if none. Lock held.
static vt_err take_failure(vt_file_writer *w) {
    if (!w->failed) return VT_OK;
    vt_err e = vt_error(w->failed, "background write failed: %s", w->failed_msg ? w->failed_msg : "(no message)");
    free(w->failed_msg);
    w->failed_msg = NULL;
    w->failed = VT_OK;
    return e;
}

static vt_err submit(vt_file_writer *w, vt_err (*run)(void *), void (*free_arg)(void *), void *arg, int snapshot) {
    task *k = malloc(sizeof *k);
    if (!k) {
        if (free_arg) free_arg(arg);
        return vt_error(VT_ERR_OOM, "file writer: out of host memory");
    }
    *k = (task){run, free_arg, arg, snapshot, NULL};
    pthread_mutex_lock(&w->lock);
    while (w->count >= TASKS_MAX || (snapshot && w->snapshots >= SNAPSHOTS_MAX))
        pthread_cond_wait(&w->changed, &w->lock);
    if (w->tail) w->tail->next = k;
    else w->head = k;
    w->tail = k;
    w->count++;
    w->snapshots += snapshot;
    pthread_cond_broadcast(&w->changed);
    vt_err e = take_failure(w);
    pthread_mutex_unlock(&w->lock);
    return e;
}

static vt_err run_job(void *arg) { return vt_st_job_write(arg); }
static void free_job(void *arg) { vt_st_job_free(arg); }

vt_err vt_file_writer_submit(vt_file_writer *w, vt_st_job *j) { return submit(w, run_job, free_job, j, 1); }

vt_err vt_file_writer_submit_task(vt_file_writer *w, vt_err (*run)(void *arg), void (*free_arg)(void *arg), void *arg) {
    return submit(w, run, free_arg, arg, 0);
}

vt_err vt_file_writer_wait(vt_file_writer *w) {
    pthread_mutex_lock(&w->lock);
    while (w->count) pthread_cond_wait(&w->changed, &w->lock);
    vt_err e = take_failure(w);
    pthread_mutex_unlock(&w->lock);
    return e;
}

void vt_file_writer_free(vt_file_writer *w) {
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);  // the thread drains the queue before it stops
    free(w->failed_msg);
    pthread_cond_destroy(&w->changed);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
