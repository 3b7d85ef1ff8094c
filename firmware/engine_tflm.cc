/*
 * engine.h over TensorFlow Lite Micro: the model array, the generated resolver (exactly the
 * model's ops) and the arena size measured for the model on the host.
 *
 * Every TFLM status is checked; a failure returns a distinct negative code (engine_tflm.h),
 * keeps a message for engine_tflm_last_error() and prints it through TFLM's own log.
 */
#include "engine.h"
#include "engine_tflm.h"

#include <stdint.h>
#include <string.h>

#include <new>

#include "model_config.h"
#include "model_data.h"
#include "op_resolver.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

#define ENGINE_TFLM_ARENA_ALIGNMENT 16

namespace {

alignas(ENGINE_TFLM_ARENA_ALIGNMENT) uint8_t tensor_arena[MCU_IDS_TFLM_ARENA_BYTES];

/*
 * The resolver and interpreter are built with placement new in engine_init() rather than as
 * static objects: bare-metal startup code does not always run C++ static constructors.
 */
alignas(McuIdsOpResolver) uint8_t resolver_storage[sizeof(McuIdsOpResolver)];
alignas(tflite::MicroInterpreter) uint8_t interpreter_storage[sizeof(tflite::MicroInterpreter)];

tflite::MicroInterpreter *interpreter = nullptr;
TfLiteTensor *input_tensor = nullptr;
TfLiteTensor *output_tensor = nullptr;
const char *last_error = "engine_init() has not run";

int fail(int code, const char *message)
{
    last_error = message;
    MicroPrintf("mcu-ids tflm engine error %d: %s", code, message);
    return code;
}

bool is_int8_of_size(const TfLiteTensor *tensor, size_t count)
{
    return tensor != nullptr && tensor->type == kTfLiteInt8 && tensor->bytes == count;
}

}  // namespace

extern "C" int engine_init(void)
{
    if (interpreter != nullptr) {
        return 0;
    }
    tflite::InitializeTarget();

    /* Checked before the flatbuffer is read: an unaligned read can fault on Cortex-M. */
    if (reinterpret_cast<uintptr_t>(mcu_ids_model) % MCU_IDS_MODEL_ALIGNMENT != 0) {
        return fail(ENGINE_TFLM_ERR_ALIGNMENT, "the model array is not 16-byte aligned");
    }
    const tflite::Model *model = tflite::GetModel(mcu_ids_model);
    if (model->version() != TFLITE_SCHEMA_VERSION) {
        return fail(ENGINE_TFLM_ERR_SCHEMA,
                    "the model's schema version differs from the one this TFLM supports");
    }

    McuIdsOpResolver *resolver = new (resolver_storage) McuIdsOpResolver();
    const char *failed_op = mcu_ids_register_ops(*resolver);
    if (failed_op != nullptr) {
        MicroPrintf("mcu-ids tflm engine: registering op %s failed", failed_op);
        return fail(ENGINE_TFLM_ERR_OP_REGISTER,
                    "registering one of the model's ops failed (see the log for which)");
    }

    tflite::MicroInterpreter *candidate = new (interpreter_storage)
        tflite::MicroInterpreter(model, *resolver, tensor_arena, sizeof tensor_arena);
    if (candidate->AllocateTensors() != kTfLiteOk) {
        return fail(ENGINE_TFLM_ERR_ALLOCATE,
                    "AllocateTensors failed: raise MCU_IDS_TFLM_ARENA_BYTES in op_resolver.h "
                    "or check the model");
    }
    input_tensor = candidate->input(0);
    output_tensor = candidate->output(0);
    if (!is_int8_of_size(input_tensor, MCU_IDS_N_FEATURES)) {
        return fail(ENGINE_TFLM_ERR_INPUT,
                    "the model's input is not int8 with MCU_IDS_N_FEATURES values");
    }
    if (!is_int8_of_size(output_tensor, MCU_IDS_N_CLASSES)) {
        return fail(ENGINE_TFLM_ERR_OUTPUT,
                    "the model's output is not int8 with MCU_IDS_N_CLASSES values");
    }
    interpreter = candidate;
    last_error = "ok";
    return 0;
}

extern "C" int engine_invoke(const int8_t *input, int8_t *output)
{
    if (interpreter == nullptr) {
        return fail(ENGINE_TFLM_ERR_NOT_READY, "engine_invoke() called before engine_init()");
    }
    memcpy(input_tensor->data.int8, input, MCU_IDS_N_FEATURES);
    if (interpreter->Invoke() != kTfLiteOk) {
        return fail(ENGINE_TFLM_ERR_INVOKE, "Invoke failed (see the TFLM log above)");
    }
    memcpy(output, output_tensor->data.int8, MCU_IDS_N_CLASSES);
    return 0;
}

extern "C" const char *engine_name(void)
{
    return "tflm";
}

extern "C" const char *engine_tflm_last_error(void)
{
    return last_error;
}

extern "C" size_t engine_tflm_arena_used_bytes(void)
{
    return interpreter == nullptr ? 0 : interpreter->arena_used_bytes();
}

extern "C" size_t engine_tflm_arena_bytes(void)
{
    return sizeof tensor_arena;
}
