// sample.c — see sample.h.
#include "train/sample.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "core/safetensors.h"
#include "train/gif.h"
#include "train/lora.h"
#include "train/models.h"
#include "train/png.h"

// ---- sampling -----------------------------------------------------------------------------
// vt_vader_step needs a reward; plain sampling scores nothing.
static vt_tensor *no_reward(void *user, vt_tensor *frames, vt_tensor **reward) {
    (void)user;
    (void)frames;
    *reward = NULL;
    return vt_new_f32(1, (int64_t[]){1});
}

vt_err vt_sample_run(vt_unet3d *unet, vt_vae_decoder *vae, const vt_ddim_schedule *sched, const vt_config *cfg,
                     vt_tensor *ctx, vt_tensor *uncond_ctx, vt_rng *rng, vt_cfg_decode decode, int decode_index,
                     vt_vader_reward_fn reward, void *reward_user, vt_vader_step_result *r) {
    memset(r, 0, sizeof *r);
    if (!ctx || ctx->ndim != 3) return vt_error(VT_ERR_ARG, "sample: context must be [B, L, D]");
    int64_t B = ctx->shape[0];
    vt_tensor *x_T = vt_new_f32(5, (int64_t[]){B, 4, cfg->model.frames, cfg->model.height / 8, cfg->model.width / 8});
    vt_tensor *fps = vt_empty(VT_I64, VT_CPU, 1, (int64_t[]){B});
    if (!x_T || !fps) {
        vt_release(x_T);
        vt_release(fps);
        return vt_error_code();
    }
    vt_fill_normal(x_T, rng, 0.0f, 1.0f);
    x_T = vt_move_to(x_T, ctx->device);  // drawn on the host, used next to the context
    if (!x_T) {
        vt_release(fps);
        return vt_error_code();
    }
    for (int64_t b = 0; b < B; b++) vt_i64(fps)[b] = cfg->model.fps;
    vt_unet3d_set_dropout(unet, 0.0f, 0.0f);
    vt_vader_step_args a;
    vt_vader_step_args_init(&a, unet, vae, sched, x_T, ctx, uncond_ctx, fps);
    a.rng = rng;
    a.guidance = (float)cfg->sampler.guidance_scale;
    a.K = 0;  // no tape anywhere
    a.decode = decode;
    a.decode_index = decode_index;
    a.checkpointing = 0;
    a.reward = reward ? reward : no_reward;
    a.reward_user = reward_user;
    a.backward = 0;
    vt_err e = vt_vader_step(&a, r);
    vt_release(x_T);
    vt_release(fps);
    return e ? vt_error_context("sample: ") : VT_OK;
}

struct vt_sampler {
    vt_config cfg;
    vt_vc2_models m;
    vt_tokenizer *tok;
    vt_ddim_schedule sched;
    int sched_ready;
    vt_tensor *uncond_ctx;
};

uint64_t vt_sample_prompt_seed(uint64_t seed, int i) { return vt_hash64(seed ^ 0x5A3D1E5ull, (uint64_t)i); }

// Every tensor of the file must be one of the adapters' weights, the metadata must agree
// with the config; then the strict load (missing / mis-shaped keys).
static vt_err load_lora_checked(vt_sampler *s, const char *path) {
    vt_safetensors *f = vt_st_open(path);
    if (!f) return vt_error_context("--lora: ");
    vt_err e = VT_OK;
    const vt_config *c = &s->cfg;
    const char *mr = vt_st_metadata(f, "lora_rank"), *ma = vt_st_metadata(f, "lora_alpha");
    if (mr && atoi(mr) != c->lora.rank)
        e = vt_error(VT_ERR_CONFIG, "%s: lora_rank %s in the file, lora.rank %d in the config", path, mr, c->lora.rank);
    else if (ma && fabs(strtod(ma, NULL) - c->lora.alpha) > 1e-9 * fabs(c->lora.alpha))
        e = vt_error(VT_ERR_CONFIG, "%s: lora_alpha %s in the file, lora.alpha %g in the config", path, ma, c->lora.alpha);
    int n = vt_unet3d_n_lora(s->m.unet);
    for (int i = 0; !e && i < f->n; i++) {
        const char *key = f->entries[i].name;
        int found = 0;
        for (int j = 0; j < n && !found; j++) {
            const char *peft;
            vt_unet3d_lora_param(s->m.unet, j, &peft);
            found = strcmp(key, peft) == 0 || strcmp(key, vt_lora_state_name(peft)) == 0;
        }
        if (!found) {
            char targets[256] = "";
            for (int t = 0; t < c->lora.n_targets; t++) {
                size_t l = strlen(targets);
                snprintf(targets + l, sizeof targets - l, "%s%s", t ? ", " : "", c->lora.targets[t]);
            }
            e = vt_error(VT_ERR_KEY, "%s: unexpected key %s (not a LoRA weight of lora.targets [%s])", path, key, targets);
        }
    }
    vt_st_close(f);
    if (!e) e = vt_lora_load_file(s->m.unet, path);
    return e;
}

