"""The firmware's frame parser and encoder (firmware/protocol.c), run under ASan and UBSan.

Crafted hostile inputs have expected events written out here; random streams are compared with
the host parser, which was written separately from the C one.
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mcu_ids.build.host import build_host_firmware
from mcu_ids.hil import protocol
from mcu_ids.hil.protocol import Fault, Frame, FrameParser
from mcu_ids.resources import asset_dir

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

TESTS_C = Path(__file__).parent / "c"
# The firmware never allocates; leak checking needs ptrace, which some containers forbid.
SANITIZER_ENV = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0"}
CHUNK_SIZES = (1, 7, 64, 1000)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    firmware = asset_dir("firmware")
    return build_host_firmware(
        [firmware / "protocol.c", TESTS_C / "parser_test_main.c"],
        [firmware],
        tmp_path_factory.mktemp("parser") / "parser_test_main",
        sanitize=True,
    )


def run_driver(driver, *args, data=b""):
    done = subprocess.run(
        [str(driver), *args],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
        env=SANITIZER_ENV,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"runtime error" not in done.stderr, done.stderr.decode(errors="replace")
    return done.stdout.decode()


def c_events(driver, data: bytes, chunk: int) -> list:
    events = []
    lines = run_driver(driver, "parse", str(chunk), data=data).splitlines()
    assert lines[-1] == "PENDING 0"
    for line in lines[:-1]:
        kind, *fields = line.split()
        if kind == "FRAME":
            payload = bytes.fromhex(fields[3]) if len(fields) > 3 else b""
            events.append(Frame(int(fields[0]), int(fields[1]), payload))
            assert int(fields[2]) == len(payload)
        else:
            events.append(Fault(*map(int, fields)))
    return events


def test_crc_known_answer(driver):
    assert run_driver(driver, "crc", "123456789").strip() == "29b1"


def test_encoder_matches_the_documented_layout(driver):
    payload = bytes(range(0, 250, 5))
    frame = bytes.fromhex(run_driver(driver, "encode", "0x82", "513", payload.hex()).strip())
    assert frame == protocol.encode_frame(protocol.RESULT, 513, payload)
    too_long = bytes(protocol.MAX_PAYLOAD + 1).hex()
    assert run_driver(driver, "encode", "2", "1", too_long).strip() == ""


def hostile_stream() -> tuple[bytes, list]:
    """A stream of good and bad frames with the events the parser must report, in order."""
    good = [protocol.encode_frame(protocol.INFER, seq, bytes([seq] * 40)) for seq in range(6)]
    oversize = b"\xa5\x5a\x02\x63\x00\x01\x01"  # seq 99, length 257
    bad_crc = bytearray(protocol.encode_frame(protocol.INFER, 77, bytes(40)))
    bad_crc[10] ^= 0xFF
    swallowing = bytearray(protocol.encode_frame(protocol.HELLO, 55, b"\x01"))
    swallowing[5] = 120  # its length now covers good[3] and good[4]
    stream = (
        b"\x00\xff\xa5\x00"
        + good[0]
        + oversize
        + good[1]
        + bytes(bad_crc)
        + good[2]
        + bytes(swallowing)
        + good[3]
        + good[4]
        + bytes(120)
        + good[5]
        + good[5][:20]
    )
    expected = [
        Frame(2, 0, bytes(40)),
        Fault(protocol.ERR_BAD_LENGTH, 2, 99),
        Frame(2, 1, bytes([1] * 40)),
        Fault(protocol.ERR_BAD_CRC, 2, 77),
        Frame(2, 2, bytes([2] * 40)),
        Fault(protocol.ERR_BAD_CRC, protocol.HELLO, 55),
        Frame(2, 3, bytes([3] * 40)),
        Frame(2, 4, bytes([4] * 40)),
        Frame(2, 5, bytes([5] * 40)),
        Fault(protocol.ERR_TRUNCATED, 2, 5),
    ]
    return stream, expected


@pytest.mark.parametrize("chunk", CHUNK_SIZES)
def test_hostile_stream_gives_the_expected_events(driver, chunk):
    stream, expected = hostile_stream()
    assert c_events(driver, stream, chunk) == expected


def test_host_parser_agrees_on_the_hostile_stream():
    stream, expected = hostile_stream()
    parser = FrameParser()
    assert parser.feed(stream) + parser.flush() == expected


def random_stream(rng) -> bytes:
    parts = []
    for _ in range(300):
        kind = rng.integers(0, 5)
        payload = rng.integers(0, 256, rng.integers(0, 60), dtype=np.uint8).tobytes()
        frame = bytearray(
            protocol.encode_frame(int(rng.integers(0, 256)), int(rng.integers(0, 65536)), payload)
        )
        if kind == 1:  # flip a bit
            frame[rng.integers(2, len(frame))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:  # drop a byte
            del frame[rng.integers(0, len(frame))]
        elif kind == 3:  # garbage with sync bytes in it
            frame = bytearray(b"\xa5\x5a" + rng.integers(0, 256, 12, dtype=np.uint8).tobytes())
        parts.append(bytes(frame))
    return b"".join(parts)


@pytest.mark.parametrize("seed", range(4))
def test_c_and_host_parsers_agree_on_random_corruption(driver, seed):
    stream = random_stream(np.random.default_rng(seed))
    parser = FrameParser()
    expected = parser.feed(stream) + parser.flush()
    assert sum(isinstance(event, Frame) for event in expected) > 100
    assert c_events(driver, stream, 1 + seed * 37) == expected


def test_pure_noise_is_survived(driver):
    noise = np.random.default_rng(9).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    c_events(driver, noise, 64)
