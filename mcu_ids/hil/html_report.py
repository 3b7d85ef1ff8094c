"""One self-contained HTML page per benchmark run, plus per-sample and per-class CSV files.

Figures are embedded as base64 PNG, styles inline: the page opens from a mail attachment or an
archive with no other file and no network.
"""

import base64
import csv
import io
import json
import logging
from pathlib import Path

import numpy as np

from mcu_ids.errors import McuIdsError
from mcu_ids.fileio import sha256_file, write_atomic

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
RESULTS_CSV = "results.csv"
PER_CLASS_CSV = "per_class.csv"
MODEL_RELATIVE = Path("model") / "model_int8.tflite"
FIGURE_DPI = 110
TICK_UNITS = {"cpu-cycles": "cycles", "emulated-instructions": "instructions", "ns": "ns"}
NS_PER_S = 1e9
_RESULT_COLUMNS = (
    "index",
    "sample",
    "label",
    "predicted",
    "reference_predicted",
    "identical",
    "ticks",
    "shift_score",
    "reference_shift_score",
    "round_trip_s",
    "attempts",
)


def is_synthetic(meta: dict) -> bool:
    """Whether the run's rows came from the synthetic generator rather than real traffic."""
    if meta.get("synthetic") is not None:
        return bool(meta["synthetic"])
    return "synthetic" in str(meta.get("data", "")).lower()


# --- CSV files ---------------------------------------------------------------------------------


def _csv_text(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_results_csv(out_dir: Path, results: list[dict], class_names: list[str]) -> Path:
    """One row per sample: labels and predictions by name, ticks, outputs."""
    columns = [c for c in _RESULT_COLUMNS if any(c in r for r in results)] or list(_RESULT_COLUMNS)
    n_outputs = max((len(r.get("output", [])) for r in results), default=0)
    header = columns[:3] + ["label_name", "predicted_name"] + columns[3:]
    header += [f"output_{i}" for i in range(n_outputs)]

    def name(index) -> str:
        return class_names[index] if 0 <= index < len(class_names) else str(index)

    rows = []
    for record in results:
        row = [record.get(c, "") for c in columns[:3]]
        row += [name(record["label"]), name(record["predicted"])]
        row += [record.get(c, "") for c in columns[3:]]
        row += list(record.get("output", []))
        rows.append(row)
    return write_atomic(Path(out_dir) / RESULTS_CSV, _csv_text(header, rows))


def write_per_class_csv(out_dir: Path, device: dict, reference: dict) -> Path:
    """Support, precision, recall and F1 of every class, on the device and in the reference."""
    header = ["class", "support", "device_precision", "device_recall", "device_f1"]
    header += ["reference_precision", "reference_recall", "reference_f1"]
    rows = []
    for dev, ref in zip(device["per_class"], reference["per_class"], strict=True):
        rows.append(
            [dev["class"], dev["support"]]
            + [f"{dev[k]:.6f}" for k in ("precision", "recall", "f1")]
            + [f"{ref[k]:.6f}" for k in ("precision", "recall", "f1")]
        )
    return write_atomic(Path(out_dir) / PER_CLASS_CSV, _csv_text(header, rows))


# --- figures -----------------------------------------------------------------------------------


def png_data_uri(png: bytes) -> str:
    """A ``data:`` URI for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def per_class_f1_png(device: dict, reference: dict) -> bytes:
    """Horizontal bars of per-class F1 on the device and in the host reference."""
    plt = _pyplot()
    rows = [
        (dev["class"], dev["f1"], ref["f1"])
        for dev, ref in zip(device["per_class"], reference["per_class"], strict=True)
        if dev["support"] > 0
    ]
    names = [r[0] for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.32 * len(rows) + 1.2)))
    ax.barh(y - 0.2, [r[1] for r in rows], height=0.4, label="device", color="tab:blue")
    ax.barh(y + 0.2, [r[2] for r in rows], height=0.4, label="host reference", color="tab:gray")
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _figure_png(fig)


def layer_cost_png(layers: list[dict], unit: str) -> bytes:
    """Bars of the median cost of each layer in ``unit`` (ticks, or what ``layer_costs`` added)."""
    plt = _pyplot()
    labels = [f"{row['op']} #{row['index']}" for row in layers]
    key = f"{unit}_median" if f"{unit}_median" in layers[0] else "ticks_median"
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.3 * len(layers) + 1.2)))
    ax.barh(np.arange(len(layers)), [row[key] for row in layers], color="tab:green")
    ax.set_yticks(np.arange(len(layers)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"median {key.removesuffix('_median')} per inference")
    fig.tight_layout()
    return _figure_png(fig)


# --- model cost ---


def work_per_tick(tick_kind: str, tick_hz: float, board_name: str | None) -> tuple[float, str]:
    """What one device tick is worth: (factor, unit), e.g. (1.0, "cycles").

    Under QEMU ``-icount shift=N`` the guest runs one instruction per 2**N virtual nanoseconds
    while SysTick counts at the board's clock in virtual time, so one tick is
    1e9 / 2**N / tick_hz instructions (about 5.95 at 168 MHz and shift 0).
    """
    if tick_kind == "emulated-instructions" and tick_hz:
        from mcu_ids.build.boards import get_board

        try:
            shift = get_board(board_name or "").section("qemu")["icount_shift"]
        except (McuIdsError, KeyError):
            return 1.0, "ticks"
        return NS_PER_S / 2**shift / tick_hz, "instructions"
    return 1.0, TICK_UNITS.get(tick_kind, "ticks")


def us_per_tick(tick_kind: str, tick_hz: float, cpu_hz: float, board_name: str | None):
    """Microseconds one device tick stands for, or None when the tick rate is unknown.

    Emulated ticks become instructions first, then time at one instruction per cycle of the
    board's clock: what the same instruction count would take on the real chip at best. (QEMU's
    own virtual time runs one instruction per nanosecond, which says nothing about the chip.)
    """
    if not tick_hz:
        return None
    factor, unit = work_per_tick(tick_kind, tick_hz, board_name)
    if unit == "instructions" and cpu_hz:
        return factor * 1e6 / cpu_hz
    return 1e6 / tick_hz


def model_macs(run_dir: Path, meta: dict, model_path: Path | None = None) -> list | None:
    """``count_macs`` of the run's model, or None when the model file is gone or changed."""
    from mcu_ids.export.tflite_model import count_macs, load_tflite

    path = Path(model_path) if model_path else Path(run_dir).resolve().parents[1] / MODEL_RELATIVE
    if not path.exists():
        log.info("no model at %s; the report shows no per-MAC figures", path)
        return None
    expected = meta.get("model_sha256")
    if expected and sha256_file(path) != expected:
        log.info("%s is not the run's model (sha256 differs); no per-MAC figures", path)
        return None
    try:
        return count_macs(load_tflite(path.read_bytes()))
    except McuIdsError as exc:
        log.warning("cannot count the MACs of %s: %s", path, exc)
        return None


