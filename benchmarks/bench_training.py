"""Training throughput (rows/s) of the default network on synthetic data, at a few batch sizes.

Writes a synthetic CICIoMT2024-layout folder, loads and scales it as `mcu-ids data` does, then
trains the default separable 1D-CNN with focal loss for a fixed number of epochs (no early
stop) at each batch size, and prints the rows per second the training loop reached.

    python benchmarks/bench_training.py [--rows-per-class 2000] [--epochs 3] [--batch 64,128]
"""

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

DEFAULT_BATCH_SIZES = "64,128,256,512"

log = logging.getLogger("bench_training")


def measure(x, y, n_classes: int, batch_size: int, epochs: int) -> float:
    """Rows per second of one training run at ``batch_size``."""
    from mcu_ids.model.train import TrainSettings, train_model

    # patience past the last epoch: every run trains the same number of epochs.
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, patience=epochs + 1)
    return train_model(x, y, n_classes, settings, progress=False).rows_per_second


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-class", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", default=DEFAULT_BATCH_SIZES, help="comma-separated sizes")
    args = parser.parse_args(argv)
    # The CLI's settings: quiet C++ logging, deterministic (non-oneDNN) kernels.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # its C++ start-up notes are not results
    os.environ.setdefault("GLOG_minloglevel", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from mcu_ids.data.reader import load_dataset
    from mcu_ids.data.scaler import FeatureScaler
    from mcu_ids.data.synthetic import write_synthetic_dataset

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_synthetic_dataset(Path(tmp) / "data", rows_per_class=args.rows_per_class)
        dataset = load_dataset(folder, progress=False)
    x = FeatureScaler().fit(dataset.x_train).transform(dataset.x_train)
    y = dataset.y_train
    n_classes = len(dataset.class_names)
    print(f"synthetic data: {len(y)} training rows, {x.shape[1]} features, {n_classes} classes")
    print(f"{args.epochs} epochs per run (90 % of the rows train, 10 % validate); CPU only")
    # The first run pays for graph tracing; a short warm-up keeps it out of the figures.
    measure(x, y, n_classes, int(args.batch.split(",")[0]), 1)
    rates = {}
    for batch in (int(b) for b in args.batch.split(",")):
        rates[batch] = measure(x, y, n_classes, batch, args.epochs)
    base = next(iter(rates.values()))
    print(f"{'batch':>6} {'rows/s':>10} {'vs first':>9}")
    for batch, rate in rates.items():
        print(f"{batch:>6} {rate:>10.0f} {rate / base:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
