"""Flash an ESP-IDF build onto an ESP32 board through esptool's Python API.

The offsets and images come from the build's ``flasher_args.json``; after writing, the board is
reset through RTS (the DevKit auto-reset circuit) and its ROM boot message is read to confirm
that it left the serial bootloader and started from flash.
"""

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import serial
import serial.tools.list_ports

from mcu_ids.build.boards import Board
from mcu_ids.errors import FlashError

logger = logging.getLogger(__name__)

FLASHER_ARGS = "flasher_args.json"
# The ROM loader of the ESP32 and ESP32-S3 talks, and prints its boot message, at this rate
# (with the usual 40 MHz crystal).
ROM_BAUD = 115200
CONNECT_ATTEMPTS = 3
# EN is held low this long by the reset pulse; the boot message then takes a few milliseconds.
RESET_HOLD_S = 0.1
BOOT_MESSAGE_WAIT_S = 1.0
# Lines of the ROM boot message: download mode (GPIO0 low at reset) versus a boot from flash.
DOWNLOAD_MODE_MARKERS = ("waiting for download", "DOWNLOAD_BOOT", "boot:0x3 ")
FLASH_BOOT_MARKERS = ("SPI_FAST_FLASH_BOOT",)


@dataclass(frozen=True)
class FlashPlan:
    """What to write where, as the ESP-IDF build describes it."""

    chip: str
    images: tuple[tuple[int, Path], ...]
    flash_mode: str
    flash_freq: str
    flash_size: str


def _flasher_args_path(build_or_project_dir: Path) -> Path:
    folder = Path(build_or_project_dir)
    for candidate in (folder / FLASHER_ARGS, folder / "build" / FLASHER_ARGS):
        if candidate.is_file():
            return candidate
    raise FlashError(
        f"no {FLASHER_ARGS} in {folder} or {folder / 'build'}: the firmware has not been built",
        hint="build it first: `mcu-ids build --board esp32`, or `idf.py build` in the project",
    )


