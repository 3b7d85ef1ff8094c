"""Latency windows and the per-layer profile: wire format, host board, QEMU repeatability, chain.

The fixture engine (tests/c/engine_fixture.c) has no per-layer ticks, so it checks the windows
and the "not available" answer; the per-layer table is checked on the native engine generated
from the model trained on the real sample, whose op list comes from the model file.
"""

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from mcu_ids.build.boards import get_board
from mcu_ids.build.host import build_host_firmware, host_firmware_sources
from mcu_ids.build.stm32 import STM32_RX_BUFFER_BYTES, build_stm32_project, render_stm32_project
from mcu_ids.errors import LinkError, McuIdsError
from mcu_ids.flash import qemu
from mcu_ids.flash.host import start_host_device, stop_host_device
from mcu_ids.hil import protocol
from mcu_ids.hil.harness import default_window, pipeline_window, run_benchmark, stream_rows
from mcu_ids.hil.latency import (
    LatencyWindows,
    measure_latency,
    measure_run_latency,
    profile_layers,
    representative_index,
)
from mcu_ids.resources import asset_dir

TESTS_C = Path(__file__).parent / "c"
REPLY_TIMEOUT_S = 5.0
HOST_RX_BUFFER_BYTES = 4096
# SysTick (168 MHz) sampled from a 1 GHz instruction clock: a window's count may land one tick
# either side depending on where it starts.
TICK_QUANTUM = 1

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
needs_qemu = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("arm-none-eabi-gcc", "cmake", "qemu-system-arm")),
    reason="needs arm-none-eabi-gcc, cmake and qemu-system-arm",
)


def fixture_shape() -> tuple[int, int]:
    values = dict(
        re.findall(r"#define (MCU_IDS_\w+) (.+)", (TESTS_C / "model_config.h").read_text())
    )
    return int(values["MCU_IDS_N_FEATURES"]), int(values["MCU_IDS_N_CLASSES"])


N_FEATURES, N_CLASSES = fixture_shape()
ROW = (np.arange(N_FEATURES) * 7 - 100).astype(np.int8)


# --- wire format ---------------------------------------------------------------------------------


def test_window_reply_round_trips_and_rejects_a_wrong_length():
    reply = protocol.WindowReply(0x1234, 50, (1000, 1001, 999))
    assert protocol.WindowReply.decode(reply.encode()) == reply
    assert len(reply.encode()) == 6 + 4 * 3
    with pytest.raises(LinkError, match="3 windows"):
        protocol.WindowReply.decode(reply.encode()[:-1])


def test_profile_reply_round_trips_and_rejects_a_wrong_length():
    reply = protocol.ProfileReply(0xBEEF, 5000, 3, (100, 0, 4000, 7))
    assert protocol.ProfileReply.decode(reply.encode()) == reply
    with pytest.raises(LinkError, match="4 ops"):
        protocol.ProfileReply.decode(reply.encode() + b"\0")


def test_window_request_layout_and_bounds():
    frame = protocol.encode_window(9, ROW, warmup=10, windows=5, per_window=50)
    (event,) = protocol.FrameParser().feed(frame)
    assert (event.type, event.seq) == (protocol.WINDOW, 9)
    assert struct.unpack_from("<HHH", event.payload) == (10, 5, 50)
    assert event.payload[6:] == ROW.tobytes()
    # The largest reply still fits one frame.
    assert 6 + 4 * protocol.MAX_WINDOWS <= protocol.MAX_PAYLOAD
    for bad in ({"windows": 0}, {"windows": protocol.MAX_WINDOWS + 1}, {"per_window": 1001}):
        settings = {"warmup": 0, "windows": 1, "per_window": 1, **bad}
        with pytest.raises(ValueError):
            protocol.encode_window(1, ROW, **settings)


