/*
 * Replays files through the fuzz target without libFuzzer, for the sanitized regression test:
 *   replay FILE...   runs each file once; prints "OK <replies> FILE" per file.
 */
#include <stdio.h>
#include <stdlib.h>

#include "platform_fuzz.h"

#define REPLAY_LIMIT (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    static uint8_t data[REPLAY_LIMIT];
    int i;

    for (i = 1; i < argc; i++) {
        FILE *file = fopen(argv[i], "rb");
        size_t size;

        if (file == NULL) {
            perror(argv[i]);
            return 2;
        }
        size = fread(data, 1, sizeof data, file);
        fclose(file);
        LLVMFuzzerTestOneInput(data, size);
        printf("OK %zu %s\n", fuzz_platform_replies(), argv[i]);
    }
    return 0;
}