vt_sampler *vt_sampler_create(const vt_config *cfg, const char *lora_path) {
    vt_sampler *s = calloc(1, sizeof *s);
    if (!s) {
        vt_error(VT_ERR_OOM, "sampler");
        return NULL;
    }
    vt_err e = vt_config_copy(&s->cfg, cfg);
    const vt_config *c = &s->cfg;
    if (!lora_path) lora_path = c->lora.checkpoint;
    if (!e) {
        vt_ddim_options dopt = vt_ddim_default_options(c->sampler.steps, c->sampler.eta);
        e = vt_ddim_init(&s->sched, &dopt);
        s->sched_ready = !e;
    }
    if (!e) e = vt_vc2_models_build(c, &s->m);
    if (!e) e = vt_vc2_models_apply_dtype(&s->m, c, 0);  // vader-sample runs on the CPU
    if (!e && lora_path) {
        unsigned bits = 0;
        e = vt_lora_targets_from_names(c->lora.targets, c->lora.n_targets, &bits);
        if (!e) {
            vt_unet3d_lora_config lc = {c->lora.rank, (float)c->lora.alpha, bits, vt_hash64(c->seed, 16)};
            e = vt_unet3d_add_lora(s->m.unet, &lc);
        }
        if (!e) e = load_lora_checked(s, lora_path);
    }
    if (!e && !(s->tok = vt_vc2_tokenizer_open())) e = vt_error_code();
    if (!e) {
        const char *empty = "";
        if (!(s->uncond_ctx = vt_vader_encode_prompts(s->m.clip, s->tok, &empty, 1))) e = vt_error_code();
    }
    if (e) {
        vt_sampler_free(s);
        return NULL;
    }
    return s;
}

vt_tensor *vt_sampler_sample(vt_sampler *s, const char *prompt, uint64_t seed) {
    vt_tensor *ctx = vt_vader_encode_prompts(s->m.clip, s->tok, &prompt, 1);
    if (!ctx) return NULL;
    vt_rng rng;
    vt_rng_seed(&rng, seed);
    vt_vader_step_result r;
    vt_err e = vt_sample_run(s->m.unet, s->m.vae, &s->sched, &s->cfg, ctx, s->uncond_ctx, &rng, VT_CFG_DECODE_ALL, 0,
                             NULL, NULL, &r);
    vt_release(ctx);
    if (e) return NULL;
    vt_tensor *frames = r.frames;
    if (frames->device != VT_CPU || frames->dtype != VT_F32) {
        vt_tensor *h = frames->device != VT_CPU ? vt_to_device(frames, VT_CPU) : vt_retain(frames);
        frames = h && h->dtype != VT_F32 ? vt_to_dtype(h, VT_F32) : vt_retain(h);
        vt_release(h);
    } else {
        vt_retain(frames);
    }
    vt_vader_step_result_free(&r);
    return frames;
}

void vt_sampler_free(vt_sampler *s) {
    if (!s) return;
    vt_release(s->uncond_ctx);
    vt_tokenizer_free(s->tok);
    vt_vc2_models_free(&s->m);
    if (s->sched_ready) vt_ddim_free(&s->sched);
    vt_config_free(&s->cfg);
    free(s);
}

extern char **environ;

// ---- frames to files ----------------------------------------------------------------------
void vt_frames_to_rgb8(const vt_tensor *frames, int b, int f, uint8_t *rgb) {
    int64_t C = frames->shape[1], F = frames->shape[2], H = frames->shape[3], W = frames->shape[4];
    vt_tensor *host = vt_on_device(frames, VT_CPU);  // GPU frames: one host copy
    if (!host) return;
    const float *x = vt_f32(host);
    for (int c = 0; c < 3 && c < C; c++) {
        const float *p = x + (((size_t)b * (size_t)C + (size_t)c) * (size_t)F + (size_t)f) * (size_t)(H * W);
        for (int64_t i = 0; i < H * W; i++) {
            float v = (p[i] + 1.0f) / 2.0f * 255.0f + 0.5f;
            if (!(v >= 0.0f)) v = 0.0f;  // NaN too
            if (v > 255.0f) v = 255.0f;
            rgb[3 * i + c] = (uint8_t)v;
        }
    }
    vt_release(host);
}

