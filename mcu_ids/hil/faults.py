"""A fault-injecting serial link: a proxy between the harness and a device.

The proxy opens the device's port and serves a new pseudo-terminal; the harness opens the proxy's
``port`` exactly as it would open the board's. Bytes are forwarded both ways, and on the way each
byte may be dropped, corrupted (one bit flipped), duplicated, delayed (the direction pauses) or
swapped with the next byte, at configurable rates and from a seeded generator, so a faulty run
can be repeated. ``bytes_per_s`` paces each direction like a UART at a given baud rate.
``reset_device`` restarts the device mid-run through a caller-supplied function and reconnects.
"""

import logging
import os
import random
import select
import threading
import time
import tty
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from mcu_ids.errors import LinkError

log = logging.getLogger(__name__)

FAULT_KINDS = ("drop", "corrupt", "duplicate", "delay", "reorder")
DEFAULT_DELAY_S = 0.02
# A UART frame carries 8 data bits plus a start and a stop bit.
BITS_PER_BYTE_ON_WIRE = 10
_READ_SIZE = 4096
_POLL_S = 0.002
TO_DEVICE = "to_device"
TO_HOST = "to_host"


@dataclass(frozen=True)
class FaultRates:
    """Per-byte probabilities of each fault kind; a byte suffers at most one."""

    drop: float = 0.0
    corrupt: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0

    def __post_init__(self) -> None:
        rates = [getattr(self, kind) for kind in FAULT_KINDS]
        if any(rate < 0 for rate in rates) or sum(rates) > 1:
            raise ValueError(f"fault rates must be >= 0 and sum to at most 1, got {rates}")

    @classmethod
    def uniform(cls, total: float) -> "FaultRates":
        """Every kind at the same rate, ``total`` in all."""
        share = total / len(FAULT_KINDS)
        return cls(**{kind: share for kind in FAULT_KINDS})

    @property
    def any(self) -> bool:
        return any(getattr(self, kind) > 0 for kind in FAULT_KINDS)


def baud_bytes_per_s(baud: int) -> float:
    """Payload bytes per second a UART carries at ``baud`` (8N1: ten bits per byte)."""
    return baud / BITS_PER_BYTE_ON_WIRE


class _Lane:
    """One direction: injects faults into the bytes read and writes them out, paced."""

    def __init__(
        self,
        name: str,
        rates: FaultRates,
        rng: random.Random,
        counts: Counter,
        delay_s: float,
        bytes_per_s: float | None,
    ) -> None:
        self.name = name
        self.rates = rates
        self.rng = rng
        self.counts = counts
        self.delay_s = delay_s
        self.bytes_per_s = bytes_per_s
        # Items are byte strings, or a float: a pause of that many seconds.
        self.queue: deque[bytes | float] = deque()
        self.next_time = 0.0
        self.forwarded = 0
        self.first_write_at: float | None = None
        self.last_write_at: float | None = None

    def push(self, data: bytes) -> None:
        if not self.queue:
            # An idle line starts sending now; a busy one keeps its schedule even when this
            # thread ran late, as a UART's shift register would.
            self.next_time = max(self.next_time, time.monotonic())
        if self.rates.any:
            self._inject(data)
        else:
            self.queue.append(bytes(data))

    def _inject(self, data: bytes) -> None:
        thresholds = []
        total = 0.0
        for kind in FAULT_KINDS:
            total += getattr(self.rates, kind)
            thresholds.append((total, kind))
        out = bytearray()
        data = bytearray(data)
        i = 0
        while i < len(data):
            byte = data[i]
            draw = self.rng.random()
            kind = next((k for limit, k in thresholds if draw < limit), None)
            if kind == "drop":
                pass
            elif kind == "corrupt":
                out.append(byte ^ (1 << self.rng.randrange(8)))
            elif kind == "duplicate":
                out += bytes([byte, byte])
            elif kind == "delay":
                self.queue.append(bytes(out))
                self.queue.append(self.delay_s)
                out = bytearray([byte])
            elif kind == "reorder" and i + 1 < len(data):
                out += bytes([data[i + 1], byte])
                i += 1
            else:
                # A reorder drawn for the last byte read has no neighbour to swap with.
                kind = None
                out.append(byte)
            if kind is not None:
                self.counts[f"{self.name}.{kind}"] += 1
            i += 1
        self.queue.append(bytes(out))

    def clear(self) -> None:
        self.queue.clear()

    def ready_at(self) -> float | None:
        """When the next write is due, or None with nothing queued."""
        return self.next_time if self.queue else None

    def pump(self, fd: int, now: float) -> None:
        """Write what is due by ``now``."""
        while self.queue and now >= self.next_time:
            head = self.queue[0]
            if isinstance(head, float):
                self.queue.popleft()
                self.next_time = max(self.next_time, now) + head
                continue
            if not head:
                self.queue.popleft()
                continue
            if self.bytes_per_s is None:
                size = len(head)
            else:
                size = min(len(head), 1 + int((now - self.next_time) * self.bytes_per_s))
            try:
                put = os.write(fd, head[:size])
            except BlockingIOError:
                return
            self.forwarded += put
            if self.first_write_at is None:
                self.first_write_at = now
            self.last_write_at = time.monotonic()
            if put < len(head):
                self.queue[0] = head[put:]
            else:
                self.queue.popleft()
            if self.bytes_per_s is not None:
                self.next_time += put / self.bytes_per_s


