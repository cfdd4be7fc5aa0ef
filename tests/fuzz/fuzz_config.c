// fuzz_config.c — libFuzzer target for the YAML config loader: any bytes must give VT_OK
// or an error with a message, never a crash, leak or sanitizer report. Accepted configs
// also go through validate, dump, reload-of-the-dump (which must succeed and dump the same
// text) and one --set override built from the input.
#include "train/config.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;  // the loader takes C strings: stop at the first NUL like a caller would
    vt_config cfg;
    if (vt_config_load_string(&cfg, text, "fuzz.yaml") == VT_OK) {
        (void)vt_config_validate(&cfg);
        char *dump = vt_config_dump(&cfg);
        if (dump) {
            vt_config again;
            if (vt_config_load_string(&again, dump, "dump.yaml") != VT_OK) {
                fprintf(stderr, "dump does not load back: %s\n%s", vt_error_message(), dump);
                abort();
            }
            char *dump2 = vt_config_dump(&again);
            if (dump2 && strcmp(dump, dump2) != 0) {
                fprintf(stderr, "dump changes on reload:\n%s\n----\n%s", dump, dump2);
                abort();
            }
            free(dump2);
            vt_config_free(&again);
            free(dump);
        }
        (void)vt_config_hash(&cfg);
    }
    // the same bytes as a --set assignment on the current (default or loaded) config
    (void)vt_config_set(&cfg, text);
    (void)vt_config_validate(&cfg);
    vt_config_free(&cfg);
    free(text);
    return 0;
}
