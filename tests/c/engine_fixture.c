/*
 * Test fixture engine: a deterministic stand-in for a model, so the protocol, main loop and
 * harness can be tested end to end. output[i] = input[i % N_FEATURES] XOR (i * 37), bytewise.
 * An input starting with 127, -128 makes it fail with FIXTURE_FAILURE, to test error replies.
 */
#include "engine.h"
#include "model_config.h"

#define FIXTURE_MIX 37u
#define FIXTURE_FAILURE (-5)

int engine_init(void)
{
    return 0;
}

int engine_invoke(const int8_t *input, int8_t *output)
{
    unsigned i;

    if (input[0] == 127 && input[1] == -128) {
        return FIXTURE_FAILURE;
    }
    for (i = 0; i < MCU_IDS_N_CLASSES; i++) {
        unsigned byte = (uint8_t)input[i % MCU_IDS_N_FEATURES] ^ ((i * FIXTURE_MIX) & 0xFFu);

        output[i] = (int8_t)(byte > 127u ? (int)byte - 256 : (int)byte);
    }
    return 0;
}

const char *engine_name(void)
{
    return "fixture";
}
