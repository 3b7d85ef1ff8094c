"""The host side of the serial protocol: frames, CRC, message codecs and the device link.

The wire format is described in ``firmware/PROTOCOL.md``; ``firmware/protocol.c`` is the device
side. Both parsers follow the same resynchronisation rule, so they agree on hostile input.
"""

import errno
import logging
import os
import struct
import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from mcu_ids.errors import LinkError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
SYNC = b"\xa5\x5a"
HEADER_SIZE = 7
CRC_SIZE = 2
MAX_PAYLOAD = 256
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
MAX_TEXT = 32
SHA256_HEX_LEN = 64
# How long one read waits; reads return as soon as a byte is there, so this bounds only how late
# a timeout is noticed.
READ_SLICE_S = 0.02

HELLO = 0x01
INFER = 0x02
WINDOW = 0x03
PROFILE = 0x04
HELLO_REPLY = 0x81
RESULT = 0x82
WINDOW_REPLY = 0x83
PROFILE_REPLY = 0x84
ERROR = 0xEE

# HELLO flags: the optional requests the firmware answers.
FLAG_WINDOWS = 0x01
FLAG_LAYER_PROFILE = 0x02

ERR_BAD_CRC = 1
ERR_BAD_LENGTH = 2
ERR_UNKNOWN_TYPE = 3
ERR_INPUT_SIZE = 4
ERR_ENGINE = 5
ERR_TRUNCATED = 6
ERR_ENGINE_INIT = 7
ERR_UNSUPPORTED = 8
ERR_BAD_REQUEST = 9

ERROR_NAMES = {
    ERR_BAD_CRC: "bad CRC",
    ERR_BAD_LENGTH: "payload length over the limit",
    ERR_UNKNOWN_TYPE: "unknown message type",
    ERR_INPUT_SIZE: "wrong input size",
    ERR_ENGINE: "engine failure",
    ERR_TRUNCATED: "truncated frame",
    ERR_ENGINE_INIT: "engine failed to initialise",
    ERR_UNSUPPORTED: "not supported by this firmware",
    ERR_BAD_REQUEST: "request out of range",
}

# Bounds of a WINDOW request (firmware/protocol.h): the reply fits one frame, a window stays short.
MAX_WINDOWS = (MAX_PAYLOAD - 6) // 4
MAX_PER_WINDOW = 1000
MAX_WARMUP = 1000
MAX_PROFILE_OPS = (MAX_PAYLOAD - 12) // 4

_CRC_POLY = 0x1021
_CRC_INIT = 0xFFFF
_HEADER = struct.Struct("<2sBHH")
_HELLO_FIXED = struct.Struct("<BBHHIiIiIIIiH")
_RESULT_FIXED = struct.Struct("<IHB")
_ERROR = struct.Struct("<BBHi")
_RX_BUFFER = struct.Struct("<H")
_WINDOW_REQUEST = struct.Struct("<HHH")
_WINDOW_REPLY = struct.Struct("<HHH")
_PROFILE_REPLY = struct.Struct("<HHII")


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ _CRC_POLY) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes, crc: int = _CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def encode_frame(msg_type: int, seq: int, payload: bytes = b"") -> bytes:
    """One frame: sync, type, seq, length, payload and the CRC over type..payload."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = _HEADER.pack(SYNC, msg_type, seq & 0xFFFF, len(payload))[2:] + bytes(payload)
    return SYNC + body + struct.pack("<H", crc16(body))


@dataclass(frozen=True)
class Frame:
    """A frame whose CRC checked."""

    type: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class Fault:
    """A frame that was seen but could not be used (bad CRC, oversize length, truncated)."""

    code: int
    type: int
    seq: int


class FrameParser:
    """Incremental parser; on a bad frame it drops one byte and rescans what it has buffered."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.skipped_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | Fault]:
        """Add received bytes; return the frames and faults they complete, in order."""
        self._buf += data
        return self._scan(draining=False)

    def flush(self) -> list[Frame | Fault]:
        """The line went quiet: report whatever is buffered as truncated and drop it."""
        return self._scan(draining=True)

    def _drop(self, count: int) -> None:
        start = self._buf.find(SYNC[:1], count)
        start = len(self._buf) if start < 0 else start
        self.skipped_bytes += start - count
        del self._buf[:start]

    def _fault(self, code: int) -> Fault:
        _sync, msg_type, seq, _len = _HEADER.unpack_from(self._buf)
        self._drop(1)
        return Fault(code, msg_type, seq)

    def _scan(self, draining: bool) -> list[Frame | Fault]:
        events: list[Frame | Fault] = []
        buf = self._buf
        while buf:
            if buf[0] != SYNC[0] or (len(buf) >= 2 and buf[1] != SYNC[1]):
                self.skipped_bytes += 1
                self._drop(1)
                continue
            if len(buf) < HEADER_SIZE:
                if not draining:
                    break
                self.skipped_bytes += len(buf)
                self._drop(len(buf))
                continue
            _sync, msg_type, seq, length = _HEADER.unpack_from(buf)
            if length > MAX_PAYLOAD:
                events.append(self._fault(ERR_BAD_LENGTH))
                continue
            total = HEADER_SIZE + length + CRC_SIZE
            if len(buf) < total:
                if not draining:
                    break
                events.append(self._fault(ERR_TRUNCATED))
                continue
            (crc,) = struct.unpack_from("<H", buf, HEADER_SIZE + length)
            if crc16(bytes(buf[2 : HEADER_SIZE + length])) != crc:
                events.append(self._fault(ERR_BAD_CRC))
                continue
            events.append(Frame(msg_type, seq, bytes(buf[HEADER_SIZE : HEADER_SIZE + length])))
            self._drop(total)
        return events