vt_err vt_mkdir_p(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return vt_error(VT_ERR_ARG, "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST) return vt_error(VT_ERR_IO, "cannot create %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) && errno != EEXIST) return vt_error(VT_ERR_IO, "cannot create %s: %s", buf, strerror(errno));
    return VT_OK;
}

static vt_err check_frames(const vt_tensor *frames, int b) {
    if (!frames || frames->ndim != 5 || frames->shape[1] != 3 || frames->device != VT_CPU || frames->dtype != VT_F32 ||
        b < 0 || b >= frames->shape[0])
        return vt_error(VT_ERR_ARG, "frames: need cpu f32 [B, 3, F, H, W] and a video index in range");
    return VT_OK;
}

vt_err vt_frames_write_pngs(const vt_tensor *frames, int b, const char *dir) {
    if (check_frames(frames, b) || vt_mkdir_p(dir)) return vt_error_code();
    int F = (int)frames->shape[2], H = (int)frames->shape[3], W = (int)frames->shape[4];
    uint8_t *rgb = malloc((size_t)H * (size_t)W * 3);
    if (!rgb) return vt_error(VT_ERR_OOM, "png frames");
    vt_err e = VT_OK;
    char path[4200];
    for (int f = 0; f < F && !e; f++) {
        vt_frames_to_rgb8(frames, b, f, rgb);
        snprintf(path, sizeof path, "%s/frame-%03d.png", dir, f);
        e = vt_png_write(path, W, H, rgb);
    }
    free(rgb);
    return e;
}

vt_err vt_frames_write_gif(const vt_tensor *frames, int b, const char *dir, int fps) {
    if (check_frames(frames, b) || vt_mkdir_p(dir)) return vt_error_code();
    int F = (int)frames->shape[2], H = (int)frames->shape[3], W = (int)frames->shape[4];
    size_t fb = (size_t)H * (size_t)W * 3;
    uint8_t *rgb = malloc(fb * (size_t)F);
    if (!rgb) return vt_error(VT_ERR_OOM, "gif frames");
    for (int f = 0; f < F; f++) vt_frames_to_rgb8(frames, b, f, rgb + (size_t)f * fb);
    char path[4200];
    snprintf(path, sizeof path, "%s/video.gif", dir);
    int delay = fps > 0 ? (100 + fps / 2) / fps : 10;
    vt_err e = vt_gif_write(path, W, H, F, rgb, delay < 2 ? 2 : delay, 0);
    free(rgb);
    return e;
}

int vt_have_ffmpeg(void) {
    const char *path = getenv("PATH");
    if (!path) return 0;
    char dir[4096], exe[4200];
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n > 0 && n < sizeof dir) {
            memcpy(dir, path, n);
            dir[n] = 0;
            snprintf(exe, sizeof exe, "%s/ffmpeg", dir);
            struct stat st;
            if (stat(exe, &st) == 0 && S_ISREG(st.st_mode) && access(exe, X_OK) == 0) return 1;
        }
        path += n;
        if (*path == ':') path++;
    }
    return 0;
}

vt_err vt_frames_write_mp4(const char *dir, int fps) {
    char rate[32], in[4200], out[4200];
    snprintf(rate, sizeof rate, "%d", fps > 0 ? fps : 8);
    snprintf(in, sizeof in, "%s/frame-%%03d.png", dir);
    snprintf(out, sizeof out, "%s/video.mp4", dir);
    char *argv[] = {"ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-framerate", rate, "-i", in,
                    "-pix_fmt", "yuv420p", out, NULL};
    fflush(NULL);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, "ffmpeg", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return vt_error(VT_ERR_IO, "ffmpeg: cannot start: %s", strerror(rc));
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return vt_error(VT_ERR_IO, "ffmpeg: wait failed: %s", strerror(errno));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return vt_error(VT_ERR_IO, "ffmpeg failed (status %d) making %s", WIFEXITED(st) ? WEXITSTATUS(st) : -1, out);
    return VT_OK;
}
