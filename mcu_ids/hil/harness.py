"""Stream a test set to a device over the serial protocol and record what it answers.

Every answer is written to ``results.jsonl`` as it arrives, so an interrupted run keeps all it
received; the report is written from that file at the end, or at the interruption.
"""

import hashlib
import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcu_ids.errors import DataError, LinkError, McuIdsError
from mcu_ids.fileio import write_json
from mcu_ids.hil import protocol
from mcu_ids.hil.protocol import DeviceLink, ErrorReply, Frame, Hello, Result
from mcu_ids.hil.report import FAILURES_FILE, RESULTS_FILE, load_results, write_bench_report

log = logging.getLogger(__name__)

HANDSHAKE_FILE = "handshake.json"
RUN_FILE = "run.json"
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_ATTEMPTS = 3
# The handshake is tried at least this often before the device is declared silent.
HELLO_ATTEMPTS = 3
# fsync costs milliseconds; every this many rows bounds what a power cut can lose.
FSYNC_EVERY_ROWS = 256
# Most INFER requests kept in flight, whatever the device's buffer would allow.
MAX_WINDOW = 32
# Tick kinds whose per-row counts repeat exactly unless requests arrive during an inference.
EXACT_TICK_KINDS = ("emulated-instructions",)
# How often the boot id is asked for during a run, to notice restarts that lost nothing.
BOOT_ID_PROBE_INTERVAL_S = 1.0
# This many rows failing in a row with no answer from the device ends the run.
SILENT_FAILURE_LIMIT = 3
# Errors that no row can get past: the firmware does not fit the data.
_FATAL_ERRORS = (protocol.ERR_INPUT_SIZE, protocol.ERR_ENGINE_INIT)


@dataclass
class BenchResult:
    """What a benchmark run produced."""

    out_dir: Path
    handshake: dict
    rows_requested: int
    rows_received: int
    report: dict
    link_stats: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.rows_received == self.rows_requested

    @property
    def results_path(self) -> Path:
        return self.out_dir / RESULTS_FILE


def select_samples(labels: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """Indices of the rows to send: all of them, or a stratified subset of ``limit`` rows.

    The subset keeps each class's share as closely as whole rows allow, and at least one row of
    every class present. Indices come back sorted, so rows keep their order in the data.
    """
    labels = np.asarray(labels)
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    if limit < len(classes):
        raise DataError(
            f"--limit {limit} is below the {len(classes)} classes present in the data",
            hint=f"use a limit of at least {len(classes)} so every class keeps one row",
        )
    quota = counts * (limit / len(labels))
    take = np.clip(np.floor(quota).astype(np.int64), 1, counts)
    # Largest remainders get the rows still to give; classes over quota give back first.
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    while take.sum() < limit:
        for index in order:
            if take.sum() < limit and take[index] < counts[index]:
                take[index] += 1
    while take.sum() > limit:
        index = int(np.argmax(np.where(take > 1, take - quota, -np.inf)))
        take[index] -= 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(labels == cls), size=int(n), replace=False)
        for cls, n in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def check_device(
    hello: Hello,
    *,
    expected_model_sha256: str,
    n_features: int,
    n_classes: int,
    expected_quantization: tuple[float, int, float, int] | None = None,
) -> None:
    """Refuse a device that runs another model, or a protocol this harness does not speak."""
    where = f"the device ({hello.board}, {hello.engine} engine)"
    rebuild = "rebuild and flash the firmware for this model: `mcu-ids build` then `mcu-ids flash`"
    if hello.protocol_version != protocol.PROTOCOL_VERSION:
        raise LinkError(
            f"{where} speaks protocol version {hello.protocol_version}, this harness speaks "
            f"{protocol.PROTOCOL_VERSION}",
            hint="use the same mcu-ids version for the firmware and the benchmark",
        )
    if hello.model_sha256.lower() != expected_model_sha256.lower():
        raise LinkError(
            f"{where} runs model sha256 {hello.model_sha256}, but the benchmark expects "
            f"{expected_model_sha256}",
            hint=rebuild,
        )
    if (hello.n_features, hello.n_classes) != (n_features, n_classes):
        raise LinkError(
            f"{where} takes {hello.n_features} features and gives {hello.n_classes} classes; "
            f"the test data has {n_features} features and {n_classes} classes",
            hint=rebuild,
        )
    if expected_quantization is not None:
        in_scale, in_zp, out_scale, out_zp = expected_quantization
        device = (hello.input_scale, hello.input_zero_point)
        device += (hello.output_scale, hello.output_zero_point)
        expected = (float(np.float32(in_scale)), in_zp, float(np.float32(out_scale)), out_zp)
        if device != expected:
            raise LinkError(
                f"{where} quantizes with (input scale, zero point, output scale, zero point) "
                f"{device}, the model uses {expected}",
                hint=rebuild,
            )
    if hello.engine_status != 0:
        raise LinkError(
            f"{where} failed to initialise its engine (status {hello.engine_status})",
            hint="for TFLite Micro this is often a too small tensor arena; see the build log",
        )


