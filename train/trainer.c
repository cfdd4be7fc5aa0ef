// trainer.c — the VADER training loop (see trainer.h).
#include "trainer.h"
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "core/models/openclip.h"
#include "core/models/unet3d.h"
#include "core/models/vae_decoder.h"
#include "core/safetensors.h"
#include "core/tokenizer.h"
#include "train/adamw.h"
#include "train/ddim.h"
#include "train/dist.h"
#include "train/eval.h"
#include "train/h5log.h"
#include "train/lora.h"
#include "train/memplan.h"
#include "train/models.h"
#include "train/tiny_models.h"
#include "train/vader_step.h"
#include "rewards/reward.h"
#ifdef VADER_HAVE_CUDA
#include "cuda/backend.h"
#endif

// lvdm's temporal_length of VideoCrafter2 (the frames a clip may have).
#define VC2_TEMPORAL_LENGTH 16
#define MAX_REWARDS 8
// upstream trains with the temporal conv's Dropout(0.1) active
#define TEMPORAL_CONV_DROPOUT 0.1f

struct vt_trainer {
    vt_config cfg;
    vt_train_options opt;
    vt_unet3d *unet;
    vt_vae_decoder *vae;
    vt_openclip *clip;  // the text tower: encodes the prompt contexts at set-up, then freed (NULL)
    vt_tokenizer *tok;
    vt_ddim_schedule sched;
    vt_tensor **params;
    int n_params;
    vt_adamw adam;
    vt_device device;  // where models, LoRA, gradients and AdamW state live
    int adam_ready;
    vt_rng rng;              // seeded from `seed`; training micro-batches use micro_rng instead
    vt_dist *dist;           // opt.dist, or single below
    vt_dist single;          // a one-process "job" when opt.dist is NULL
    int micro_B;             // prompts per micro-batch on this rank
    vt_tensor *flat;         // flat f32 buffer for the gradient all-reduce and broadcasts
    int64_t step, skipped, bad_in_row;
    char **prompts;
    int n_prompts;
    vt_tensor **prompt_ctx;  // [1, L, D] per prompt
    vt_tensor *uncond_ctx;   // [1, L, D]
    vt_h5log *log;
    vt_file_writer *writer;  // checkpoint files (main rank; NULL: written in the loop's thread)
    const char **cols;
    int n_cols;
    int T, lh, lw;
    unsigned lora_targets;
    vt_reward *rewards[MAX_REWARDS];
    vt_step_timing *timing;
    int has_first;
    double first_reward, last_reward;
    vt_evaluator *eval;      // held-out prompts (NULL: evaluation off)
    const char **eval_cols;
    int n_eval_cols;
};

// data parallel helpers (defined in their section below)
static int is_main(const vt_trainer *t);
static int micro_per_step(const vt_trainer *t);
static vt_err eval_create(vt_trainer *t);

// ---- small helpers ------------------------------------------------------------------------
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static vt_err mkdir_p(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST)
            return vt_error(VT_ERR_IO, "output.dir: cannot create %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) && errno != EEXIST) return vt_error(VT_ERR_IO, "output.dir: cannot create %s: %s", buf, strerror(errno));
    return VT_OK;
}

static vt_err check_writable_dir(const char *dir) {
    if (mkdir_p(dir)) return vt_error_code();
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.vader-write-test.%d", dir, (int)getpid());
    FILE *f = fopen(probe, "w");
    if (!f) return vt_error(VT_ERR_IO, "output.dir: %s is not writable: %s", dir, strerror(errno));
    fclose(f);
    remove(probe);
    return VT_OK;
}

static vt_err check_readable(const char *field, const char *path) {
    if (access(path, R_OK))
        return vt_error(VT_ERR_IO, "%s: %s: %s", field, path, strerror(errno));
    return VT_OK;
}

// ---- prompts ------------------------------------------------------------------------------
static vt_err load_prompts(vt_trainer *t) {
    const vt_config *c = &t->cfg;
    if (c->data.n_prompts > 0) {
        t->prompts = calloc((size_t)c->data.n_prompts, sizeof *t->prompts);
        if (!t->prompts) return vt_error(VT_ERR_OOM, "prompts");
        for (int i = 0; i < c->data.n_prompts; i++)
            if (!(t->prompts[t->n_prompts++] = strdup(c->data.prompts[i]))) return vt_error(VT_ERR_OOM, "prompts");
        return VT_OK;
    }
    FILE *f = fopen(c->data.prompt_file, "r");
    if (!f) return vt_error(VT_ERR_IO, "data.prompt_file: %s: %s", c->data.prompt_file, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int room = 0;
    vt_err e = VT_OK;
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ')) line[--n] = 0;
        if (n == 0) continue;
        if (t->n_prompts == room) {
            room = room ? 2 * room : 64;
            char **np = realloc(t->prompts, (size_t)room * sizeof *np);
            if (!np) {
                e = vt_error(VT_ERR_OOM, "prompts");
                break;
            }
            t->prompts = np;
        }
        if (!(t->prompts[t->n_prompts++] = strdup(line))) {
            e = vt_error(VT_ERR_OOM, "prompts");
            break;
        }
    }
    free(line);
    fclose(f);
    if (!e && t->n_prompts == 0) e = vt_error(VT_ERR_CONFIG, "data.prompt_file: %s has no prompts", c->data.prompt_file);
    return e;
}

// ---- models (train/models.h: shared with vader-sample) ------------------------------------
static vt_err build_models(vt_trainer *t) {
    vt_vc2_models m;
    vt_err e = vt_vc2_models_build(&t->cfg, &m);
    t->unet = m.unet;
    t->vae = m.vae;
    t->clip = m.clip;
    return e;
}

// The device a run uses: config device (auto = cuda when built with it and a GPU is visible).
static vt_err pick_device(vt_trainer *t) {
    t->device = VT_CPU;
#ifdef VADER_HAVE_CUDA
    vt_cfg_device want = t->cfg.device;
    if (want == VT_CFG_DEVICE_CPU) return VT_OK;
    if (vt_cuda_device_count() == 0) {
        if (want == VT_CFG_DEVICE_CUDA) return vt_error(VT_ERR_DEVICE, "device: cuda, but no GPU is visible");
        return VT_OK;
    }
    int dev = t->dist->device >= 0 ? t->dist->device : 0;
    if (vt_cuda_init(dev)) return vt_error_context("device: cuda %d: ", dev);
    t->device = VT_CUDA;
#endif
    return VT_OK;
}

