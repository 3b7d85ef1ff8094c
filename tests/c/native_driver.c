/*
 * Test driver for the generated native engine: reads rows of ENGINE_INPUT_SIZE int8 values from
 * a file, runs engine_invoke() on each and writes the ENGINE_OUTPUT_SIZE int8 outputs to another.
 * Built with -DMCU_IDS_PROFILE_LAYERS it also prints each op's name and tick count for the last
 * row, with a tick counter that advances by one per read.
 */
#include <stdint.h>
#include <stdio.h>

#include "engine.h"
#include "engine_native.h"

#ifdef MCU_IDS_PROFILE_LAYERS
#include "platform.h"

static uint32_t tick_count;

uint32_t platform_ticks(void)
{
    return tick_count++;
}
#endif

int main(int argc, char **argv)
{
    int8_t input[ENGINE_INPUT_SIZE];
    int8_t output[ENGINE_OUTPUT_SIZE];
    FILE *in_file;
    FILE *out_file;
    long rows = 0;

    if (argc != 3) {
        fprintf(stderr, "usage: %s INPUT_ROWS.bin OUTPUT_ROWS.bin\n", argv[0]);
        return 2;
    }
    in_file = fopen(argv[1], "rb");
    out_file = fopen(argv[2], "wb");
    if (in_file == NULL || out_file == NULL) {
        fprintf(stderr, "cannot open %s or %s\n", argv[1], argv[2]);
        return 2;
    }
    if (engine_init() != 0) {
        fprintf(stderr, "engine_init failed\n");
        return 1;
    }
    while (fread(input, 1, sizeof(input), in_file) == sizeof(input)) {
        if (engine_invoke(input, output) != 0) {
            fprintf(stderr, "engine_invoke failed on row %ld\n", rows);
            return 1;
        }
        fwrite(output, 1, sizeof(output), out_file);
        ++rows;
    }
    fclose(in_file);
    fclose(out_file);
#ifdef MCU_IDS_PROFILE_LAYERS
    for (int op = 0; op < ENGINE_N_OPS; ++op) {
        printf("%s %lu\n", engine_layer_names[op], (unsigned long)engine_layer_ticks[op]);
    }
#endif
    fprintf(stderr, "%ld rows\n", rows);
    return 0;
}