@dataclass
class _Pending:
    """One row on its way through the link: what was sent, when, and how often."""

    index: int
    payload: bytes
    input_crc: int
    attempts: int = 0
    seq: int = -1
    sent_at: float = 0.0
    reason: str = ""


@dataclass
class Outcome:
    """How one row ended: a RESULT, or a failure with the reason of its last attempt."""

    index: int
    result: Result | None
    round_trip_s: float
    attempts: int
    reason: str = ""


def default_window(hello: Hello) -> int:
    """The most requests to keep in flight when the caller does not say.

    A count of emulated instructions is exact only when no byte arrives during the inference:
    a request received meanwhile adds its receive interrupts to the count (measured on qemu-f405:
    up to 75 ticks on a few rows, and the per-row median moving by up to 14 ticks between runs).
    Such devices get one request at a time, so their per-row counts repeat; real boards pipeline.
    """
    return 1 if hello.tick_kind in EXACT_TICK_KINDS else MAX_WINDOW


def pipeline_window(hello: Hello, n_features: int, limit: int = MAX_WINDOW) -> int:
    """How many INFER requests may be in flight without overflowing the device's receive buffer.

    Firmware that does not state its buffer gets one request at a time.
    """
    frame = protocol.HEADER_SIZE + n_features + protocol.CRC_SIZE
    return max(1, min(limit, hello.rx_buffer_bytes // frame))


class DeviceSession:
    """The device link during one run: keeps rows in flight, retries, notices device resets.

    Every transmission gets a fresh seq, and a RESULT is taken only for a seq in flight whose
    echoed input CRC matches what was sent under it, so a late, duplicated or damaged answer is
    never attributed to another row. A timeout sends HELLO: a new boot id means the device
    restarted and lost what was in flight, which is sent again at once.
    """

    def __init__(self, link: DeviceLink, hello: Hello, timeout_s: float, attempts: int, window=1):
        self.link = link
        self.hello = hello
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.window = max(1, int(window))
        self.stats = {
            "retries": 0,
            "stale_frames": 0,
            "device_resets": 0,
            "crc_mismatches": 0,
            "timeouts": 0,
            "error_replies": 0,
            "damaged_replies": 0,
            "failed": 0,
            "window": self.window,
            "max_outstanding": 0,
        }
        self._todo: deque[_Pending] = deque()
        self._in_flight: dict[int, _Pending] = {}
        self._hello_seq: int | None = None
        self._hello_sent_at = time.perf_counter()
        self._done: deque[Outcome] = deque()
        self._silent_failures = 0
        self._gave_up: LinkError | None = None

    def run(self, rows: Iterable[tuple[int, np.ndarray]]) -> Iterator[Outcome]:
        """Send every ``(index, features)`` row; yield each row's outcome as it is settled."""
        for index, features in rows:
            payload = np.ascontiguousarray(features, dtype=np.int8).tobytes()
            self._todo.append(_Pending(index, payload, protocol.crc16(payload)))
        while self._todo or self._in_flight:
            self._fill_window()
            self._step()
            while self._done:
                yield self._done.popleft()
            if self._gave_up is not None:
                raise self._gave_up
        self._confirm_boot_id()

    def _confirm_boot_id(self) -> None:
        """A restart between two requests loses nothing and shows nowhere else: ask at the end."""
        try:
            hello = self.link.hello(self.timeout_s, attempts=max(HELLO_ATTEMPTS, self.attempts))
        except LinkError as exc:
            log.warning("the device did not answer the closing HELLO: %s", exc.message)
            return
        self._on_hello(hello)

    def infer(self, features: np.ndarray, label: str) -> tuple[Result, float, int]:
        """Send one row until a RESULT for exactly this transmission arrives, or raise."""
        (outcome,) = list(self.run([(0, features)]))
        if outcome.result is None:
            raise LinkError(
                f"no valid answer for {label} after {outcome.attempts} attempts on "
                f"{self.link.port}: {outcome.reason}",
                hint="check the cable, or lower the baud rate",
            )
        return outcome.result, outcome.round_trip_s, outcome.attempts

    def _fill_window(self) -> None:
        while self._todo and len(self._in_flight) < self.window:
            self._transmit(self._todo.popleft())
        self.stats["max_outstanding"] = max(self.stats["max_outstanding"], len(self._in_flight))

    def _transmit(self, pending: _Pending) -> None:
        if pending.attempts > 0:
            self.stats["retries"] += 1
        pending.attempts += 1
        pending.seq = self.link.next_seq()
        pending.sent_at = time.perf_counter()
        self._in_flight[pending.seq] = pending
        self.link.send(protocol.encode_frame(protocol.INFER, pending.seq, pending.payload))

    def _deadline(self) -> float:
        oldest = min(pending.sent_at for pending in self._in_flight.values())
        if self._hello_seq is not None:
            oldest = min(oldest, self._hello_sent_at)
        return oldest + self.timeout_s

    def _probe_now_and_then(self) -> None:
        """Ask for the boot id every few seconds: a restart between requests loses nothing."""
        if time.perf_counter() - self._hello_sent_at >= BOOT_ID_PROBE_INTERVAL_S:
            self._send_hello()

    def _step(self) -> None:
        self._probe_now_and_then()
        deadline = self._deadline()
        event = self.link.receive(max(0.0, deadline - time.perf_counter()))
        if isinstance(event, Frame):
            self._on_frame(event)
        elif event is not None:
            self._on_damaged(event)
        # Checked after every event too: steady traffic must not hide a request that expired.
        if time.perf_counter() >= deadline:
            self._on_timeout()

    def _on_timeout(self) -> None:
        now = time.perf_counter()
        if self._hello_seq is not None and now - self._hello_sent_at >= self.timeout_s:
            self._hello_seq = None
        expired = [p for p in self._in_flight.values() if now - p.sent_at >= self.timeout_s]
        self.stats["timeouts"] += len(expired)
        # Queued at the front newest first, so the oldest is sent again first.
        for pending in sorted(expired, key=lambda p: p.sent_at, reverse=True):
            self._retry(pending, f"no answer within {self.timeout_s:g} s")
        self._send_hello()

    def _send_hello(self) -> None:
        if self._hello_seq is None:
            self._hello_seq = self.link.next_seq()
            self._hello_sent_at = time.perf_counter()
            self.link.send(protocol.encode_hello(self._hello_seq))

    def _retry(self, pending: _Pending, reason: str) -> None:
        """Take ``pending`` out of flight and queue it again, or settle it as failed."""
        self._in_flight.pop(pending.seq, None)
        pending.reason = reason
        if pending.attempts >= self.attempts:
            self._fail(pending)
        else:
            self._todo.appendleft(pending)
        # Any trouble may be a restart that the replies of a new device would hide.
        self._send_hello()

    def _fail(self, pending: _Pending, *, device_answered: bool = False) -> None:
        self._in_flight.pop(pending.seq, None)
        self.stats["failed"] += 1
        log.warning(
            "row %d failed after %d attempts: %s", pending.index, pending.attempts, pending.reason
        )
        self._done.append(Outcome(pending.index, None, 0.0, pending.attempts, pending.reason))
        self._silent_failures = 0 if device_answered else self._silent_failures + 1
        if self._silent_failures >= max(SILENT_FAILURE_LIMIT, self.window + 1):
            # Raised by run() once this row's outcome has been handed out.
            self._gave_up = LinkError(
                f"the device on {self.link.port} stopped answering: {self._silent_failures} rows "
                f"in a row failed ({pending.reason})",
                hint="the results so far are kept; check the cable and power, then continue "
                "with `mcu-ids bench --resume RUN_DIR`",
            )

    def _on_damaged(self, fault: protocol.Fault) -> None:
        """A reply arrived damaged; its header may name the request it answered."""
        self.stats["damaged_replies"] += 1
        if fault.type == protocol.HELLO_REPLY and fault.seq == self._hello_seq:
            self._hello_seq = None
            self._send_hello()
            return
        pending = self._in_flight.get(fault.seq)
        if pending is not None and fault.type == protocol.RESULT:
            self._retry(pending, f"the answer arrived damaged ({protocol.ERROR_NAMES[fault.code]})")

    def _on_frame(self, frame: Frame) -> None:
        if frame.type == protocol.HELLO_REPLY and frame.seq == self._hello_seq:
            self._hello_seq = None
            self._on_hello(Hello.decode(frame.payload))
            return
        pending = self._in_flight.get(frame.seq)
        if pending is None:
            self.stats["stale_frames"] += 1
            log.debug("ignoring a frame of type %#x with seq %d", frame.type, frame.seq)
            return
        self._retry_overtaken(pending)
        if frame.type == protocol.RESULT:
            self._on_result(pending, Result.decode(frame.payload, self.hello.n_classes))
        elif frame.type == protocol.ERROR:
            self._on_error(pending, ErrorReply.decode(frame.payload))
        else:
            self.stats["stale_frames"] += 1

    def _retry_overtaken(self, answered: _Pending) -> None:
        """Resend what was sent before ``answered``: the device answers in order, so it is lost."""
        lost = [p for p in self._in_flight.values() if p.sent_at < answered.sent_at]
        for pending in sorted(lost, key=lambda p: p.sent_at, reverse=True):
            self._retry(pending, "a later request was answered first (lost on the way)")

    def _on_result(self, pending: _Pending, result: Result) -> None:
        if result.input_crc != pending.input_crc:
            self.stats["crc_mismatches"] += 1
            log.warning("the device answered row %d for a different input", pending.index)
            self._retry(pending, "the answer echoed another input's CRC")
            return
        del self._in_flight[pending.seq]
        self._silent_failures = 0
        round_trip = time.perf_counter() - pending.sent_at
        self._done.append(Outcome(pending.index, result, round_trip, pending.attempts))

    def _on_error(self, pending: _Pending, error: ErrorReply) -> None:
        self.stats["error_replies"] += 1
        if error.code in _FATAL_ERRORS:
            raise LinkError(
                f"the device refused row {pending.index}: {error.name} (detail {error.detail})",
                hint="check that the firmware was built for this model",
            )
        if error.code == protocol.ERR_ENGINE:
            # The engine fails the same way on the same input: resending cannot help.
            pending.reason = f"{error.name} (detail {error.detail})"
            self._fail(pending, device_answered=True)
            return
        log.info("the device reported %s for row %d; resending", error.name, pending.index)
        self._retry(pending, f"the device reported {error.name}")

    def _on_hello(self, hello: Hello) -> None:
        log.debug("HELLO reply: boot id %08x", hello.boot_id)
        if hello.boot_id == self.hello.boot_id:
            return
        self.stats["device_resets"] += 1
        log.warning(
            "the device restarted during the run (boot id %08x -> %08x)",
            self.hello.boot_id,
            hello.boot_id,
        )
        if hello.model_sha256 != self.hello.model_sha256:
            raise LinkError(
                f"after a restart the device runs model {hello.model_sha256}, "
                f"not {self.hello.model_sha256}",
                hint="do not reflash the device during a benchmark",
            )
        self.hello = hello
        # Whatever was in flight before the restart is lost; send it again now.
        for pending in sorted(self._in_flight.values(), key=lambda p: p.sent_at, reverse=True):
            self._retry(pending, "the device restarted")


def stream_rows(
    link: DeviceLink,
    hello: Hello,
    inputs: np.ndarray,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    attempts: int = DEFAULT_ATTEMPTS,
    window: int | None = None,
) -> tuple[list[Outcome], dict]:
    """Send every row of ``inputs`` over an open link after a handshake; no files written.

    Returns each row's outcome (in the order they were settled) and the link statistics.
    """
    inputs = np.asarray(inputs, dtype=np.int8)
    limit = default_window(hello) if window is None else window
    session = DeviceSession(
        link, hello, timeout_s, attempts, pipeline_window(hello, inputs.shape[1], limit)
    )
    outcomes = list(session.run(enumerate(inputs)))
    return outcomes, session.stats


def result_record(index, sample_id, label, result, reference, round_trip_s, attempts) -> dict:
    output = result.output_int8()
    return {
        "index": int(index),
        "sample": sample_id.item() if isinstance(sample_id, np.generic) else sample_id,
        "label": int(label),
        "output": output.tolist(),
        "predicted": int(np.argmax(output)),
        "reference": reference.tolist(),
        "reference_predicted": int(np.argmax(reference)),
        "identical": bool(np.array_equal(output, reference)),
        "ticks": int(result.ticks),
        "shift_score": int(result.shift_score),
        "round_trip_s": round(float(round_trip_s), 9),
        "attempts": int(attempts),
    }


def outcome_record(
    outcome: Outcome, *, sample_ids, labels, reference, reference_shift, port: str, boot_id: int
) -> dict:
    """The ``results.jsonl`` line of a row the device answered, with the port and boot id."""
    index = outcome.index
    record = result_record(
        index,
        sample_ids[index],
        labels[index],
        outcome.result,
        reference[index],
        outcome.round_trip_s,
        outcome.attempts,
    )
    record["port"] = port
    record["boot_id"] = boot_id
    if reference_shift is not None:
        record["reference_shift_score"] = int(reference_shift[index])
    return record


def connect_device(
    port: str,
    *,
    baud: int,
    timeout_s: float,
    attempts: int,
    expected_model_sha256: str,
    shape: tuple[int, int],
    expected_quantization: tuple[float, int, float, int] | None = None,
) -> tuple[DeviceLink, Hello]:
    """Open ``port``, handshake and refuse a device that runs another model; the link stays open."""
    link = protocol.open_link(port, baud)
    try:
        hello = link.hello(timeout_s, attempts=max(HELLO_ATTEMPTS, attempts))
        check_device(
            hello,
            expected_model_sha256=expected_model_sha256,
            n_features=shape[0],
            n_classes=shape[1],
            expected_quantization=expected_quantization,
        )
    except BaseException:
        link.close()
        raise
    log.info(
        "device %s (%s engine, firmware %s, boot id %08x) on %s",
        hello.board,
        hello.engine,
        hello.firmware_version,
        hello.boot_id,
        port,
    )
    return link, hello


def check_shapes(inputs, labels, reference, sample_ids) -> None:
    if inputs.ndim != 2 or reference.ndim != 2:
        raise DataError(
            f"inputs must be (rows, features) and reference (rows, classes); got "
            f"{inputs.shape} and {reference.shape}"
        )
    rows = {len(inputs), len(labels), len(reference)}
    if sample_ids is not None:
        rows.add(len(sample_ids))
    if len(rows) != 1:
        raise DataError(
            f"inputs, labels, reference and sample ids differ in row count: {sorted(rows)}",
            hint="select the same rows from each",
        )


def run_benchmark(
    port: str,
    inputs: np.ndarray,
    labels: np.ndarray,
    reference: np.ndarray,
    *,
    expected_model_sha256: str,
    class_names: list[str],
    out_dir: Path,
    baud: int = 115200,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,
    sample_ids: np.ndarray | None = None,
    expected_quantization: tuple[float, int, float, int] | None = None,
    meta: dict | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    reference_shift: np.ndarray | None = None,
    resume: bool = False,
    window: int | None = None,
) -> BenchResult:
    """Handshake with the device on ``port``, send every row of ``inputs`` and write the report.

    ``inputs`` are int8 rows already quantized with the model's input parameters, ``reference``
    the int8 outputs of the golden reference for the same rows; ``reference_shift`` the host's
    distribution-shift scores of the rows, compared with the device's. A device running another
    model (hash, shape or ``expected_quantization`` differ) is refused before anything is sent.

    Each row is sent up to ``attempts`` times; a row that still gets no valid answer is written
    to ``failures.jsonl`` with the reason. With ``resume``, ``out_dir`` holds an interrupted run
    of the same rows and model: rows already answered there are kept and not sent again.
    ``window`` caps the requests in flight (default: ``default_window``, within what the device's
    buffer holds).
    """
    inputs = np.asarray(inputs, dtype=np.int8)
    labels = np.asarray(labels)
    reference = np.asarray(reference, dtype=np.int8)
    check_shapes(inputs, labels, reference, sample_ids)
    sample_ids = np.arange(len(inputs)) if sample_ids is None else np.asarray(sample_ids)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = run_plan(inputs, reference, sample_ids, expected_model_sha256)
    done = resume_state(out_dir, plan) if resume else set()
    from tqdm import tqdm

    link, hello = connect_device(
        port,
        baud=baud,
        timeout_s=timeout_s,
        attempts=attempts,
        expected_model_sha256=expected_model_sha256,
        shape=(inputs.shape[1], reference.shape[1]),
        expected_quantization=expected_quantization,
    )
    with link:
        write_json(out_dir / HANDSHAKE_FILE, hello.to_dict())
        if not resume:
            write_json(out_dir / RUN_FILE, plan)
            (out_dir / FAILURES_FILE).unlink(missing_ok=True)
        limit = default_window(hello) if window is None else window
        session = DeviceSession(
            link, hello, timeout_s, attempts, pipeline_window(hello, inputs.shape[1], limit)
        )
        run_meta = {
            **(meta or {}),
            "port": port,
            "baud": baud,
            "rows_requested": len(inputs),
            "expected_model_sha256": expected_model_sha256,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "resumed_rows": len(done),
        }
        todo = [(index, inputs[index]) for index in range(len(inputs)) if index not in done]
        received = len(done)
        failed = 0
        bar = tqdm(
            total=len(inputs), initial=received, unit="row", file=sys.stderr, disable=not progress
        )
        sink = ResultSink(out_dir, append=resume)
        try:
            for outcome in session.run(todo):
                index = outcome.index
                if outcome.result is None:
                    sink.failure(index, sample_ids[index], outcome)
                    failed += 1
                    continue
                sink.result(
                    outcome_record(
                        outcome,
                        sample_ids=sample_ids,
                        labels=labels,
                        reference=reference,
                        reference_shift=reference_shift,
                        port=port,
                        boot_id=session.hello.boot_id,
                    )
                )
                received += 1
                bar.update(1)
        except BaseException:
            sink.close()
            bar.close()
            log.warning(
                "run stopped after %d of %d rows; writing the report", received, len(inputs)
            )
            try:
                finish_run(out_dir, hello, session.stats, class_names, run_meta, complete=False)
            except Exception as exc:  # the original failure matters more than the report's
                log.error("could not write the report of the stopped run: %s", exc)
            raise
        sink.close()
        bar.close()
    if failed:
        log.warning("%d of %d rows got no valid answer; see %s", failed, len(inputs), FAILURES_FILE)
    report = finish_run(
        out_dir, hello, session.stats, class_names, run_meta, complete=received == len(inputs)
    )
    return BenchResult(out_dir, hello.to_dict(), len(inputs), received, report, session.stats)


def run_plan(inputs, reference, sample_ids, model_sha256: str) -> dict:
    """What identifies a run's work: the model, the rows chosen, their inputs and references."""
    return {
        "model_sha256": model_sha256,
        "rows": int(len(inputs)),
        "sample_ids": [s.item() if isinstance(s, np.generic) else s for s in sample_ids],
        "inputs_sha256": hashlib.sha256(np.ascontiguousarray(inputs).tobytes()).hexdigest(),
        "reference_sha256": hashlib.sha256(np.ascontiguousarray(reference).tobytes()).hexdigest(),
    }


def read_run_plan(out_dir: Path) -> dict:
    """The plan a run recorded when it started; McuIdsError if there is none."""
    path = Path(out_dir) / RUN_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise McuIdsError(
            f"{out_dir} holds no {RUN_FILE}: it is not a benchmark run folder",
            hint="give the folder of an interrupted run, e.g. work/runs/<stamp>-<board>",
        ) from None
    except (OSError, ValueError) as exc:
        raise McuIdsError(
            f"{path} cannot be read: {exc}", hint="the run folder is damaged; start a new run"
        ) from exc


def resume_state(out_dir: Path, plan: dict) -> set[int]:
    """Indices already answered in an interrupted run of the same plan; trims a torn last line."""
    recorded = read_run_plan(out_dir)
    for key in ("model_sha256", "rows", "sample_ids", "inputs_sha256", "reference_sha256"):
        if recorded.get(key) != plan[key]:
            shown = {"sample_ids": "the selected samples"}.get(key, key)
            raise McuIdsError(
                f"cannot resume {out_dir}: {shown} differ from the interrupted run's "
                f"({recorded.get(key) if key != 'sample_ids' else '...'} recorded)",
                hint="resume with the same model, data, --limit and --seed, or start a new run",
            )
    _trim_torn_line(out_dir / RESULTS_FILE)
    indices = [row["index"] for row in load_results(out_dir)]
    done = set(indices)
    if len(done) != len(indices):
        raise McuIdsError(
            f"{out_dir / RESULTS_FILE} holds some rows twice",
            hint="the file was edited or two runs wrote to it; start a new run",
        )
    log.info("resuming %s: %d of %d rows already answered", out_dir, len(done), plan["rows"])
    return done


def _trim_torn_line(path: Path) -> None:
    """Cut an unfinished last line (a run killed mid-write) so appended rows start cleanly."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        log.warning("%s: dropping an unfinished last line of %d bytes", path, len(data) - keep)
        with open(path, "r+b") as handle:
            handle.truncate(keep)
            os.fsync(handle.fileno())


class ResultSink:
    """Appends results and failures as they arrive; fsyncs every few rows and at the end."""

    def __init__(self, out_dir: Path, *, append: bool) -> None:
        mode = "a" if append else "w"
        self._results = open(out_dir / RESULTS_FILE, mode, encoding="utf-8")  # noqa: SIM115
        self._failures_path = out_dir / FAILURES_FILE
        self._failures = None
        self._rows = 0

    def result(self, record: dict) -> None:
        self._results.write(json.dumps(record) + "\n")
        self._results.flush()
        self._rows += 1
        if self._rows % FSYNC_EVERY_ROWS == 0:
            os.fsync(self._results.fileno())

    def failure(self, index: int, sample_id, outcome: Outcome) -> None:
        if self._failures is None:
            self._failures = open(self._failures_path, "a", encoding="utf-8")  # noqa: SIM115
        record = {
            "index": int(index),
            "sample": sample_id.item() if isinstance(sample_id, np.generic) else sample_id,
            "attempts": outcome.attempts,
            "reason": outcome.reason,
        }
        self._failures.write(json.dumps(record) + "\n")
        self._failures.flush()

    def close(self) -> None:
        for handle in (self._results, self._failures):
            if handle is not None and not handle.closed:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()


def load_failures(out_dir: Path) -> list[dict]:
    """The rows of a run that got no valid answer, with the reason of each."""
    path = Path(out_dir) / FAILURES_FILE
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip().endswith("}")]


def finish_run(out_dir, hello, link_stats, class_names, run_meta, *, complete: bool) -> dict:
    """Write the run's reports from what ``results.jsonl`` and ``failures.jsonl`` hold now."""
    meta = {
        **run_meta,
        "complete": complete,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "link": dict(link_stats),
        "rows_failed": len(load_failures(out_dir)),
    }
    return write_bench_report(
        out_dir,
        load_results(out_dir),
        handshake=hello.to_dict(),
        class_names=class_names,
        meta=meta,
    )