// Models (after LoRA was added / loaded) and reward modules onto the run's device.
static vt_err models_to_device(vt_trainer *t) {
    if (t->device == VT_CPU) return VT_OK;
    if (vt_unet3d_to_device(t->unet, t->device) || vt_vae_decoder_to_device(t->vae, t->device) ||
        vt_openclip_to_device(t->clip, t->device))
        return vt_error_code();
    for (int m = 0; m < MAX_REWARDS; m++)
        if (t->rewards[m] && vt_reward_to_device(t->rewards[m], t->device)) return vt_error_code();
    return VT_OK;
}

// f32 values of a (possibly GPU) tensor [n] into out (as doubles).
static vt_err read_f32(const vt_tensor *x, double *out, int n, size_t stride) {
    vt_tensor *h = vt_on_device(x, VT_CPU);
    if (!h) return vt_error_code();
    for (int i = 0; i < n; i++) out[(size_t)i * stride] = vt_f32(h)[i];
    vt_release(h);
    return VT_OK;
}

// ---- reward ----------------------------------------------------------------------------
typedef struct reward_ctx {
    const vt_config *cfg;
    vt_reward *const *mods;
    const char *const *prompts;             // the micro-batch's prompts
    vt_tensor *module_reward[MAX_REWARDS];  // [B] per module of the last call
} reward_ctx;

// Weighted sum of the modules' losses (rewards/reward.h modules); the per-sample reward
// returned is the weighted sum of the module rewards (each kept in ctx for the log).
static vt_tensor *reward_sum(void *user, vt_tensor *frames, vt_tensor **reward) {
    reward_ctx *rc = user;
    *reward = NULL;
    vt_tensor *loss = NULL, *rsum = NULL;
    for (int m = 0; m < rc->cfg->reward.n_modules; m++) {
        const vt_config_reward *rm = &rc->cfg->reward.modules[m];
        vt_tensor *r = NULL, *l = NULL;
        if (vt_reward_forward(rc->mods[m], frames, rc->prompts, &r, &l)) {
            vt_error_context("reward %s: ", vt_cfg_reward_name(rm->kind));
            vt_release(loss);
            vt_release(rsum);
            return NULL;
        }
        vt_tensor *wl = vt_scale(l, (float)rm->weight);
        vt_tensor *nl = loss ? vt_add(loss, wl) : vt_retain(wl);
        vt_tape *tk = vt_nograd_begin();
        vt_tensor *rd = vt_detach(r);
        vt_tensor *wr = vt_scale(rd, (float)rm->weight);
        vt_tensor *nr = rsum ? vt_add(rsum, wr) : vt_retain(wr);
        vt_nograd_end(tk);
        vt_release(rc->module_reward[m]);
        rc->module_reward[m] = rd;
        vt_release(r);
        vt_release(l);
        vt_release(wl);
        vt_release(wr);
        vt_release(loss);
        vt_release(rsum);
        loss = nl;
        rsum = nr;
    }
    *reward = rsum;
    return loss;
}

// The config's reward modules from the registry (checkpoints opened now: bad names and
// missing files fail before any compute).
static vt_err create_rewards(vt_trainer *t) {
    const vt_config *c = &t->cfg;
    for (int m = 0; m < c->reward.n_modules; m++) {
        const vt_config_reward *rm = &c->reward.modules[m];
        vt_reward_kv kv[32];
        int n = rm->n_options < 32 ? rm->n_options : 32;
        for (int i = 0; i < n; i++) kv[i].key = rm->options[i].key, kv[i].value = rm->options[i].value;
        vt_reward_options o = {rm->checkpoint, NULL, NULL, kv, n};
        if (!(t->rewards[m] = vt_reward_create(vt_cfg_reward_name(rm->kind), &o)))
            return vt_error_context("reward.%d (%s): ", m, vt_cfg_reward_name(rm->kind));
        t->rewards[m]->segments = c->memory.checkpointing;
    }
    return VT_OK;
}

// ---- columns ------------------------------------------------------------------------------
static const char *const k_base_cols[] = {"step", "reward_mean", "reward_std", "loss", "grad_norm",
                                          "lr", "step_time_s", "peak_mem_bytes", "skipped"};
#define N_BASE_COLS (int)(sizeof k_base_cols / sizeof k_base_cols[0])
static char g_module_cols[MAX_REWARDS * 2][64];

int vt_trainer_train_columns(const vt_config *cfg, const char ***cols) {
    int nm = cfg->reward.n_modules < MAX_REWARDS ? cfg->reward.n_modules : MAX_REWARDS;
    int n = N_BASE_COLS + 2 * nm;
    const char **c = calloc((size_t)n, sizeof *c);
    if (!c) return -1;
    for (int i = 0; i < N_BASE_COLS; i++) c[i] = k_base_cols[i];
    for (int m = 0; m < nm; m++) {
        const char *name = vt_cfg_reward_name(cfg->reward.modules[m].kind);
        // two modules of one kind get an index suffix
        int dup = 0;
        for (int k = 0; k < m; k++) dup |= cfg->reward.modules[k].kind == cfg->reward.modules[m].kind;
        if (dup) {
            snprintf(g_module_cols[2 * m], 64, "reward/%s%d_mean", name, m);
            snprintf(g_module_cols[2 * m + 1], 64, "reward/%s%d_std", name, m);
        } else {
            snprintf(g_module_cols[2 * m], 64, "reward/%s_mean", name);
            snprintf(g_module_cols[2 * m + 1], 64, "reward/%s_std", name);
        }
        c[N_BASE_COLS + 2 * m] = g_module_cols[2 * m];
        c[N_BASE_COLS + 2 * m + 1] = g_module_cols[2 * m + 1];
    }
    *cols = c;
    return n;
}

// ---- checkpoint / resume ------------------------------------------------------------------
static vt_tensor *i64_tensor(int n, const int64_t *v) {
    vt_tensor *t = vt_empty(VT_I64, VT_CPU, 1, (int64_t[]){n});
    if (t) memcpy(vt_data(t), v, sizeof(int64_t) * (size_t)n);
    return t;
}

// Hash of the config without output.dir (a run copied elsewhere is the same run), as hex.
static void config_hash_hex(const vt_config *c, char *out, size_t n) {
    vt_config tmp;
    uint64_t h = 0;
    if (vt_config_copy(&tmp, c) == VT_OK) {
        free(tmp.output.dir);
        tmp.output.dir = NULL;
        h = vt_config_hash(&tmp);
        vt_config_free(&tmp);
    }
    snprintf(out, n, "%016llx", (unsigned long long)h);
}

