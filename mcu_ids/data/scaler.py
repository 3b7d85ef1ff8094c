"""The feature scaler: clip, signed log1p, standardise; fitted on training rows only."""

import math

import numpy as np

from mcu_ids.errors import DataError

SCALER_FORMAT = 1
OPERATIONS = ("clip", "signed_log1p", "standardize")
# Rows transformed at a time: the float64 working copy stays small on multi-million-row sets.
CHUNK_ROWS = 1 << 18


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """Return ``sign(x) * log1p(|x|)`` elementwise (in the dtype of ``x``)."""
    return np.sign(x) * np.log1p(np.abs(x))


class FeatureScaler:
    """Per-feature scaling whose numbers the firmware header exports.

    For each feature ``j``, ``transform`` computes, in this order:

    1. ``c = min(max(x, lo[j]), hi[j])`` where ``lo``/``hi`` are the smallest and largest finite
       training values; +inf becomes ``hi[j]``, -inf becomes ``lo[j]``, and test values outside
       the training range are clipped to it;
    2. ``s = sign(c) * log1p(|c|)``, which tames heavy tails (Rate, Variance and Tot sum reach
       1e5 to 1e7);
    3. ``z = (s - mean[j]) / std[j]`` with the mean and population standard deviation of ``s``
       over the training rows; a constant feature (``lo == hi``) uses std 1.

    The arithmetic runs in float64 and the result is float32. NaN inputs are rejected (the
    reader drops rows with NaN). ``to_dict``/``from_dict`` round-trip every number exactly.
    """

    def __init__(self, lo=None, hi=None, mean=None, std=None, feature_names=None):
        self.lo = None if lo is None else np.asarray(lo, dtype=np.float64)
        self.hi = None if hi is None else np.asarray(hi, dtype=np.float64)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)
        self.feature_names = None if feature_names is None else tuple(feature_names)

    @property
    def fitted(self) -> bool:
        """True once the scaler holds its numbers."""
        return self.mean is not None

    @property
    def n_features(self) -> int:
        """Number of features the scaler was fitted on."""
        self._check_fitted()
        return len(self.mean)

    def fit(self, x: np.ndarray, feature_names=None) -> "FeatureScaler":
        """Fit on training rows ``x`` (n_rows x n_features); return ``self``."""
        x = self._check_rows(x, expected=None)
        if len(x) == 0:
            raise DataError("cannot fit the feature scaler on zero rows", hint="load more data")
        finite = np.isfinite(x)
        lo = np.where(finite, x, np.inf).min(axis=0).astype(np.float64)
        hi = np.where(finite, x, -np.inf).max(axis=0).astype(np.float64)
        no_finite = ~finite.any(axis=0)
        lo[no_finite] = 0.0
        hi[no_finite] = 0.0
        self.lo, self.hi = lo, hi
        total = np.zeros(x.shape[1])
        total_sq = np.zeros(x.shape[1])
        for start in range(0, len(x), CHUNK_ROWS):
            s = self._clipped_log(x[start : start + CHUNK_ROWS])
            total += s.sum(axis=0)
        mean = total / len(x)
        for start in range(0, len(x), CHUNK_ROWS):
            s = self._clipped_log(x[start : start + CHUNK_ROWS])
            total_sq += ((s - mean) ** 2).sum(axis=0)
        std = np.sqrt(total_sq / len(x))
        # A constant feature would otherwise get a rounding-noise std and blow up its values.
        constant = self.lo == self.hi
        mean[constant] = signed_log1p(self.lo[constant])
        std[constant | (std == 0)] = 1.0
        self.mean, self.std = mean, std
        if feature_names is not None:
            self.feature_names = tuple(feature_names)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Return the scaled rows as float32 (see the class docstring for the steps)."""
        self._check_fitted()
        x = self._check_rows(x, expected=len(self.mean))
        out = np.empty(x.shape, dtype=np.float32)
        for start in range(0, len(x), CHUNK_ROWS):
            s = self._clipped_log(x[start : start + CHUNK_ROWS])
            out[start : start + CHUNK_ROWS] = (s - self.mean) / self.std
        return out

    def fit_transform(self, x: np.ndarray, feature_names=None) -> np.ndarray:
        """Fit on ``x`` and return it scaled."""
        return self.fit(x, feature_names).transform(x)

    def to_dict(self) -> dict:
        """Return the scaler as JSON-able data (floats round-trip exactly through JSON)."""
        self._check_fitted()
        return {
            "format": SCALER_FORMAT,
            "operations": list(OPERATIONS),
            "feature_names": None if self.feature_names is None else list(self.feature_names),
            "lo": [float(v) for v in self.lo],
            "hi": [float(v) for v in self.hi],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureScaler":
        """Rebuild a scaler from ``to_dict`` output; a DataError if it is not one."""
        if data.get("format") != SCALER_FORMAT or tuple(data.get("operations", ())) != OPERATIONS:
            raise DataError(
                f"scaler data has format {data.get('format')!r} and operations "
                f"{data.get('operations')!r}; expected format {SCALER_FORMAT} with {OPERATIONS}",
                hint="re-run training so that the scaler is saved by this version of mcu-ids",
            )
        arrays = {key: data.get(key) for key in ("lo", "hi", "mean", "std")}
        lengths = {
            key: len(value) if isinstance(value, list) else None for key, value in arrays.items()
        }
        if len(set(lengths.values())) != 1 or None in lengths.values():
            raise DataError(
                f"scaler data has lists of different or missing lengths {lengths}",
                hint="the file is damaged; re-run training",
            )
        if any(not math.isfinite(v) for value in arrays.values() for v in value):
            raise DataError("scaler data holds non-finite numbers", hint="re-run training")
        return cls(**arrays, feature_names=data.get("feature_names"))

    def _clipped_log(self, x: np.ndarray) -> np.ndarray:
        clipped = np.clip(x.astype(np.float64), self.lo, self.hi)
        return signed_log1p(clipped)

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise DataError("the feature scaler is not fitted", hint="call fit() on training rows")

    @staticmethod
    def _check_rows(x, expected: int | None) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or (expected is not None and x.shape[1] != expected):
            want = "n_rows x n_features" if expected is None else f"n_rows x {expected}"
            raise DataError(f"feature array has shape {x.shape}; expected {want}")
        nan_rows = int(np.isnan(x).any(axis=1).sum()) if x.dtype.kind == "f" else 0
        if nan_rows:
            raise DataError(
                f"feature array has {nan_rows} row(s) with NaN, which the scaler cannot place",
                hint="drop rows with NaN first (load_dataset does)",
            )
        return x
