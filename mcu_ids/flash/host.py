"""Start and stop the host firmware: a detached process that serves a pseudo-terminal.

``start_host_device`` is what ``flash --board host`` does: it leaves the device running and
records it in a state file, where a later ``bench`` finds its port.
"""

import json
import logging
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from mcu_ids.errors import FlashError
from mcu_ids.fileio import write_json

log = logging.getLogger(__name__)

PORT_PREFIX = "PORT "
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
_POLL_S = 0.05


@dataclass
class HostDevice:
    """A running host firmware process and the pseudo-terminal it serves."""

    pid: int
    port: str
    binary: str
    log_path: str | None = None
    state_file: str | None = None
    process: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def state(self) -> dict:
        """The fields recorded in the state file."""
        return {
            "pid": self.pid,
            "port": self.port,
            "binary": self.binary,
            "log_path": self.log_path,
            "state_file": self.state_file,
        }

    def is_running(self) -> bool:
        return _is_our_process(self.pid, self.binary)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _is_our_process(pid: int, binary: str) -> bool:
    # A zombie or a reused pid has an empty or different command line.
    cmdline = _cmdline(pid)
    return bool(cmdline) and os.path.realpath(cmdline[0]) == os.path.realpath(binary)


def _read_port_line(process: subprocess.Popen, timeout_s: float, binary: Path) -> str:
    deadline = time.monotonic() + timeout_s
    buffer = b""
    stdout = process.stdout
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FlashError(
                f"the host firmware {binary} printed no PORT line within {timeout_s:g} s",
                hint="check that the binary was built for the host board",
            )
        ready, _, _ = select.select([stdout], [], [], min(remaining, _POLL_S * 4))
        if ready:
            chunk = os.read(stdout.fileno(), 256)
            if not chunk:
                code = process.wait(timeout=STOP_TIMEOUT_S)
                raise FlashError(
                    f"the host firmware {binary} exited (code {code}) before opening its port",
                    hint="see its log for the reason; the pty system may be unavailable",
                )
            buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    if not line.startswith(PORT_PREFIX):
        raise FlashError(
            f"the host firmware {binary} printed {line!r} instead of a PORT line",
            hint="check that the binary was built for the host board",
        )
    return line[len(PORT_PREFIX) :]


def start_host_device(
    binary: Path,
    *,
    state_file: Path | None = None,
    log_path: Path | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> HostDevice:
    """Start the host firmware detached from this process and return once its port exists.

    The process gets its own session, so it keeps running after the command that started it
    exits. Its stderr goes to ``log_path`` (default: beside the state file). With a
    ``state_file``, pid and port are recorded there for ``find_running_device``.
    """
    binary = Path(binary).resolve()
    if not os.access(binary, os.X_OK):
        raise FlashError(
            f"host firmware {binary} does not exist or is not executable",
            hint="build it first: `mcu-ids build --board host`",
        )
    if log_path is None and state_file is not None:
        log_path = Path(state_file).with_suffix(".log")
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    stderr = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        process = subprocess.Popen(
            [str(binary)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise FlashError(f"cannot start host firmware {binary}: {exc.strerror}") from exc
    finally:
        if log_path:
            stderr.close()
    try:
        port = _read_port_line(process, timeout_s, binary)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise
    finally:
        process.stdout.close()
    device = HostDevice(
        pid=process.pid,
        port=port,
        binary=str(binary),
        log_path=str(log_path) if log_path else None,
        state_file=str(state_file) if state_file else None,
        process=process,
    )
    if state_file is not None:
        write_json(Path(state_file), device.state())
    log.info("host device running as pid %d on %s", device.pid, port)
    return device


def _load_state(state_file: Path) -> HostDevice | None:
    try:
        state = json.loads(Path(state_file).read_text(encoding="utf-8"))
        return HostDevice(
            pid=int(state["pid"]),
            port=str(state["port"]),
            binary=str(state["binary"]),
            log_path=state.get("log_path"),
            state_file=str(state_file),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable host device state %s: %s", state_file, exc)
        return None


def find_running_device(state_file: Path) -> str | None:
    """The port of the host device recorded in ``state_file`` if it still runs, else None."""
    device = _load_state(state_file)
    if device is None or not device.is_running() or not os.path.exists(device.port):
        return None
    return device.port


def stop_host_device(device: HostDevice | Path, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop exactly the process that was started (SIGTERM, then SIGKILL); True if one was stopped.

    ``device`` is a HostDevice or the state file it was recorded in; the state file is removed.
    A pid that now belongs to another program is left alone.
    """
    if not isinstance(device, HostDevice):
        state_file = Path(device)
        device = _load_state(state_file)
        if device is None:
            return False
    stopped = False
    if device.is_running():
        os.kill(device.pid, signal.SIGTERM)
        stopped = True
        if not _wait_gone(device, timeout_s):
            log.warning("host device pid %d ignored SIGTERM; killing it", device.pid)
            os.kill(device.pid, signal.SIGKILL)
            _wait_gone(device, timeout_s)
    if device.process is not None:
        device.process.wait(timeout=timeout_s)
    if device.state_file:
        Path(device.state_file).unlink(missing_ok=True)
    return stopped


def _wait_gone(device: HostDevice, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if device.process is not None:
            device.process.poll()
        if not device.is_running():
            return True
        time.sleep(_POLL_S)
    return False