// The step's lora- and state- files: snapshots taken now (host copies of the LoRA and AdamW
// tensors), written by the background writer while training goes on (file_writer.h); a
// failed write stops the run at the next checkpoint or at the end, naming the file.
static vt_err save_checkpoint(vt_trainer *t) {
    const vt_config *c = &t->cfg;
    char path[4200], hash[32];
    config_hash_hex(c, hash, sizeof hash);
    const char *ek[1] = {"config_hash"}, *ev[1] = {hash};
    snprintf(path, sizeof path, "%s/lora-%06lld.safetensors", c->output.dir, (long long)t->step);
    vt_st_job *lora = vt_lora_save_job(t->unet, path, c->lora.rank, c->lora.alpha, c->lora.targets, c->lora.n_targets,
                                       t->step, 1, ek, ev);
    if (!lora) return vt_error_context("%s: ", path);
    // state: LoRA, AdamW moments, counters, RNG
    snprintf(path, sizeof path, "%s/state-%06lld.safetensors", c->output.dir, (long long)t->step);
    vt_st_job *state = vt_st_job_new(path);
    vt_err e = state ? vt_st_job_meta(state, ek[0], ev[0]) : vt_error_code();
    for (int i = 0; i < t->n_params && !e; i++) {
        const char *pn;
        vt_unet3d_lora_param(t->unet, i, &pn);
        const char *kinds[3] = {"lora.", "adam_m.", "adam_v."};
        vt_tensor *src[3] = {t->params[i], t->adam.m[i], t->adam.v[i]};
        for (int k = 0; k < 3 && !e; k++) {
            char name[1024];
            snprintf(name, sizeof name, "%s%s", kinds[k], pn);
            e = vt_st_job_add(state, name, src[k]);
        }
    }
    int64_t counters[4] = {t->step, t->adam.step, t->skipped, t->bad_in_row};
    // the random streams are counter-based (micro_rng): their position is (seed, step, micro-batch
    // layout); the layout tells a resume whether it will draw what the uninterrupted run drew
    int64_t rng[4] = {(int64_t)c->seed, t->step, micro_per_step(t), t->micro_B};
    vt_tensor *tc = e ? NULL : i64_tensor(4, counters), *tr = e ? NULL : i64_tensor(4, rng);
    if (!e && (!tc || !tr)) e = vt_error_code();
    if (!e) e = vt_st_job_add(state, "counters", tc);  // step, adam step, skipped, bad in a row
    if (!e) e = vt_st_job_add(state, "rng", tr);
    vt_release(tc);
    vt_release(tr);
    if (e) {
        vt_st_job_free(lora);
        vt_st_job_free(state);
        return vt_error_context("%s: ", path);
    }
    if (!t->writer) {  // no writer thread (it could not start): write here
        e = vt_st_job_write(lora);
        if (!e) e = vt_st_job_write(state);
        vt_st_job_free(lora);
        vt_st_job_free(state);
        return e;
    }
    e = vt_file_writer_submit(t->writer, lora);  // lora first: a state file implies its lora file
    vt_err e2 = vt_file_writer_submit(t->writer, state);
    return e ? e : e2;
}

// Waits for the background checkpoint writes. A run that already failed keeps its own error
// (the files queued before the failure still land); else a failed write is the run's error.
static vt_err drain_writer(vt_trainer *t, vt_err e) {
    if (!t->writer) return e;
    if (!e) return vt_file_writer_wait(t->writer);
    char *msg = strdup(vt_error_message());
    vt_file_writer_wait(t->writer);
    vt_error(e, "%s", msg ? msg : "(out of memory keeping the message)");
    free(msg);
    return e;
}

// The state file with the highest step in dir, into out (empty when none).
static void latest_state(const char *dir, char *out, size_t n) {
    out[0] = 0;
    DIR *d = opendir(dir);
    if (!d) return;
    long long best = -1;
    struct dirent *de;
    while ((de = readdir(d))) {
        long long s;
        char tail[32];
        if (sscanf(de->d_name, "state-%lld.safetens%31s", &s, tail) == 2 && strcmp(tail, "ors") == 0 && s > best) {
            best = s;
            snprintf(out, n, "%s/%s", dir, de->d_name);
        }
    }
    closedir(d);
}

static vt_err copy_entry(vt_safetensors *f, const char *name, vt_tensor *dst) {
    vt_tensor *src = vt_st_get(f, name);
    if (!src) return vt_error_code();
    vt_err e = VT_OK;
    if (src->dtype != dst->dtype || src->numel != dst->numel)
        e = vt_error(VT_ERR_KEY, "%s: %s has the wrong dtype or size", f->path, name);
    else e = vt_copy_into(dst, src);  // dst may live on the GPU
    vt_release(src);
    return e;
}

static vt_err load_state(vt_trainer *t, const char *path) {
    vt_safetensors *f = vt_st_open(path);
    if (!f) return vt_error_context("resume: ");
    vt_err e = VT_OK;
    char name[600];
    for (int i = 0; i < t->n_params && !e; i++) {
        const char *pn;
        vt_unet3d_lora_param(t->unet, i, &pn);
        snprintf(name, sizeof name, "lora.%s", pn);
        e = copy_entry(f, name, t->params[i]);
        snprintf(name, sizeof name, "adam_m.%s", pn);
        if (!e) e = copy_entry(f, name, t->adam.m[i]);
        snprintf(name, sizeof name, "adam_v.%s", pn);
        if (!e) e = copy_entry(f, name, t->adam.v[i]);
    }
    vt_tensor *cnt = e ? NULL : vt_st_get(f, "counters"), *rng = e ? NULL : vt_st_get(f, "rng");
    if (!e && (!cnt || !rng || cnt->dtype != VT_I64 || rng->dtype != VT_I64 || cnt->numel != 4 || rng->numel != 4))
        e = vt_error(VT_ERR_FORMAT, "%s: counters / rng missing or malformed", path);
    if (!e) {
        t->step = vt_i64(cnt)[0];
        t->adam.step = vt_i64(cnt)[1];
        t->skipped = vt_i64(cnt)[2];
        t->bad_in_row = vt_i64(cnt)[3];
        const int64_t *r = vt_i64(rng);
        if (t->opt.progress && (r[2] != micro_per_step(t) || r[3] != t->micro_B))
            fprintf(t->opt.progress,
                    "vader-train: note: %s was written with %lld micro-batches of %lld prompts per step, this run "
                    "has %d of %d: it continues the training but draws other prompts and noise than an "
                    "uninterrupted run would\n",
                    path, (long long)r[2], (long long)r[3], micro_per_step(t), t->micro_B);
    }
    vt_release(cnt);
    vt_release(rng);
    char hash[32];
    config_hash_hex(&t->cfg, hash, sizeof hash);
    const char *h = vt_st_metadata(f, "config_hash");
    if (!e && t->opt.progress && (!h || strcmp(h, hash) != 0))
        fprintf(t->opt.progress, "vader-train: note: resuming %s written with a different config\n", path);
    vt_st_close(f);
    return e ? vt_error_context("resume %s: ", path) : VT_OK;
}

