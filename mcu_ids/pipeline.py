"""The steps of the main job, each reading the previous step's results from the workspace.

The CLI calls these; each does one step and returns a summary dict for printing.
"""

import json
import logging
import time
from pathlib import Path

import numpy as np

from mcu_ids import __version__
from mcu_ids.errors import DataError
from mcu_ids.fileio import save_arrays, sha256_bytes, write_atomic, write_json
from mcu_ids.model.evaluate import classification_metrics, save_metrics
from mcu_ids.workspace import Workspace

log = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_ROWS = 400
SYNTHETIC_NOTE = "synthetic rows from the seeded generator (not real traffic)"


# --- data ------------------------------------------------------------------------------------


def prepare_data(
    ws: Workspace,
    data_dir: Path | None,
    *,
    view: str = "19",
    dedupe: bool = False,
    seed: int = 0,
    synthetic_rows: int = DEFAULT_SYNTHETIC_ROWS,
    progress: bool = True,
) -> dict:
    """Read the dataset (or generate a synthetic one) and fit the scaler on training rows."""
    from mcu_ids.data.reader import load_dataset, rows_in
    from mcu_ids.data.scaler import FeatureScaler

    if data_dir is None:
        from mcu_ids.data.synthetic import write_synthetic_dataset

        data_dir = write_synthetic_dataset(
            ws.synthetic_dir, rows_per_class=synthetic_rows, seed=seed
        )
        log.warning("no --data given: using %s in %s", SYNTHETIC_NOTE, data_dir)
    dataset = load_dataset(Path(data_dir), view=view, dedupe=dedupe, seed=seed, progress=progress)
    if len(dataset.class_names) < 2:
        raise DataError(
            f"{data_dir} holds rows of one class only ({', '.join(dataset.class_names)})",
            hint="a classifier needs at least two classes: add files of another class",
        )
    if len(dataset.y_test) == 0:
        raise DataError(
            f"{data_dir} gives no test rows ({len(dataset.y_train)} training rows)",
            hint="give each class at least 3 rows (20 % of them are held out for testing)",
        )
    in_train = rows_in(dataset.x_test, dataset.x_train)
    overlap = int(in_train.sum())
    if overlap:
        log.warning(
            "%d of %d test rows also occur among the training rows (the dataset repeats rows); "
            "`mcu-ids data --dedupe` scores without them",
            overlap,
            len(dataset.x_test),
        )
    scaler = FeatureScaler().fit(dataset.x_train)
    save_arrays(
        ws.prepared,
        x_train=scaler.transform(dataset.x_train),
        y_train=dataset.y_train,
        x_test=scaler.transform(dataset.x_test),
        y_test=dataset.y_test,
        test_in_train=in_train,
    )
    write_json(ws.scaler, scaler.to_dict())
    info = {
        "source": str(Path(data_dir).resolve()),
        "synthetic": bool(dataset.synthetic),
        "data_note": SYNTHETIC_NOTE if dataset.synthetic else "real CICIoMT2024 rows",
        "variant": dataset.variant,
        "view": dataset.view,
        "split": dataset.split,
        "feature_names": list(dataset.feature_names),
        "class_names": list(dataset.class_names),
        "train_rows": int(len(dataset.y_train)),
        "test_rows": int(len(dataset.y_test)),
        "seed": seed,
        "dedupe": dedupe,
        "test_rows_also_in_train": overlap,
        "stats": dataset.stats,
    }
    write_json(ws.dataset_info, info)
    return info


def load_prepared(ws: Workspace) -> tuple[dict, dict]:
    """The dataset description and the scaled arrays saved by ``prepare_data``."""
    return ws.read_json(ws.dataset_info, "data"), ws.load_arrays(ws.prepared, "data")


# --- model -----------------------------------------------------------------------------------


def train(ws: Workspace, settings, filters: tuple[int, ...], progress: bool = True) -> dict:
    """Train the float model and evaluate it on the test rows."""
    from mcu_ids.model.train import predict_classes, train_model

    info, arrays = load_prepared(ws)
    class_names = info["class_names"]
    result = train_model(
        arrays["x_train"],
        arrays["y_train"],
        len(class_names),
        settings,
        filters=filters,
        progress=progress,
    )
    ws.model_dir.mkdir(parents=True, exist_ok=True)
    tmp = ws.keras_model.with_name(".model.tmp.keras")
    result.model.save(tmp)
    tmp.replace(ws.keras_model)
    predictions = predict_classes(result.model, arrays["x_test"])
    metrics = classification_metrics(arrays["y_test"], predictions, class_names)
    save_metrics(metrics, ws.model_dir, "metrics_float")
    never = [row["class"] for row in metrics["per_class"] if row["support"] and not row["recall"]]
    if never:
        log.warning(
            "the model never recognises %s on the test rows; train longer (--epochs) or check "
            "the data",
            ", ".join(never),
        )
    summary = {
        "network": result.config.to_dict(),
        "parameters": int(result.model.count_params()),
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "alpha": result.alpha.tolist(),
        "history": result.history,
        "best_epoch": result.best_epoch,
        "rows_per_second": result.rows_per_second,
        "test_metrics": _headline(metrics),
    }
    write_json(ws.training_info, summary)
    return summary


