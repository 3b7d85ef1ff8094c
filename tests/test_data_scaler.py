"""FeatureScaler: clip to the training range, signed log1p, standardise."""

import json
from pathlib import Path

import numpy as np
import pytest

from mcu_ids.data.reader import load_dataset
from mcu_ids.data.scaler import FeatureScaler, signed_log1p
from mcu_ids.data.synthetic import write_synthetic_dataset
from mcu_ids.errors import DataError


def reference_transform(train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The documented steps written out plainly, to check the scaler against."""
    train = train.astype(np.float64)
    finite = np.where(np.isfinite(train), train, np.nan)
    lo, hi = np.nanmin(finite, axis=0), np.nanmax(finite, axis=0)
    logged = lambda a: np.sign(a) * np.log1p(np.abs(a))  # noqa: E731
    fitted = logged(np.clip(train, lo, hi))
    mean, std = fitted.mean(axis=0), fitted.std(axis=0)
    constant = lo == hi
    mean[constant], std[constant] = logged(lo[constant]), 1
    return (logged(np.clip(x.astype(np.float64), lo, hi)) - mean) / std


@pytest.fixture(scope="module")
def train_rows():
    rng = np.random.default_rng(3)
    x = np.stack(
        [
            rng.lognormal(8, 3, 500),  # heavy-tailed, like Rate
            rng.normal(0, 50, 500),  # signed
            np.full(500, 7.0),  # constant
        ],
        axis=1,
    ).astype(np.float32)
    x[10, 0] = np.inf
    x[11, 1] = -np.inf
    return x


def test_transform_follows_the_documented_steps(train_rows):
    scaler = FeatureScaler().fit(train_rows)
    test = np.array([[1e12, 1e9, 7.0], [-5.0, -np.inf, 8.0], [np.inf, 0.0, 6.0]], np.float32)
    out = scaler.transform(test)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference_transform(train_rows, test), rtol=1e-6, atol=1e-6)
    expected = reference_transform(train_rows, train_rows)
    np.testing.assert_allclose(scaler.transform(train_rows), expected, rtol=1e-5, atol=1e-5)


def test_inf_and_out_of_range_values_are_clipped(train_rows):
    scaler = FeatureScaler().fit(train_rows)
    finite = train_rows[np.isfinite(train_rows[:, 0]), 0]
    assert scaler.hi[0] == finite.max()
    assert scaler.lo[1] == train_rows[np.isfinite(train_rows[:, 1]), 1].min()
    at_max = scaler.transform(np.array([[finite.max(), 0, 7]], np.float32))
    beyond = scaler.transform(np.array([[np.inf, 0, 7], [1e30, 0, 7]], np.float32))
    np.testing.assert_array_equal(beyond, np.vstack([at_max, at_max]))
    assert np.isfinite(scaler.transform(train_rows)).all()


def test_standardised_training_rows_and_constant_feature(train_rows):
    scaler = FeatureScaler().fit(train_rows)
    out = scaler.transform(train_rows).astype(np.float64)
    np.testing.assert_allclose(out[:, :2].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out[:, :2].std(axis=0), 1, atol=1e-5)
    assert scaler.std[2] == 1.0
    np.testing.assert_array_equal(out[:, 2], 0.0)


def test_dict_round_trip_is_exact(train_rows):
    scaler = FeatureScaler().fit(train_rows, feature_names=["Rate", "Signed", "Const"])
    data = json.loads(json.dumps(scaler.to_dict()))
    again = FeatureScaler.from_dict(data)
    for name in ("lo", "hi", "mean", "std"):
        np.testing.assert_array_equal(getattr(again, name), getattr(scaler, name))
    assert again.feature_names == ("Rate", "Signed", "Const")
    np.testing.assert_array_equal(again.transform(train_rows), scaler.transform(train_rows))
    assert data["operations"] == ["clip", "signed_log1p", "standardize"]


def test_bad_inputs_raise_data_errors(train_rows):
    with pytest.raises(DataError, match="not fitted"):
        FeatureScaler().transform(train_rows)
    scaler = FeatureScaler().fit(train_rows)
    with pytest.raises(DataError, match="NaN"):
        scaler.transform(np.array([[np.nan, 0, 0]], np.float32))
    with pytest.raises(DataError, match="shape"):
        scaler.transform(train_rows[:, :2])
    with pytest.raises(DataError, match="format"):
        FeatureScaler.from_dict({"format": 99})


def test_signed_log1p_is_odd():
    x = np.array([-1e6, -1.0, 0.0, 1.0, 1e6])
    np.testing.assert_allclose(signed_log1p(x), -signed_log1p(-x))
    assert signed_log1p(np.array([np.e - 1]))[0] == pytest.approx(1.0)


def test_scaler_depends_on_training_rows_only(tmp_path: Path):
    classes = ["Benign", "TCP_IP-DoS-UDP"]
    folder = write_synthetic_dataset(tmp_path / "data", rows_per_class=60, classes=classes)
    first = load_dataset(folder, progress=False, use_cache=False)
    before = FeatureScaler().fit(first.x_train).to_dict()
    # Replace every test row with extreme values; the training rows stay as they are.
    for path in folder.glob("*_test.pcap.csv"):
        header, *rows = path.read_text().splitlines()
        n_columns = len(header.split(","))
        path.write_text(header + "\n" + "\n".join(",".join(["1e9"] * n_columns) for _ in rows))
    second = load_dataset(folder, progress=False, use_cache=False)
    assert not np.array_equal(first.x_test, second.x_test)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    assert FeatureScaler().fit(second.x_train).to_dict() == before
