"""Distribution-shift flag: the rule on real rows, the run report, device flags equal host flags."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mcu_ids.data.provenance import load_rows_with_origin
from mcu_ids.data.scaler import FeatureScaler
from mcu_ids.model.shift import (
    ShiftStats,
    fit_shift_stats,
    format_shift_report,
    shift_flags,
    shift_report,
)
from mcu_ids.quantize.ptq import Quantization

INT8_LEVELS = 255


def record(index, label, predicted, device, host):
    return {
        "index": index,
        "label": label,
        "predicted": predicted,
        "shift_score": device,
        "reference_shift_score": host,
    }


def test_report_counts_flags_and_accuracy_per_class():
    records = [
        record(0, 0, 0, 5, 5),  # flagged, right
        record(1, 0, 1, 5, 5),  # flagged, wrong
        record(2, 0, 0, 0, 0),  # unflagged, right
        record(3, 1, 1, 2, 2),  # at the threshold: not flagged
        record(4, 1, 0, 0, 0),  # unflagged, wrong
    ]
    report = shift_report(records, ["Benign", "ARP_Spoofing"], threshold=2)
    benign, arp = report["per_class"]["Benign"], report["per_class"]["ARP_Spoofing"]
    assert (benign["rows"], benign["flagged"]) == (3, 2)
    assert benign["accuracy_flagged"] == 0.5
    assert benign["accuracy_unflagged"] == 1.0
    assert (arp["flagged"], arp["accuracy_flagged"], arp["accuracy_unflagged"]) == (0, None, 0.5)
    assert report["overall"]["flagged"] == 2
    assert report["device_equals_host"]["all_equal"]
    assert "equal host scores on all 5 rows" in format_shift_report(report)


def test_report_names_rows_where_device_and_host_differ():
    records = [record(0, 0, 0, 3, 3), record(1, 0, 0, 4, 1), record(2, 0, 0, 1, 2)]
    check = shift_report(records, ["Benign"], threshold=2)["device_equals_host"]
    assert not check["all_equal"]
    assert check["score_mismatches"] == 2
    assert check["flag_mismatches"] == 1
    assert check["mismatched_rows"] == [1, 2]


def quantization_of(scaled: np.ndarray) -> Quantization:
    """An int8 input quantization covering the training range, as the converter derives one."""
    low, high = min(float(scaled.min()), 0.0), max(float(scaled.max()), 0.0)
    scale = (high - low) / INT8_LEVELS
    return Quantization(scale, int(round(-128 - low / scale)))


def test_rows_from_another_part_of_the_captures_are_flagged_more(sample_dir: Path):
    """Fit on the first half of each capture; score held-out rows of it and the second half."""
    rows = load_rows_with_origin(sample_dir)
    rng = np.random.default_rng(0)
    fit, held_out, other = [], [], []
    for file_id in range(len(rows.files)):
        members = np.flatnonzero(rows.file_ids == file_id)
        first = rng.permutation(members[: len(members) // 2])
        held_out.append(first[: len(first) // 5])
        fit.append(first[len(first) // 5 :])
        other.append(members[len(members) // 2 :])
    fit, held_out, other = (np.concatenate(part) for part in (fit, held_out, other))
    scaler = FeatureScaler().fit(rows.x[fit])
    scaled = scaler.transform(rows.x[fit])
    quant = quantization_of(scaled)
    stats = fit_shift_stats(quant.quantize(scaled))
    assert stats.train_flag_rate <= 0.01

    def flag_rate(index):
        return shift_flags(quant.quantize(scaler.transform(rows.x[index])), stats)[1].mean()

    held_rate, other_rate = flag_rate(held_out), flag_rate(other)
    # Held-out rows look like the training rows (about the 1 % target); the other half does not.
    assert held_rate <= 0.02
    assert other_rate > 3 * max(held_rate, 1 / len(held_out))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_device_flags_equal_host_flags_on_every_row(tmp_path: Path, sample_dir: Path):
    from mcu_ids.devices import bench_device, build_firmware, flash_firmware, stop_device
    from mcu_ids.hil.report import load_results
    from mcu_ids.model.train import TrainSettings
    from mcu_ids.pipeline import export, prepare_data, quantize, train
    from mcu_ids.workspace import Workspace

    ws = Workspace(tmp_path / "work")
    prepare_data(ws, sample_dir, progress=False)
    train(ws, TrainSettings(epochs=2, patience=1), (4, 8), progress=False)
    quantize(ws, calibration_rows=200, progress=False)
    export(ws, progress=False)
    build_firmware(ws, "host")
    flash_firmware(ws, "host")
    try:
        text = bench_device(ws, "host", None, progress=False)
    finally:
        stop_device(ws, "host")
    (run_dir,) = list(ws.runs_dir.iterdir())
    results = load_results(run_dir)
    quant = json.loads(ws.quantization_info.read_text())
    with np.load(ws.reference) as reference:
        inputs = reference["inputs"]
    # The host's scores are recomputed here from the int8 rows, not read from the run.
    host_scores, host_flags = shift_flags(inputs, ShiftStats.from_dict(quant["shift"]))
    samples = np.array([r["sample"] for r in results])
    device_scores = np.array([r["shift_score"] for r in results])
    assert len(results) == len(inputs)
    assert np.array_equal(device_scores, host_scores[samples])
    threshold = quant["shift"]["threshold"]
    assert np.array_equal(device_scores > threshold, host_flags[samples])
    report = json.loads((run_dir / "shift.json").read_text())
    assert report["device_equals_host"]["all_equal"]
    assert report["overall"]["flagged"] == int(host_flags.sum())
    assert "### Distribution shift" in text
