"""The golden reference: the TFLite Micro runtime (the same kernels the boards run)."""

import numpy as np
from tqdm import tqdm

from mcu_ids.errors import ModelError

# Generous enough for any model this tool makes; the firmware's arena is measured separately.
HOST_ARENA_BYTES = 1 << 20


class _Interpreter:
    """A thin wrapper giving the TFLM runtime the interface this package uses."""

    def __init__(self, runtime_interpreter):
        self._impl = runtime_interpreter

    def get_input_details(self) -> list[dict]:
        return [self._impl.get_input_details(0)]

    def get_output_details(self) -> list[dict]:
        return [self._impl.get_output_details(0)]

    def run(self, row: np.ndarray) -> np.ndarray:
        self._impl.set_input(row[np.newaxis, :], 0)
        self._impl.invoke()
        return np.array(self._impl.get_output(0)).reshape(-1)


def reference_interpreter(tflite_bytes: bytes, arena_size: int = HOST_ARENA_BYTES) -> _Interpreter:
    """A TFLM interpreter for ``tflite_bytes``; a model TFLM rejects raises ModelError."""
    from tflite_micro.python.tflite_micro import runtime

    try:
        impl = runtime.Interpreter.from_bytes(bytes(tflite_bytes), arena_size=arena_size)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(
            f"TFLite Micro cannot load the model: {exc}",
            hint="re-run `mcu-ids quantize`; the .tflite may be corrupt or use an unsupported op",
        ) from exc
    return _Interpreter(impl)


def run_reference(tflite_bytes: bytes, inputs: np.ndarray, progress: bool = False) -> np.ndarray:
    """Int8 outputs of the TFLM runtime for each int8 input row."""
    interpreter = reference_interpreter(tflite_bytes)
    inputs = np.asarray(inputs, np.int8)
    (out,) = interpreter.get_output_details()
    result = np.empty((len(inputs), int(np.prod(out["shape"]))), dtype=np.int8)
    for index in tqdm(range(len(inputs)), desc="TFLM reference", unit="row", disable=not progress):
        result[index] = interpreter.run(inputs[index])
    return result