// ---- data parallel (train/dist.h, train/DIST.md) -------------------------------------------
// Everything rank-related of the trainer is in these functions; with one process (t->dist is
// t->single, world 1) every collective is a no-op and the run is the plain single-process one.
static int is_main(const vt_trainer *t) { return t->dist->rank == 0; }

// Micro-batch g of optimisation step `step`, g counted over all ranks (g = rank x accumulation +
// micro): its own random stream. N ranks with accumulation A therefore draw exactly what one
// process with accumulation N x A draws, and a resumed run draws what the uninterrupted one did
// (the streams depend on (seed, step, g) only: no RNG state to save per rank).
static void micro_rng(const vt_trainer *t, int64_t step, int g, vt_rng *r) {
    vt_rng_seed(r, vt_hash64(vt_dist_seed(t->cfg.seed, g), (uint64_t)step));
}
static int global_micro(const vt_trainer *t, int micro) { return t->dist->rank * t->cfg.optim.accumulation + micro; }
static int micro_per_step(const vt_trainer *t) { return t->dist->world * t->cfg.optim.accumulation; }

// What must agree across ranks: the resolved config without output.dir (only rank 0 reads and
// writes it) and dist.timeout (a per-rank watchdog, as $VADER_DIST_TIMEOUT is), and the options
// that shape the run (--steps, --max-bad-steps). --resume matters on rank 0 only.
static uint64_t rank_config_hash(const vt_trainer *t) {
    vt_config tmp;
    uint64_t h = VT_DIST_HASH_INIT;
    if (vt_config_copy(&tmp, &t->cfg) == VT_OK) {
        free(tmp.output.dir);
        tmp.output.dir = NULL;
        tmp.dist.timeout = 0;
        h = vt_config_hash(&tmp);
        vt_config_free(&tmp);
    }
    int64_t o[2] = {t->opt.stop_at, t->opt.max_bad_steps};
    return vt_dist_hash(h, o, sizeof o);
}

// Before anything loads: the same config on every rank, then the batch split over ranks and
// micro-batches.
static vt_err dist_check_start(vt_trainer *t) {
    const vt_config *c = &t->cfg;
    vt_err e = vt_dist_check_same(t->dist, rank_config_hash(t), "resolved config");
    if (e) return e;
    if (c->data.global_batch_size > 0) {
        if (vt_dist_check_batch(c->data.global_batch_size, c->optim.accumulation, t->dist->world, &t->micro_B))
            return vt_error_context("data.global_batch_size: ");
    } else {
        t->micro_B = c->data.batch_size;
    }
    if (t->micro_B > 64)
        return vt_error(VT_ERR_CONFIG, "data.batch_size: %d prompts per micro-batch and rank, at most 64", t->micro_B);
    return VT_OK;
}

// Once the LoRA, the AdamW state and (on rank 0 only) the resume state are in place: rank 0's
// counters, LoRA and AdamW moments to every rank. Only rank 0 reads a state file, so resuming
// needs no file system shared between nodes, and works with any number of ranks.
static vt_err dist_sync_initial(vt_trainer *t) {
    int64_t numel = vt_dist_flat_numel(t->params, t->n_params);
    if (numel < 1) return vt_error(VT_ERR_INTERNAL, "trainer: no LoRA parameters");
    t->flat = vt_empty(VT_F32, t->params[0]->device, 1, (int64_t[]){numel});
    if (!t->flat) return vt_error_code();
    if (t->dist->world == 1) return VT_OK;
    int64_t cnt[4] = {t->step, t->adam.step, t->skipped, t->bad_in_row};
    vt_err e = vt_dist_broadcast(t->dist, cnt, sizeof cnt, VT_CPU);
    if (!e) {
        t->step = cnt[0];
        t->adam.step = cnt[1];
        t->skipped = cnt[2];
        t->bad_in_row = cnt[3];
        e = vt_dist_broadcast_params(t->dist, t->params, t->n_params, t->flat);
    }
    if (!e) e = vt_dist_broadcast_params(t->dist, t->adam.m, t->n_params, t->flat);
    if (!e) e = vt_dist_broadcast_params(t->dist, t->adam.v, t->n_params, t->flat);
    return e ? vt_error_context("initial LoRA / AdamW state from rank 0: ") : VT_OK;
}

// The one all-reduce of an optimisation step (average of the flat LoRA gradient), after
// accumulation and before clipping, so the clip sees the averaged gradient.
static vt_err dist_average_grads(vt_trainer *t) {
    return vt_dist_average_grads(t->dist, t->params, t->n_params, t->flat);
}

#define MAX_STAT_COLS (MAX_REWARDS + 1)
// The logged scalars of a step over all ranks. vals holds ncol columns of n local samples each;
// mean and std (sample std) are over every sample of every rank, in two passes as one process
// computes them; *loss is averaged over ranks; peaks[0..1] (step time, memory) are maxima.
static vt_err dist_reduce_stats(vt_trainer *t, const double *vals, int ncol, int n, double *loss, double *mean,
                                double *std, double *peaks) {
    double buf[MAX_STAT_COLS + 2];
    buf[0] = (double)n;
    buf[1] = *loss;
    for (int k = 0; k < ncol; k++) {
        double sum = 0;
        for (int i = 0; i < n; i++) sum += vals[(size_t)k * (size_t)n + (size_t)i];
        buf[2 + k] = sum;
    }
    vt_err e = vt_dist_allreduce_f64(t->dist, buf, ncol + 2, VT_DIST_SUM);
    if (e) return e;
    double N = buf[0];
    *loss = buf[1] / (double)t->dist->world;
    for (int k = 0; k < ncol; k++) mean[k] = N > 0 ? buf[2 + k] / N : NAN;
    for (int k = 0; k < ncol; k++) {
        double q = 0;
        for (int i = 0; i < n; i++) {
            double d = vals[(size_t)k * (size_t)n + (size_t)i] - mean[k];
            q += d * d;
        }
        buf[k] = q;
    }
    if ((e = vt_dist_allreduce_f64(t->dist, buf, ncol, VT_DIST_SUM))) return e;
    for (int k = 0; k < ncol; k++) std[k] = N > 1 ? sqrt(buf[k] / (N - 1)) : 0.0;
    return vt_dist_allreduce_f64(t->dist, peaks, 2, VT_DIST_MAX);
}

