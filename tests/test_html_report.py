"""The per-run HTML report: self-contained, figures present, CSVs right, renders in Chromium."""

import base64
import csv
import re
import subprocess

import numpy as np
import pytest
from headless import CHROMIUM, chromium_command

from mcu_ids.hil.html_report import layer_costs
from mcu_ids.hil.report import rewrite_bench_report, write_bench_report

CLASS_NAMES = ["Benign", "ARP_Spoofing", "Recon-Ping_Sweep"]
ROWS = 60


def _records(rows: int) -> list[dict]:
    """Device answers: class 2 is always mistaken for class 0, the rest right; ticks 1000+i."""
    records = []
    for index in range(rows):
        label = index % 3
        predicted = 0 if label == 2 else label
        output = [-128, -128, -128]
        output[predicted] = 127
        records.append(
            {
                "index": index,
                "sample": 100 + index,
                "label": label,
                "output": output,
                "predicted": predicted,
                "reference": output,
                "reference_predicted": predicted,
                "identical": True,
                "ticks": 1000 + index,
                "shift_score": 0,
                "round_trip_s": 0.001,
                "attempts": 1,
            }
        )
    return records


HANDSHAKE = {
    "board": "qemu-f405",
    "engine": "native",
    "tick_hz": 168_000_000,
    "tick_kind": "emulated-instructions",
    "model_sha256": "ab" * 32,
    "boot_id": 7,
}


