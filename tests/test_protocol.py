"""Unit tests of the host side of the serial protocol, the sample selection and the report."""

import json
import struct

import numpy as np
import pytest

from mcu_ids.errors import DataError, LinkError, McuIdsError
from mcu_ids.hil import protocol
from mcu_ids.hil.harness import select_samples
from mcu_ids.hil.protocol import ErrorReply, Fault, Frame, FrameParser, Hello, Result
from mcu_ids.hil.report import RESULTS_FILE, load_results, write_bench_report


def hello_example(**changes) -> Hello:
    fields = dict(
        protocol_version=1,
        n_features=40,
        n_classes=19,
        input_scale=0.025,
        input_zero_point=-3,
        output_scale=1 / 256,
        output_zero_point=-128,
        cpu_hz=168_000_000,
        tick_hz=168_000_000,
        boot_id=0xDEADBEEF,
        engine_status=0,
        max_payload=256,
        board="qemu-f405",
        engine="native",
        tick_kind="emulated-instructions",
        firmware_version="0.1.0",
        model_sha256="ab" * 32,
    )
    fields.update(changes)
    return protocol.hello_for_model(**fields)


def test_crc_known_answer():
    # The check value of CRC-16/CCITT-FALSE from the catalogue of parametrised CRCs.
    assert protocol.crc16(b"123456789") == 0x29B1
    assert protocol.crc16(b"") == 0xFFFF


def test_frame_layout_is_as_documented():
    frame = protocol.encode_frame(protocol.INFER, 0x1234, b"\x01\x02\x03")
    assert frame[:2] == b"\xa5\x5a"
    assert frame[2] == protocol.INFER
    assert frame[3:5] == b"\x34\x12"
    assert frame[5:7] == b"\x03\x00"
    assert frame[7:10] == b"\x01\x02\x03"
    assert struct.unpack("<H", frame[10:])[0] == protocol.crc16(frame[2:10])


def test_encode_refuses_oversize_payload():
    protocol.encode_frame(protocol.INFER, 1, bytes(protocol.MAX_PAYLOAD))
    with pytest.raises(ValueError):
        protocol.encode_frame(protocol.INFER, 1, bytes(protocol.MAX_PAYLOAD + 1))


def test_frame_round_trip_byte_by_byte():
    frames = [
        protocol.encode_frame(t, s, bytes(range(n))) for t, s, n in [(1, 0, 0), (2, 65535, 256)]
    ]
    parser = FrameParser()
    events = []
    for byte in b"".join(frames):
        events += parser.feed(bytes([byte]))
    assert events == [Frame(1, 0, b""), Frame(2, 65535, bytes(range(256)))]
    assert parser.pending == 0


def test_resync_after_garbage():
    garbage = b"\x00\xa5\xa5\x5a\x01\xff" + bytes(range(200, 256))
    good = protocol.encode_frame(protocol.HELLO, 7, b"\x01")
    events = FrameParser().feed(garbage + good + b"\x5a\xa5" + good)
    frames = [e for e in events if isinstance(e, Frame)]
    assert frames == [Frame(protocol.HELLO, 7, b"\x01")] * 2


def test_oversize_length_is_a_fault_and_the_next_frame_survives():
    oversize = b"\xa5\x5a" + struct.pack("<BHH", protocol.INFER, 9, protocol.MAX_PAYLOAD + 1)
    good = protocol.encode_frame(protocol.INFER, 10, b"\x05")
    events = FrameParser().feed(oversize + good)
    assert events == [Fault(protocol.ERR_BAD_LENGTH, protocol.INFER, 9), Frame(2, 10, b"\x05")]


def test_bad_crc_is_a_fault():
    frame = bytearray(protocol.encode_frame(protocol.INFER, 3, b"\x10\x20"))
    frame[8] ^= 0x01
    assert FrameParser().feed(bytes(frame)) == [Fault(protocol.ERR_BAD_CRC, protocol.INFER, 3)]


def test_truncated_frame_waits_then_is_reported_on_flush():
    frame = protocol.encode_frame(protocol.INFER, 4, bytes(40))
    parser = FrameParser()
    assert parser.feed(frame[:-5]) == []
    assert parser.pending == len(frame) - 5
    assert parser.flush() == [Fault(protocol.ERR_TRUNCATED, protocol.INFER, 4)]
    assert parser.pending == 0


def test_frames_swallowed_by_a_corrupted_length_are_recovered():
    first = bytearray(protocol.encode_frame(protocol.INFER, 1, bytes(8)))
    first[5] = 200  # the length now covers the frames that follow
    followers = [protocol.encode_frame(protocol.INFER, seq, bytes([seq] * 8)) for seq in (2, 3, 4)]
    events = FrameParser().feed(bytes(first) + b"".join(followers) + bytes(200))
    assert events[0] == Fault(protocol.ERR_BAD_CRC, protocol.INFER, 1)
    assert [e.seq for e in events if isinstance(e, Frame)] == [2, 3, 4]


def test_random_bytes_never_break_the_parser():
    rng = np.random.default_rng(1)
    parser = FrameParser()
    for _ in range(200):
        chunk = rng.integers(0, 256, rng.integers(1, 600), dtype=np.uint8).tobytes()
        parser.feed(chunk)
        assert parser.pending < protocol.MAX_FRAME
    parser.flush()
    assert parser.pending == 0