// Failure injection for the multi-rank tests (vt_train_options.debug_fail_*).
static vt_err dist_debug_fail(const vt_trainer *t) {
    const vt_train_options *o = &t->opt;
    if (o->debug_fail_mode <= 0 || t->step + 1 != o->debug_fail_step || t->dist->rank != o->debug_fail_rank)
        return VT_OK;
    if (o->debug_fail_mode == 2) raise(SIGKILL);
    while (o->debug_fail_mode == 3) sleep(1);
    return vt_error(VT_ERR_INTERNAL, "injected failure at step %d (--debug-fail)", o->debug_fail_step);
}

// Evaluation hook (output.eval_every, data.eval_prompts): split the eval prompts over ranks
// with vt_dist_share (contiguous shares in rank order), score this rank's share, then
// vt_dist_gather_f64 the per-prompt rewards to rank 0, which gets them in prompt order and
// writes the /eval row. Every rank must run the evaluation at the same steps.

// ---- create -------------------------------------------------------------------------------
static vt_err check_config(const vt_config *c, int main_rank) {
    if (vt_config_validate(c)) return vt_error_code();
    if (c->reward.n_modules > MAX_REWARDS) return vt_error(VT_ERR_CONFIG, "reward: at most %d modules", MAX_REWARDS);
    if (c->sampler.backprop_steps > c->sampler.steps)
        return vt_error(VT_ERR_CONFIG, "sampler.backprop_steps: K = %d is more than sampler.steps (%d)",
                        c->sampler.backprop_steps, c->sampler.steps);
    if (c->model.frames > VC2_TEMPORAL_LENGTH)
        return vt_error(VT_ERR_CONFIG, "model.frames: %d is more than the model's temporal length (%d)", c->model.frames,
                        VC2_TEMPORAL_LENGTH);
    if (c->memory.decode_frames == VT_CFG_DECODE_INDEX && c->memory.decode_index >= c->model.frames)
        return vt_error(VT_ERR_CONFIG, "memory.decode_frames: frame %d, but model.frames is %d", c->memory.decode_index,
                        c->model.frames);
#ifndef VADER_HAVE_CUDA
    if (c->device == VT_CFG_DEVICE_CUDA) return vt_error(VT_ERR_CONFIG, "device: cuda, but this build has no CUDA backend");
#endif
    const struct {
        const char *field, *path;
    } files[] = {{"model.unet", c->model.unet}, {"model.vae", c->model.vae}, {"model.text", c->model.text},
                 {"lora.checkpoint", c->lora.checkpoint}, {"data.prompt_file", c->data.prompt_file}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (files[i].path && check_readable(files[i].field, files[i].path)) return vt_error_code();
    for (int i = 0; i < c->reward.n_modules; i++) {
        const vt_config_reward *rm = &c->reward.modules[i];
        if (rm->kind != VT_CFG_REWARD_OBJECT_REMOVAL) continue;
        // class name, aggregation, ... before any model is built (rewards/object_removal.c)
        vt_reward_kv kv[32];
        int n = rm->n_options < 32 ? rm->n_options : 32;
        for (int k = 0; k < n; k++) kv[k].key = rm->options[k].key, kv[k].value = rm->options[k].value;
        vt_reward_options o = {rm->checkpoint, NULL, NULL, kv, n};
        if (vt_reward_object_removal_check(&o)) return vt_error_context("reward.%d.options: ", i);
    }
    for (int i = 0; i < c->reward.n_modules; i++) {
        const char *p = c->reward.modules[i].checkpoint;
        char field[64];
        snprintf(field, sizeof field, "reward.%d.checkpoint", i);
        if (p && !strchr(p, ',') && check_readable(field, p)) return vt_error_code();
    }
    if (!c->model.random_weights && (!c->model.unet || !c->model.vae || !c->model.text))
        return vt_error(VT_ERR_CONFIG, "model: unet, vae and text checkpoints are needed unless model.random_weights is true");
    return main_rank ? check_writable_dir(c->output.dir) : VT_OK;
}

vt_trainer *vt_trainer_create(const vt_config *cfg, const vt_train_options *opt) {
    // the plan checks against the GPU this rank will use (pick_device's choice)
    const int plan_gpu = opt && opt->dist && opt->dist->device >= 0 ? opt->dist->device : 0;
    if (check_config(cfg, !opt || !opt->dist || opt->dist->rank == 0) ||
        vt_memplan_check(cfg, plan_gpu, opt ? opt->memory_limit : 0,
                         (!opt || !opt->dist || opt->dist->rank == 0) && opt ? opt->progress : NULL, NULL))
        return NULL;
    vt_trainer *t = calloc(1, sizeof *t);
    if (!t) {
        vt_error(VT_ERR_OOM, "trainer");
        return NULL;
    }
    t->opt = opt ? *opt : vt_train_options_default();
    if (t->opt.max_bad_steps < 1) t->opt.max_bad_steps = cfg->optim.max_bad_steps > 0 ? cfg->optim.max_bad_steps : 5;
    t->single.backend = VT_DIST_NONE;
    t->single.world = t->single.local_world = 1;
    t->single.device = -1;
    t->single.launcher = "none";
    t->dist = t->opt.dist ? t->opt.dist : &t->single;
    if (!is_main(t)) t->opt.progress = NULL;
    vt_err e = vt_config_copy(&t->cfg, cfg);
    if (!e) e = dist_check_start(t);
    const vt_config *c = &t->cfg;
    t->T = c->model.frames;
    t->lh = c->model.height / 8;
    t->lw = c->model.width / 8;
    vt_rng_seed(&t->rng, c->seed);
    if (!e) e = load_prompts(t);
    if (!e) e = create_rewards(t);
    if (!e) e = vt_lora_targets_from_names(c->lora.targets, c->lora.n_targets, &t->lora_targets);
    if (!e) {
        char resume_path[4200] = "";
        if (t->opt.resume && is_main(t)) {
            struct stat st;
            const char *dir = strcmp(t->opt.resume, "auto") == 0 ? c->output.dir : t->opt.resume;
            if (stat(dir, &st) == 0 && S_ISREG(st.st_mode)) snprintf(resume_path, sizeof resume_path, "%s", dir);
            else latest_state(dir, resume_path, sizeof resume_path);
            if (!resume_path[0] && strcmp(t->opt.resume, "auto") != 0)
                e = vt_error(VT_ERR_IO, "--resume %s: no state-STEP.safetensors there", t->opt.resume);
        }
        vt_ddim_options dopt = vt_ddim_default_options(c->sampler.steps, c->sampler.eta);
        if (!e) e = vt_ddim_init(&t->sched, &dopt);
        if (!e) e = build_models(t);
        if (!e) {
            vt_unet3d_lora_config lc = {c->lora.rank, (float)c->lora.alpha, t->lora_targets, vt_hash64(c->seed, 16)};
            e = vt_unet3d_add_lora(t->unet, &lc);
        }
        if (!e && c->lora.checkpoint) e = vt_lora_load_file(t->unet, c->lora.checkpoint);
        if (!e) e = pick_device(t);
        if (!e) {
            vt_vc2_models m = {t->unet, t->vae, t->clip};
            e = vt_vc2_models_apply_dtype(&m, c, t->device != VT_CPU);
        }
        if (!e) e = vt_rewards_apply_dtype(t->rewards, MAX_REWARDS, c, t->device != VT_CPU);
        if (!e) e = models_to_device(t);
        if (!e && !(t->params = vt_lora_params(t->unet, &t->n_params))) e = vt_error_code();
        if (!e) e = vt_adamw_init(&t->adam, t->params, t->n_params, (float)c->optim.beta1, (float)c->optim.beta2,
                                  (float)c->optim.eps, (float)c->optim.weight_decay);
        if (!e) t->adam_ready = 1;
        // AdamW allocates its moments lazily or up front; make sure they exist for the state file
        for (int i = 0; !e && i < t->n_params; i++)
            if (!t->adam.m[i] || !t->adam.v[i]) e = vt_error(VT_ERR_INTERNAL, "adamw: moments not allocated");
        if (!e && resume_path[0]) e = load_state(t, resume_path);
        if (!e) e = dist_sync_initial(t);
        // text contexts of every prompt and of "" (frozen encoder: computed once)
        if (!e) {
            char tokpath[4200];
            snprintf(tokpath, sizeof tokpath, "%s/tokenizer/bpe_simple_vocab_16e6.txt.gz",
                     getenv("VADER_SHARED") ? getenv("VADER_SHARED") : VADER_SHARED_DIR);
            if (!(t->tok = vt_tokenizer_open(tokpath))) e = vt_error_context("tokenizer: ");
        }
        if (!e) {
            t->prompt_ctx = calloc((size_t)t->n_prompts, sizeof *t->prompt_ctx);
            if (!t->prompt_ctx) e = vt_error(VT_ERR_OOM, "prompt contexts");
            for (int i = 0; !e && i < t->n_prompts; i++) {
                const char *p = t->prompts[i];
                if (!(t->prompt_ctx[i] = vt_vader_encode_prompts(t->clip, t->tok, &p, 1))) e = vt_error_code();
            }
            const char *empty = "";
            if (!e && !(t->uncond_ctx = vt_vader_encode_prompts(t->clip, t->tok, &empty, 1))) e = vt_error_code();
        }
        if (!e && (t->n_cols = vt_trainer_train_columns(c, &t->cols)) < 0) e = vt_error(VT_ERR_OOM, "log columns");
        if (!e && is_main(t)) {  // rank 0 alone writes rewards.h5
            char path[4200];
            snprintf(path, sizeof path, "%s/rewards.h5", c->output.dir);
            t->n_eval_cols = vt_eval_columns(c, &t->eval_cols);
            char *yaml = vt_config_dump(c);
            if (t->n_eval_cols < 0) e = vt_error(VT_ERR_OOM, "log columns");
            else if (!(t->log = vt_h5log_open(path, t->cols, t->n_cols, t->eval_cols, t->n_eval_cols, yaml ? yaml : "",
                                              resume_path[0] != 0, t->step)))
                e = vt_error_code();
            free(yaml);
            // checkpoint files are written by a thread of their own; without one, in the loop
            if (!e && !(t->writer = vt_file_writer_start())) vt_error_clear();
        }
        if (!e) e = eval_create(t);
        // the reward modules' text embeddings of every prompt the run scores, then their text
        // towers go (encoded on the run's device: fast for long prompt files)
        if (!e) e = vt_rewards_cache_run_prompts(t->rewards, MAX_REWARDS, c, (const char *const *)t->prompts, t->n_prompts);
        // every context the run uses is encoded now (training and eval prompts, ""): the text
        // tower's memory goes to the step's activations (train/memplan.c counts it at set-up only)
        if (!e) {
            vt_openclip_free(t->clip);
            t->clip = NULL;
        }
    }
    if (e) {
        vt_trainer_free(t);
        return NULL;
    }
    return t;
}

void vt_trainer_free(vt_trainer *t) {
    if (!t) return;
    vt_file_writer_free(t->writer);  // pending files land first
    if (t->log) vt_h5log_close(t->log);
    vt_evaluator_free(t->eval);
    free(t->eval_cols);
    for (int m = 0; m < MAX_REWARDS; m++) vt_reward_free(t->rewards[m]);
    free(t->cols);
    for (int i = 0; t->prompt_ctx && i < t->n_prompts; i++) vt_release(t->prompt_ctx[i]);
    free(t->prompt_ctx);
    vt_release(t->uncond_ctx);
    for (int i = 0; t->prompts && i < t->n_prompts; i++) free(t->prompts[i]);
    free(t->prompts);
    if (t->adam_ready) vt_adamw_free(&t->adam);
    free(t->params);
    vt_release(t->flat);
    vt_unet3d_free(t->unet);
    vt_vae_decoder_free(t->vae);
    vt_openclip_free(t->clip);
    vt_tokenizer_free(t->tok);
    vt_ddim_free(&t->sched);
    vt_config_free(&t->cfg);
    free(t);
}

void vt_trainer_set_timing(vt_trainer *t, vt_step_timing *tm) { t->timing = tm; }

vt_trainer_stats vt_trainer_get_stats(const vt_trainer *t) {
    vt_trainer_stats s = {t->step, t->skipped, t->first_reward, t->last_reward};
    return s;
}

vt_err vt_trainer_save_lora(const vt_trainer *t, const char *path) {
    const vt_config *c = &t->cfg;
    if (vt_lora_save(t->unet, path, c->lora.rank, c->lora.alpha, c->lora.targets, c->lora.n_targets, t->step, 0, NULL, NULL))
        return vt_error_context("%s: ", path);
    return VT_OK;
}

void vt_trainer_batch(const vt_trainer *t, int *micro_batch, int *global_batch) {
    if (micro_batch) *micro_batch = t->micro_B;
    if (global_batch) *global_batch = t->micro_B * micro_per_step(t);
}

// ---- one optimisation step ----------------------------------------------------------------
static vt_tensor *batch_context(vt_trainer *t, const int *idx, int B) {
    vt_tensor *rows[64];
    for (int b = 0; b < B; b++) rows[b] = idx ? t->prompt_ctx[idx[b]] : t->uncond_ctx;
    vt_tape *tk = vt_nograd_begin();
    vt_tensor *c = B == 1 ? vt_retain(rows[0]) : vt_concat(rows, B, 0);
    vt_nograd_end(tk);
    return c;
}

static vt_err train_step(vt_trainer *t, double *row) {
    const vt_config *c = &t->cfg;
    int B = t->micro_B, A = c->optim.accumulation, nm = c->reward.n_modules;
    vt_err e = dist_debug_fail(t);
    if (e) return e;
    double t0 = now_s();
    vt_mem_reset_peak(t->device);
    for (int i = 0; i < t->n_params; i++) vt_zero_grad(t->params[i]);
    double *rewards = calloc((size_t)(A * B) * (size_t)(nm + 1), sizeof *rewards);
    if (!rewards) return vt_error(VT_ERR_OOM, "train step");
    double loss_sum = 0;
    reward_ctx rc = {c, t->rewards, NULL, {0}};
    vt_unet3d_set_dropout(t->unet, TEMPORAL_CONV_DROPOUT, (float)c->lora.dropout);
    vt_tensor *fps = vt_empty(VT_I64, VT_CPU, 1, (int64_t[]){B});
    for (int b = 0; fps && b < B; b++) vt_i64(fps)[b] = c->model.fps;
    for (int micro = 0; micro < A && !e; micro++) {
        int idx[64], g = global_micro(t, micro);
        const char *batch_prompts[64];
        vt_rng rng;
        micro_rng(t, t->step, g, &rng);
        for (int b = 0; b < B; b++) {
            idx[b] = (int)(vt_rng_u64(&rng) % (uint64_t)t->n_prompts);
            batch_prompts[b] = t->prompts[idx[b]];
        }
        rc.prompts = batch_prompts;
        vt_tensor *ctx = batch_context(t, idx, B), *uctx = batch_context(t, NULL, B);
        vt_tensor *x_T = vt_new_f32(5, (int64_t[]){B, 4, t->T, t->lh, t->lw});
        if (x_T) vt_fill_normal(x_T, &rng, 0.0f, 1.0f);
        x_T = vt_move_to(x_T, t->device);  // drawn on the host: CPU and GPU runs share the noise
        if (!ctx || !uctx || !x_T || !fps) e = vt_error_code();
        vt_vader_step_args a;
        vt_vader_step_args_init(&a, t->unet, t->vae, &t->sched, x_T, ctx, uctx, fps);
        vt_vader_step_args_from_config(&a, c);
        a.saved_dtype = vt_memplan_weight_dtype(vt_memplan_saved_dtype(c, t->device != VT_CPU));  // auto: per device
        a.rng = &rng;
        a.dropout_seed = vt_hash64(c->seed ^ 0xD0D0ull, (uint64_t)(t->step * micro_per_step(t) + g));
        a.reward = reward_sum;
        a.reward_user = &rc;
        // the gradient is the mean over this rank's micro-batches; the all-reduce then averages
        // over ranks: the mean over all micro-batches of the step, as one process would take it
        a.loss_scale = 1.0f / (float)A;
        a.timing = t->timing;
        vt_vader_step_result r = {0};
        if (!e) e = vt_vader_step(&a, &r);
        if (!e) {
            loss_sum += r.loss;
            e = read_f32(r.reward, rewards + micro * B, B, 1);
            for (int m = 0; m < nm && !e; m++)
                e = read_f32(rc.module_reward[m], rewards + (size_t)(m + 1) * (size_t)(A * B) + (size_t)(micro * B), B, 1);
        }
        vt_vader_step_result_free(&r);
        vt_release(ctx);
        vt_release(uctx);
        vt_release(x_T);
    }
    vt_release(fps);
    vt_unet3d_set_dropout(t->unet, 0.0f, 0.0f);
    for (int m = 0; m < MAX_REWARDS; m++) vt_release(rc.module_reward[m]);
    if (!e) e = dist_average_grads(t);
    double loss = loss_sum / A, mean[MAX_STAT_COLS], std[MAX_STAT_COLS];
    double peaks[2] = {now_s() - t0, (double)vt_mem_stats_get(t->device).peak};
    if (!e) e = dist_reduce_stats(t, rewards, nm + 1, A * B, &loss, mean, std, peaks);
    free(rewards);
    if (e) return e;
    double t_opt = now_s();
    double gnorm = vt_clip_grad_norm(t->params, t->n_params, c->optim.grad_clip);
    float lr = vt_lr_at((vt_lr_schedule)c->optim.schedule, (float)c->optim.lr, t->step, c->optim.warmup_steps, c->optim.steps);
    int bad = !isfinite(loss) || !isfinite(gnorm);
    if (bad) {
        t->skipped++;
        t->bad_in_row++;
    } else {
        t->bad_in_row = 0;
        e = vt_adamw_step(&t->adam, lr);
    }
    for (int i = 0; i < t->n_params; i++) vt_zero_grad(t->params[i]);
    if (t->timing) {
        t->timing->optimizer_s += now_s() - t_opt;
        if (t->timing->n_step_s < VT_STEP_TIMING_MAX_STEPS) t->timing->step_s[t->timing->n_step_s++] = now_s() - t0;
    }
    t->step++;
    row[0] = (double)t->step;
    row[1] = mean[0];
    row[2] = std[0];
    row[3] = loss;
    row[4] = gnorm;
    row[5] = lr;
    row[6] = peaks[0];
    row[7] = peaks[1];
    row[8] = (double)t->skipped;
    for (int m = 0; m < nm; m++) row[N_BASE_COLS + 2 * m] = mean[m + 1], row[N_BASE_COLS + 2 * m + 1] = std[m + 1];
    return e;
}

// ---- evaluation on held-out prompts (train/eval.h) -----------------------------------------
static vt_err eval_create(vt_trainer *t) {
    if (!is_main(t)) return VT_OK;  // evaluation runs on rank 0 (see vt_trainer_run)
    t->eval = vt_evaluator_create(&t->cfg, t->clip, t->tok, t->rewards);
    if (!t->eval && vt_error_code()) return vt_error_code();
    // a resumed run redoes the evaluations after its step
    if (t->step > 0 && vt_h5log_truncate_after(t->log, 1, (double)t->step)) return vt_error_code();
    if (t->opt.progress && t->cfg.output.eval_every > 0 && !t->eval)
        fprintf(t->opt.progress, "vader-train: note: output.eval_every is %d but data.eval_prompts is empty: no evaluation\n",
                t->cfg.output.eval_every);
    return VT_OK;
}

// ---- rewards.h5 rows ------------------------------------------------------------------------
typedef struct log_row_task {
    vt_h5log *log;
    int which;
    double v[];  // the row's values, copied at submit
} log_row_task;

static vt_err run_log_row(void *arg) {
    log_row_task *r = arg;
    return vt_h5log_append(r->log, r->which, r->v);
}

// One row of rewards.h5 (which 0: /train, 1: /eval): appended and flushed by the writer thread
// after the checkpoints queued before it, so the loop does not wait for the disk, the rows land
// in order and HDF5 (not thread-safe in the Debian build) is entered from that thread alone
// once training runs; without a writer thread, here. A failed append is reported by the next
// row or checkpoint (the message names the file), and every row is on disk before the run ends.
static vt_err log_row(vt_trainer *t, int which, const double *row, int n) {
    if (!t->writer) return vt_h5log_append(t->log, which, row);
    log_row_task *r = malloc(sizeof *r + (size_t)n * sizeof *row);
    if (!r) return vt_error(VT_ERR_OOM, "rewards.h5 row: out of host memory");
    r->log = t->log;
    r->which = which;
    memcpy(r->v, row, (size_t)n * sizeof *row);
    return vt_file_writer_submit_task(t->writer, run_log_row, free, r);
}

// After an optimisation step: evaluate when due, append the /eval row, print a line.
static vt_err eval_maybe(vt_trainer *t) {
    if (!vt_evaluator_due(t->eval, t->step)) return VT_OK;
    double *row = calloc((size_t)t->n_eval_cols, sizeof *row);
    if (!row) return vt_error(VT_ERR_OOM, "eval row");
    double t0 = now_s();
    int write_samples = 1;  // rank 0 only once the trainer is distributed
    vt_err e = vt_evaluator_run(t->eval, t->unet, t->vae, &t->sched, t->step, write_samples, row);
    if (!e) e = log_row(t, 1, row, t->n_eval_cols);
    if (!e && t->opt.progress) {
        fprintf(t->opt.progress, "eval %lld: reward %.5f (sd %.4f) over %d prompts, %.1f s", (long long)t->step, row[1],
                row[2], t->cfg.data.n_eval_prompts, now_s() - t0);
        if (write_samples) fprintf(t->opt.progress, ", frames in %s/samples/step-%06lld", t->cfg.output.dir, (long long)t->step);
        fputc('\n', t->opt.progress);
        fflush(t->opt.progress);
    }
    free(row);
    return e;
}

vt_err vt_trainer_run(vt_trainer *t) {
    const vt_config *c = &t->cfg;
    int64_t total = c->optim.steps, stop = t->opt.stop_at > 0 && t->opt.stop_at < total ? t->opt.stop_at : total;
    double *row = calloc((size_t)t->n_cols, sizeof *row);
    if (!row) return vt_error(VT_ERR_OOM, "trainer");
    double t_start = now_s();
    int64_t step0 = t->step;
    vt_err e = VT_OK;
    if (t->opt.progress && t->step > 0)
        fprintf(t->opt.progress, "vader-train: resuming at step %lld/%lld\n", (long long)t->step, (long long)total);
    while (t->step < stop) {
        e = train_step(t, row);
        if (e) break;
        if (is_main(t) && (e = log_row(t, 0, row, t->n_cols))) break;
        // evaluation runs on rank 0 only for now (no collectives inside: the other ranks wait at
        // the next all-reduce, within dist.timeout)
        if (is_main(t) && (e = eval_maybe(t))) break;
        int skipped_now = !isfinite(row[3]) || !isfinite(row[4]);
        if (!skipped_now) {
            if (!t->has_first) t->first_reward = row[1], t->has_first = 1;
            t->last_reward = row[1];
        }
        if (t->opt.progress && (c->output.log_every <= 0 || t->step % c->output.log_every == 0 || t->step == stop)) {
            double per = (now_s() - t_start) / (double)(t->step - step0);
            double eta = per * (double)(stop - t->step);
            fprintf(t->opt.progress,
                    "step %lld/%lld  reward %.5f (sd %.4f)  loss %.5f  |g| %.3g  lr %.2e  %.2f s/step  peak %.1f MB  "
                    "ETA %d:%02d%s\n",
                    (long long)t->step, (long long)total, row[1], row[2], row[3], row[4], row[5], per,
                    row[7] / 1048576.0, (int)(eta / 60), (int)fmod(eta, 60.0), skipped_now ? "  [skipped: non-finite]" : "");
            fflush(t->opt.progress);
        }
        if (t->bad_in_row >= t->opt.max_bad_steps) {
            e = vt_error(VT_ERR_NUMERIC, "%lld steps in a row had a non-finite loss or gradient (step %lld): stopping",
                         (long long)t->bad_in_row, (long long)t->step);
            break;
        }
        if (is_main(t) && c->output.checkpoint_every > 0 && t->step % c->output.checkpoint_every == 0 &&
            t->step < stop && (e = save_checkpoint(t)))
            break;
    }
    if (!e && t->step > step0 && is_main(t)) e = save_checkpoint(t);
    e = drain_writer(t, e);  // every queued file on disk before the run reports done
    // every rank waits (under the watchdog) until rank 0 has written the last checkpoint
    if (!e) e = vt_dist_barrier(t->dist);
    free(row);
    return e;
}