def _headline(metrics: dict) -> dict:
    return {
        "rows": metrics["rows"],
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["f1"]["macro"],
        "weighted_f1": metrics["f1"]["weighted"],
        "macro_precision": metrics["precision"]["macro"],
        "macro_recall": metrics["recall"]["macro"],
    }


def _load_keras_model(ws: Workspace):

    from mcu_ids.model.network import NetworkConfig

    training = ws.read_json(ws.training_info, "train")
    return ws.load_keras_model(), NetworkConfig.from_dict(training["network"])


def quantize(ws: Workspace, calibration_rows: int, seed: int = 0, progress: bool = True) -> dict:
    """Convert to full int8, then score float and int8 side by side on the same test rows."""
    from mcu_ids.model.shift import fit_shift_stats
    from mcu_ids.model.train import predict_classes
    from mcu_ids.quantize.ptq import calibration_indices, convert_int8, io_quantization
    from mcu_ids.quantize.reference import run_reference

    info, arrays = load_prepared(ws)
    class_names = info["class_names"]
    model, config = _load_keras_model(ws)
    picked = calibration_indices(arrays["y_train"], calibration_rows, seed)
    tflite_bytes = convert_int8(
        model, config, arrays["x_train"][picked], log_path=ws.model_dir / "convert.log"
    )
    write_atomic(ws.tflite_model, tflite_bytes)
    in_q, out_q = io_quantization(tflite_bytes)
    test_inputs = in_q.quantize(arrays["x_test"])
    shift = fit_shift_stats(in_q.quantize(arrays["x_train"]))
    reference = run_reference(tflite_bytes, test_inputs, progress=progress)
    save_arrays(ws.reference, inputs=test_inputs, labels=arrays["y_test"], outputs=reference)
    float_pred = predict_classes(model, arrays["x_test"])
    int8_pred = np.argmax(reference.astype(np.int16), axis=1)
    float_metrics = classification_metrics(arrays["y_test"], float_pred, class_names)
    int8_metrics = classification_metrics(arrays["y_test"], int8_pred, class_names)
    save_metrics(int8_metrics, ws.model_dir, "metrics_int8")
    keras_bytes = ws.keras_model.stat().st_size
    summary = {
        "model_sha256": sha256_bytes(tflite_bytes),
        "tflite_bytes": len(tflite_bytes),
        "keras_file_bytes": keras_bytes,
        "float32_weight_bytes": int(model.count_params()) * 4,
        "int8_weight_bytes": int8_weight_bytes(tflite_bytes),
        "calibration_rows": int(len(picked)),
        "calibration_classes": sorted({class_names[i] for i in arrays["y_train"][picked]}),
        "input": {"scale": in_q.scale, "zero_point": in_q.zero_point},
        "output": {"scale": out_q.scale, "zero_point": out_q.zero_point},
        "float": _headline(float_metrics),
        "int8": _headline(int8_metrics),
        "prediction_agreement": float(np.mean(float_pred == int8_pred)),
        "shift": shift.to_dict(),
    }
    write_json(ws.quantization_info, summary)
    write_atomic(ws.model_dir / "quantization.md", format_quantization(summary))
    return summary


def int8_weight_bytes(tflite_bytes: bytes) -> int:
    """Bytes of the quantized model's parameters: its constant int8 tensors and int32 biases.

    The counterpart of the float model's ``count_params() * 4``. Constant int32 tensors without
    quantization (reshape targets) are not parameters; per-channel scales are not counted.
    """
    from mcu_ids.export.tflite_model import load_tflite

    model = load_tflite(tflite_bytes, native_only=False)
    return sum(
        tensor.data.nbytes
        for tensor in model.tensors
        if tensor.is_constant
        and (tensor.dtype == "INT8" or (tensor.dtype == "INT32" and tensor.quantization))
    )


