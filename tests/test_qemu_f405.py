"""The emulated STM32F405 board: cross-built firmware in qemu-system-arm, talked to over a pty.

The firmware uses the test fixture engine (tests/c/engine_fixture.c); expected outputs are
computed here from the fixture's definition, not by the firmware's own code.
"""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from mcu_ids.build.boards import get_board
from mcu_ids.build.stm32 import build_stm32_project, render_stm32_project
from mcu_ids.errors import FlashError
from mcu_ids.flash import qemu
from mcu_ids.hil import protocol

TESTS_C = Path(__file__).parent / "c"
FIXTURE_MIX = 37
REPLY_TIMEOUT_S = 5.0
HARDFAULT_EXIT_CODE = 3  # firmware/stm32/startup_stm32.c
LINK_CHECK_TIME = b"\xf0"
LINK_CHECK_FAULT = b"\xf1"
# SysTick runs at 168 MHz against one instruction per emulated nanosecond, so a count can land
# one tick either side depending on where the interval starts.
TICK_QUANTUM = 1

needs_tools = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("arm-none-eabi-gcc", "cmake", "qemu-system-arm")),
    reason="needs arm-none-eabi-gcc, cmake and qemu-system-arm",
)


def fixture_config() -> tuple[int, int]:
    text = (TESTS_C / "model_config.h").read_text()
    values = dict(re.findall(r"#define (MCU_IDS_\w+) (.+)", text))
    return int(values["MCU_IDS_N_FEATURES"]), int(values["MCU_IDS_N_CLASSES"])


N_FEATURES, N_CLASSES = fixture_config()


def fixture_outputs(row: np.ndarray) -> np.ndarray:
    """output[i] = input[i % F] XOR (i * 37), bytewise (the fixture's definition)."""
    index = np.arange(N_CLASSES)
    mix = ((index * FIXTURE_MIX) & 0xFF).astype(np.uint8)
    return (row[index % N_FEATURES].view(np.uint8) ^ mix).view(np.int8)


@pytest.fixture(scope="module")
def board():
    return get_board("qemu-f405")


@pytest.fixture(scope="module")
def ids_elf(board, tmp_path_factory):
    project = render_stm32_project(
        board,
        "native",
        TESTS_C,
        tmp_path_factory.mktemp("qemu-ids"),
        "0" * 64,
        engine_sources=[TESTS_C / "engine_fixture.c"],
    )
    return build_stm32_project(project).elf


@pytest.fixture(scope="module")
def link_check_elf(board, tmp_path_factory):
    project = render_stm32_project(
        board, "native", None, tmp_path_factory.mktemp("qemu-link"), "0" * 64, app="link-check"
    )
    return build_stm32_project(project).elf


def infer(link: protocol.DeviceLink, row: np.ndarray) -> protocol.Result:
    seq = link.next_seq()
    link.send(protocol.encode_infer(seq, row))
    frame = link.receive(REPLY_TIMEOUT_S)
    assert isinstance(frame, protocol.Frame) and frame.seq == seq, frame
    return protocol.Result.decode(frame.payload, N_CLASSES)


def run_session(elf: Path, board, tmp_path: Path, rows: np.ndarray):
    """Start QEMU, handshake, run ``rows``, stop; return (hello, results, device)."""
    device = qemu.start_qemu(elf, board, state_file=tmp_path / "qemu.json")
    try:
        with protocol.open_link(device.port) as link:
            hello = link.hello(timeout_s=REPLY_TIMEOUT_S)
            results = [infer(link, row) for row in rows]
    finally:
        assert qemu.stop_qemu(device)
    return hello, results, device


