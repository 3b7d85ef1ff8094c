/*
 * Distribution-shift score: the number of input features outside the range seen in training.
 * The bounds and the threshold come from the generated model_config.h.
 */
#ifndef MCU_IDS_SHIFT_H
#define MCU_IDS_SHIFT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Count the int8 features of `input` below their training low bound or above the high bound. */
uint8_t shift_score(const int8_t *input);

/* 1 when the score exceeds the threshold chosen on training rows, else 0. */
uint8_t shift_flag(uint8_t score);

#ifdef __cplusplus
}
#endif

#endif /* MCU_IDS_SHIFT_H */