def format_quantization(summary: dict) -> str:
    """Float and int8 figures side by side, as Markdown."""
    rows = [
        "| metric | float32 | int8 | change |",
        "|---|---:|---:|---:|",
    ]
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall"):
        before, after = summary["float"][key], summary["int8"][key]
        rows.append(f"| {key} | {before:.4f} | {after:.4f} | {after - before:+.4f} |")
    float_bytes = summary["float32_weight_bytes"]
    if summary.get("int8_weight_bytes"):
        int8_bytes = summary["int8_weight_bytes"]
        rows.append(
            f"| weights and biases (bytes) | {float_bytes} | {int8_bytes} | "
            f"{int8_bytes / float_bytes:.2f}x |"
        )
    # The file adds the graph, quantization parameters and metadata to the weights.
    rows.append(f"| .tflite file (bytes) | - | {summary['tflite_bytes']} | - |")
    return (
        f"### Quantization (int8, {summary['calibration_rows']} calibration rows)\n\n"
        + "\n".join(rows)
        + f"\n\nfloat and int8 predict the same class on "
        f"{summary['prediction_agreement'] * 100:.2f} % of test rows\n"
    )


# --- export ----------------------------------------------------------------------------------


def _c_float(value: float) -> str:
    """A float32 as an exact C hexadecimal literal."""
    return f"{float(np.float32(value)).hex()}f"


def export(ws: Workspace, progress: bool = True) -> dict:
    """Generate the model's C sources: config header, C array, native engine, TFLM resolver."""
    from mcu_ids.build.render import render_template
    from mcu_ids.export.carray import write_model_array
    from mcu_ids.export.native import generate_native_engine, native_engine_summary
    from mcu_ids.export.tflm import generate_op_resolver, measure_arena

    info = ws.read_json(ws.dataset_info, "data")
    scaler = ws.read_json(ws.scaler, "data")
    quant = ws.read_json(ws.quantization_info, "quantize")
    tflite_bytes = ws.require(ws.tflite_model, "quantize").read_bytes()
    model_hash = sha256_bytes(tflite_bytes)
    if model_hash != quant["model_sha256"]:
        raise DataError(
            f"{ws.tflite_model} changed since it was quantized",
            hint="run `mcu-ids quantize` again",
        )
    out = ws.export_dir
    out.mkdir(parents=True, exist_ok=True)
    tables = _scaler_tables(scaler, len(info["feature_names"]))
    context = {
        "model_sha256": model_hash,
        "n_features": len(info["feature_names"]),
        "n_classes": len(info["class_names"]),
        "input_scale": _c_float(quant["input"]["scale"]),
        "input_scale_dec": f"{quant['input']['scale']:.9g}",
        "input_zero_point": quant["input"]["zero_point"],
        "output_scale": _c_float(quant["output"]["scale"]),
        "output_scale_dec": f"{quant['output']['scale']:.9g}",
        "output_zero_point": quant["output"]["zero_point"],
        "variant": info["variant"],
        "shift_threshold": quant["shift"]["threshold"],
        "shift_low": quant["shift"]["low"],
        "shift_high": quant["shift"]["high"],
        "feature_names": info["feature_names"],
        "class_names": info["class_names"],
        **{key: [_c_float(v) for v in values] for key, values in tables.items()},
    }
    files = [render_template("model_config.h.j2", out / "model_config.h", context, model_hash)]
    files += write_model_array(tflite_bytes, out, model_hash)
    files += generate_native_engine(tflite_bytes, out, model_hash)
    arena = measure_arena(tflite_bytes)
    files += generate_op_resolver(tflite_bytes, out, model_hash, arena=arena)
    manifest = {
        "model_sha256": model_hash,
        "files": sorted(str(path.relative_to(out)) for path in files),
        "native_engine": native_engine_summary(tflite_bytes),
        "tflm_arena": arena.to_dict(),
        "version": __version__,
    }
    write_json(out / "manifest.json", manifest)
    return manifest


# model_config.h names -> FeatureScaler.to_dict() keys
_SCALER_TABLES = {"clip_low": "lo", "clip_high": "hi", "mean": "mean", "std": "std"}


def _scaler_tables(scaler: dict, n_features: int) -> dict[str, list[float]]:
    tables = {name: list(scaler[key]) for name, key in _SCALER_TABLES.items()}
    for key, values in tables.items():
        if len(values) != n_features:
            raise DataError(f"scaler table {key} has {len(values)} values, expected {n_features}")
    return tables


def export_manifest(ws: Workspace) -> dict:
    """The export step's manifest (model hash, generated files)."""
    return ws.read_json(ws.export_dir / "manifest.json", "export")


# --- bench -----------------------------------------------------------------------------------


