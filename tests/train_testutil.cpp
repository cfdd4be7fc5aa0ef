// train_testutil.cpp — see train_testutil.h.
#include "train_testutil.h"
#include <hdf5.h>

TestConfig::TestConfig(const std::vector<std::string> &sets, const char *yaml, const char *name) {
    if (vt_config_load_string(&c, yaml, name) != VT_OK) return;
    for (auto &s : sets)
        if (vt_config_set(&c, s.c_str()) != VT_OK) return;
    ok = true;
}

std::vector<std::string> Concat(std::vector<std::string> base, const std::vector<std::string> &extra) {
    base.insert(base.end(), extra.begin(), extra.end());
    return base;
}

vt_err RunTrainer(const vt_config *c, const char *resume, int stop_at, vt_trainer_stats *st, int max_bad_steps) {
    vt_train_options o = vt_train_options_default();
    o.resume = resume;
    o.stop_at = stop_at;
    if (max_bad_steps) o.max_bad_steps = max_bad_steps;
    vt_trainer *t = vt_trainer_create(c, &o);
    if (!t) return vt_error_code();
    vt_err e = vt_trainer_run(t);
    if (st) *st = vt_trainer_get_stats(t);
    vt_trainer_free(t);
    return e;
}

std::vector<double> H5Column(const std::string &h5, const std::string &path) {
    std::vector<double> v;
    hid_t f = H5Fopen(h5.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return v;
    hid_t d = H5Dopen2(f, path.c_str(), H5P_DEFAULT);
    if (d >= 0) {
        hid_t s = H5Dget_space(d);
        hsize_t n = 0;
        H5Sget_simple_extent_dims(s, &n, nullptr);
        v.resize(n);
        if (n) H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
        H5Sclose(s);
        H5Dclose(d);
    }
    H5Fclose(f);
    return v;
}
