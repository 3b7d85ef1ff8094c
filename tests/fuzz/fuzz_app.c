/*
 * Fuzz target: bytes from the fuzzer go through the frame parser and the message handlers of
 * app.c, with the fixture engine. The first byte picks how many bytes each read returns, so
 * frames split at every boundary. Every reply must be a well-formed frame, and every input must
 * be consumed in a bounded number of polls (no hang).
 */
#include <stdlib.h>

#include "app.h"
#include "platform_fuzz.h"
#include "protocol.h"

/* Each poll consumes at least one byte; the extra polls flush what a silent line leaves. */
#define FUZZ_EXTRA_POLLS 2u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t polls = 0;
    size_t chunk;

    if (size == 0) {
        return 0;
    }
    chunk = (size_t)(data[0] % PROTO_MAX_FRAME) + 1u;
    fuzz_platform_set_input(data + 1, size - 1, chunk);
    app_init();
    while (!fuzz_platform_input_done()) {
        app_poll();
        if (++polls > size) {
            abort(); /* a poll that consumed nothing: the loop would hang */
        }
    }
    for (polls = 0; polls < FUZZ_EXTRA_POLLS; polls++) {
        app_poll();
    }
    if (fuzz_platform_reply_faults() != 0) {
        abort();
    }
    return 0;
}
