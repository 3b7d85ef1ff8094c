"""Distribution-shift flag: how many features of a row fall outside the training rows' range.

The statistics are computed on the int8-quantized training inputs, so the device can evaluate the
same score on the bytes it receives with a few comparisons per feature.
"""

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Per-feature range: the central 99 % of training values. Tails beyond it are what "unlike the
# training data" means here; the exact extremes would let one outlier widen the range for good.
LOW_QUANTILE = 0.005
HIGH_QUANTILE = 0.995
# The flag threshold is the smallest score that at most this share of training rows exceeds.
TRAIN_FLAG_RATE = 0.01


@dataclass(frozen=True)
class ShiftStats:
    """Int8 per-feature bounds and the score threshold, both derived from training rows only."""

    low: list[int]
    high: list[int]
    threshold: int
    train_flag_rate: float
    low_quantile: float = LOW_QUANTILE
    high_quantile: float = HIGH_QUANTILE

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ShiftStats":
        return cls(**data)


def shift_scores(inputs: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Number of features of each int8 row below ``low`` or above ``high``."""
    rows = np.asarray(inputs, np.int16)
    outside = (rows < np.asarray(low, np.int16)) | (rows > np.asarray(high, np.int16))
    return outside.sum(axis=1).astype(np.int64)


def fit_shift_stats(train_inputs: np.ndarray, target_rate: float = TRAIN_FLAG_RATE) -> ShiftStats:
    """Bounds from the training rows' quantiles and the threshold that flags ``target_rate``."""
    rows = np.asarray(train_inputs, np.int16)
    low = np.floor(np.quantile(rows, LOW_QUANTILE, axis=0)).astype(np.int64)
    high = np.ceil(np.quantile(rows, HIGH_QUANTILE, axis=0)).astype(np.int64)
    scores = shift_scores(rows, low, high)
    threshold = 0
    while np.mean(scores > threshold) > target_rate:
        threshold += 1
    return ShiftStats(
        low=low.tolist(),
        high=high.tolist(),
        threshold=int(threshold),
        train_flag_rate=float(np.mean(scores > threshold)),
    )


def shift_flags(inputs: np.ndarray, stats: ShiftStats) -> tuple[np.ndarray, np.ndarray]:
    """Scores and flags (score above the threshold) for int8 rows."""
    scores = shift_scores(inputs, np.array(stats.low), np.array(stats.high))
    return scores, scores > stats.threshold


# --- the report of a benchmark run -----------------------------------------------------------

SHIFT_RULE = (
    f"per-feature int8 bounds are the {LOW_QUANTILE:.1%} and {HIGH_QUANTILE:.1%} quantiles of the "
    "quantized training inputs; a row's score counts its features outside them; the threshold is "
    f"the smallest score that at most {TRAIN_FLAG_RATE:.0%} of training rows exceed; a row is "
    "flagged when its score exceeds the threshold"
)
SHIFT_JSON = "shift.json"
SHIFT_MD = "shift.md"
# Row indexes listed when device and host scores differ; the count is always given in full.
MAX_MISMATCHES_LISTED = 20


def _group_figures(flagged: np.ndarray, correct: np.ndarray) -> dict:
    def accuracy(mask: np.ndarray) -> float | None:
        return float(correct[mask].mean()) if mask.any() else None

    return {
        "rows": int(len(flagged)),
        "flagged": int(flagged.sum()),
        "flagged_share": float(flagged.mean()) if len(flagged) else 0.0,
        "accuracy_flagged": accuracy(flagged),
        "accuracy_unflagged": accuracy(~flagged),
    }


def shift_report(records: list[dict], class_names: list[str], threshold: int) -> dict:
    """Flag counts and accuracy on flagged vs unflagged rows, per class and overall.

    ``records`` are the rows of a benchmark's ``results.jsonl``: the flag uses the device's
    score, accuracy the device's prediction; every row's device score is compared with the host's
    ``reference_shift_score``.
    """
    labels = np.array([r["label"] for r in records], np.int64)
    device = np.array([r["shift_score"] for r in records], np.int64)
    correct = np.array([r["predicted"] == r["label"] for r in records], bool)
    flagged = device > threshold
    has_host = [r for r in records if "reference_shift_score" in r]
    host = np.array([r.get("reference_shift_score", -1) for r in records], np.int64)
    mismatched = [int(r["index"]) for r, d, h in zip(records, device, host, strict=True) if d != h]
    per_class = {
        name: _group_figures(flagged[labels == index], correct[labels == index])
        for index, name in enumerate(class_names)
        if np.any(labels == index)
    }
    return {
        "rule": SHIFT_RULE,
        "threshold": int(threshold),
        "overall": _group_figures(flagged, correct),
        "per_class": per_class,
        "device_equals_host": {
            "rows_compared": len(has_host),
            "score_mismatches": len(mismatched),
            "flag_mismatches": int(np.count_nonzero(flagged != (host > threshold))),
            "all_equal": len(has_host) == len(records) and not mismatched,
            "mismatched_rows": mismatched[:MAX_MISMATCHES_LISTED],
        },
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f} %"


def format_shift_report(report: dict) -> str:
    """The shift report as Markdown: a table per class and overall, then the device check."""
    lines = [
        "### Distribution shift",
        "",
        f"Rule: {report['rule']}. Threshold: {report['threshold']}.",
        "",
        "| class | rows | flagged | flagged share | accuracy flagged | accuracy unflagged |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    groups = [*report["per_class"].items(), ("overall", report["overall"])]
    for name, g in groups:
        lines.append(
            f"| {name} | {g['rows']} | {g['flagged']} | {_percent(g['flagged_share'])} | "
            f"{_percent(g['accuracy_flagged'])} | {_percent(g['accuracy_unflagged'])} |"
        )
    check = report["device_equals_host"]
    if check["all_equal"]:
        verdict = f"device scores equal host scores on all {check['rows_compared']} rows"
    elif check["rows_compared"] == 0:
        verdict = "no host scores recorded: device flags were not checked"
    else:
        verdict = (
            f"device and host scores differ on {check['score_mismatches']} of "
            f"{check['rows_compared']} rows ({check['flag_mismatches']} flags differ); first "
            f"rows: {', '.join(map(str, check['mismatched_rows']))}"
        )
    return "\n".join([*lines, "", verdict, ""])


def write_shift_report(run_dir: Path, class_names: list[str], threshold: int) -> dict:
    """Read a run's ``results.jsonl`` and write ``shift.json`` and ``shift.md`` beside it."""
    from mcu_ids.fileio import write_atomic, write_json
    from mcu_ids.hil.report import load_results

    report = shift_report(load_results(Path(run_dir)), list(class_names), threshold)
    check = report["device_equals_host"]
    if not check["all_equal"]:
        log.warning(
            "device shift scores differ from the host's on %d of %d rows",
            check["score_mismatches"],
            check["rows_compared"],
        )
    write_json(Path(run_dir) / SHIFT_JSON, report)
    write_atomic(Path(run_dir) / SHIFT_MD, format_shift_report(report))
    return report
