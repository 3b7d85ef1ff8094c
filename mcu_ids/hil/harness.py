"""Stream a test set to a device over the serial protocol and record what it answers.

Every answer is written to ``results.jsonl`` as it arrives, so an interrupted run keeps all it
received; the report is written from that file at the end, or at the interruption.
"""

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcu_ids.errors import DataError, LinkError
from mcu_ids.fileio import write_json
from mcu_ids.hil import protocol
from mcu_ids.hil.protocol import DeviceLink, ErrorReply, Frame, Hello, Result
from mcu_ids.hil.report import RESULTS_FILE, load_results, write_bench_report

log = logging.getLogger(__name__)

HANDSHAKE_FILE = "handshake.json"
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_ATTEMPTS = 3
# fsync costs milliseconds; every this many rows bounds what a power cut can lose.
FSYNC_EVERY_ROWS = 256
# Errors that repeating the same request cannot fix.
_FATAL_ERRORS = (protocol.ERR_INPUT_SIZE, protocol.ERR_ENGINE, protocol.ERR_ENGINE_INIT)


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


class _Session:
    """The device link during one run: sends rows, retries, notices device resets."""

    def __init__(self, link: DeviceLink, hello: Hello, timeout_s: float, attempts: int):
        self.link = link
        self.hello = hello
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.stats = {"retries": 0, "stale_frames": 0, "device_resets": 0, "crc_mismatches": 0}

    def infer(self, features: np.ndarray, label: str) -> tuple[Result, float, int]:
        """Send one row until a RESULT for exactly this transmission arrives."""
        payload = np.ascontiguousarray(features, dtype=np.int8).tobytes()
        input_crc = protocol.crc16(payload)
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                self.stats["retries"] += 1
            # A fresh seq per transmission: a late answer to an earlier try is never taken.
            seq = self.link.next_seq()
            start = time.perf_counter()
            self.link.send(protocol.encode_frame(protocol.INFER, seq, payload))
            result = self._await_result(seq, start, input_crc, label)
            if result is not None:
                return result, time.perf_counter() - start, attempt
            self._check_reset()
        raise LinkError(
            f"no valid answer for {label} after {self.attempts} attempts on {self.link.port}",
            hint="the results so far are kept; check the cable, or lower the baud rate",
        )

    def _await_result(self, seq: int, start: float, input_crc: int, label: str) -> Result | None:
        deadline = start + self.timeout_s
        while (remaining := deadline - time.perf_counter()) > 0:
            event = self.link.receive(remaining)
            if event is None:
                break
            if not isinstance(event, Frame) or event.seq != seq:
                self.stats["stale_frames"] += 1
                log.debug("ignoring %s while waiting for seq %d", event, seq)
                continue
            if event.type == protocol.RESULT:
                result = Result.decode(event.payload, self.hello.n_classes)
                if result.input_crc == input_crc:
                    return result
                self.stats["crc_mismatches"] += 1
                log.warning("the device answered %s for a different input; resending", label)
                return None
            if event.type == protocol.ERROR:
                error = ErrorReply.decode(event.payload)
                if error.code in _FATAL_ERRORS:
                    raise LinkError(
                        f"the device refused {label}: {error.name} (detail {error.detail})",
                        hint="check that the firmware was built for this model",
                    )
                log.info("the device reported %s for %s; resending", error.name, label)
                return None
            self.stats["stale_frames"] += 1
        return None

    def _check_reset(self) -> None:
        hello = self.link.hello(self.timeout_s)
        if hello.boot_id != self.hello.boot_id:
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


def _record(index, sample_id, label, result, reference, round_trip_s, attempts) -> dict:
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


def _check_shapes(inputs, labels, reference, sample_ids) -> None:
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
) -> BenchResult:
    """Handshake with the device on ``port``, send every row of ``inputs`` and write the report.

    ``inputs`` are int8 rows already quantized with the model's input parameters, ``reference``
    the int8 outputs of the golden reference for the same rows; ``reference_shift`` the host's
    distribution-shift scores of the rows, compared with the device's. A device running another
    model (hash, shape or ``expected_quantization`` differ) is refused before anything is sent.
    """
    inputs = np.asarray(inputs, dtype=np.int8)
    labels = np.asarray(labels)
    reference = np.asarray(reference, dtype=np.int8)
    _check_shapes(inputs, labels, reference, sample_ids)
    sample_ids = np.arange(len(inputs)) if sample_ids is None else np.asarray(sample_ids)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    with protocol.open_link(port, baud) as link:
        hello = link.hello(timeout_s)
        check_device(
            hello,
            expected_model_sha256=expected_model_sha256,
            n_features=inputs.shape[1],
            n_classes=reference.shape[1],
            expected_quantization=expected_quantization,
        )
        log.info(
            "device %s (%s engine, firmware %s, boot id %08x) on %s",
            hello.board,
            hello.engine,
            hello.firmware_version,
            hello.boot_id,
            port,
        )
        write_json(out_dir / HANDSHAKE_FILE, hello.to_dict())
        session = _Session(link, hello, timeout_s, attempts)
        run_meta = {
            **(meta or {}),
            "port": port,
            "baud": baud,
            "rows_requested": len(inputs),
            "expected_model_sha256": expected_model_sha256,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        received = 0
        results_path = out_dir / RESULTS_FILE
        bar = tqdm(total=len(inputs), unit="row", file=sys.stderr, disable=not progress)
        handle = open(results_path, "w", encoding="utf-8")  # noqa: SIM115
        try:
            for index in range(len(inputs)):
                label = f"row {index} (sample {sample_ids[index]})"
                result, round_trip_s, tries = session.infer(inputs[index], label)
                record = _record(
                    index,
                    sample_ids[index],
                    labels[index],
                    result,
                    reference[index],
                    round_trip_s,
                    tries,
                )
                if reference_shift is not None:
                    record["reference_shift_score"] = int(reference_shift[index])
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                received += 1
                if received % FSYNC_EVERY_ROWS == 0:
                    os.fsync(handle.fileno())
                bar.update(1)
        except BaseException:
            _close_results(handle)
            bar.close()
            log.warning(
                "run stopped after %d of %d rows; writing the report", received, len(inputs)
            )
            try:
                _finish(out_dir, hello, session, class_names, run_meta, complete=False)
            except Exception as exc:  # the original failure matters more than the report's
                log.error("could not write the report of the stopped run: %s", exc)
            raise
        _close_results(handle)
        bar.close()
    report = _finish(out_dir, hello, session, class_names, run_meta, complete=True)
    return BenchResult(out_dir, hello.to_dict(), len(inputs), received, report, session.stats)


def _close_results(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _finish(out_dir, hello, session, class_names, run_meta, *, complete: bool) -> dict:
    meta = {
        **run_meta,
        "complete": complete,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "link": dict(session.stats),
    }
    return write_bench_report(
        out_dir,
        load_results(out_dir),
        handshake=hello.to_dict(),
        class_names=class_names,
        meta=meta,
    )
