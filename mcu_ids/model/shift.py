"""Distribution-shift flag: how many features of a row fall outside the training rows' range.

The statistics are computed on the int8-quantized training inputs, so the device can evaluate the
same score on the bytes it receives with a few comparisons per feature.
"""

from dataclasses import asdict, dataclass

import numpy as np

# Per-feature range: the central 99 % of training values. Tails beyond it are what "unlike the
# training data" means here; the exact extremes would let one outlier widen the range for good.
LOW_QUANTILE = 0.005
HIGH_QUANTILE = 0.995
# The flag threshold is the smallest score that at most this share of training rows exceeds.
TRAIN_FLAG_RATE = 0.01


@dataclass(frozen=True)
class ShiftStats:
    """Int8 per-feature bounds and the score threshold, both derived from training rows only."""

    low: list[int]
    high: list[int]
    threshold: int
    train_flag_rate: float
    low_quantile: float = LOW_QUANTILE
    high_quantile: float = HIGH_QUANTILE

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ShiftStats":
        return cls(**data)


def shift_scores(inputs: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Number of features of each int8 row below ``low`` or above ``high``."""
    rows = np.asarray(inputs, np.int16)
    outside = (rows < np.asarray(low, np.int16)) | (rows > np.asarray(high, np.int16))
    return outside.sum(axis=1).astype(np.int64)


def fit_shift_stats(train_inputs: np.ndarray, target_rate: float = TRAIN_FLAG_RATE) -> ShiftStats:
    """Bounds from the training rows' quantiles and the threshold that flags ``target_rate``."""
    rows = np.asarray(train_inputs, np.int16)
    low = np.floor(np.quantile(rows, LOW_QUANTILE, axis=0)).astype(np.int64)
    high = np.ceil(np.quantile(rows, HIGH_QUANTILE, axis=0)).astype(np.int64)
    scores = shift_scores(rows, low, high)
    threshold = 0
    while np.mean(scores > threshold) > target_rate:
        threshold += 1
    return ShiftStats(
        low=low.tolist(),
        high=high.tolist(),
        threshold=int(threshold),
        train_flag_rate=float(np.mean(scores > threshold)),
    )


def shift_flags(inputs: np.ndarray, stats: ShiftStats) -> tuple[np.ndarray, np.ndarray]:
    """Scores and flags (score above the threshold) for int8 rows."""
    scores = shift_scores(inputs, np.array(stats.low), np.array(stats.high))
    return scores, scores > stats.threshold
