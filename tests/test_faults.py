"""The harness over a faulty link: byte faults of every kind and device restarts mid-run.

The device is the host-board firmware with the fixture engine (tests/c/engine_fixture.c); the
expected outputs are computed in numpy from the fixture's definition.
"""

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mcu_ids.build.host import build_host_firmware, host_firmware_sources
from mcu_ids.flash.host import start_host_device, stop_host_device
from mcu_ids.hil import protocol
from mcu_ids.hil.faults import FAULT_KINDS, FaultProxy, FaultRates, host_device_restarter
from mcu_ids.hil.harness import load_failures, run_benchmark
from mcu_ids.hil.report import load_results
from mcu_ids.resources import asset_dir

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

TESTS_C = Path(__file__).parent / "c"
N_FEATURES = 40
N_CLASSES = 19
MODEL_SHA256 = "d85ae7ed3aeb0573e32689269680d763a217f20a6d5f62cc1026288c87415572"
FIXTURE_MIX = 37
# The pty of the host board buffers 4 KiB; the firmware says so in its HELLO reply.
HOST_RX_BUFFER_BYTES = 4096
ROWS = 600
RESET_AFTER_ROWS = (150, 400)


def fixture_outputs(inputs: np.ndarray) -> np.ndarray:
    """output[i] = input[i % F] XOR (i * 37), bytewise: the fixture engine's definition."""
    index = np.arange(N_CLASSES)
    mix = ((index * FIXTURE_MIX) & 0xFF).astype(np.uint8)
    return (inputs[:, index % N_FEATURES].view(np.uint8) ^ mix).view(np.int8)


def make_rows(rows: int, seed: int):
    rng = np.random.default_rng(seed)
    inputs = rng.integers(-128, 128, (rows, N_FEATURES), dtype=np.int8)
    inputs[:, 0] = np.minimum(inputs[:, 0], 126)  # clear of the fixture's failure trigger
    expected = fixture_outputs(inputs)
    # Labels the fixture gets right about 70 % of the time, so accuracy is not trivially 0 or 1.
    labels = np.where(
        rng.random(rows) < 0.7, np.argmax(expected, axis=1), rng.integers(0, N_CLASSES, rows)
    )
    return inputs, labels, expected


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    return build_host_firmware(
        [*host_firmware_sources(), TESTS_C / "engine_fixture.c"],
        [asset_dir("firmware"), TESTS_C],
        tmp_path_factory.mktemp("host") / "mcu-ids-host",
        {"MCU_IDS_RX_BUFFER_BYTES": HOST_RX_BUFFER_BYTES},
    )


@pytest.fixture
def device(firmware):
    started = start_host_device(firmware)
    restart = host_device_restarter(started)
    yield restart
    stop_host_device(restart.device)


def bench(port, rows, out_dir, **options):
    inputs, labels, expected = rows
    return run_benchmark(
        port,
        inputs,
        labels,
        expected,
        expected_model_sha256=MODEL_SHA256,
        class_names=[f"class{i}" for i in range(N_CLASSES)],
        out_dir=out_dir,
        progress=False,
        **options,
    )


def accuracy(out_dir) -> float:
    rows = load_results(out_dir)
    return float(np.mean([row["predicted"] == row["label"] for row in rows]))


def reset_when(proxy: FaultProxy, results: Path, after_rows, stop: threading.Event):
    """Restart the device when results.jsonl reaches each of ``after_rows`` lines.

    Each restart waits until a row served by the previous new device is in the file: restarts
    closer together than the harness can notice them would be seen as one.
    """
    boot_ids = set()
    for rows in after_rows:
        while not stop.is_set():
            lines = results.read_text().splitlines() if results.exists() else []
            seen = {json.loads(line)["boot_id"] for line in lines if line.endswith("}")}
            if len(lines) >= rows and len(seen) > len(boot_ids):
                boot_ids = seen
                proxy.reset_device()
                break
            time.sleep(0.005)


@pytest.mark.slow
def test_a_run_through_byte_faults_and_two_resets_accounts_for_every_row(device, tmp_path):
    rows = make_rows(ROWS, seed=3)
    clean = bench(device.device.port, rows, tmp_path / "clean")
    assert clean.complete

    rates = FaultRates.uniform(0.01)
    out_dir = tmp_path / "faulty"
    out_dir.mkdir()
    proxy = FaultProxy(device.device.port, to_device=rates, to_host=rates, seed=11, restart=device)
    stop = threading.Event()
    watcher = threading.Thread(
        target=reset_when, args=(proxy, out_dir / "results.jsonl", RESET_AFTER_ROWS, stop)
    )
    with proxy:
        watcher.start()
        try:
            faulty = bench(proxy.port, rows, out_dir, timeout_s=0.5, attempts=25)
        finally:
            stop.set()
            watcher.join()
    counts = proxy.fault_counts()
    for direction in ("to_device", "to_host"):
        for kind in FAULT_KINDS:
            assert counts[f"{direction}.{kind}"] > 0, (direction, kind, counts)
    assert counts["resets"] == 2
    assert faulty.link_stats["device_resets"] == 2
    assert faulty.link_stats["retries"] > 0

    # Every row exactly once, none failed, each with the output of its own input.
    assert load_failures(out_dir) == []
    results = load_results(out_dir)
    assert sorted(row["index"] for row in results) == list(range(ROWS))
    _, _, expected = rows
    for row in results:
        assert row["output"] == expected[row["index"]].tolist()
    assert faulty.report["agreement"]["identical_outputs_pct"] == 100.0
    assert accuracy(out_dir) == accuracy(tmp_path / "clean")
    # Rows answered between a restart and its detection still carry the previous boot id.
    assert len({row["boot_id"] for row in results}) >= 2


@pytest.mark.slow
def test_every_fault_kind_is_injected_and_detected(device, tmp_path):
    """A short run per fault kind at 1 % of the bytes each way: every row still answered."""
    rows = make_rows(40, seed=5)
    for kind in FAULT_KINDS:
        rates = FaultRates(**{kind: 0.01})
        with FaultProxy(
            device.device.port, to_device=rates, to_host=rates, seed=len(kind)
        ) as proxy:
            result = bench(proxy.port, rows, tmp_path / kind, timeout_s=0.3, attempts=25)
        assert result.complete, kind
        assert proxy.fault_counts()[f"to_device.{kind}"] > 0
        results = load_results(tmp_path / kind)
        assert sorted(row["index"] for row in results) == list(range(40)), kind
        assert all(row["identical"] for row in results), kind


def test_a_dead_device_ends_the_run_with_failed_rows_recorded(device, tmp_path):
    # Enough rows that the run cannot finish before the line is cut.
    rows = make_rows(5000, seed=6)

    def cut_the_line_after_the_handshake(proxy):
        deadline = time.monotonic() + 10
        while not (tmp_path / "handshake.json").exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        proxy.set_rates(to_device=FaultRates(drop=1.0))

    with FaultProxy(device.device.port) as proxy:
        cutter = threading.Thread(target=cut_the_line_after_the_handshake, args=(proxy,))
        cutter.start()
        try:
            with pytest.raises(protocol.LinkError, match="stopped answering"):
                bench(proxy.port, rows, tmp_path, timeout_s=0.2, attempts=2, window=1)
        finally:
            cutter.join()
    failures = load_failures(tmp_path)
    assert len(failures) == 3
    assert all(row["attempts"] == 2 and "no answer" in row["reason"] for row in failures)
    answered = {row["index"] for row in load_results(tmp_path)}
    assert answered.isdisjoint(row["index"] for row in failures)
