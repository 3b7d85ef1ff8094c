"""The host board end to end: firmware built with gcc, run behind a real pty, benchmarked.

The firmware uses the test fixture engine (tests/c/engine_fixture.c); its expected outputs are
computed here in numpy from the fixture's definition, independently of the C code.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mcu_ids.build.host import build_host_firmware, host_firmware_sources
from mcu_ids.errors import BuildError, FlashError, LinkError
from mcu_ids.flash.host import find_running_device, start_host_device, stop_host_device
from mcu_ids.hil import protocol
from mcu_ids.hil.harness import run_benchmark
from mcu_ids.hil.report import load_results
from mcu_ids.resources import asset_dir

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

TESTS_C = Path(__file__).parent / "c"
REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_MIX = 37
REPLY_TIMEOUT_S = 2.0


def model_config() -> dict:
    """The fixture's macros, read from the header the firmware is built with."""
    text = (TESTS_C / "model_config.h").read_text()
    values = dict(re.findall(r"#define (MCU_IDS_\w+) (.+)", text))
    return {
        "n_features": int(values["MCU_IDS_N_FEATURES"]),
        "n_classes": int(values["MCU_IDS_N_CLASSES"]),
        "sha256": values["MCU_IDS_MODEL_SHA256"].strip('"'),
        "input_scale": float(values["MCU_IDS_INPUT_SCALE"].rstrip("f")),
        "input_zero_point": int(values["MCU_IDS_INPUT_ZERO_POINT"]),
        "output_scale": float(values["MCU_IDS_OUTPUT_SCALE"].rstrip("f")),
        "output_zero_point": int(values["MCU_IDS_OUTPUT_ZERO_POINT"]),
    }


CONFIG = model_config()
CLASS_NAMES = [f"class{index}" for index in range(CONFIG["n_classes"])]


def fixture_outputs(inputs: np.ndarray) -> np.ndarray:
    """What the fixture engine computes: output[i] = input[i % F] XOR (i * 37), bytewise."""
    index = np.arange(CONFIG["n_classes"])
    mix = ((index * FIXTURE_MIX) & 0xFF).astype(np.uint8)
    return (inputs[:, index % CONFIG["n_features"]].view(np.uint8) ^ mix).view(np.int8)


def make_inputs(rows: int, seed: int = 0) -> np.ndarray:
    inputs = np.random.default_rng(seed).integers(
        -128, 128, (rows, CONFIG["n_features"]), dtype=np.int8
    )
    inputs[:, 0] = np.minimum(inputs[:, 0], 126)  # stay clear of the fixture's failure trigger
    return inputs


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    return build_host_firmware(
        [*host_firmware_sources(), TESTS_C / "engine_fixture.c"],
        [asset_dir("firmware"), TESTS_C],
        tmp_path_factory.mktemp("host") / "mcu-ids-host",
        sanitize=True,
    )


@pytest.fixture(scope="module")
def device(firmware, tmp_path_factory):
    state = tmp_path_factory.mktemp("state") / "host-device.json"
    started = start_host_device(firmware, state_file=state)
    yield started
    stop_host_device(started)


def exchange(link, frame: bytes, timeout_s: float = REPLY_TIMEOUT_S):
    link.send(frame)
    return link.receive(timeout_s)


def test_handshake_reports_the_built_model(device):
    with protocol.open_link(device.port) as link:
        hello = link.hello()
    assert hello.protocol_version == protocol.PROTOCOL_VERSION
    assert hello.board == "host"
    assert hello.engine == "fixture"
    assert hello.model_sha256 == CONFIG["sha256"]
    assert (hello.n_features, hello.n_classes) == (CONFIG["n_features"], CONFIG["n_classes"])
    assert hello.input_scale == np.float32(CONFIG["input_scale"])
    assert hello.input_zero_point == CONFIG["input_zero_point"]
    assert hello.output_scale == np.float32(CONFIG["output_scale"])
    assert hello.output_zero_point == CONFIG["output_zero_point"]
    assert (hello.tick_hz, hello.tick_kind) == (1_000_000_000, "ns")
    assert hello.engine_status == 0
    assert hello.boot_id != 0