def _float_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def _bits_float(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _pack_text(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8")[:limit]
    return bytes([len(raw)]) + raw


@dataclass(frozen=True)
class Hello:
    """What the device says about itself in its HELLO reply."""

    protocol_version: int
    n_features: int
    n_classes: int
    input_scale_bits: int
    input_zero_point: int
    output_scale_bits: int
    output_zero_point: int
    cpu_hz: int
    tick_hz: int
    boot_id: int
    engine_status: int
    max_payload: int
    board: str
    engine: str
    tick_kind: str
    firmware_version: str
    model_sha256: str
    flags: int = 0
    # Bytes the board layer buffers while an inference runs; 0 when the firmware does not say.
    rx_buffer_bytes: int = 0

    @property
    def input_scale(self) -> float:
        return _bits_float(self.input_scale_bits)

    @property
    def output_scale(self) -> float:
        return _bits_float(self.output_scale_bits)

    @property
    def has_windows(self) -> bool:
        """Whether the firmware answers WINDOW requests."""
        return bool(self.flags & FLAG_WINDOWS)

    @property
    def has_layer_profile(self) -> bool:
        """Whether the firmware was built with per-layer timing and answers PROFILE."""
        return bool(self.flags & FLAG_LAYER_PROFILE)

    def to_dict(self) -> dict:
        """Every field plus the scales as floats, for reports."""
        out = asdict(self)
        out["input_scale"] = self.input_scale
        out["output_scale"] = self.output_scale
        return out

    def encode(self) -> bytes:
        """The HELLO reply payload (what the firmware sends)."""
        fixed = _HELLO_FIXED.pack(
            self.protocol_version,
            self.flags,
            self.n_features,
            self.n_classes,
            self.input_scale_bits,
            self.input_zero_point,
            self.output_scale_bits,
            self.output_zero_point,
            self.cpu_hz,
            self.tick_hz,
            self.boot_id,
            self.engine_status,
            self.max_payload,
        )
        texts = [self.board, self.engine, self.tick_kind, self.firmware_version]
        return (
            fixed
            + b"".join(_pack_text(text, MAX_TEXT) for text in texts)
            + _pack_text(self.model_sha256, SHA256_HEX_LEN)
            + _RX_BUFFER.pack(self.rx_buffer_bytes)
        )

    @classmethod
    def decode(cls, payload: bytes) -> "Hello":
        """Parse a HELLO reply payload; raise LinkError if it is malformed."""
        if len(payload) < _HELLO_FIXED.size:
            raise LinkError(
                f"the device's HELLO reply has {len(payload)} bytes, at least "
                f"{_HELLO_FIXED.size} expected",
                hint="the firmware speaks another protocol version; rebuild and flash it",
            )
        fields = list(_HELLO_FIXED.unpack_from(payload))
        texts = []
        pos = _HELLO_FIXED.size
        for _ in range(5):
            if pos >= len(payload) or pos + 1 + payload[pos] > len(payload):
                raise LinkError(
                    "the device's HELLO reply ends inside a text field",
                    hint="the firmware speaks another protocol version; rebuild and flash it",
                )
            texts.append(payload[pos + 1 : pos + 1 + payload[pos]].decode("utf-8", "replace"))
            pos += 1 + payload[pos]
        # Firmware older than the receive-buffer field ends after the texts.
        rx_buffer = 0
        if len(payload) >= pos + _RX_BUFFER.size:
            (rx_buffer,) = _RX_BUFFER.unpack_from(payload, pos)
        (version, flags, n_features, n_classes, in_bits, in_zp, out_bits, out_zp) = fields[:8]
        cpu_hz, tick_hz, boot_id, engine_status, max_payload = fields[8:]
        return cls(
            protocol_version=version,
            n_features=n_features,
            n_classes=n_classes,
            input_scale_bits=in_bits,
            input_zero_point=in_zp,
            output_scale_bits=out_bits,
            output_zero_point=out_zp,
            cpu_hz=cpu_hz,
            tick_hz=tick_hz,
            boot_id=boot_id,
            engine_status=engine_status,
            max_payload=max_payload,
            board=texts[0],
            engine=texts[1],
            tick_kind=texts[2],
            firmware_version=texts[3],
            model_sha256=texts[4],
            flags=flags,
            rx_buffer_bytes=rx_buffer,
        )


def hello_for_model(*, input_scale: float, output_scale: float, **fields) -> Hello:
    """A Hello built from float scales (their float32 bit patterns go on the wire)."""
    return Hello(
        input_scale_bits=_float_bits(input_scale),
        output_scale_bits=_float_bits(output_scale),
        **fields,
    )


@dataclass(frozen=True)
class Result:
    """One inference: device ticks in engine_invoke, CRC of the input it ran on, int8 outputs."""

    ticks: int
    input_crc: int
    output: bytes
    shift_score: int = 0

    def output_int8(self) -> np.ndarray:
        return np.frombuffer(self.output, dtype=np.int8)

    def encode(self) -> bytes:
        return _RESULT_FIXED.pack(self.ticks, self.input_crc, self.shift_score) + self.output

    @classmethod
    def decode(cls, payload: bytes, n_classes: int) -> "Result":
        """Parse a RESULT payload carrying ``n_classes`` outputs; raise LinkError otherwise."""
        expected = _RESULT_FIXED.size + n_classes
        if len(payload) != expected:
            raise LinkError(
                f"a RESULT of {len(payload)} bytes arrived, {expected} expected "
                f"for {n_classes} classes",
                hint="the firmware was built for another model; rebuild and flash it",
            )
        ticks, input_crc, shift_score = _RESULT_FIXED.unpack_from(payload)
        return cls(ticks, input_crc, bytes(payload[_RESULT_FIXED.size :]), shift_score)


@dataclass(frozen=True)
class ErrorReply:
    """The device could not handle a frame: error code, the type and seq it answers, a detail."""

    code: int
    type: int
    seq: int
    detail: int = 0

    @property
    def name(self) -> str:
        return ERROR_NAMES.get(self.code, f"error code {self.code}")

    def encode(self) -> bytes:
        return _ERROR.pack(self.code, self.type, self.seq, self.detail)

    @classmethod
    def decode(cls, payload: bytes) -> "ErrorReply":
        if len(payload) != _ERROR.size:
            raise LinkError(
                f"an ERROR reply of {len(payload)} bytes arrived, {_ERROR.size} expected"
            )
        return cls(*_ERROR.unpack(payload))


@dataclass(frozen=True)
class WindowReply:
    """Ticks of each latency window; every window ran ``per_window`` inferences of one row."""

    input_crc: int
    per_window: int
    window_ticks: tuple[int, ...]

    def encode(self) -> bytes:
        fixed = _WINDOW_REPLY.pack(self.input_crc, len(self.window_ticks), self.per_window)
        return fixed + struct.pack(f"<{len(self.window_ticks)}I", *self.window_ticks)

    @classmethod
    def decode(cls, payload: bytes) -> "WindowReply":
        """Parse a WINDOW reply payload; raise LinkError if its length disagrees with its count."""
        if len(payload) < _WINDOW_REPLY.size:
            raise LinkError(f"a WINDOW reply of {len(payload)} bytes arrived, too short")
        input_crc, windows, per_window = _WINDOW_REPLY.unpack_from(payload)
        expected = _WINDOW_REPLY.size + 4 * windows
        if len(payload) != expected:
            raise LinkError(
                f"a WINDOW reply for {windows} windows has {len(payload)} bytes, "
                f"{expected} expected"
            )
        ticks = struct.unpack_from(f"<{windows}I", payload, _WINDOW_REPLY.size)
        return cls(input_crc, per_window, tuple(ticks))


@dataclass(frozen=True)
class ProfileReply:
    """One inference timed op by op: total ticks, the cost of one tick read, each op's ticks."""

    input_crc: int
    total_ticks: int
    tick_read_ticks: int
    layer_ticks: tuple[int, ...]

    def encode(self) -> bytes:
        count = len(self.layer_ticks)
        fixed = _PROFILE_REPLY.pack(self.input_crc, count, self.total_ticks, self.tick_read_ticks)
        return fixed + struct.pack(f"<{count}I", *self.layer_ticks)

    @classmethod
    def decode(cls, payload: bytes) -> "ProfileReply":
        """Parse a PROFILE reply payload; raise LinkError if its length disagrees with its count."""
        if len(payload) < _PROFILE_REPLY.size:
            raise LinkError(f"a PROFILE reply of {len(payload)} bytes arrived, too short")
        input_crc, count, total, read_cost = _PROFILE_REPLY.unpack_from(payload)
        expected = _PROFILE_REPLY.size + 4 * count
        if len(payload) != expected:
            raise LinkError(
                f"a PROFILE reply for {count} ops has {len(payload)} bytes, {expected} expected"
            )
        ticks = struct.unpack_from(f"<{count}I", payload, _PROFILE_REPLY.size)
        return cls(input_crc, total, read_cost, tuple(ticks))


def encode_window(
    seq: int, features: np.ndarray, *, warmup: int, windows: int, per_window: int
) -> bytes:
    """A WINDOW request: warm-ups, then ``windows`` windows of ``per_window`` inferences."""
    if not (0 <= warmup <= MAX_WARMUP and 1 <= windows <= MAX_WINDOWS):
        raise ValueError(f"warmup {warmup} or windows {windows} out of range")
    if not 1 <= per_window <= MAX_PER_WINDOW:
        raise ValueError(f"per_window {per_window} out of range 1..{MAX_PER_WINDOW}")
    fixed = _WINDOW_REQUEST.pack(warmup, windows, per_window)
    return encode_frame(WINDOW, seq, fixed + np.asarray(features, dtype=np.int8).tobytes())


def encode_profile(seq: int, features: np.ndarray) -> bytes:
    """A PROFILE request: one inference of ``features`` timed op by op."""
    return encode_frame(PROFILE, seq, np.asarray(features, dtype=np.int8).tobytes())


def encode_infer(seq: int, features: np.ndarray) -> bytes:
    """An INFER frame carrying one int8 input vector."""
    return encode_frame(INFER, seq, np.asarray(features, dtype=np.int8).tobytes())


def encode_hello(seq: int) -> bytes:
    """A HELLO request; its payload is the host's protocol version."""
    return encode_frame(HELLO, seq, bytes([PROTOCOL_VERSION]))


def _open_error(port: str, exc: Exception) -> LinkError:
    code = getattr(exc, "errno", None)
    if code in (errno.EACCES, errno.EPERM):
        return LinkError(
            f"permission denied opening serial port {port}",
            hint="add your user to the 'dialout' group (then log in again), or check the "
            "port's permissions",
        )
    if code in (errno.EBUSY, errno.EAGAIN) or "lock" in str(exc).lower():
        return LinkError(
            f"serial port {port} is busy: another program has it open",
            hint="close the other program (a serial monitor, another mcu-ids run)",
        )
    if code == errno.ENOENT:
        return _missing_port(port)
    return LinkError(f"cannot open serial port {port}: {exc}", hint="check the port name")


def _missing_port(port: str) -> LinkError:
    return LinkError(
        f"serial port {port} does not exist",
        hint="check the cable and the port name (`ls /dev/tty*`); for the host board, "
        "run `mcu-ids flash --board host` first",
    )


def open_serial(port: str, baud: int = 115200, *, exclusive: bool = True):
    """Open a serial port in raw 8N1 with clear LinkErrors for the common failures."""
    import serial

    if "://" not in port and not os.path.exists(port):
        raise _missing_port(port)
    try:
        handle = serial.serial_for_url(port, baudrate=baud, timeout=0, do_not_open=True)
        if "://" not in port:
            handle.exclusive = exclusive
        handle.open()
    except (serial.SerialException, OSError, ValueError) as exc:
        raise _open_error(port, exc) from exc
    handle.reset_input_buffer()
    return handle


class DeviceLink:
    """Frames over an open serial port: sends requests, yields replies, assigns sequence numbers."""

    def __init__(self, handle, port: str = "") -> None:
        self.handle = handle
        self.port = port or getattr(handle, "port", "") or ""
        self.parser = FrameParser()
        self._events: deque[Frame | Fault] = deque()
        self._seq = 0
        # A fixed read timeout: changing it reconfigures the port (tcsetattr) on every read.
        self.handle.timeout = READ_SLICE_S

    def __enter__(self) -> "DeviceLink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.handle.close()

    def next_seq(self) -> int:
        """A fresh sequence number (wraps at 16 bits)."""
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def send(self, frame: bytes) -> None:
        import serial

        try:
            self.handle.write(frame)
            self.handle.flush()
        except (serial.SerialException, OSError) as exc:
            raise LinkError(
                f"writing to {self.port} failed: {exc}",
                hint="the device was unplugged or the port was closed",
            ) from exc

    def receive(self, timeout_s: float) -> Frame | Fault | None:
        """The next frame or fault from the device, or None after ``timeout_s`` without one."""
        import serial

        deadline = time.monotonic() + timeout_s
        while not self._events:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._events.extend(self.parser.flush())
                break
            try:
                data = self.handle.read(max(1, self.handle.in_waiting))
            except (serial.SerialException, OSError) as exc:
                raise LinkError(
                    f"reading from {self.port} failed: {exc}",
                    hint="the device was unplugged or reset",
                ) from exc
            self._events.extend(self.parser.feed(data))
        return self._events.popleft() if self._events else None

    def hello(self, timeout_s: float = 1.0, attempts: int = 3) -> Hello:
        """Handshake: send HELLO until a matching reply arrives, or raise LinkError."""
        for attempt in range(attempts):
            seq = self.next_seq()
            self.send(encode_hello(seq))
            deadline = time.monotonic() + timeout_s
            while (remaining := deadline - time.monotonic()) > 0:
                event = self.receive(remaining)
                if isinstance(event, Frame) and event.type == HELLO_REPLY and event.seq == seq:
                    return Hello.decode(event.payload)
                if event is not None:
                    log.debug("ignoring %s while waiting for the HELLO reply", event)
            log.info("no HELLO reply from %s (attempt %d of %d)", self.port, attempt + 1, attempts)
        raise LinkError(
            f"the device on {self.port} does not answer HELLO",
            hint="check the port and baud rate, that the board is flashed with mcu-ids firmware, "
            "and that it is not in bootloader mode (press reset)",
        )


def open_link(port: str, baud: int = 115200, *, exclusive: bool = True) -> DeviceLink:
    """Open ``port`` and wrap it in a DeviceLink."""
    return DeviceLink(open_serial(port, baud, exclusive=exclusive), port)
