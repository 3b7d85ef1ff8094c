/*
 * The inference engine interface. Two implementations exist: the dependency-free native engine
 * generated from the model (engine_native.c) and the TFLite Micro wrapper (engine_tflm.cc).
 */
#ifndef MCU_IDS_ENGINE_H
#define MCU_IDS_ENGINE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Prepare the engine; returns 0 on success, a negative code otherwise. */
int engine_init(void);

/*
 * Run one inference: `input` holds MCU_IDS_N_FEATURES int8 values already quantized with the
 * model's input scale and zero point; `output` receives MCU_IDS_N_CLASSES int8 values.
 * Returns 0 on success, a negative code otherwise.
 */
int engine_invoke(const int8_t *input, int8_t *output);

/* "native" or "tflm". */
const char *engine_name(void);

#ifdef __cplusplus
}
#endif

#endif /* MCU_IDS_ENGINE_H */