def test_missing_qemu_is_a_clear_error(board, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    elf = tmp_path / "fw.elf"
    elf.write_bytes(b"\x7fELF")
    with pytest.raises(FlashError) as info:
        qemu.start_qemu(elf, board)
    assert "qemu-system-arm" in info.value.message
    assert "apt-get install qemu-system-arm" in info.value.hint


def test_command_puts_the_pty_on_the_boards_uart(board, tmp_path):
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("needs qemu-system-arm")
    command = qemu.qemu_command(tmp_path / "fw.elf", board)
    assert command[command.index("-M") + 1] == "netduinoplus2"
    assert command[command.index("-icount") + 1] == "shift=0"
    serials = [command[i + 1] for i, arg in enumerate(command) if arg == "-serial"]
    assert serials[board.section("qemu")["serial_index"]] == "pty"


@pytest.mark.emulation
@needs_tools
def test_handshake_and_inference_match_the_fixture(ids_elf, board, tmp_path):
    rows = np.random.default_rng(1).integers(-128, 127, (6, N_FEATURES), dtype=np.int8)
    hello, results, device = run_session(ids_elf, board, tmp_path, rows)
    assert hello.board == "qemu-f405"
    assert hello.tick_kind == "emulated-instructions"
    assert hello.cpu_hz == board.clock_hz == hello.tick_hz
    assert (hello.n_features, hello.n_classes) == (N_FEATURES, N_CLASSES)
    assert hello.engine_status == 0
    for row, result in zip(rows, results, strict=True):
        np.testing.assert_array_equal(result.output_int8(), fixture_outputs(row))
        assert result.input_crc == protocol.crc16(row.tobytes())
        assert 0 < result.ticks < board.clock_hz // 1000  # well under an emulated millisecond
    assert not device.is_running()
    assert not (tmp_path / "qemu.json").exists()


@pytest.mark.emulation
@needs_tools
def test_tick_counts_repeat_across_runs(ids_elf, board, tmp_path):
    rows = np.tile(np.arange(N_FEATURES, dtype=np.int8), (5, 1))
    _, first, _ = run_session(ids_elf, board, tmp_path / "a", rows)
    _, second, _ = run_session(ids_elf, board, tmp_path / "b", rows)
    ticks = [result.ticks for result in first + second]
    assert max(ticks) - min(ticks) <= TICK_QUANTUM, ticks


@pytest.mark.emulation
@needs_tools
def test_echo_and_timer_of_the_link_check_firmware(link_check_elf, board, tmp_path):
    device = qemu.start_qemu(link_check_elf, board, state_file=tmp_path / "q.json")
    try:
        with protocol.open_serial(device.port) as port:
            port.timeout = REPLY_TIMEOUT_S
            message = bytes(range(32, 127)) * 20  # longer than one read chunk and the FIFO
            port.write(message)
            assert port.read(len(message)) == message
            counts = []
            for _ in range(4):
                port.write(LINK_CHECK_TIME)
                ticks, tick_hz = np.frombuffer(port.read(8), dtype="<u4")
                counts.append(int(ticks))
            assert tick_hz == board.clock_hz
            # 20000 rounds of a 5-instruction xorshift: about 100k instructions = 100 us.
            assert all(abs(count - counts[0]) <= TICK_QUANTUM for count in counts)
            assert 0.5 * 100e-6 < counts[0] / tick_hz < 2 * 100e-6
    finally:
        qemu.stop_qemu(device)


@pytest.mark.emulation
@needs_tools
def test_hard_fault_is_reported_and_ends_qemu_with_its_code(link_check_elf, board, tmp_path):
    device = qemu.start_qemu(link_check_elf, board)
    try:
        with protocol.open_serial(device.port) as port:
            port.write(LINK_CHECK_FAULT)
            port.flush()
            status = qemu.wait_for_exit(device, REPLY_TIMEOUT_S)
        assert status == HARDFAULT_EXIT_CODE
        # QEMU closes the pty as it exits, so the report is checked in its log.
        log_text = Path(device.log_file).read_text()
        assert re.search(r"FATAL hard fault 0x080[0-9a-f]{5}", log_text), log_text
    finally:
        qemu.stop_qemu(device)


@pytest.mark.emulation
@needs_tools
def test_stopping_twice_and_from_the_state_file(link_check_elf, board, tmp_path):
    state = tmp_path / "state.json"
    device = qemu.start_qemu(link_check_elf, board, state_file=state)
    assert qemu.load_state(state) == device
    assert os.path.exists(device.port)
    assert qemu.stop_qemu(state)
    assert not device.is_running()
    assert not qemu.stop_qemu(device)
    with pytest.raises(FlashError, match="state file"):
        qemu.stop_qemu(state)