def _open_raw(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise LinkError(
            f"the fault proxy cannot open the device port {path}: {exc.strerror}",
            hint="start the device first and check the port name",
        ) from exc
    tty.setraw(fd)
    return fd


class FaultProxy:
    """Forward bytes between a device port and a new pty, injecting faults on the way.

    ``counts`` holds how many faults of each kind were injected per direction
    (``to_device.drop``, ``to_host.corrupt``, ...) and ``resets`` the device restarts.
    """

    def __init__(
        self,
        device_port: str,
        *,
        to_device: FaultRates = FaultRates(),
        to_host: FaultRates = FaultRates(),
        seed: int = 0,
        delay_s: float = DEFAULT_DELAY_S,
        bytes_per_s: float | None = None,
        restart: Callable[[], str] | None = None,
    ) -> None:
        self.device_port = device_port
        self.counts: Counter = Counter()
        self.resets = 0
        self._restart = restart
        rng = random.Random(seed)
        self._lanes = {
            TO_DEVICE: _Lane(TO_DEVICE, to_device, rng, self.counts, delay_s, bytes_per_s),
            TO_HOST: _Lane(TO_HOST, to_host, rng, self.counts, delay_s, bytes_per_s),
        }
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._device_fd = _open_raw(device_port)
        self._master_fd, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)
        os.set_blocking(self._master_fd, False)
        # The proxy keeps the slave open itself, so the master does not fail with EIO while no
        # harness is connected.
        self.port = os.ttyname(self._slave_fd)
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)

    def __enter__(self) -> "FaultProxy":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()
        log.info("fault proxy for %s serving %s", self.device_port, self.port)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for fd in (self._device_fd, self._master_fd, self._slave_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    @property
    def forwarded(self) -> dict:
        """Bytes written out in each direction."""
        return {name: lane.forwarded for name, lane in self._lanes.items()}

    def restart_rate_clock(self) -> None:
        """Forget bytes forwarded so far, so ``rate`` covers only what follows."""
        with self._lock:
            for lane in self._lanes.values():
                lane.forwarded = 0
                lane.first_write_at = lane.last_write_at = None

    def rate(self, direction: str) -> float:
        """Bytes per second written in ``direction`` between its first and last write."""
        lane = self._lanes[direction]
        if lane.first_write_at is None or lane.last_write_at <= lane.first_write_at:
            return 0.0
        return lane.forwarded / (lane.last_write_at - lane.first_write_at)

    def fault_counts(self) -> dict:
        """Faults injected so far, by direction and kind, plus device resets."""
        return {**dict(sorted(self.counts.items())), "resets": self.resets}

    def set_rates(
        self, *, to_device: FaultRates | None = None, to_host: FaultRates | None = None
    ) -> None:
        """Change the fault rates of one or both directions while the proxy runs."""
        with self._lock:
            if to_device is not None:
                self._lanes[TO_DEVICE].rates = to_device
            if to_host is not None:
                self._lanes[TO_HOST].rates = to_host

    def reset_device(self) -> str:
        """Restart the device with the ``restart`` function and reconnect to its new port."""
        if self._restart is None:
            raise LinkError(
                "this fault proxy has no way to restart its device",
                hint="pass restart= (a function that restarts the device and returns its port)",
            )
        with self._lock:
            os.close(self._device_fd)
            self.device_port = self._restart()
            self._device_fd = _open_raw(self.device_port)
            # Bytes on their way to the old device are lost with it.
            self._lanes[TO_DEVICE].clear()
            self.resets += 1
        log.info("fault proxy: device restarted on %s", self.device_port)
        return self.device_port

    def _serve(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._serve_once()

    def _serve_once(self) -> None:
        now = time.monotonic()
        due = [lane.ready_at() for lane in self._lanes.values()]
        due = [t for t in due if t is not None]
        wait = _POLL_S if not due else min(_POLL_S, max(0.0, min(due) - now))
        readable, _, _ = select.select([self._master_fd, self._device_fd], [], [], wait)
        for fd in readable:
            try:
                data = os.read(fd, _READ_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                # A device that went away (a reset in progress) reads EIO until reconnected.
                time.sleep(_POLL_S)
                continue
            if not data:
                # The other end hung up (the device process ended); wait for a reconnect.
                time.sleep(_POLL_S)
                continue
            lane = TO_DEVICE if fd == self._master_fd else TO_HOST
            self._lanes[lane].push(data)
        now = time.monotonic()
        try:
            self._lanes[TO_DEVICE].pump(self._device_fd, now)
        except OSError:
            self._lanes[TO_DEVICE].clear()
        try:
            self._lanes[TO_HOST].pump(self._master_fd, now)
        except OSError:
            self._lanes[TO_HOST].clear()


def host_device_restarter(device, **start_options) -> Callable[[], str]:
    """A ``restart`` function for a host-board device: stop the process, start a new one.

    The current device is kept in the returned function's ``device`` attribute.
    """
    from mcu_ids.flash.host import start_host_device, stop_host_device

    def restart() -> str:
        stop_host_device(restart.device)
        restart.device = start_host_device(restart.device.binary, **start_options)
        return restart.device.port

    restart.device = device
    return restart
