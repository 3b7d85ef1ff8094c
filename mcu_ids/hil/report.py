"""The benchmark report: on-device metrics, agreement with the host reference, latency, figures."""

import json
import logging
from pathlib import Path

import numpy as np

from mcu_ids.errors import McuIdsError
from mcu_ids.fileio import write_atomic, write_json
from mcu_ids.model.evaluate import classification_metrics, format_metrics_table, save_metrics

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
# Written by the harness: one line per row that got no valid answer.
FAILURES_FILE = "failures.jsonl"
LATENCY_PNG = "latency.png"
DEVICE_METRICS = "device_metrics"
REFERENCE_METRICS = "reference_metrics"
PERCENTILES = (50, 90, 99)
HISTOGRAM_BINS = 50
US_PER_S = 1e6
MS_PER_S = 1e3

TICK_KIND_MEANINGS = {
    "ns": "nanoseconds of CLOCK_MONOTONIC on the host (wall time, includes scheduler noise)",
    "cpu-cycles": "CPU cycles counted by the chip",
    "emulated-instructions": "SysTick counts of QEMU's virtual clock while QEMU runs one "
    "instruction per virtual nanosecond (-icount), so a tick is a fixed number of emulated "
    "instructions; microseconds are those instructions at one per cycle of the board's clock, a "
    "best case for the real chip, not a measurement of it",
}


def load_results(out_dir: Path) -> list[dict]:
    """Read ``results.jsonl`` back; a truncated last line (a run killed mid-write) is skipped."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    results = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            results.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                log.warning("%s: dropping the unfinished last line %d", path, number)
                break
            raise McuIdsError(
                f"{path} line {number} is not valid JSON: {exc.msg}",
                hint="the file was edited or damaged; run the benchmark again",
            ) from exc
    return results


def summarize(values) -> dict:
    """Count, mean, min, max and the median/p90/p99 of a list of numbers (empty: count 0)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"count": 0}
    out = {
        "count": int(values.size),
        "mean": float(values.mean()),
        "min": float(values.min()),
        "max": float(values.max()),
    }
    for pct, value in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True):
        out["median" if pct == 50 else f"p{pct}"] = float(value)
    return out


def _agreement(results: list[dict]) -> dict:
    n = len(results)
    identical = sum(1 for r in results if r["identical"])
    same_class = sum(1 for r in results if r["predicted"] == r["reference_predicted"])
    diffs = [
        int(np.max(np.abs(np.subtract(r["output"], r["reference"], dtype=np.int64))))
        for r in results
    ]
    return {
        "rows": n,
        "identical_outputs": identical,
        "identical_outputs_pct": 100.0 * identical / n if n else 0.0,
        "same_predicted_class": same_class,
        "same_predicted_class_pct": 100.0 * same_class / n if n else 0.0,
        "max_abs_output_diff": max(diffs, default=0),
    }


def _latency(results: list[dict], handshake: dict) -> dict:
    ticks = [r["ticks"] for r in results]
    tick_hz = handshake.get("tick_hz") or 0
    kind = handshake.get("tick_kind", "unknown")
    device = {
        "tick_kind": kind,
        "tick_kind_meaning": TICK_KIND_MEANINGS.get(kind, kind),
        "tick_hz": tick_hz,
        "ticks": summarize(ticks),
    }
    from mcu_ids.hil.html_report import us_per_tick

    per_tick = us_per_tick(kind, tick_hz, handshake.get("cpu_hz") or 0, handshake.get("board"))
    if per_tick:
        device["us_per_tick"] = per_tick
        device["us"] = summarize(np.asarray(ticks, dtype=np.float64) * per_tick)
    round_trip = summarize([r["round_trip_s"] * MS_PER_S for r in results])
    return {"device": device, "round_trip_ms": round_trip}


def _headline(metrics: dict) -> dict:
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["f1"]["macro"],
        "weighted_f1": metrics["f1"]["weighted"],
        "macro_recall": metrics["recall"]["macro"],
    }


