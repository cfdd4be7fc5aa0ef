// h5log.c — see h5log.h. One 1-D chunked float64 dataset per column keeps the file readable
// by h5py as plain arrays (f["train/reward_mean"][:]).
#include "h5log.h"
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

typedef struct h5group {
    hid_t group;
    int n;
    hid_t *dsets;
    char **names;
    int64_t rows;
} h5group;

struct vt_h5log {
    hid_t file;
    char *path;
    h5group g[2];
};

static hid_t make_or_open_dataset(hid_t group, const char *name, int resume) {
    if (resume && H5Lexists(group, name, H5P_DEFAULT) > 0) return H5Dopen2(group, name, H5P_DEFAULT);
    hsize_t dims[1] = {0}, maxdims[1] = {H5S_UNLIMITED}, chunk[1] = {256};
    hid_t space = H5Screate_simple(1, dims, maxdims);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);  // "reward/hps_mean" makes the reward group
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, chunk);
    hid_t d = H5Dcreate2(group, name, H5T_IEEE_F64LE, space, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Pclose(lcpl);
    H5Sclose(space);
    return d;
}

static vt_err group_init(vt_h5log *l, int which, const char *gname, const char *const *cols, int n, int resume,
                         int64_t keep) {
    h5group *g = &l->g[which];
    g->n = n;
    g->dsets = calloc((size_t)n, sizeof(hid_t));
    g->names = calloc((size_t)n, sizeof(char *));
    if (n && (!g->dsets || !g->names)) return vt_error(VT_ERR_OOM, "%s: log columns", l->path);
    g->group = (resume && H5Lexists(l->file, gname, H5P_DEFAULT) > 0)
                   ? H5Gopen2(l->file, gname, H5P_DEFAULT)
                   : H5Gcreate2(l->file, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g->group < 0) return vt_error(VT_ERR_IO, "%s: cannot create group /%s", l->path, gname);
    g->rows = 0;
    for (int i = 0; i < n; i++) {
        g->names[i] = strdup(cols[i]);
        g->dsets[i] = make_or_open_dataset(g->group, cols[i], resume);
        if (g->dsets[i] < 0) return vt_error(VT_ERR_IO, "%s: cannot create dataset /%s/%s", l->path, gname, cols[i]);
        if (resume) {
            // keep the rows of the steps already done; a resumed run rewrites what follows
            hid_t space = H5Dget_space(g->dsets[i]);
            hsize_t cur[1];
            H5Sget_simple_extent_dims(space, cur, NULL);
            H5Sclose(space);
            hsize_t rows = cur[0] < (hsize_t)keep ? cur[0] : (hsize_t)keep;
            if (H5Dset_extent(g->dsets[i], &rows) < 0) return vt_error(VT_ERR_IO, "%s: cannot truncate /%s/%s", l->path, gname, cols[i]);
            if (i == 0 || (int64_t)rows < g->rows) g->rows = (int64_t)rows;
        }
    }
    return VT_OK;
}

vt_h5log *vt_h5log_open(const char *path, const char *const *train_cols, int n_train, const char *const *eval_cols,
                        int n_eval, const char *config_yaml, int resume, int64_t keep_rows) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);  // errors are reported through vt_error instead
    vt_h5log *l = calloc(1, sizeof *l);
    if (!l) { vt_error(VT_ERR_OOM, "h5log"); return NULL; }
    l->path = strdup(path);
    if (resume && H5Fis_hdf5(path) > 0) l->file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    else l->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (l->file < 0) {
        vt_error(VT_ERR_IO, "%s: cannot create the HDF5 log (is the directory writable?)", path);
        vt_h5log_close(l);
        return NULL;
    }
    if (group_init(l, 0, "train", train_cols, n_train, resume, keep_rows) != VT_OK ||
        group_init(l, 1, "eval", eval_cols, n_eval, resume, resume ? INT64_MAX : 0) != VT_OK) {
        vt_h5log_close(l);
        return NULL;
    }
    if (config_yaml) {
        if (H5Aexists(l->file, "config") > 0) H5Adelete(l->file, "config");
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, strlen(config_yaml) + 1);
        hid_t s = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(l->file, "config", t, s, H5P_DEFAULT, H5P_DEFAULT);
        if (a >= 0) {
            H5Awrite(a, t, config_yaml);
            H5Aclose(a);
        }
        H5Sclose(s);
        H5Tclose(t);
    }
    H5Fflush(l->file, H5F_SCOPE_GLOBAL);
    return l;
}

