"""Integrated-gradients attributions on the float model for the rows a device scored.

For a row ``x``, the explained output ``f`` is the float model's probability of the class the
device predicted. The baseline is the all-zero row, which after standardisation is the training
mean of every feature. The path integral is taken with the trapezoid rule over ``steps`` equal
intervals; completeness (the attributions of a row add up to ``f(x) - f(baseline)``) is checked
on every row and its worst error is reported, so too few steps show up as a number, not a guess.
"""

import logging
from pathlib import Path

import numpy as np

from mcu_ids.fileio import write_atomic, write_json

log = logging.getLogger(__name__)

DEFAULT_STEPS = 128
# Rows per gradient batch: rows x (steps + 1) path points are evaluated at once.
BATCH_ROWS = 32
TOP_FEATURES = 5
# The run report explains at most this many rows (every misclassified row is kept).
MAX_EXPLAINED_ROWS = 1000
EXPLANATIONS_JSON = "explanations.json"
EXPLANATIONS_MD = "explanations.md"
EXPLANATIONS_PNG = "explanations.png"


def integrated_gradients(
    model,
    x: np.ndarray,
    targets: np.ndarray,
    baseline: np.ndarray | None = None,
    steps: int = DEFAULT_STEPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Attributions (rows x features) of output ``targets[i]`` for row ``i``, and each row's
    completeness error ``sum(attributions) - (f(x) - f(baseline))``."""
    import tensorflow as tf

    x = np.asarray(x, np.float32)
    targets = np.asarray(targets, np.int64)
    base = np.zeros(x.shape[1], np.float32) if baseline is None else np.asarray(baseline)
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
    # Trapezoid weights: half weight at both ends of the path.
    weights = np.full(steps + 1, 1.0 / steps, np.float32)
    weights[[0, -1]] *= 0.5
    attributions = np.zeros_like(x)
    errors = np.zeros(len(x))
    for start in range(0, len(x), BATCH_ROWS):
        rows = x[start : start + BATCH_ROWS]
        picked = targets[start : start + BATCH_ROWS]
        path = base + alphas[None, :, None] * (rows - base)[:, None, :]
        flat = tf.constant(path.reshape(-1, x.shape[1]))
        with tf.GradientTape() as tape:
            tape.watch(flat)
            outputs = model(flat, training=False)
            chosen = tf.gather(outputs, np.repeat(picked, steps + 1), axis=1, batch_dims=1)
        grads = tape.gradient(chosen, flat).numpy().reshape(path.shape)
        mean_grad = np.einsum("rsf,s->rf", grads, weights)
        attributions[start : start + len(rows)] = (rows - base) * mean_grad
        values = chosen.numpy().reshape(len(rows), steps + 1)
        errors[start : start + len(rows)] = attributions[start : start + len(rows)].sum(axis=1) - (
            values[:, -1] - values[:, 0]
        )
    return attributions, errors


def top_features(attributions: np.ndarray, feature_names, count: int = TOP_FEATURES) -> list:
    """The features with the largest mean absolute attribution, with that mean and its sign."""
    if len(attributions) == 0:
        return []
    magnitude = np.abs(attributions).mean(axis=0)
    signed = attributions.mean(axis=0)
    order = np.argsort(-magnitude, kind="stable")[:count]
    return [
        {
            "feature": feature_names[i],
            "mean_abs": float(magnitude[i]),
            "mean": float(signed[i]),
        }
        for i in order
    ]


def _rows_to_explain(records: list[dict], limit: int) -> list[dict]:
    wrong = [r for r in records if r["predicted"] != r["label"]]
    right = [r for r in records if r["predicted"] == r["label"]]
    return wrong + right[: max(limit - len(wrong), 0)]


def explain_run(ws, run_dir: Path, steps: int = DEFAULT_STEPS) -> dict:
    """Explain the device's predictions of a run over the test rows; write JSON, Markdown, PNG.

    ``sample`` in ``results.jsonl`` must index the prepared test rows (a run without --data).
    """

    from mcu_ids.hil.report import load_results

    run_dir = Path(run_dir)
    info = ws.read_json(ws.dataset_info, "data")
    records = _rows_to_explain(load_results(run_dir), MAX_EXPLAINED_ROWS)
    x_test = ws.load_arrays(ws.prepared, "data", ["x_test"])["x_test"]
    model = ws.load_keras_model()
    samples = np.array([r["sample"] for r in records], np.int64)
    predicted = np.array([r["predicted"] for r in records], np.int64)
    labels = np.array([r["label"] for r in records], np.int64)
    attributions, errors = integrated_gradients(model, x_test[samples], predicted, steps=steps)
    names, classes = info["feature_names"], info["class_names"]
    wrong = predicted != labels
    summary = {
        "method": (
            f"integrated gradients on the float model, zero (training mean) baseline, {steps} "
            "trapezoid steps, output = probability of the device's predicted class"
        ),
        "rows_explained": int(len(records)),
        "completeness_max_abs_error": float(np.abs(errors).max()) if len(errors) else 0.0,
        "per_class": {
            name: top_features(attributions[predicted == index], names)
            for index, name in enumerate(classes)
            if np.any(predicted == index)
        },
        "misclassified_rows": int(wrong.sum()),
        "misclassified": top_features(attributions[wrong], names),
    }
    write_json(run_dir / EXPLANATIONS_JSON, summary)
    write_atomic(run_dir / EXPLANATIONS_MD, format_explanations(summary))
    plot_explanations(summary, run_dir / EXPLANATIONS_PNG)
    return summary


def format_explanations(summary: dict) -> str:
    """Top features per predicted class and for the misclassified rows, as Markdown."""
    lines = [
        "### Explanations",
        "",
        f"{summary['method']}; {summary['rows_explained']} rows; largest completeness error "
        f"{summary['completeness_max_abs_error']:.2e}.",
        "",
        "| rows | rank | feature | mean abs attribution | mean attribution |",
        "|---|---:|---|---:|---:|",
    ]
    groups = [(f"predicted {name}", top) for name, top in summary["per_class"].items()]
    groups.append((f"misclassified ({summary['misclassified_rows']})", summary["misclassified"]))
    for title, top in groups:
        for rank, item in enumerate(top, start=1):
            lines.append(
                f"| {title} | {rank} | {item['feature']} | {item['mean_abs']:.4f} | "
                f"{item['mean']:+.4f} |"
            )
    return "\n".join(lines) + "\n"


def plot_explanations(summary: dict, path: Path) -> Path:
    """One horizontal bar panel per predicted class, plus one for the misclassified rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"predicted {name}", top) for name, top in summary["per_class"].items()]
    if summary["misclassified"]:
        panels.append(("misclassified", summary["misclassified"]))
    fig, axes = plt.subplots(len(panels), 1, figsize=(6, 1.0 + 1.6 * len(panels)), squeeze=False)
    for ax, (title, top) in zip(axes[:, 0], panels, strict=True):
        names = [item["feature"] for item in top][::-1]
        values = [item["mean_abs"] for item in top][::-1]
        ax.barh(names, values, color="tab:blue")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel("mean |attribution| (probability units)")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
