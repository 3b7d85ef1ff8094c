"""Run firmware on the emulated STM32F405 (``qemu-system-arm -M netduinoplus2``).

QEMU runs detached so that ``mcu-ids flash --board qemu-f405`` can return while the emulated
board keeps running; its process id, serial port and log go into a small JSON state file from
which a later command finds it and stops it.

The serial port is a pseudo-terminal. Bytes the firmware sends before the host opens it are lost,
which does not matter because the firmware only ever answers requests. With ``-icount shift=0``
the emulated clock advances one nanosecond per instruction, so tick counts repeat between runs
(within one tick of SysTick, whose 168 MHz does not divide the instruction clock).
"""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mcu_ids.build.boards import Board
from mcu_ids.errors import BoardError, FlashError
from mcu_ids.fileio import write_json

log = logging.getLogger(__name__)

QEMU_BINARY = "qemu-system-arm"
SERIAL_KINDS = ("pty",)
PTY_PATTERN = re.compile(r"char device redirected to (\S+) \(label serial(\d+)\)")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.05
# QEMU has at most this many serial ports on the netduinoplus2 (USART1..6).
MAX_SERIAL_PORTS = 6
_QEMU_FIELDS = {"machine": str, "serial_index": int, "icount_shift": int}


@dataclass(frozen=True)
class QemuDevice:
    """A running emulated board: where to talk to it and how to stop it."""

    pid: int
    port: str
    board: str
    elf: str
    log_file: str
    state_file: str | None = None

    def is_running(self) -> bool:
        """True while the recorded process is alive and is still this QEMU."""
        return _is_our_qemu(self.pid, self.elf)


def qemu_settings(board: Board) -> dict:
    """Check and return the board's ``[qemu]`` table."""
    table = board.section("qemu")
    for name, kind in _QEMU_FIELDS.items():
        value = table.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, kind):
            raise BoardError(
                f"board file {board.path}: [qemu] field '{name}' is {value!r}, "
                f"expected {kind.__name__}",
                hint="see boards/qemu-f405.toml",
            )
    if not 0 <= table["serial_index"] < MAX_SERIAL_PORTS:
        raise BoardError(
            f"board file {board.path}: [qemu] serial_index {table['serial_index']} is not in "
            f"0..{MAX_SERIAL_PORTS - 1}"
        )
    return table


def qemu_command(elf: Path, board: Board) -> list[str]:
    """The qemu-system-arm command line that runs ``elf`` with a pty on the board's UART."""
    settings = qemu_settings(board)
    binary = shutil.which(QEMU_BINARY)
    if binary is None:
        raise FlashError(
            f"{QEMU_BINARY} not found on PATH",
            hint="install it (`apt-get install qemu-system-arm`)",
        )
    # Serial ports before the board's UART get no backend; "-serial null" keeps their numbering.
    serial = ["-serial", "null"] * settings["serial_index"] + ["-serial", "pty"]
    return [
        binary,
        "-M",
        settings["machine"],
        "-nographic",
        "-monitor",
        "none",
        "-icount",
        f"shift={settings['icount_shift']}",
        *serial,
        "-semihosting-config",
        "enable=on,target=native",
        "-kernel",
        str(elf),
    ]


def _wait_for_pty(process: subprocess.Popen, log_path: Path, index: int) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        for path, label in PTY_PATTERN.findall(text):
            if int(label) == index:
                return path
        if process.poll() is not None:
            raise FlashError(
                f"{QEMU_BINARY} exited with status {process.returncode} before opening its "
                f"serial port: {text.strip()[-500:]}",
                hint=f"see {log_path}",
            )
        time.sleep(POLL_INTERVAL_S)
    _terminate(process.pid)
    raise FlashError(
        f"{QEMU_BINARY} did not report a serial port within {START_TIMEOUT_S:.0f} s",
        hint=f"see {log_path}",
    )


def start_qemu(
    elf: Path,
    board: Board,
    *,
    serial: str = "pty",
    state_file: Path | None = None,
    log_file: Path | None = None,
) -> QemuDevice:
    """Start QEMU on ``elf`` in the background and return where its serial port is.

    The process is put in its own session so that it outlives the command that started it.
    ``state_file`` (JSON) records it for :func:`stop_qemu`; ``log_file`` receives QEMU's own
    messages (default: next to the state file, else next to the ELF).
    """
    if serial not in SERIAL_KINDS:
        raise FlashError(
            f"serial kind {serial!r} is not supported", hint=f"use {', '.join(SERIAL_KINDS)}"
        )
    elf = Path(elf).resolve()
    if not elf.is_file():
        raise FlashError(f"firmware image {elf} does not exist", hint="build it first")
    command = qemu_command(elf, board)
    if log_file is None:
        base = Path(state_file) if state_file else elf
        log_file = base.with_suffix(".qemu.log")
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting %s", " ".join(command))
    with open(log_file, "wb") as log_handle:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    port = _wait_for_pty(process, log_file, qemu_settings(board)["serial_index"])
    device = QemuDevice(
        pid=process.pid,
        port=port,
        board=board.name,
        elf=str(elf),
        log_file=str(log_file),
        state_file=str(state_file) if state_file else None,
    )
    if state_file:
        write_json(Path(state_file), asdict(device))
    log.info("%s runs as process %d, serial port %s", board.name, process.pid, port)
    return device


def load_state(state_file: Path) -> QemuDevice:
    """The emulated board recorded in ``state_file``."""
    try:
        data = json.loads(Path(state_file).read_text(encoding="utf-8"))
        return QemuDevice(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise FlashError(
            f"cannot read the emulator state file {state_file}: {exc}",
            hint="start the emulated board with `mcu-ids flash --board qemu-f405`",
        ) from exc


def _is_our_qemu(pid: int, elf: str) -> bool:
    # The process id may have been reused since the state file was written: check its command.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(cmdline)
        and Path(cmdline[0].decode()).name == QEMU_BINARY
        and (elf.encode() in cmdline)
    )


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if _reap(pid):
            return
        time.sleep(POLL_INTERVAL_S)
    log.warning("QEMU process %d ignored SIGTERM; killing it", pid)
    os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> bool:
    """True once ``pid`` is gone (collecting it if it is our child)."""
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass
    return not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def stop_qemu(device: QemuDevice | Path) -> bool:
    """Stop an emulated board (a device or its state file); False if it was not running."""
    if not isinstance(device, QemuDevice):
        device = load_state(Path(device))
    running = device.is_running()
    if running:
        _terminate(device.pid)
        log.info("stopped QEMU process %d", device.pid)
    else:
        log.info("QEMU process %d was not running", device.pid)
    if device.state_file:
        Path(device.state_file).unlink(missing_ok=True)
    return running


def wait_for_exit(device: QemuDevice, timeout_s: float) -> int | None:
    """Wait for QEMU to end by itself (a semihosting exit); its status, or None on timeout.

    The status is known only to the process that started QEMU; another process gets -1.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, status = os.waitpid(device.pid, os.WNOHANG)
        except ChildProcessError:
            return None if Path(f"/proc/{device.pid}").exists() else -1
        if done == device.pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(POLL_INTERVAL_S)
    return None
