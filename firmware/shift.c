#include "shift.h"

#include "model_config.h"

static const int8_t shift_low[MCU_IDS_N_FEATURES] = MCU_IDS_SHIFT_LOW;
static const int8_t shift_high[MCU_IDS_N_FEATURES] = MCU_IDS_SHIFT_HIGH;

uint8_t shift_score(const int8_t *input)
{
    uint8_t score = 0;
    int i;

    for (i = 0; i < MCU_IDS_N_FEATURES; i++) {
        if (input[i] < shift_low[i] || input[i] > shift_high[i]) {
            score++;
        }
    }
    return score;
}

uint8_t shift_flag(uint8_t score)
{
    return score > MCU_IDS_SHIFT_THRESHOLD ? 1u : 0u;
}
