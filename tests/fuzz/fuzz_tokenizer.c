// fuzz_tokenizer.c — libFuzzer target for the CLIP tokenizer: any byte string (invalid UTF-8,
// NULs, HTML entities, combining marks, ...) must tokenize without crashing into 77 ids that
// start with SOT, hold an EOT and stay inside the vocabulary. The vocabulary is read once from
// $VADER_SHARED/tokenizer/bpe_simple_vocab_16e6.txt.gz (default: the build's shared folder).
// Built only with clang and -DVADER_FUZZ=ON (tests/CMakeLists.txt).
#include <stdio.h>
#include <stdlib.h>
#include "core/tokenizer.h"

static vt_tokenizer *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    const char *shared = getenv("VADER_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer/bpe_simple_vocab_16e6.txt.gz", shared ? shared : VADER_SHARED_DIR);
    g_tok = vt_tokenizer_open(path);
    if (!g_tok) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", vt_error_message());
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    int64_t out[77];
    int ctx = 77;
    if (size > 0 && data[0] == 0xA5) ctx = 1 + (size > 1 ? data[1] % 77 : 0);  // other lengths too
    if (vt_tokenize_n(g_tok, (const char *)data, size, out, ctx) != VT_OK) abort();
    if (out[0] != VT_TOKENIZER_SOT && !(ctx == 1 && out[0] == VT_TOKENIZER_EOT)) abort();
    int eot = 0;
    for (int i = 0; i < ctx; i++) {
        if (out[i] < 0 || out[i] >= vt_tokenizer_vocab_size(g_tok)) abort();
        eot |= out[i] == VT_TOKENIZER_EOT;
    }
    if (!eot) abort();
    return 0;
}