def _save_latency_plot(latency: dict, results: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    device = latency["device"]
    ticks = np.asarray([r["ticks"] for r in results], dtype=np.float64)
    if device.get("us_per_tick"):
        values, unit = ticks * device["us_per_tick"], "µs"
    else:
        values, unit = ticks, "ticks"
    round_trip = np.asarray([r["round_trip_s"] * MS_PER_S for r in results])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].hist(values, bins=HISTOGRAM_BINS, color="tab:blue")
    axes[0].set_xlabel(f"device time in engine_invoke ({unit}, from {device['tick_kind']} ticks)")
    axes[0].set_ylabel("rows")
    axes[1].hist(round_trip, bins=HISTOGRAM_BINS, color="tab:orange")
    axes[1].set_xlabel("host round trip (ms)")
    for ax, summary in ((axes[0], summarize(values)), (axes[1], summarize(round_trip))):
        ax.axvline(summary["median"], color="black", linestyle="--", linewidth=1)
        ax.set_title(f"median {summary['median']:.3g}, p99 {summary['p99']:.3g}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def _fmt_summary(summary: dict) -> str:
    if not summary.get("count"):
        return "n/a | n/a | n/a"
    return " | ".join(f"{summary[key]:.6g}" for key in ("median", "p90", "p99"))


def _markdown(report: dict, device_table: str | None, reference_table: str | None) -> str:
    hs = report["handshake"]
    meta = report["meta"]
    agreement = report["agreement"]
    latency = report["latency"]
    device = latency["device"]
    lines = [
        "# mcu-ids benchmark report",
        "",
        *(
            [
                "> **Synthetic data**: " + str(meta.get("data")) + "; these figures say nothing "
                "about real traffic.",
                "",
            ]
            if meta.get("synthetic")
            else []
        ),
        *([f"> {repeated_rows_note(meta)}", ""] if meta.get("test_rows_also_in_train") else []),
        f"Board **{hs.get('board')}**, engine **{hs.get('engine')}**, firmware "
        f"{hs.get('firmware_version')}, protocol {hs.get('protocol_version')}, CPU clock "
        f"{hs.get('cpu_hz')} Hz, boot id {hs.get('boot_id', 0):08x}.",
        f"Model sha256 `{hs.get('model_sha256')}`.",
        f"Rows received: {report['rows']} of {meta.get('rows_requested', report['rows'])}"
        + ("" if meta.get("complete", True) else " (**the run was stopped early**)")
        + ".",
        *([failed_rows_note(meta), ""] if meta.get("rows_failed") else [""]),
        "## Agreement with the host reference",
        "",
        f"- identical int8 outputs: {agreement['identical_outputs']} of {agreement['rows']} "
        f"({agreement['identical_outputs_pct']:.2f} %)",
        f"- same predicted class: {agreement['same_predicted_class']} of {agreement['rows']} "
        f"({agreement['same_predicted_class_pct']:.2f} %)",
        f"- largest difference of one output: {agreement['max_abs_output_diff']} LSB",
        "",
        "## Latency",
        "",
        f"Device ticks are {device['tick_kind_meaning']} (tick rate {device['tick_hz']} Hz); "
        "the device times engine_invoke only.",
        "",
        "| measure | median | p90 | p99 |",
        "|---|---:|---:|---:|",
        f"| device ticks | {_fmt_summary(device['ticks'])} |",
    ]
    if "us" in device:
        lines.append(f"| device time (µs) | {_fmt_summary(device['us'])} |")
    lines += [
        f"| host round trip (ms) | {_fmt_summary(latency['round_trip_ms'])} |",
        "",
    ]
    if report.get("files", {}).get("latency_plot"):
        lines += [f"![latency]({LATENCY_PNG})", ""]
    lines += _windows_markdown(meta.get("latency_windows"))
    lines += _layers_markdown(meta.get("layers"), meta.get("layer_profile"))
    lines += _energy_markdown(report.get("energy", []))
    if device_table:
        lines += ["## On-device classification", "", device_table]
        lines += [f"Confusion matrix: `{DEVICE_METRICS}_confusion.csv`", ""]
        lines += [f"![confusion matrix]({DEVICE_METRICS}_confusion.png)", ""]
    if reference_table:
        lines += ["## Host reference on the same rows", "", reference_table]
    lines += _memory_markdown(meta.get("memory"))
    lines += _fleet_markdown(meta.get("fleet"))
    lines += ["## Run", "", "| key | value |", "|---|---|"]
    nested = []
    for key, value in sorted(meta.items()):
        if key in _OWN_SECTIONS:
            continue
        if isinstance(value, dict) and all(
            isinstance(v, str | int | float) for v in value.values()
        ):
            value = ", ".join(f"{k} {_plain(v)}" for k, v in value.items())
        elif isinstance(value, dict | list):
            nested.append(key)
            continue
        lines.append(f"| {key} | {value} |")
    if nested:
        lines += ["", f"More in `report.json` (meta): {', '.join(nested)}."]
    return "\n".join(lines) + "\n"


def _plain(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


_MEMORY_KEYS = (
    "flash_used_bytes",
    "flash_budget_bytes",
    "ram_used_bytes",
    "ram_budget_bytes",
    "model_flash_bytes",
    "arena_bytes",
    "firmware_flash_bytes",
    "firmware_ram_bytes",
)


def _memory_markdown(memory: dict | None) -> list[str]:
    if not memory:
        return []
    if not all(key in memory for key in _MEMORY_KEYS):
        return ["## Memory", "", ", ".join(f"{k} {v}" for k, v in memory.items()), ""]
    rows = [
        ("flash", memory["flash_used_bytes"], memory["flash_budget_bytes"]),
        ("RAM", memory["ram_used_bytes"], memory["ram_budget_bytes"]),
    ]
    lines = ["## Memory", "", "| | used | of | share |", "|---|---:|---:|---:|"]
    for name, used, budget in rows:
        lines.append(
            f"| {name} | {used / 1024:.1f} KiB | {budget / 1024:.0f} KiB | "
            f"{100 * used / budget:.2f} % |"
        )
    lines += [
        "",
        f"Model {memory['model_flash_bytes']} B of flash, arena or scratch "
        f"{memory['arena_bytes']} B of RAM; the rest of the firmware "
        + (
            f"{memory['firmware_flash_bytes']} B flash, {memory['firmware_ram_bytes']} B RAM."
            if memory["firmware_flash_bytes"] or memory["firmware_ram_bytes"]
            else "was not measured."
        ),
        "",
    ]
    return lines


def _fleet_markdown(fleet: list | None) -> list[str]:
    if not fleet:
        return []
    lines = [
        "## Devices",
        "",
        "| port | board | boot id | rows answered | error |",
        "|---|---|---|---:|---|",
    ]
    for device in fleet:
        boot = device.get("boot_id")
        lines.append(
            f"| {device.get('port')} | {device.get('board')} | "
            f"{'-' if boot is None else f'{boot:08x}'} | {device.get('rows_answered', 0)} | "
            f"{device.get('error') or ''} |"
        )
    return lines + [""]


# Meta entries shown in sections of their own rather than in the Run table.
_OWN_SECTIONS = ("latency_windows", "layers", "layer_profile", "memory", "fleet")


def _windows_markdown(windows: dict | None) -> list[str]:
    if not windows:
        return []
    lines = ["## Latency windows", ""]
    if not windows.get("available"):
        return lines + [f"Not measured: {windows.get('reason', 'unknown reason')}.", ""]
    lines += [
        f"{windows['warmup']} warm-up inferences, then {windows['window_count']} windows of "
        f"{windows['per_window']} back-to-back inferences on sample {windows.get('sample')} "
        f"(marker pin high around each window); {windows['throughput_per_s']:.1f} inferences/s.",
        "",
        "| per inference | median | p90 | p99 |",
        "|---|---:|---:|---:|",
        f"| ticks | {_fmt_summary(windows['per_inference_ticks'])} |",
        f"| µs | {_fmt_summary(windows['per_inference_us'])} |",
        "",
        "Window totals (ticks): " + ", ".join(str(t) for t in windows["window_ticks"]),
        "",
    ]
    return lines


def _layers_markdown(layers: list | None, profile: dict | None) -> list[str]:
    if not layers:
        if profile and not profile.get("available", True):
            return ["## Per-layer cost", "", f"Not measured: {profile.get('reason')}.", ""]
        return []
    unit = (profile or {}).get("work_unit", "ticks")
    key = f"{unit}_median" if f"{unit}_median" in layers[0] else "ticks_median"
    per_mac = key.replace("_median", "_per_mac")
    label = key.removesuffix("_median")
    lines = [
        "## Per-layer cost",
        "",
        f"Median of {(profile or {}).get('repeats', '?')} profiled inferences; reading the "
        f"counter costs {(profile or {}).get('tick_read_ticks', '?')} ticks per layer.",
        "",
        f"| # | op | MACs | {label} | {label} per MAC | share % |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in layers:
        ratio = row.get(per_mac)
        lines.append(
            f"| {row['index']} | {row['op']} | {row['macs']} | {row[key]:.0f} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'} | {row.get('share_pct', 0):.1f} |"
        )
    return lines + [""]


def failed_rows_note(meta: dict) -> str:
    """One sentence on the rows the device never answered, or "" when there were none."""
    failed = meta.get("rows_failed") or 0
    if not failed:
        return ""
    return (
        f"{failed} row(s) got no valid answer after every retry; they are left out of the "
        f"figures below and listed with the reason in `{FAILURES_FILE}`."
    )


def repeated_rows_note(meta: dict) -> str:
    """One sentence on test rows that also occur among the training rows, or ""."""
    repeated = meta.get("test_rows_also_in_train") or 0
    if not repeated:
        return ""
    return (
        f"{repeated} of the scored rows also occur, identical, among the training rows; "
        "`mcu-ids data --dedupe` (or `run --dedupe`) scores without them."
    )


def _energy_markdown(energy: list[dict]) -> list[str]:
    if not energy:
        return []
    lines = [
        "## Energy per inference",
        "",
        "| kind | µJ per inference | method |",
        "|---|---:|---|",
    ]
    for entry in energy:
        value = entry.get("uj_per_inference")
        shown = "n/a" if value is None else f"{value:.4g}"
        lines.append(f"| {entry['kind'].upper()} | {shown} | {entry['method']} |")
    return lines + [""]


def write_bench_report(
    out_dir: Path, results: list[dict], *, handshake: dict, class_names: list[str], meta: dict
) -> dict:
    """Write ``report.json``, ``report.md``, ``report.html``, metrics, CSVs and figures.

    Works on any number of rows, including none (a run stopped before the first answer).
    Energy: the board-data estimate, plus measured results saved in the folder's
    ``energy.json``. Returns the report as a dict.
    """
    from mcu_ids.hil import html_report
    from mcu_ids.hil.energy import estimate_for_report, load_energy

    out_dir = Path(out_dir)
    report = {
        "handshake": handshake,
        "meta": meta,
        "rows": len(results),
        "agreement": _agreement(results),
        "latency": _latency(results, handshake),
        "files": {"results": RESULTS_FILE},
    }
    report["energy"] = [estimate_for_report(report), *load_energy(out_dir)]
    device_table = reference_table = None
    device = reference = None
    if results:
        labels = np.array([r["label"] for r in results])
        device = classification_metrics(
            labels, np.array([r["predicted"] for r in results]), class_names
        )
        reference = classification_metrics(
            labels, np.array([r["reference_predicted"] for r in results]), class_names
        )
        save_metrics(device, out_dir, DEVICE_METRICS)
        save_metrics(reference, out_dir, REFERENCE_METRICS)
        report["device_metrics"] = _headline(device)
        report["reference_metrics"] = _headline(reference)
        report["files"].update(
            device_metrics=f"{DEVICE_METRICS}.json",
            confusion_csv=f"{DEVICE_METRICS}_confusion.csv",
            confusion_png=f"{DEVICE_METRICS}_confusion.png",
            reference_metrics=f"{REFERENCE_METRICS}.json",
            latency_plot=LATENCY_PNG,
            results_csv=html_report.RESULTS_CSV,
            per_class_csv=html_report.PER_CLASS_CSV,
        )
        html_report.write_results_csv(out_dir, results, class_names)
        html_report.write_per_class_csv(out_dir, device, reference)
        _save_latency_plot(report["latency"], results, out_dir / LATENCY_PNG)
        device_table = format_metrics_table(device, "On the device")
        reference_table = format_metrics_table(reference, "Host reference (golden int8 outputs)")
    if (out_dir / FAILURES_FILE).exists():
        report["files"]["failures"] = FAILURES_FILE
    report["files"]["report_md"] = REPORT_MD
    report["files"]["report_html"] = html_report.REPORT_HTML
    write_json(out_dir / REPORT_JSON, report)
    write_atomic(out_dir / REPORT_MD, _markdown(report, device_table, reference_table))
    html_report.write_html_report(
        out_dir,
        report,
        results=results,
        device_metrics=device,
        reference_metrics=reference,
        energy=report["energy"],
    )
    log.info("benchmark report written to %s and %s", out_dir / REPORT_MD, html_report.REPORT_HTML)
    return report


def rewrite_bench_report(run_dir: Path) -> dict:
    """Write a run folder's reports again from its saved results (after adding energy, say)."""
    run_dir = Path(run_dir)
    path = run_dir / REPORT_JSON
    if not path.exists():
        raise McuIdsError(
            f"{run_dir} is not a benchmark run (no {REPORT_JSON})",
            hint="give a folder under <workdir>/runs/ written by `mcu-ids bench`",
        )
    report = json.loads(path.read_text(encoding="utf-8"))
    metrics_path = run_dir / f"{DEVICE_METRICS}.json"
    class_names = []
    if metrics_path.exists():
        class_names = json.loads(metrics_path.read_text(encoding="utf-8"))["class_names"]
    return write_bench_report(
        run_dir,
        load_results(run_dir),
        handshake=report["handshake"],
        class_names=class_names,
        meta=report["meta"],
    )
