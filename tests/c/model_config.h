/*
 * Test fixture: a model description for building the firmware without a trained model.
 * It stands in for the model_config.h that the export step generates; the values are made up.
 */
#ifndef MCU_IDS_MODEL_CONFIG_H
#define MCU_IDS_MODEL_CONFIG_H

#define MCU_IDS_N_FEATURES 40
#define MCU_IDS_N_CLASSES 19
/* sha256 of the bytes "mcu-ids protocol test fixture" */
#define MCU_IDS_MODEL_SHA256 "d85ae7ed3aeb0573e32689269680d763a217f20a6d5f62cc1026288c87415572"
#define MCU_IDS_INPUT_SCALE 2.5e-2f
#define MCU_IDS_INPUT_ZERO_POINT -3
#define MCU_IDS_OUTPUT_SCALE 3.90625e-3f
#define MCU_IDS_OUTPUT_ZERO_POINT -128
/* Shift bounds: inputs beyond +/-100 count as outside the training range. */
#define MCU_IDS_SHIFT_THRESHOLD 2
#define MCU_IDS_SHIFT_LOW { \
    -100, -100, -100, -100, -100, -100, -100, -100, -100, -100, \
    -100, -100, -100, -100, -100, -100, -100, -100, -100, -100, \
    -100, -100, -100, -100, -100, -100, -100, -100, -100, -100, \
    -100, -100, -100, -100, -100, -100, -100, -100, -100, -100 \
}
#define MCU_IDS_SHIFT_HIGH { \
    100, 100, 100, 100, 100, 100, 100, 100, 100, 100, \
    100, 100, 100, 100, 100, 100, 100, 100, 100, 100, \
    100, 100, 100, 100, 100, 100, 100, 100, 100, 100, \
    100, 100, 100, 100, 100, 100, 100, 100, 100, 100 \
}

#endif /* MCU_IDS_MODEL_CONFIG_H */