def test_hello_round_trip_keeps_float_bits():
    hello = hello_example()
    decoded = Hello.decode(hello.encode())
    assert decoded == hello
    assert decoded.input_scale == np.float32(0.025)
    assert decoded.output_zero_point == -128
    assert len(hello.encode()) <= protocol.MAX_PAYLOAD


def test_hello_texts_are_bounded():
    hello = hello_example(board="b" * 100)
    assert Hello.decode(hello.encode()).board == "b" * protocol.MAX_TEXT


def test_short_hello_is_a_link_error():
    with pytest.raises(LinkError, match="HELLO reply"):
        Hello.decode(hello_example().encode()[:30])
    with pytest.raises(LinkError, match="text field"):
        Hello.decode(hello_example().encode()[:-3])


def test_result_and_error_round_trip():
    result = Result(ticks=123456, input_crc=0xBEEF, output=bytes([0x80, 0x7F, 0x00]))
    assert Result.decode(result.encode(), 3) == result
    assert Result.decode(result.encode(), 3).output_int8().tolist() == [-128, 127, 0]
    with pytest.raises(LinkError, match="3 classes"):
        Result.decode(result.encode()[:-1], 3)
    error = ErrorReply(protocol.ERR_ENGINE, protocol.INFER, 77, -5)
    assert ErrorReply.decode(error.encode()) == error
    assert error.name == "engine failure"


def test_missing_port_is_a_clear_link_error(tmp_path):
    with pytest.raises(LinkError) as info:
        protocol.open_serial(str(tmp_path / "ttyUSB9"))
    assert "does not exist" in info.value.message
    assert "ttyUSB9" in info.value.message
    assert info.value.hint


def test_loopback_port_handshake_times_out_with_hint():
    # A loopback port echoes the HELLO request, which is not a reply: no answer.
    link = protocol.open_link("loop://")
    with pytest.raises(LinkError) as info, link:
        link.hello(timeout_s=0.05, attempts=2)
    assert "bootloader" in info.value.hint


def test_select_samples_all_rows_when_no_limit():
    assert select_samples(np.array([0, 1, 1]), None).tolist() == [0, 1, 2]
    assert select_samples(np.array([0, 1, 1]), 10).tolist() == [0, 1, 2]


def test_select_samples_is_stratified_and_keeps_rare_classes():
    labels = np.array([0] * 900 + [1] * 95 + [2] * 5)
    picked = select_samples(labels, 100, seed=3)
    assert len(picked) == 100
    assert len(np.unique(picked)) == 100
    counts = np.bincount(labels[picked], minlength=3)
    assert counts.tolist() == [90, 9, 1] or counts.tolist() == [89, 10, 1]
    assert np.all(np.diff(picked) > 0)
    assert select_samples(labels, 100, seed=3).tolist() == picked.tolist()


def test_select_samples_one_row_per_class_at_the_minimum():
    labels = np.array([0] * 50 + [1] + [2] * 3)
    picked = select_samples(labels, 3)
    assert sorted(labels[picked].tolist()) == [0, 1, 2]
    with pytest.raises(DataError, match="3 classes"):
        select_samples(labels, 2)


def test_load_results_tolerates_a_truncated_last_line(tmp_path):
    lines = [json.dumps({"index": i}) for i in range(3)]
    (tmp_path / RESULTS_FILE).write_text("\n".join(lines) + '\n{"index": 3, "outp')
    assert [r["index"] for r in load_results(tmp_path)] == [0, 1, 2]
    (tmp_path / RESULTS_FILE).write_text(lines[0] + "\n{broken\n" + lines[1] + "\n")
    with pytest.raises(McuIdsError, match="line 2"):
        load_results(tmp_path)


def test_report_of_a_run_stopped_before_any_row(tmp_path):
    report = write_bench_report(
        tmp_path,
        [],
        handshake=hello_example().to_dict(),
        class_names=["a", "b"],
        meta={"complete": False, "rows_requested": 5},
    )
    assert report["rows"] == 0
    assert "stopped early" in (tmp_path / "report.md").read_text()


def test_report_latency_and_agreement(tmp_path):
    results = [
        {
            "label": i % 2,
            "output": [10, 0] if i < 3 else [0, 10],
            "predicted": 0 if i < 3 else 1,
            "reference": [10, 0] if i < 2 else [0, 10],
            "reference_predicted": 0 if i < 2 else 1,
            "identical": i != 2,
            "ticks": 168 * (i + 1),
            "round_trip_s": 0.001,
        }
        for i in range(4)
    ]
    hello = hello_example().to_dict()
    report = write_bench_report(tmp_path, results, handshake=hello, class_names=["a", "b"], meta={})
    assert report["agreement"]["identical_outputs"] == 3
    assert report["agreement"]["same_predicted_class"] == 3
    assert report["agreement"]["max_abs_output_diff"] == 10
    # 168 ticks at 168 MHz is one microsecond; ticks 168..672 have median 420.
    # Emulated ticks: 1e9 / 168e6 instructions each, timed at one per cycle of the 168 MHz clock.
    assert report["latency"]["device"]["us"]["median"] == pytest.approx(2.5 * 1e9 / 168e6)
    # labels 0,1,0,1; device predicts 0,0,0,1 (3 right); the reference 0,0,1,1 (2 right).
    assert report["device_metrics"]["accuracy"] == pytest.approx(0.75)
    assert report["reference_metrics"]["accuracy"] == pytest.approx(0.5)
    for name in ("report.json", "report.md", "latency.png", "device_metrics_confusion.csv"):
        assert (tmp_path / name).stat().st_size > 0
