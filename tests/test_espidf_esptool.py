"""Flashing error paths that need no board: no build, no port, a port that answers nothing."""

import json
import os
import pty
import threading
import time

import pytest

from mcu_ids.build.boards import get_board
from mcu_ids.errors import FlashError
from mcu_ids.flash.esptool_flasher import (
    check_started_from_flash,
    classify_boot_message,
    flash_esp32,
    read_flash_plan,
)

pytest.importorskip("esptool")

# What the ESP32 ROM prints at reset when GPIO0 is held low, and when it boots from flash.
DOWNLOAD_MESSAGE = (
    "ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x3 "
    "(DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\r\nwaiting for download\r\n"
)
FLASH_MESSAGE = (
    "ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
)


def _write_build(folder, chip="esp32"):
    """A build folder laid out as ESP-IDF writes it (images and flasher_args.json)."""
    build = folder / "build"
    (build / "bootloader").mkdir(parents=True)
    (build / "partition_table").mkdir()
    (build / "bootloader" / "bootloader.bin").write_bytes(b"\xe9" + bytes(31))
    (build / "partition_table" / "partition-table.bin").write_bytes(b"\xaa\x50" + bytes(30))
    (build / "app.bin").write_bytes(b"\xe9" + bytes(63))
    args = {
        "write_flash_args": ["--flash_mode", "dio", "--flash_size", "4MB", "--flash_freq", "40m"],
        "flash_settings": {"flash_mode": "dio", "flash_size": "4MB", "flash_freq": "40m"},
        "flash_files": {
            "0x1000": "bootloader/bootloader.bin",
            "0x8000": "partition_table/partition-table.bin",
            "0x10000": "app.bin",
        },
        "app": {"offset": "0x10000", "file": "app.bin", "encrypted": "false"},
        "extra_esptool_args": {"after": "hard_reset", "before": "default_reset", "chip": chip},
    }
    (build / "flasher_args.json").write_text(json.dumps(args))
    return folder


@pytest.fixture
def silent_pty():
    """A pseudo-terminal whose other end never answers."""
    controller, device = pty.openpty()
    yield os.ttyname(device)
    os.close(device)
    os.close(controller)


def test_flash_plan_reads_offsets_from_the_build(tmp_path):
    plan = read_flash_plan(_write_build(tmp_path))
    assert [offset for offset, _ in plan.images] == [0x1000, 0x8000, 0x10000]
    assert plan.images[2][1].name == "app.bin"
    assert (plan.chip, plan.flash_mode, plan.flash_size) == ("esp32", "dio", "4MB")


def test_missing_build_says_to_build_first(tmp_path):
    with pytest.raises(FlashError, match="has not been built") as info:
        flash_esp32(get_board("esp32"), tmp_path, "/dev/null")
    assert "build" in info.value.hint


def test_build_for_another_chip_is_refused(tmp_path):
    with pytest.raises(FlashError, match="for chip esp32s3"):
        flash_esp32(get_board("esp32"), _write_build(tmp_path, chip="esp32s3"), "/dev/null")


def test_missing_port_lists_the_ports_seen(tmp_path):
    port = str(tmp_path / "ttyUSB9")
    with pytest.raises(FlashError, match="does not exist") as info:
        flash_esp32(get_board("esp32"), _write_build(tmp_path), port)
    assert "serial ports seen" in info.value.hint


def test_port_that_answers_nothing_is_reported(tmp_path, silent_pty):
    with pytest.raises(FlashError, match="no ESP bootloader answered") as info:
        flash_esp32(get_board("esp32"), _write_build(tmp_path), silent_pty, connect_attempts=1)
    assert "BOOT" in info.value.hint


def _answer_after_open(controller: int, message: str) -> threading.Thread:
    def send():
        time.sleep(0.3)
        os.write(controller, message.encode("ascii"))

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_board_left_in_download_mode_is_an_error():
    controller, device = pty.openpty()
    try:
        thread = _answer_after_open(controller, DOWNLOAD_MESSAGE)
        with pytest.raises(FlashError, match="stayed in bootloader") as info:
            check_started_from_flash(os.ttyname(device), wait_s=1.0)
        thread.join()
        assert "EN/RST" in info.value.hint
    finally:
        os.close(device)
        os.close(controller)


def test_board_booting_from_flash_passes():
    controller, device = pty.openpty()
    try:
        thread = _answer_after_open(controller, FLASH_MESSAGE)
        check_started_from_flash(os.ttyname(device), wait_s=1.0)
        thread.join()
    finally:
        os.close(device)
        os.close(controller)


def test_boot_messages_are_classified():
    assert classify_boot_message(DOWNLOAD_MESSAGE) == "download"
    assert classify_boot_message(FLASH_MESSAGE) == "flash"
    assert classify_boot_message("") == "unknown"