def new_run_dir(ws: Workspace, board: str) -> Path:
    """A fresh folder for one benchmark run, named by time and board."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = ws.runs_dir / f"{stamp}-{board}"
    suffix = 1
    while run.exists():
        suffix += 1
        run = ws.runs_dir / f"{stamp}-{board}-{suffix}"
    run.mkdir(parents=True)
    return run


def bench_inputs(ws: Workspace, data_dir: Path | None, progress: bool = True) -> dict:
    """Int8 inputs, labels and TFLM reference outputs: the test rows, or every row of a folder."""
    from mcu_ids.data.reader import load_dataset, rows_in
    from mcu_ids.data.scaler import FeatureScaler
    from mcu_ids.model.shift import ShiftStats, shift_flags
    from mcu_ids.quantize.ptq import Quantization
    from mcu_ids.quantize.reference import run_reference

    info = ws.read_json(ws.dataset_info, "data")
    quant = ws.read_json(ws.quantization_info, "quantize")
    shift = ShiftStats.from_dict(quant["shift"])
    if data_dir is None:
        prepared = ws.load_arrays(ws.prepared, "data", ["test_in_train"])
        ref = ws.load_arrays(ws.reference, "quantize", ["inputs", "labels", "outputs"])
        if len(ref) < 3:
            raise ws.damaged(ws.reference, "quantize", "it lacks inputs, labels or outputs")
        return {
            "in_train": prepared.get("test_in_train"),
            "shift_scores": shift_flags(ref["inputs"], shift)[0],
            "inputs": ref["inputs"],
            "labels": ref["labels"],
            "reference": ref["outputs"],
            "source": info["source"],
            "split": info["split"],
            "synthetic": info["synthetic"],
        }
    scaler = FeatureScaler.from_dict(ws.read_json(ws.scaler, "data"))
    dataset = load_dataset(Path(data_dir), view=info["view"], progress=progress)
    if list(dataset.feature_names) != list(info["feature_names"]):
        raise DataError(
            f"{data_dir} uses the {dataset.variant}-column header, the model was trained on the "
            f"{info['variant']}-column one",
            hint="score a folder with the same header variant as the training data",
        )
    unknown = sorted(set(dataset.class_names) - set(info["class_names"]))
    if unknown:
        raise DataError(
            f"{data_dir} holds classes the model was not trained on: {', '.join(unknown)}",
            hint=f"the model knows: {', '.join(info['class_names'])}",
        )
    remap = np.array([info["class_names"].index(name) for name in dataset.class_names])
    x_raw = np.concatenate([dataset.x_train, dataset.x_test])
    labels = remap[np.concatenate([dataset.y_train, dataset.y_test])]
    scaled = scaler.transform(x_raw)
    # Rows the model was trained on score better than unseen ones: count them, as for the
    # prepared test split.
    trained_on = ws.load_arrays(ws.prepared, "data", ["x_train"]).get("x_train")
    in_train = None if trained_on is None else rows_in(scaled, trained_on)
    if in_train is not None and in_train.any():
        log.warning(
            "%d of the %d rows of %s are among the model's training rows: the scores include "
            "rows the model has seen",
            int(in_train.sum()),
            len(in_train),
            data_dir,
        )
    in_q = Quantization(quant["input"]["scale"], quant["input"]["zero_point"])
    inputs = in_q.quantize(scaled)
    tflite_bytes = ws.require(ws.tflite_model, "quantize").read_bytes()
    return {
        "in_train": in_train,
        "shift_scores": shift_flags(inputs, shift)[0],
        "inputs": inputs,
        "labels": labels,
        "reference": run_reference(tflite_bytes, inputs, progress=progress),
        "source": str(Path(data_dir).resolve()),
        "split": "every row of the folder",
        "synthetic": bool(dataset.synthetic),
    }


def bench_meta(ws: Workspace, board, engine: str, source: dict) -> dict:
    """What a report records about the run besides the results."""
    import platform as host_platform

    info = ws.read_json(ws.dataset_info, "data")
    quant = ws.read_json(ws.quantization_info, "quantize")
    return {
        "board": board.name,
        "board_description": board.description,
        "emulated": board.emulated,
        "engine": engine,
        "dataset": source["source"],
        "synthetic": bool(source["synthetic"]),
        "data": SYNTHETIC_NOTE if source["synthetic"] else "real CICIoMT2024 rows",
        "split": source["split"],
        "view": info["view"],
        "seed": info["seed"],
        "model_sha256": quant["model_sha256"],
        "shift_threshold": quant["shift"]["threshold"],
        "host_float_metrics": quant["float"],
        "host_int8_metrics": quant["int8"],
        "versions": _versions(),
        "host": host_platform.platform(),
    }


def _versions() -> dict:
    from importlib import metadata

    versions = {"mcu-ids": __version__}
    for package in ("tensorflow-cpu", "tensorflow", "tflite-micro", "numpy", "pyserial"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def describe(summary: dict) -> str:
    """A compact JSON rendering of a step's summary for stdout."""
    return json.dumps(summary, indent=2, sort_keys=True, default=str)
