/*
 * What the TFLite Micro engine offers beyond engine.h: its error codes, the text of the last
 * error, and the arena figures a user compares with the size measured on the host.
 */
#ifndef MCU_IDS_ENGINE_TFLM_H
#define MCU_IDS_ENGINE_TFLM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Negative codes returned by engine_init()/engine_invoke(); mcu_ids/export/tflm.py mirrors them. */
enum engine_tflm_error {
    ENGINE_TFLM_ERR_SCHEMA = -1,       /* the model's schema version differs from the runtime's */
    ENGINE_TFLM_ERR_ALIGNMENT = -2,    /* the model array is not 16-byte aligned */
    ENGINE_TFLM_ERR_OP_REGISTER = -3,  /* the resolver refused one of the model's ops */
    ENGINE_TFLM_ERR_ALLOCATE = -4,     /* AllocateTensors failed: arena too small or bad model */
    ENGINE_TFLM_ERR_INPUT = -5,        /* the input tensor is not int8 of MCU_IDS_N_FEATURES */
    ENGINE_TFLM_ERR_OUTPUT = -6,       /* the output tensor is not int8 of MCU_IDS_N_CLASSES */
    ENGINE_TFLM_ERR_NOT_READY = -7,    /* engine_invoke() before a successful engine_init() */
    ENGINE_TFLM_ERR_INVOKE = -8        /* Invoke() failed */
};

/* What went wrong last, in words; "ok" when nothing did. */
const char *engine_tflm_last_error(void);

/* Bytes of the arena the interpreter actually used (0 before a successful engine_init()). */
size_t engine_tflm_arena_used_bytes(void);

/* Size of the arena compiled in (MCU_IDS_TFLM_ARENA_BYTES). */
size_t engine_tflm_arena_bytes(void);

#ifdef __cplusplus
}
#endif

#endif /* MCU_IDS_ENGINE_TFLM_H */