def test_window_summary_per_inference_and_throughput():
    windows = LatencyWindows(
        warmup=10,
        per_window=50,
        window_ticks=[5000, 5100, 4900, 5000, 5050],
        tick_hz=1_000_000,
        tick_kind="cpu-cycles",
    )
    summary = windows.to_dict()
    assert summary["per_inference_ticks"]["median"] == 100.0
    assert summary["per_inference_ticks"]["max"] == 102.0
    assert summary["per_inference_us"]["median"] == 100.0
    # 250 inferences in 25050 us.
    assert summary["throughput_per_s"] == pytest.approx(250 / 0.02505)
    assert [row["ticks"] for row in summary["windows"]] == windows.window_ticks


def test_representative_row_is_the_first_of_the_most_frequent_class():
    assert representative_index(np.array([3, 1, 2, 1, 3, 1])) == 1
    with pytest.raises(McuIdsError):
        representative_index(np.array([]))


def test_stm32_states_the_ring_buffer_of_its_board_layer():
    source = (asset_dir("firmware") / "platform_stm32.c").read_text()
    (size,) = re.findall(r"#define RX_BUFFER_SIZE (\d+)u", source)
    assert STM32_RX_BUFFER_BYTES == int(size)


# --- host board -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_device(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    folder = tmp_path_factory.mktemp("windows-host")
    firmware = build_host_firmware(
        [*host_firmware_sources(), TESTS_C / "engine_fixture.c"],
        [asset_dir("firmware"), TESTS_C],
        folder / "mcu-ids-host",
        {"MCU_IDS_RX_BUFFER_BYTES": HOST_RX_BUFFER_BYTES},
        sanitize=True,
    )
    device = start_host_device(firmware, state_file=folder / "state.json")
    yield device
    stop_host_device(device)


@needs_gcc
def test_host_windows_give_the_asked_shape(host_device):
    with protocol.open_link(host_device.port) as link:
        hello = link.hello()
        assert hello.has_windows and not hello.has_layer_profile
        measured = measure_latency(link, ROW, warmup=3, windows=7, per_window=20)
    assert (measured.warmup, measured.per_window, len(measured.window_ticks)) == (3, 20, 7)
    assert all(ticks > 0 for ticks in measured.window_ticks)
    summary = measured.to_dict()
    assert summary["tick_kind"] == "ns" and summary["window_count"] == 7
    assert summary["throughput_per_s"] > 0
    assert summary["per_inference_ticks"]["count"] == 7


@needs_gcc
def test_host_window_requests_out_of_range_are_refused(host_device):
    with protocol.open_link(host_device.port) as link:
        link.hello()
        too_many = struct.pack("<HHH", 0, protocol.MAX_WINDOWS + 1, 1) + ROW.tobytes()
        link.send(protocol.encode_frame(protocol.WINDOW, 77, too_many))
        reply = link.receive(REPLY_TIMEOUT_S)
        error = protocol.ErrorReply.decode(reply.payload)
        assert (error.code, error.type, error.seq) == (
            protocol.ERR_BAD_REQUEST,
            protocol.WINDOW,
            77,
        )
        link.send(protocol.encode_frame(protocol.WINDOW, 78, struct.pack("<HHH", 0, 1, 1)))
        error = protocol.ErrorReply.decode(link.receive(REPLY_TIMEOUT_S).payload)
        assert (error.code, error.detail) == (protocol.ERR_INPUT_SIZE, N_FEATURES)
    with pytest.raises(McuIdsError, match="windows"):
        measure_latency(host_device.port, ROW, windows=0)


@needs_gcc
def test_host_engine_failure_inside_a_window_is_reported(host_device):
    failing = ROW.copy()
    failing[:2] = (127, -128)  # the fixture engine's failure trigger
    with pytest.raises(LinkError, match="engine failure"):
        measure_latency(host_device.port, failing, warmup=0, windows=1, per_window=1)


@needs_gcc
def test_firmware_without_layer_timing_says_not_available(host_device):
    profile = profile_layers(host_device.port, ROW)
    assert profile["available"] is False
    assert "without per-layer timing" in profile["reason"]
    assert profile["engine"] == "fixture"