def _meta(synthetic: bool) -> dict:
    return {
        "board": "qemu-f405",
        "board_description": "STM32F405 emulated",
        "emulated": True,
        "engine": "native",
        "dataset": "/data/x",
        "data": "synthetic rows from the seeded generator (not real traffic)"
        if synthetic
        else "real CICIoMT2024 rows",
        "split": "stratified",
        "view": "19",
        "model_sha256": "ab" * 32,
        "rows_requested": ROWS,
        "complete": True,
        "memory": {"arena_bytes": 948, "flash_used_bytes": 8324},
        "versions": {"mcu-ids": "0.1.0", "numpy": np.__version__},
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run-1"
    write_bench_report(
        out, _records(ROWS), handshake=HANDSHAKE, class_names=CLASS_NAMES, meta=_meta(True)
    )
    return out


def _data_images(html: str) -> list[bytes]:
    return [
        base64.b64decode(m)
        for m in re.findall(r'<img[^>]*src="data:image/png;base64,([^"]+)"', html)
    ]


def test_report_html_is_self_contained_with_figures(run_dir):
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    images = _data_images(html)
    # latency histogram, confusion matrix, per-class F1
    assert len(images) == 3
    assert all(image.startswith(b"\x89PNG") and len(image) > 2000 for image in images)
    # Nothing to fetch: no external src/href.
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert 'id="synthetic-banner"' in html


def test_real_data_has_no_synthetic_banner(tmp_path):
    write_bench_report(
        tmp_path, _records(9), handshake=HANDSHAKE, class_names=CLASS_NAMES, meta=_meta(False)
    )
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "synthetic-banner" not in html
    assert "SYNTHETIC" not in html


def test_energy_estimate_in_report_is_labelled(run_dir):
    import json

    report = json.loads((run_dir / "report.json").read_text())
    estimate = report["energy"][0]
    assert estimate["kind"] == "estimated"
    # 3.3 V x 46 mA (qemu-f405 board data) x median latency (1000 + 29.5 ticks at 168 MHz).
    median_us = (1000 + (ROWS - 1) / 2) / 168.0
    assert estimate["uj_per_inference"] == pytest.approx(3.3 * 0.046 * median_us, rel=1e-9)
    assert "estimate of an estimate" in estimate["method"]
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert 'class="estimated">ESTIMATED' in html


def test_per_class_and_results_csv(run_dir):
    with open(run_dir / "per_class.csv", newline="") as handle:
        rows = {row["class"]: row for row in csv.DictReader(handle)}
    # Class 2 is never predicted: recall 0; class 0 takes all of class 2's rows: precision 0.5.
    assert float(rows["Recon-Ping_Sweep"]["device_recall"]) == 0.0
    assert float(rows["Benign"]["device_precision"]) == pytest.approx(0.5)
    assert int(rows["ARP_Spoofing"]["support"]) == ROWS // 3
    with open(run_dir / "results.csv", newline="") as handle:
        results = list(csv.DictReader(handle))
    assert len(results) == ROWS
    assert results[2]["label_name"] == "Recon-Ping_Sweep"
    assert results[2]["predicted_name"] == "Benign"
    assert results[5]["sample"] == "105"


def test_rewrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    from mcu_ids.errors import McuIdsError

    with pytest.raises(McuIdsError, match="not a benchmark run"):
        rewrite_bench_report(tmp_path)


def test_layer_costs_divide_ticks_by_macs():
    macs = [(0, "RESHAPE", 0), (1, "CONV_2D", 200), (2, "FULLY_CONNECTED", 50)]
    results = [{"layer_ticks": [5, 400 + i, 100]} for i in range(5)]
    rows = layer_costs(results, macs)
    assert [row["op"] for row in rows] == ["RESHAPE", "CONV_2D", "FULLY_CONNECTED"]
    assert rows[0]["ticks_per_mac"] is None
    assert rows[1]["ticks_per_mac"] == pytest.approx(402 / 200)
    assert rows[2]["ticks_per_mac"] == pytest.approx(2.0)
    assert layer_costs([{"ticks": 3}], macs) == []


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    url = (run_dir / "report.html").resolve().as_uri()
    base = chromium_command(tmp_path / "profile")
    dom = subprocess.run(
        [*base, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    images = _data_images(dom)
    assert len(images) == 3 and all(len(image) > 2000 for image in images)
    assert "SYNTHETIC DATA" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*base, "--window-size=1000,2400", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    # A blank page is one colour; the figures and tables make many.
    assert pixels.std() > 0.05
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50


def test_qemu_ticks_convert_to_instructions():
    from mcu_ids.hil.html_report import work_per_tick

    # qemu-f405: -icount shift=0 runs 1e9 instructions per virtual second; SysTick 168 MHz.
    factor, unit = work_per_tick("emulated-instructions", 168_000_000, "qemu-f405")
    assert unit == "instructions"
    assert factor == pytest.approx(1e9 / 168e6)
    assert work_per_tick("cpu-cycles", 180_000_000, "nucleo-f446re") == (1.0, "cycles")


def test_report_files_are_readable_by_others_like_any_new_file(tmp_path):
    import os
    import stat

    names = ("report.md", "report.html", "report.json", "results.csv", "per_class.csv")
    for umask, mode in ((0o022, 0o644), (0o077, 0o600)):
        previous = os.umask(umask)
        try:
            write_bench_report(
                tmp_path,
                _records(9),
                handshake=HANDSHAKE,
                class_names=CLASS_NAMES,
                meta=_meta(False),
            )
        finally:
            os.umask(previous)
        for name in names:
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, (name, oct(umask))


def test_failed_and_repeated_rows_are_stated_in_both_reports(tmp_path):
    meta = {**_meta(False), "rows_failed": 3, "test_rows_also_in_train": 17}
    (tmp_path / "failures.jsonl").write_text('{"index": 4, "reason": "timeout"}\n')
    report = write_bench_report(
        tmp_path, _records(9), handshake=HANDSHAKE, class_names=CLASS_NAMES, meta=meta
    )
    assert report["files"]["failures"] == "failures.jsonl"
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "3 row(s) got no valid answer" in markdown and "`failures.jsonl`" in markdown
    assert "> 17 of the scored rows also occur" in markdown
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert re.search(r'id="failed-rows">3 row\(s\) got no valid answer[^<]*failures\.jsonl', html)
    assert re.search(r'id="repeated-rows">17 of the scored rows', html)


def test_clean_run_has_no_failure_or_repetition_notes(run_dir):
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert 'id="failed-rows"' not in html and 'id="repeated-rows"' not in html
    assert "no valid answer" not in (run_dir / "report.md").read_text(encoding="utf-8")


def test_layer_costs_in_instructions_under_qemu(tmp_path):
    macs = [(0, "CONV_2D", 100), (1, "SOFTMAX", 0)]
    results = [{"layer_ticks": [10 + i, 2]} for i in range(3)]
    rows = layer_costs(results, macs, factor=1e9 / 168e6, unit="instructions")
    assert rows[0]["instructions_median"] == pytest.approx(11 * 1e9 / 168e6)
    assert rows[0]["instructions_per_mac"] == pytest.approx(11 * 1e9 / 168e6 / 100)
    assert rows[1]["instructions_per_mac"] is None
    # A tick worth one unit adds nothing.
    assert "cycles_median" not in layer_costs(results, macs, factor=1.0, unit="cycles")[0]
    # Through the report: the qemu-f405 board's QEMU clock converts the ticks.
    records = [dict(r, layer_ticks=[840, 168]) for r in _records(9)]
    write_bench_report(
        tmp_path, records, handshake=HANDSHAKE, class_names=CLASS_NAMES, meta=_meta(False)
    )
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<th>instructions per mac</th>" in html
    assert "in instructions (5.952 instructions per tick)" in " ".join(html.split())