def layer_costs(
    results: list[dict], macs: list | None, factor: float = 1.0, unit: str = "ticks"
) -> list[dict]:
    """Median ticks of each layer from the records' ``layer_ticks``, with ticks per MAC.

    When a tick is worth ``factor`` of another ``unit`` (instructions under QEMU, say), each
    row also gives the median and the per-MAC figure in that unit.
    """
    per_layer = [r["layer_ticks"] for r in results if isinstance(r.get("layer_ticks"), list)]
    if not per_layer:
        return []
    width = min(len(row) for row in per_layer)
    table = np.array([row[:width] for row in per_layer], dtype=np.float64)
    medians = np.median(table, axis=0)
    converted = factor != 1.0
    rows = []
    for position in range(width):
        op = macs[position] if macs and position < len(macs) else (position, "layer", 0)
        row = {"index": op[0], "op": op[1], "macs": op[2], "ticks_median": float(medians[position])}
        row["ticks_per_mac"] = row["ticks_median"] / op[2] if op[2] else None
        if converted:
            row[f"{unit}_median"] = row["ticks_median"] * factor
            row[f"{unit}_per_mac"] = row[f"{unit}_median"] / op[2] if op[2] else None
        rows.append(row)
    return rows


# --- HTML --------------------------------------------------------------------------------------

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>mcu-ids report: {{ hs.board }} / {{ hs.engine }}</title>
<style>
body { font-family: sans-serif; max-width: 1100px; margin: 1em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.banner { background: #fde2a8; border: 2px solid #c77f00; padding: 0.8em; font-weight: bold; }
.stopped { background: #f8c9c9; border: 2px solid #a00; padding: 0.8em; }
.measured { color: #05620d; font-weight: bold; }
.estimated { color: #8a5300; font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; }
code, pre { font-size: 0.85em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
</style></head><body>
<h1>mcu-ids benchmark: {{ hs.board }}, {{ hs.engine }} engine</h1>
{% if synthetic %}<p class="banner" id="synthetic-banner">SYNTHETIC DATA: these rows come from
the seeded generator, not from real network traffic. The figures below test the chain, they say
nothing about intrusion detection.</p>{% endif %}
{% if not complete %}<p class="stopped">The run was stopped early: {{ rows }} of
{{ meta.rows_requested }} rows were answered.</p>{% endif %}
{% if failed_note %}<p class="stopped" id="failed-rows">{{ failed_note }}</p>{% endif %}
{% if repeated_note %}<p class="banner" id="repeated-rows">{{ repeated_note }}</p>{% endif %}
<p>Dataset <code>{{ meta.dataset }}</code> ({{ meta.data }}; split: {{ meta.split }};
view {{ meta.view }}). Model sha256 <code>{{ meta.model_sha256 }}</code>.
Board: {{ meta.board_description }}{% if meta.emulated %} (emulated){% endif %}.</p>

<h2>Headline</h2>
<table id="headline"><tr><th>metric</th>{% for col in headline_cols %}<th>{{ col }}</th>
{% endfor %}</tr>
{% for key in headline_keys %}<tr><td>{{ key }}</td>{% for col in headline_cols %}
<td>{{ fmt(headline[col].get(key)) }}</td>{% endfor %}</tr>{% endfor %}</table>
<p>Identical int8 outputs: {{ agreement.identical_outputs }} of {{ agreement.rows }}
({{ "%.2f" | format(agreement.identical_outputs_pct) }} %); same class:
{{ agreement.same_predicted_class }} ({{ "%.2f" | format(agreement.same_predicted_class_pct) }}
%); largest output difference {{ agreement.max_abs_output_diff }} LSB.</p>

<h2>Latency</h2>
<p>Device ticks are {{ device.tick_kind_meaning }} (tick rate {{ device.tick_hz }} Hz); the
device times the engine call only.</p>
<table id="latency"><tr><th>measure</th><th>median</th><th>p90</th><th>p99</th><th>mean</th>
</tr>{% for name, s in latency_rows %}<tr><td>{{ name }}</td>{% for k in
["median", "p90", "p99", "mean"] %}<td>{{ fmt(s.get(k)) }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% if per_mac %}<p id="per-mac">Model: {{ per_mac.macs }} MACs per inference;
{{ fmt(per_mac.value) }} {{ per_mac.unit }} per MAC (median ticks / MACs, whole inference,
all overheads included{% if per_mac.unit != "ticks" and device.tick_kind ==
"emulated-instructions" %}; ticks converted to instructions by the QEMU instruction clock over the
tick rate{% endif %}).</p>{% endif %}
{% if images.latency %}<img alt="latency histogram" src="{{ images.latency }}">{% endif %}
{% if windows %}<h3>Latency windows</h3>{{ table(windows) }}{% endif %}
{% if layers %}<h3>Per-layer cost</h3>
<p id="layer-units">Median device ticks of each layer{% if tick_factor != 1 %}, and the same
in {{ work_unit }} ({{ fmt(tick_factor) }} {{ work_unit }} per tick){% endif %}; per MAC divides by
the layer's multiply-accumulates.</p>{{ table(layers) }}
<img alt="per-layer cost" src="{{ images.layers }}">{% endif %}

<h2>Energy per inference</h2>
<table id="energy"><tr><th>kind</th><th>µJ / inference</th><th>method</th><th>source</th></tr>
{% for e in energy %}<tr><td class="{{ e.kind }}">{{ e.kind | upper }}</td>
<td>{{ fmt(e.uj_per_inference) }}</td><td style="text-align:left">{{ e.method }}</td>
<td style="text-align:left">{{ e.source or "" }}</td></tr>{% endfor %}</table>

{% if images.confusion %}<h2>Confusion matrix (device)</h2>
<img alt="confusion matrix" src="{{ images.confusion }}">{% endif %}
{% if images.f1 %}<h2>Per-class F1</h2><img alt="per-class F1" src="{{ images.f1 }}">
{{ table(per_class) }}{% endif %}

<h2>Memory</h2>{% if memory %}{{ table([memory]) }}{% else %}<p>No memory report.</p>
{% endif %}
<h2>Device handshake</h2><pre>{{ handshake_json }}</pre>
<h2>Versions</h2>{{ table([meta.versions or {}]) }}
<p>Host: {{ meta.host }}</p>
<h2>Run</h2><pre>{{ meta_json }}</pre>
<h2>Files</h2><ul>{% for f in files %}<li><code>{{ f }}</code></li>{% endfor %}</ul>
</body></html>
"""


def _fmt(value) -> str:
    if value is None or value == "":
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        # Large figures in full (21,801 ticks, not 2.18e+04); small ones to four digits.
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(rows: list[dict]):
    from markupsafe import Markup, escape

    if not rows:
        return Markup("")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{escape(c.replace('_', ' '))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_fmt(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return Markup(f"<table><tr>{head}</tr>{body}</table>")


def _read_png(path: Path) -> str | None:
    return png_data_uri(path.read_bytes()) if path.exists() else None


def _latency_windows(report: dict) -> list[dict]:
    windows = report.get("latency", {}).get("windows") or report["meta"].get("latency_windows")
    if isinstance(windows, dict):
        windows = windows.get("windows", [windows])
    if not isinstance(windows, list):
        return []
    return [w if isinstance(w, dict) else {"value": w} for w in windows]


def render_html_report(
    report: dict,
    out_dir: Path,
    *,
    device_metrics: dict | None,
    reference_metrics: dict | None,
    results: list[dict],
    energy: list[dict],
    macs: list | None,
) -> str:
    """The HTML text of a run's report (figures read from ``out_dir`` or drawn here)."""
    import jinja2

    from mcu_ids.hil.report import (
        DEVICE_METRICS,
        LATENCY_PNG,
        failed_rows_note,
        repeated_rows_note,
    )

    meta = report["meta"]
    device = report["latency"]["device"]
    unit = TICK_UNITS.get(device.get("tick_kind"), "ticks")
    factor, work_unit = work_per_tick(
        device.get("tick_kind", ""), device.get("tick_hz") or 0, meta.get("board")
    )
    headline = {
        "device": report.get("device_metrics", {}),
        "host reference (same rows)": report.get("reference_metrics", {}),
        "host int8 (test split)": meta.get("host_int8_metrics") or {},
        "host float (test split)": meta.get("host_float_metrics") or {},
    }
    latency_rows = [("device ticks", device.get("ticks", {}))]
    if work_unit != unit or factor != 1.0:
        scaled = {k: v * factor for k, v in device.get("ticks", {}).items() if k != "count"}
        latency_rows.append((f"device {work_unit}", scaled))
    if "us" in device:
        latency_rows.append(("device µs", device["us"]))
    latency_rows.append(("host round trip ms", report["latency"].get("round_trip_ms", {})))
    images = {
        "latency": _read_png(out_dir / LATENCY_PNG),
        "confusion": _read_png(out_dir / f"{DEVICE_METRICS}_confusion.png"),
    }
    per_class = []
    if device_metrics and reference_metrics:
        images["f1"] = png_data_uri(per_class_f1_png(device_metrics, reference_metrics))
        per_class = [
            {k: row[k] for k in ("class", "support", "precision", "recall", "f1")}
            for row in device_metrics["per_class"]
            if row["support"] > 0
        ]
    total_macs = sum(op[2] for op in macs) if macs else 0
    per_mac = None
    median_ticks = device.get("ticks", {}).get("median")
    if total_macs and median_ticks:
        per_mac = {"macs": total_macs, "value": median_ticks * factor / total_macs}
        per_mac["unit"] = work_unit
    # The per-layer profile measured after the rows, else per-record layer ticks if any.
    layers = meta.get("layers") or layer_costs(results, macs, factor, work_unit)
    if layers:
        images["layers"] = png_data_uri(layer_cost_png(layers, work_unit))
    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    template = env.from_string(_TEMPLATE)
    return template.render(
        hs=report["handshake"],
        meta=meta,
        rows=report["rows"],
        complete=meta.get("complete", True),
        # The Markdown quoting of file and option names means nothing in HTML.
        failed_note=failed_rows_note(meta).replace("`", ""),
        repeated_note=repeated_rows_note(meta).replace("`", ""),
        synthetic=is_synthetic(meta),
        agreement=report["agreement"],
        device=device,
        headline=headline,
        headline_cols=list(headline),
        headline_keys=["accuracy", "macro_f1", "weighted_f1", "macro_recall"],
        latency_rows=latency_rows,
        per_mac=per_mac,
        windows=_latency_windows(report),
        layers=layers,
        work_unit=work_unit,
        tick_factor=factor,
        energy=energy,
        images=images,
        per_class=per_class,
        memory=meta.get("memory"),
        handshake_json=json.dumps(report["handshake"], indent=2, sort_keys=True),
        meta_json=json.dumps(meta, indent=2, sort_keys=True, default=str),
        files=sorted(set(report.get("files", {}).values())),
        fmt=_fmt,
        table=_table,
    )


def write_html_report(
    out_dir: Path,
    report: dict,
    *,
    results: list[dict],
    device_metrics: dict | None = None,
    reference_metrics: dict | None = None,
    energy: list[dict] | None = None,
    model_path: Path | None = None,
) -> Path:
    """Write ``report.html`` into the run folder and return its path."""
    out_dir = Path(out_dir)
    macs = model_macs(out_dir, report["meta"], model_path)
    html = render_html_report(
        report,
        out_dir,
        device_metrics=device_metrics,
        reference_metrics=reference_metrics,
        results=results,
        energy=energy or [],
        macs=macs,
    )
    return write_atomic(out_dir / REPORT_HTML, html)