def read_flash_plan(build_or_project_dir: Path) -> FlashPlan:
    """Read the images, offsets and flash settings from the build's ``flasher_args.json``."""
    path = _flasher_args_path(build_or_project_dir)
    try:
        args = json.loads(path.read_text(encoding="utf-8"))
        files = args["flash_files"]
        settings = args.get("flash_settings", {})
        chip = args["extra_esptool_args"]["chip"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise FlashError(
            f"{path} is not a flasher_args.json written by ESP-IDF ({exc})",
            hint="rebuild the project with `idf.py build`",
        ) from exc
    images = tuple(sorted((int(offset, 0), path.parent / name) for offset, name in files.items()))
    missing = [str(image) for _, image in images if not image.is_file()]
    if missing:
        raise FlashError(
            f"the build lists images that do not exist: {', '.join(missing)}",
            hint="rebuild the project with `idf.py build`",
        )
    return FlashPlan(
        chip=chip,
        images=images,
        flash_mode=settings.get("flash_mode", "keep"),
        flash_freq=settings.get("flash_freq", "keep"),
        flash_size=settings.get("flash_size", "keep"),
    )


def available_ports() -> list[str]:
    """Serial ports the operating system lists, for error messages."""
    return sorted(info.device for info in serial.tools.list_ports.comports())


def _ports_hint() -> str:
    ports = available_ports()
    listed = ", ".join(ports) if ports else "none found"
    return f"serial ports seen: {listed}; check the cable and pass the right one with --port"


def check_port(port: str) -> None:
    """Fail clearly when the port does not exist or this user may not open it."""
    if "://" in port:
        return
    if not os.path.exists(port):
        raise FlashError(f"serial port {port} does not exist", hint=_ports_hint())
    if not os.access(port, os.R_OK | os.W_OK):
        raise FlashError(
            f"no permission to open serial port {port}",
            hint="add yourself to the port's group (`sudo usermod -aG dialout $USER` on most "
            "Linux systems, `uucp` on Arch), then log in again",
        )


def _expected_target(board: Board) -> str:
    return board.section("esp32")["idf_target"]


def _check_plan_matches(plan: FlashPlan, board: Board) -> None:
    if plan.chip != _expected_target(board):
        raise FlashError(
            f"the build is for chip {plan.chip} but board {board.name} is "
            f"{_expected_target(board)}",
            hint=f"rebuild for the board: `mcu-ids build --board {board.name}`",
        )


def _explain_esptool_failure(exc: Exception, port: str) -> FlashError:
    text = str(exc)
    if "Permission denied" in text or "Errno 13" in text:
        return FlashError(
            f"no permission to open serial port {port}",
            hint="add yourself to the dialout group (`sudo usermod -aG dialout $USER`), "
            "then log in again",
        )
    if "could not open port" in text or "doesn't exist" in text:
        return FlashError(f"cannot open serial port {port}: {text.splitlines()[0]}", _ports_hint())
    if "Failed to connect" in text or "No serial data received" in text:
        return FlashError(
            f"no ESP bootloader answered on {port}",
            hint="hold BOOT and press EN/RST to enter the bootloader, check that this is the "
            "board's UART port (not a USB-JTAG or another device), try a data-capable cable",
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return FlashError(f"esptool failed on {port}: {first}", hint="re-run with -v for details")


def _connect(port: str, connect_attempts: int):
    from esptool.cmds import detect_chip
    from esptool.util import FatalError

    try:
        return detect_chip(port, ROM_BAUD, "default-reset", connect_attempts=connect_attempts)
    except (FatalError, OSError, serial.SerialException) as exc:
        raise _explain_esptool_failure(exc, port) from exc


def _write_images(esp, plan: FlashPlan, flash_baud: int) -> None:
    from esptool.cmds import attach_flash, run_stub, write_flash

    esp = run_stub(esp)
    if flash_baud > ROM_BAUD:
        esp.change_baud(flash_baud)
    attach_flash(esp)
    write_flash(
        esp,
        [(offset, str(path)) for offset, path in plan.images],
        flash_freq=plan.flash_freq,
        flash_mode=plan.flash_mode,
        flash_size=plan.flash_size,
    )


def flash_esp32(
    board: Board,
    build_or_project_dir: Path,
    port: str,
    connect_attempts: int = CONNECT_ATTEMPTS,
) -> None:
    """Write the built images to the board on ``port``, reset it and confirm it booted."""
    from esptool.util import FatalError

    plan = read_flash_plan(build_or_project_dir)
    _check_plan_matches(plan, board)
    check_port(port)
    flash_baud = int(board.section("esp32")["flash_baud"])
    with _connect(port, connect_attempts) as esp:
        if esp.CHIP_NAME != board.chip:
            raise FlashError(
                f"wrong chip on {port}: board {board.name} expects {board.chip}, "
                f"the bootloader reports {esp.CHIP_NAME}",
                hint="pass the --board that matches the connected module, or the other port",
            )
        try:
            _write_images(esp, plan, flash_baud)
        except FatalError as exc:
            raise _explain_esptool_failure(exc, port) from exc
    check_started_from_flash(port)


def reset_and_read_boot_message(port: str, wait_s: float = BOOT_MESSAGE_WAIT_S) -> str:
    """Pulse EN through RTS with GPIO0 released (DTR off) and return what the ROM prints."""
    link = serial.Serial()
    link.port = port
    link.baudrate = ROM_BAUD
    link.timeout = 0.05
    # Released before opening, so opening the port does not itself hold the chip in reset.
    link.dtr = False
    link.rts = False
    try:
        link.open()
    except serial.SerialException as exc:
        raise FlashError(f"cannot reopen {port} after flashing: {exc}", _ports_hint()) from exc
    with link:
        link.reset_input_buffer()
        try:
            link.rts = True
            time.sleep(RESET_HOLD_S)
            link.rts = False
        except OSError as exc:
            logger.warning(
                "cannot pulse RTS on %s (%s); press EN/RST on the board to start it", port, exc
            )
        received = bytearray()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            received += link.read(256)
    return received.decode("ascii", "replace")


def classify_boot_message(text: str) -> str:
    """``"download"`` (still in the serial bootloader), ``"flash"`` (booted), or ``"unknown"``."""
    if any(marker in text for marker in DOWNLOAD_MODE_MARKERS):
        return "download"
    if any(marker in text for marker in FLASH_BOOT_MARKERS):
        return "flash"
    return "unknown"


def check_started_from_flash(port: str, wait_s: float = BOOT_MESSAGE_WAIT_S) -> None:
    """Reset the board and fail if its ROM says it is waiting in download mode."""
    message = reset_and_read_boot_message(port, wait_s)
    state = classify_boot_message(message)
    if state == "download":
        raise FlashError(
            f"the board on {port} stayed in bootloader (download) mode after flashing",
            hint="release the BOOT button (GPIO0) and press EN/RST; the tool resets through "
            "RTS, which some adapters or cables do not wire",
        )
    if state == "unknown":
        logger.warning(
            "no ROM boot message seen on %s after the reset; cannot confirm the board started. "
            "If the benchmark gets no answer, press EN/RST",
            port,
        )
    else:
        logger.info("the board on %s booted from flash", port)