def test_benchmark_over_the_pty_is_identical_to_the_fixture(device, tmp_path):
    inputs = make_inputs(300)
    expected = fixture_outputs(inputs)
    labels = np.arange(300) % CONFIG["n_classes"]
    result = run_benchmark(
        device.port,
        inputs,
        labels,
        expected,
        expected_model_sha256=CONFIG["sha256"],
        class_names=CLASS_NAMES,
        out_dir=tmp_path,
        progress=False,
        sample_ids=np.arange(1000, 1300),
        expected_quantization=(
            CONFIG["input_scale"],
            CONFIG["input_zero_point"],
            CONFIG["output_scale"],
            CONFIG["output_zero_point"],
        ),
    )
    assert result.complete
    rows = load_results(tmp_path)
    assert [row["index"] for row in rows] == list(range(300))
    assert [row["sample"] for row in rows] == list(range(1000, 1300))
    assert np.array_equal(np.array([row["output"] for row in rows], np.int8), expected)
    assert all(row["identical"] for row in rows)
    assert result.report["agreement"]["identical_outputs_pct"] == 100.0
    assert result.report["meta"]["complete"] is True
    assert result.link_stats["retries"] == 0
    for name in ("report.json", "report.md", "latency.png", "device_metrics_confusion.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_wrong_model_hash_is_refused_with_both_hashes(device, tmp_path):
    other = "0" * 64
    inputs = make_inputs(5)
    with pytest.raises(LinkError) as info:
        run_benchmark(
            device.port,
            inputs,
            np.zeros(5, int),
            fixture_outputs(inputs),
            expected_model_sha256=other,
            class_names=CLASS_NAMES,
            out_dir=tmp_path,
            progress=False,
        )
    assert CONFIG["sha256"] in info.value.message
    assert other in info.value.message
    assert not (tmp_path / "results.jsonl").exists()


def test_wrong_quantization_is_refused(device, tmp_path):
    inputs = make_inputs(5)
    with pytest.raises(LinkError, match="zero point"):
        run_benchmark(
            device.port,
            inputs,
            np.zeros(5, int),
            fixture_outputs(inputs),
            expected_model_sha256=CONFIG["sha256"],
            class_names=CLASS_NAMES,
            out_dir=tmp_path,
            progress=False,
            expected_quantization=(0.5, 0, CONFIG["output_scale"], CONFIG["output_zero_point"]),
        )


def error_of(event) -> protocol.ErrorReply:
    assert isinstance(event, protocol.Frame) and event.type == protocol.ERROR, event
    return protocol.ErrorReply.decode(event.payload)


def test_bad_requests_get_error_replies_and_the_device_keeps_serving(device):
    features = CONFIG["n_features"]
    with protocol.open_link(device.port) as link:
        error = error_of(exchange(link, protocol.encode_frame(protocol.INFER, 11, bytes(3))))
        assert (error.code, error.seq, error.detail) == (protocol.ERR_INPUT_SIZE, 11, features)

        error = error_of(exchange(link, protocol.encode_frame(0x42, 12, b"")))
        assert (error.code, error.type, error.seq) == (protocol.ERR_UNKNOWN_TYPE, 0x42, 12)

        oversize = b"\xa5\x5a\x02\x0d\x00\xff\x7f"
        error = error_of(exchange(link, oversize))
        assert (error.code, error.seq) == (protocol.ERR_BAD_LENGTH, 13)

        corrupt = bytearray(protocol.encode_frame(protocol.INFER, 14, bytes(features)))
        corrupt[9] ^= 0x40
        error = error_of(exchange(link, bytes(corrupt)))
        assert (error.code, error.seq) == (protocol.ERR_BAD_CRC, 14)

        truncated = protocol.encode_frame(protocol.INFER, 15, bytes(features))[:20]
        error = error_of(exchange(link, truncated))
        assert (error.code, error.seq) == (protocol.ERR_TRUNCATED, 15)

        trigger = bytes([127, 128]) + bytes(features - 2)
        error = error_of(exchange(link, protocol.encode_frame(protocol.INFER, 16, trigger)))
        assert (error.code, error.seq, error.detail) == (protocol.ERR_ENGINE, 16, -5)

        assert link.hello().model_sha256 == CONFIG["sha256"]


def test_back_to_back_frames_all_get_their_answer(device):
    inputs = make_inputs(50, seed=4)
    expected = fixture_outputs(inputs)
    burst = b"".join(protocol.encode_infer(100 + row, inputs[row]) for row in range(50))
    with protocol.open_link(device.port) as link:
        link.send(burst)
        replies = [link.receive(REPLY_TIMEOUT_S) for _ in range(50)]
    assert [reply.seq for reply in replies] == list(range(100, 150))
    for row, reply in enumerate(replies):
        result = protocol.Result.decode(reply.payload, CONFIG["n_classes"])
        assert np.array_equal(result.output_int8(), expected[row])
        assert result.input_crc == protocol.crc16(inputs[row].tobytes())


def test_reconnecting_keeps_the_boot_id_and_a_restart_changes_it(firmware, tmp_path):
    state = tmp_path / "device.json"
    first = start_host_device(firmware, state_file=state)
    try:
        assert find_running_device(state) == first.port
        with protocol.open_link(first.port) as link:
            boot_id = link.hello().boot_id
        with protocol.open_link(first.port) as link:
            assert link.hello().boot_id == boot_id
    finally:
        assert stop_host_device(state)
    assert not first.is_running()
    assert not state.exists()
    assert find_running_device(state) is None
    second = start_host_device(firmware)
    try:
        with protocol.open_link(second.port) as link:
            assert link.hello().boot_id != boot_id
    finally:
        stop_host_device(second)


def test_a_second_harness_is_told_the_port_is_busy(device):
    with protocol.open_link(device.port):
        with pytest.raises(LinkError, match="busy"):
            protocol.open_link(device.port)


def test_a_binary_that_is_not_firmware_fails_to_start(tmp_path):
    with pytest.raises(FlashError, match="exited"):
        start_host_device(Path(shutil.which("true")), timeout_s=5)
    with pytest.raises(FlashError, match="does not exist"):
        start_host_device(tmp_path / "missing")


def test_compile_errors_are_reported(tmp_path):
    broken = tmp_path / "broken.c"
    broken.write_text("int main(void) { return undefined_name; }\n")
    with pytest.raises(BuildError, match="undefined_name"):
        build_host_firmware([broken], [], tmp_path / "broken")


INTERRUPTED_RUN = """
import sys
import numpy as np
from mcu_ids.hil.harness import run_benchmark
data = np.load(sys.argv[2])
run_benchmark(sys.argv[1], data["inputs"], data["labels"], data["expected"],
              expected_model_sha256=sys.argv[3], class_names=sys.argv[4].split(","),
              out_dir=sys.argv[5], progress=False)
"""


def start_interrupted_run(device, tmp_path, rows):
    inputs = make_inputs(rows, seed=7)
    expected = fixture_outputs(inputs)
    data = tmp_path / "data.npz"
    np.savez(data, inputs=inputs, labels=np.arange(rows) % CONFIG["n_classes"], expected=expected)
    out_dir = tmp_path / "bench"
    command = [sys.executable, "-c", INTERRUPTED_RUN, device.port, str(data), CONFIG["sha256"]]
    command += [",".join(CLASS_NAMES), str(out_dir)]
    # The child imports mcu_ids from this checkout even when it is not installed.
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": path}
    )
    results = out_dir / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if results.exists() and results.read_bytes().count(b"\n") >= 200:
            break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.02)
    return process, out_dir, expected


def assert_prefix(out_dir, expected, rows):
    kept = load_results(out_dir)
    assert 200 <= len(kept) < rows
    assert [row["index"] for row in kept] == list(range(len(kept)))
    assert np.array_equal(np.array([row["output"] for row in kept], np.int8), expected[: len(kept)])
    return kept


@pytest.mark.slow
def test_ctrl_c_keeps_the_results_and_writes_a_report(device, tmp_path):
    rows = 200_000
    process, out_dir, expected = start_interrupted_run(device, tmp_path, rows)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert b"KeyboardInterrupt" in stderr
    kept = assert_prefix(out_dir, expected, rows)
    report = json.loads((out_dir / "report.json").read_text())
    assert report["meta"]["complete"] is False
    assert report["rows"] == len(kept)


@pytest.mark.slow
def test_a_killed_run_keeps_intact_results(device, tmp_path):
    rows = 200_000
    process, out_dir, expected = start_interrupted_run(device, tmp_path, rows)
    process.kill()
    process.communicate(timeout=60)
    assert_prefix(out_dir, expected, rows)
    assert not (out_dir / "report.json").exists()
