"""Full-integer post-training quantization: int8 weights, activations, input and output."""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcu_ids.errors import DataError
from mcu_ids.fileio import output_to_file
from mcu_ids.model.network import NetworkConfig, deploy_copy

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION_ROWS = 1000
# A class with fewer rows than this in the calibration set is topped up from its own rows, so that
# rare attack classes shape the activation ranges too.
MIN_ROWS_PER_CLASS = 20


@dataclass(frozen=True)
class Quantization:
    """An affine int8 quantization: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Real values to int8, rounding half away from zero as TFLite's QUANTIZE does."""
        scaled = np.asarray(values, np.float64) / self.scale
        rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
        return np.clip(rounded + self.zero_point, -128, 127).astype(np.int8)

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, np.float64) - self.zero_point) * self.scale


def calibration_indices(
    labels: np.ndarray, rows: int = DEFAULT_CALIBRATION_ROWS, seed: int = 0
) -> np.ndarray:
    """A stratified draw of training rows in which every class present appears."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = np.maximum(np.round(counts / counts.sum() * rows).astype(int), MIN_ROWS_PER_CLASS)
    picked = []
    for cls, count, want in zip(classes, counts, share, strict=True):
        members = np.flatnonzero(labels == cls)
        picked.append(rng.choice(members, size=min(want, count), replace=False))
    return np.sort(np.concatenate(picked))


def convert_int8(
    model, config: NetworkConfig, calibration: np.ndarray, log_path: Path | None = None
) -> bytes:
    """Convert a trained model to a batch-1, full-int8 TFLite flatbuffer.

    The converter's own output (pages of it) goes to ``log_path`` when one is given.
    """
    return convert_keras_int8(deploy_copy(model, config), calibration, log_path)


def convert_keras_int8(model, calibration: np.ndarray, log_path: Path | None = None) -> bytes:
    """Convert any Keras model to full int8 (int8 input and output), calibrated on ``calibration``
    rows; a batch-1 model gives a graph without dynamic-shape ops."""
    import tensorflow as tf

    if len(calibration) == 0:
        raise DataError("the calibration set is empty", hint="check the training rows")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative():
        for row in calibration:
            yield [row[np.newaxis, :].astype(np.float32)]

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    if log_path is None:
        return converter.convert()
    with output_to_file(log_path):
        return converter.convert()


def io_quantization(tflite_bytes: bytes) -> tuple[Quantization, Quantization]:
    """Input and output quantization read back from the model itself."""
    from mcu_ids.quantize.reference import reference_interpreter

    interpreter = reference_interpreter(tflite_bytes)
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    return _quant_of(inp), _quant_of(out)


def _quant_of(details: dict) -> Quantization:
    params = details["quantization_parameters"]
    return Quantization(float(params["scales"][0]), int(params["zero_points"][0]))