def fixture_outputs(inputs: np.ndarray) -> np.ndarray:
    """output[i] = input[i % F] XOR (i * 37), bytewise (the fixture's definition)."""
    index = np.arange(N_CLASSES)
    mix = ((index * 37) & 0xFF).astype(np.uint8)
    return (inputs[:, index % N_FEATURES].view(np.uint8) ^ mix).view(np.int8)


@needs_gcc
def test_a_run_folder_gets_windows_and_the_reason_for_missing_layers(host_device, tmp_path):
    inputs = np.tile(ROW, (12, 1))
    run_benchmark(
        host_device.port,
        inputs,
        np.arange(12) % N_CLASSES,
        fixture_outputs(inputs),
        expected_model_sha256=host_sha256(),
        class_names=[f"class{i}" for i in range(N_CLASSES)],
        out_dir=tmp_path,
        progress=False,
    )
    measure_run_latency(tmp_path, host_device.port, ROW, sample=7, windows=3, per_window=4)
    meta = json.loads((tmp_path / "report.json").read_text())["meta"]
    assert meta["latency_windows"]["window_count"] == 3
    assert meta["latency_windows"]["sample"] == 7
    assert meta["layer_profile"]["available"] is False and "layers" not in meta
    assert json.loads((tmp_path / "layers.json").read_text())["available"] is False
    assert "Latency windows" in (tmp_path / "report.html").read_text()
    # A device gone after the rows leaves the reason, and the run's results stand.
    gone = str(tmp_path / "no-such-port")
    measure_run_latency(tmp_path, gone, ROW)
    meta = json.loads((tmp_path / "report.json").read_text())["meta"]
    assert meta["latency_windows"]["available"] is False
    assert "does not exist" in meta["latency_windows"]["reason"]
    assert json.loads((tmp_path / "report.json").read_text())["rows"] == 12


def host_sha256() -> str:
    text = (TESTS_C / "model_config.h").read_text()
    return re.search(r'MCU_IDS_MODEL_SHA256 "(\w+)"', text).group(1)


# --- QEMU -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_elf(tmp_path_factory):
    project = render_stm32_project(
        get_board("qemu-f405"),
        "native",
        TESTS_C,
        tmp_path_factory.mktemp("windows-qemu"),
        "0" * 64,
        engine_sources=[TESTS_C / "engine_fixture.c"],
    )
    return build_stm32_project(project).elf


def _qemu_windows(elf: Path, state: Path):
    board = get_board("qemu-f405")
    device = qemu.start_qemu(elf, board, state_file=state)
    try:
        with protocol.open_link(device.port) as link:
            hello = link.hello(timeout_s=REPLY_TIMEOUT_S)
            return hello, measure_latency(link, ROW, warmup=10, windows=5, per_window=50)
    finally:
        qemu.stop_qemu(device)


@pytest.mark.emulation
@needs_qemu
def test_qemu_window_totals_repeat_across_runs(fixture_elf, tmp_path):
    hello, first = _qemu_windows(fixture_elf, tmp_path / "a.json")
    _, second = _qemu_windows(fixture_elf, tmp_path / "b.json")
    assert hello.tick_kind == "emulated-instructions"
    # The STM32 board layer states its ring buffer; exact instruction counts still get one
    # request at a time unless a window is asked for (see the pipelined test below).
    assert hello.rx_buffer_bytes == STM32_RX_BUFFER_BYTES
    assert pipeline_window(hello, N_FEATURES) > 1 and default_window(hello) == 1
    assert len(first.window_ticks) == len(second.window_ticks) == 5
    differences = np.abs(np.subtract(first.window_ticks, second.window_ticks))
    assert differences.max() <= TICK_QUANTUM, (first.window_ticks, second.window_ticks)
    # Within one run the windows repeat too: the same work in the same emulated time.
    assert max(first.window_ticks) - min(first.window_ticks) <= TICK_QUANTUM


# --- the whole chain on the model trained on the real sample -----------------------------------