vt_err vt_h5log_append(vt_h5log *l, int which, const double *values) {
    h5group *g = &l->g[which];
    hsize_t start[1] = {(hsize_t)g->rows}, count[1] = {1}, newsize[1] = {(hsize_t)g->rows + 1};
    hid_t mem = H5Screate_simple(1, count, NULL);
    for (int i = 0; i < g->n; i++) {
        if (H5Dset_extent(g->dsets[i], newsize) < 0) {
            H5Sclose(mem);
            return vt_error(VT_ERR_IO, "%s: cannot extend %s", l->path, g->names[i]);
        }
        hid_t space = H5Dget_space(g->dsets[i]);
        H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
        herr_t e = H5Dwrite(g->dsets[i], H5T_NATIVE_DOUBLE, mem, space, H5P_DEFAULT, &values[i]);
        H5Sclose(space);
        if (e < 0) {
            H5Sclose(mem);
            return vt_error(VT_ERR_IO, "%s: cannot write %s", l->path, g->names[i]);
        }
    }
    H5Sclose(mem);
    g->rows++;
    if (H5Fflush(l->file, H5F_SCOPE_GLOBAL) < 0) return vt_error(VT_ERR_IO, "%s: flush failed", l->path);
    return VT_OK;
}

int64_t vt_h5log_rows(const vt_h5log *l, int which) { return l->g[which].rows; }

vt_err vt_h5log_truncate_after(vt_h5log *l, int which, double max_step) {
    h5group *g = &l->g[which];
    if (g->n == 0 || g->rows == 0) return VT_OK;
    double *v = malloc((size_t)g->rows * sizeof *v);
    if (!v) return vt_error(VT_ERR_OOM, "%s: truncate", l->path);
    hsize_t cur[1] = {(hsize_t)g->rows};
    hid_t mem = H5Screate_simple(1, cur, NULL);
    hid_t space = H5Dget_space(g->dsets[0]);
    H5Sselect_hyperslab(space, H5S_SELECT_SET, (hsize_t[]){0}, NULL, cur, NULL);
    herr_t r = H5Dread(g->dsets[0], H5T_NATIVE_DOUBLE, mem, space, H5P_DEFAULT, v);
    H5Sclose(space);
    H5Sclose(mem);
    if (r < 0) {
        free(v);
        return vt_error(VT_ERR_IO, "%s: cannot read %s", l->path, g->names[0]);
    }
    int64_t keep = 0;
    while (keep < g->rows && v[keep] <= max_step) keep++;
    free(v);
    if (keep == g->rows) return VT_OK;
    hsize_t rows[1] = {(hsize_t)keep};
    for (int i = 0; i < g->n; i++)
        if (H5Dset_extent(g->dsets[i], rows) < 0) return vt_error(VT_ERR_IO, "%s: cannot truncate %s", l->path, g->names[i]);
    g->rows = keep;
    if (H5Fflush(l->file, H5F_SCOPE_GLOBAL) < 0) return vt_error(VT_ERR_IO, "%s: flush failed", l->path);
    return VT_OK;
}

void vt_h5log_close(vt_h5log *l) {
    if (!l) return;
    for (int w = 0; w < 2; w++) {
        h5group *g = &l->g[w];
        for (int i = 0; i < g->n; i++) {
            if (g->dsets && g->dsets[i] > 0) H5Dclose(g->dsets[i]);
            if (g->names) free(g->names[i]);
        }
        free(g->dsets);
        free(g->names);
        if (g->group > 0) H5Gclose(g->group);
    }
    if (l->file > 0) H5Fclose(l->file);
    free(l->path);
    free(l);
}
