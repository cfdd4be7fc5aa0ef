// test_file_writer.cpp — background checkpoint writes (train/file_writer.h): a job is the
// snapshot taken when a tensor is added, every queued file lands in order, a failed write is
// reported once by the next submit / wait naming its file, and freeing drains the queue.
#include "testutil.h"
#include <string>
#include <sys/stat.h>
#include "core/safetensors.h"
#include "train/file_writer.h"

namespace {

// The f32 values of name in the safetensors file at path (empty if it cannot be read).
std::vector<float> ReadTensor(const std::string &path, const char *name) {
    std::vector<float> v;
    vt_safetensors *f = vt_st_open(path.c_str());
    if (!f) return v;
    vt_tensor *t = vt_st_get(f, name);
    if (t) v.assign(vt_f32(t), vt_f32(t) + t->numel);
    vt_release(t);
    vt_st_close(f);
    return v;
}

std::string Meta(const std::string &path, const char *key) {
    vt_safetensors *f = vt_st_open(path.c_str());
    if (!f) return "";
    const char *v = vt_st_metadata(f, key);
    std::string s = v ? v : "";
    vt_st_close(f);
    return s;
}

}  // namespace

TEST(FileWriter, WritesTheSnapshotTakenAtAdd) {
    Releaser R;
    std::string dir = TempDir();
    vt_file_writer *w = vt_file_writer_start();
    ASSERT_NE(w, nullptr) << vt_error_message();
    vt_tensor *p = R(RandN({3, 5}, 1));
    std::vector<std::vector<float>> want;
    for (int k = 0; k < 6; k++) {  // more jobs than the queue holds: submit blocks, nothing is lost
        std::string path = dir + "/f" + std::to_string(k) + ".safetensors";
        vt_st_job *j = vt_st_job_new(path.c_str());
        ASSERT_NE(j, nullptr);
        ASSERT_VT_OK(vt_st_job_add(j, "p", p));
        ASSERT_VT_OK(vt_st_job_meta(j, "step", std::to_string(k).c_str()));
        want.emplace_back(vt_f32(p), vt_f32(p) + p->numel);
        for (int64_t i = 0; i < p->numel; i++) vt_f32(p)[i] += 1.0f;  // the "optimizer" goes on at once
        ASSERT_VT_OK(vt_file_writer_submit(w, j));
    }
    ASSERT_VT_OK(vt_file_writer_wait(w));
    for (int k = 0; k < 6; k++) {
        std::string path = dir + "/f" + std::to_string(k) + ".safetensors";
        EXPECT_EQ(ReadTensor(path, "p"), want[k]) << path;
        EXPECT_EQ(Meta(path, "step"), std::to_string(k));
    }
    vt_file_writer_free(w);
}

TEST(FileWriter, FailureIsReportedOnceNamingTheFile) {
    Releaser R;
    std::string dir = TempDir();
    vt_file_writer *w = vt_file_writer_start();
    ASSERT_NE(w, nullptr);
    vt_tensor *p = R(RandN({4}, 2));
    std::string bad = dir + "/missing/sub/x.safetensors";
    vt_st_job *j = vt_st_job_new(bad.c_str());
    ASSERT_VT_OK(vt_st_job_add(j, "p", p));
    EXPECT_EQ(vt_file_writer_submit(w, j), VT_OK);  // queued: the failure comes later
    vt_err e = vt_file_writer_wait(w);
    EXPECT_NE(e, VT_OK);
    std::string msg = vt_error_message();
    EXPECT_NE(msg.find("background write failed"), std::string::npos) << msg;
    EXPECT_NE(msg.find(bad), std::string::npos) << msg;
    EXPECT_EQ(vt_file_writer_wait(w), VT_OK) << "reported once";
    // the writer goes on: a good file after the bad one lands
    std::string good = dir + "/good.safetensors";
    j = vt_st_job_new(good.c_str());
    ASSERT_VT_OK(vt_st_job_add(j, "p", p));
    ASSERT_VT_OK(vt_file_writer_submit(w, j));
    ASSERT_VT_OK(vt_file_writer_wait(w));
    EXPECT_EQ(ReadTensor(good, "p").size(), 4u);
    vt_file_writer_free(w);
}