def _bench_run(ws, board: str, limit: int) -> Path:
    from mcu_ids.devices import bench_device, flash_firmware, stop_device

    flash_firmware(ws, board)
    try:
        bench_device(ws, board, None, limit=limit, progress=False, warmup=5, per_window=20)
    finally:
        stop_device(ws, board)
    return sorted(ws.runs_dir.iterdir())[-1]


def _engine_ops(ws) -> list[dict]:
    from mcu_ids.export.native import native_engine_summary

    return native_engine_summary(ws.tflite_model.read_bytes())["ops"]


# Largest ratio of two wall-clock figures that should be equal, allowed on a shared host.
HOST_CLOCK_NOISE = 1.05


@pytest.mark.slow
@needs_gcc
def test_host_bench_stores_windows_and_a_layer_per_engine_op(sample_workspace):
    from mcu_ids.devices import build_firmware

    ws = sample_workspace
    build_firmware(ws, "host", "native")
    run = _bench_run(ws, "host", limit=40)
    windows = json.loads((run / "latency_windows.json").read_text())
    layers = json.loads((run / "layers.json").read_text())
    report = json.loads((run / "report.json").read_text())
    assert windows["window_count"] == 5 and windows["per_window"] == 20 and windows["warmup"] == 5
    assert report["meta"]["latency_windows"]["window_ticks"] == windows["window_ticks"]
    ops = _engine_ops(ws)
    assert layers["available"] is True
    assert [row["op"] for row in layers["layers"]] == [op["name"] for op in ops]
    assert [row["macs"] for row in layers["layers"]] == [op["macs"] for op in ops]
    # The ops run inside engine_invoke, so their ticks add up to about its total. On the host's
    # wall clock the sum of per-op medians can pass the median total by scheduler noise; the
    # exact bound is checked on qemu-f405, whose counts repeat.
    assert 0 < layers["layer_ticks_sum"] <= layers["total_ticks_median"] * HOST_CLOCK_NOISE
    assert report["meta"]["layers"] == layers["layers"]
    html = (run / "report.html").read_text()
    assert "Latency windows" in html


@pytest.mark.slow
@pytest.mark.emulation
@needs_qemu
def test_qemu_bench_windows_repeat_and_layers_count_instructions(sample_workspace):
    from mcu_ids.devices import build_firmware

    ws = sample_workspace
    build_firmware(ws, "qemu-f405", "native")
    first = _bench_run(ws, "qemu-f405", limit=30)
    second = _bench_run(ws, "qemu-f405", limit=30)
    ticks = [
        json.loads((run / "latency_windows.json").read_text())["window_ticks"]
        for run in (first, second)
    ]
    assert np.abs(np.subtract(*ticks)).max() <= TICK_QUANTUM, ticks
    layers = json.loads((first / "layers.json").read_text())
    assert layers["available"] is True and layers["work_unit"] == "instructions"
    convs = [row for row in layers["layers"] if row["macs"] > 0]
    assert convs and all(row["instructions_per_mac"] > 0 for row in convs)
    assert layers["layer_ticks_sum"] <= layers["total_ticks_median"]


@pytest.mark.emulation
@needs_qemu
def test_qemu_stream_pipelines_into_the_stm32_ring_buffer(fixture_elf, tmp_path):
    inputs = np.random.default_rng(3).integers(-100, 100, (300, N_FEATURES), dtype=np.int8)
    device = qemu.start_qemu(fixture_elf, get_board("qemu-f405"), state_file=tmp_path / "q.json")
    try:
        with protocol.open_link(device.port) as link:
            hello = link.hello(timeout_s=REPLY_TIMEOUT_S)
            outcomes, stats = stream_rows(link, hello, inputs, window=16)
    finally:
        qemu.stop_qemu(device)
    assert stats["window"] == 16 and stats["max_outstanding"] > 1
    assert stats["retries"] == 0 and stats["failed"] == 0
    outputs = {o.index: o.result.output_int8() for o in outcomes}
    assert np.array_equal(np.array([outputs[i] for i in range(300)]), fixture_outputs(inputs))
