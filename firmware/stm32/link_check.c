/*
 * A firmware without a model, for checking a board's serial link and timer: it echoes every
 * byte, except two command bytes:
 *   LINK_CHECK_TIME  run a fixed integer workload and answer its duration in ticks
 *                    (4 bytes, little-endian) followed by the tick rate in Hz (4 bytes);
 *   LINK_CHECK_FAULT execute an undefined instruction, to exercise the fault report.
 */
#include <stdint.h>

#include "platform.h"

#define LINK_CHECK_TIME 0xF0u
#define LINK_CHECK_FAULT 0xF1u
#define WORKLOAD_ROUNDS 20000u
#define READ_TIMEOUT_MS 1000u

/* xorshift32: cheap, data-dependent and impossible for the compiler to fold away. */
static uint32_t workload(uint32_t seed)
{
    uint32_t x = seed;
    for (uint32_t i = 0; i < WORKLOAD_ROUNDS; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
    }
    return x;
}

static void put_u32(uint8_t *out, uint32_t value)
{
    for (int i = 0; i < 4; i++) {
        out[i] = (uint8_t)(value >> (8 * i));
    }
}

static void answer_timing(void)
{
    static volatile uint32_t sink;
    uint32_t start = platform_ticks();
    sink = workload(0x12345678u);
    uint32_t elapsed = platform_ticks() - start;
    uint8_t reply[8];
    put_u32(reply, elapsed);
    put_u32(reply + 4, platform_tick_hz());
    platform_write(reply, sizeof(reply));
}

void app_main(void)
{
    platform_init();
    uint8_t chunk[64];
    for (;;) {
        size_t count = platform_read(chunk, sizeof(chunk), READ_TIMEOUT_MS);
        for (size_t i = 0; i < count; i++) {
            if (chunk[i] == LINK_CHECK_TIME) {
                answer_timing();
            } else if (chunk[i] == LINK_CHECK_FAULT) {
                __asm__ volatile("udf #0");
            } else {
                platform_write(&chunk[i], 1);
            }
        }
    }
}