TEST(FileWriter, FreeDrainsTheQueueAndJobsWriteInPlace) {
    Releaser R;
    std::string dir = TempDir();
    vt_tensor *p = R(RandN({2, 2}, 3));
    vt_file_writer *w = vt_file_writer_start();
    ASSERT_NE(w, nullptr);
    for (int k = 0; k < 3; k++) {
        std::string path = dir + "/d" + std::to_string(k) + ".safetensors";
        vt_st_job *j = vt_st_job_new(path.c_str());
        ASSERT_VT_OK(vt_st_job_add(j, "p", p));
        ASSERT_VT_OK(vt_file_writer_submit(w, j));
    }
    vt_file_writer_free(w);  // no wait: free itself lets the three land
    for (int k = 0; k < 3; k++) {
        struct stat st;
        EXPECT_EQ(stat((dir + "/d" + std::to_string(k) + ".safetensors").c_str(), &st), 0) << k;
    }
    // a job written in the caller's thread, and the NULL-tensor refusal naming the file
    std::string path = dir + "/sync.safetensors";
    vt_st_job *j = vt_st_job_new(path.c_str());
    EXPECT_EQ(vt_st_job_add(j, "none", nullptr), VT_ERR_ARG);
    EXPECT_NE(std::string(vt_error_message()).find(path), std::string::npos) << vt_error_message();
    ASSERT_VT_OK(vt_st_job_add(j, "p", p));
    ASSERT_VT_OK(vt_st_job_write(j));
    vt_st_job_free(j);
    EXPECT_EQ(ReadTensor(path, "p"), std::vector<float>(vt_f32(p), vt_f32(p) + 4));
}

// Small tasks (rewards.h5 rows) run on the writer thread in submit order with the checkpoint
// jobs, never wait behind the two-snapshot bound, and a failing one is reported by the next
// submit with its own message.
namespace {
struct Seq {
    std::vector<int> order;
    int fail_at = -1;
};
struct SeqTask {
    Seq *s;
    int i;
};
vt_err RunSeqTask(void *arg) {
    SeqTask *k = static_cast<SeqTask *>(arg);
    k->s->order.push_back(k->i);  // the writer thread alone touches order until wait returns
    if (k->i == k->s->fail_at) return vt_error(VT_ERR_IO, "rows.h5: task %d failed", k->i);
    return VT_OK;
}
void FreeSeqTask(void *arg) { delete static_cast<SeqTask *>(arg); }
}  // namespace

TEST(FileWriter, TasksRunInOrderWithTheJobs) {
    Releaser R;
    std::string dir = TempDir();
    vt_tensor *p = R(RandN({64, 64}, 4));
    vt_file_writer *w = vt_file_writer_start();
    ASSERT_NE(w, nullptr);
    Seq s;
    s.fail_at = 500;
    vt_err late = VT_OK;
    std::string late_msg;
    for (int i = 0; i < 1000; i++) {
        if (i % 100 == 0) {  // a checkpoint among the rows
            vt_st_job *j = vt_st_job_new((dir + "/c" + std::to_string(i) + ".safetensors").c_str());
            ASSERT_VT_OK(vt_st_job_add(j, "p", p));
            vt_err e = vt_file_writer_submit(w, j);
            if (e && !late) late = e, late_msg = vt_error_message();
        }
        vt_err e = vt_file_writer_submit_task(w, RunSeqTask, FreeSeqTask, new SeqTask{&s, i});
        if (e && !late) late = e, late_msg = vt_error_message();
    }
    vt_err e = vt_file_writer_wait(w);
    if (e && !late) late = e, late_msg = vt_error_message();
    EXPECT_EQ(late, VT_ERR_IO);  // reported once, by a later submit or the wait
    EXPECT_NE(late_msg.find("rows.h5: task 500 failed"), std::string::npos) << late_msg;
    EXPECT_EQ(vt_file_writer_wait(w), VT_OK);  // and not again
    ASSERT_EQ(s.order.size(), 1000u);
    for (int i = 0; i < 1000; i++) ASSERT_EQ(s.order[i], i);
    for (int i = 0; i < 1000; i += 100) {
        struct stat st;
        EXPECT_EQ(stat((dir + "/c" + std::to_string(i) + ".safetensors").c_str(), &st), 0) << i;
    }
    vt_file_writer_free(w);
}
