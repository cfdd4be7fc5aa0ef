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

// Grows a pair of parallel arrays to hold one more entry.
static int grow(void ***a, void ***b, int n, int *cap) {
    if (n < *cap) return 0;
    int nc = *cap ? 2 * *cap : 16;
    void **na = realloc(*a, (size_t)nc * sizeof *na);
    if (na) *a = na;
    void **nb = na ? realloc(*b, (size_t)nc * sizeof *nb) : NULL;
    if (nb) *b = nb;
    if (!na || !nb) return 1;
    *cap = nc;
    return 0;
}

vt_err vt_st_job_add(vt_st_job *j, const char *name, const vt_tensor *t) {
    if (!t) return vt_error(VT_ERR_ARG, "checkpoint %s: tensor %s is NULL", j->path, name);
    if (grow((void ***)&j->names, (void ***)&j->ts, j->n, &j->cap))
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
    if (grow((void ***)&j->mk, (void ***)&j->mv, j->n_meta, &j->cap_meta))
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
#define QUEUE_MAX 2  // one being written + one waiting

struct vt_file_writer {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t changed;  // a job queued or finished, or stop asked
    vt_st_job *queue[QUEUE_MAX];
    int head, count;  // count includes the job being written (it leaves the queue when done)
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
        vt_st_job *j = w->queue[w->head];
        pthread_mutex_unlock(&w->lock);
        vt_err e = vt_st_job_write(j);  // the error state is thread-local: this thread's own
        char *msg = e ? strdup(vt_error_message()) : NULL;
        vt_error_clear();
        vt_st_job_free(j);
        pthread_mutex_lock(&w->lock);
        if (e && !w->failed) {
            w->failed = e;
            w->failed_msg = msg;
        } else {
            free(msg);
        }
        w->head = (w->head + 1) % QUEUE_MAX;
        w->count--;
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
    vt_err e = vt_error(w->failed, "checkpoint write failed: %s", w->failed_msg ? w->failed_msg : "(no message)");
    free(w->failed_msg);
    w->failed_msg = NULL;
    w->failed = VT_OK;
    return e;
}

vt_err vt_file_writer_submit(vt_file_writer *w, vt_st_job *j) {
    pthread_mutex_lock(&w->lock);
    while (w->count == QUEUE_MAX) pthread_cond_wait(&w->changed, &w->lock);
    w->queue[(w->head + w->count) % QUEUE_MAX] = j;
    w->count++;
    pthread_cond_broadcast(&w->changed);
    vt_err e = take_failure(w);
    pthread_mutex_unlock(&w->lock);
    return e;
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
