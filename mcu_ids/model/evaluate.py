"""Classification metrics, per-class tables and confusion matrices, for host and device runs."""

from pathlib import Path

import numpy as np

from mcu_ids.fileio import write_atomic, write_json


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with true classes as rows and predicted classes as columns."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return matrix


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # A class never predicted (or never present) scores 0, like scikit-learn's zero_division=0.
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, weighted and macro precision/recall/F1, per-class figures and the matrix.

    Macro averages run over the classes that occur in ``y_true``, so a folder holding two of the
    nineteen classes is not scored against seventeen empty ones.
    """
    n_classes = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    true_pos = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    precision = _safe_ratio(true_pos, predicted)
    recall = _safe_ratio(true_pos, support)
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    present = support > 0
    total = support.sum()
    weights = support / total if total else support

    def averaged(values: np.ndarray) -> dict:
        return {
            "macro": float(values[present].mean()) if present.any() else 0.0,
            "weighted": float((values * weights).sum()),
        }

    per_class = [
        {
            "class": name,
            "support": int(support[index]),
            "precision": float(precision[index]),
            "recall": float(recall[index]),
            "f1": float(f1[index]),
        }
        for index, name in enumerate(class_names)
    ]
    return {
        "rows": int(total),
        "accuracy": float(true_pos.sum() / total) if total else 0.0,
        "precision": averaged(precision),
        "recall": averaged(recall),
        "f1": averaged(f1),
        "per_class": per_class,
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
    }


def format_metrics_table(metrics: dict, title: str) -> str:
    """A Markdown block with the headline figures and the per-class table."""
    lines = [
        f"### {title}",
        "",
        f"rows {metrics['rows']}, accuracy {metrics['accuracy']:.4f}, "
        f"macro F1 {metrics['f1']['macro']:.4f}, weighted F1 {metrics['f1']['weighted']:.4f}, "
        f"macro precision {metrics['precision']['macro']:.4f}, "
        f"macro recall {metrics['recall']['macro']:.4f}",
        "",
        "| class | support | precision | recall | F1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in metrics["per_class"]:
        if row["support"] == 0 and row["precision"] == 0:
            continue
        lines.append(
            f"| {row['class']} | {row['support']} | {row['precision']:.4f} | "
            f"{row['recall']:.4f} | {row['f1']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def save_confusion_matrix(matrix: np.ndarray, class_names: list[str], stem: Path) -> list[Path]:
    """Write ``stem.csv`` and ``stem.png`` for a confusion matrix; return both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = Path(stem)
    matrix = np.asarray(matrix)
    header = "true\\predicted," + ",".join(class_names)
    rows = [
        f"{name}," + ",".join(str(int(v)) for v in row)
        for name, row in zip(class_names, matrix, strict=True)
    ]
    csv_path = write_atomic(stem.with_suffix(".csv"), "\n".join([header, *rows]) + "\n")

    size = max(4.0, 0.45 * len(class_names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    # Row-normalised colours so rare classes are as visible as common ones; counts as text.
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if norm[row, col] > 0.5 else "black"
            ax.text(col, row, str(int(count)), ha="center", va="center", fontsize=6, color=colour)
    fig.tight_layout()
    png_path = stem.with_suffix(".png")
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(png_path)
    return [csv_path, png_path]


def save_metrics(metrics: dict, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.json``, ``name.md`` and the confusion matrix files into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = [
        write_json(out_dir / f"{name}.json", metrics),
        write_atomic(out_dir / f"{name}.md", format_metrics_table(metrics, name)),
    ]
    paths += save_confusion_matrix(
        np.array(metrics["confusion_matrix"]), metrics["class_names"], out_dir / f"{name}_confusion"
    )
    return paths
