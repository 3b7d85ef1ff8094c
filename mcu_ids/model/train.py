"""Training with focal loss and early stopping on a held-out slice of the training rows."""

import logging
from dataclasses import dataclass

import numpy as np

from mcu_ids.errors import DataError
from mcu_ids.model.focal import DEFAULT_GAMMA, balanced_alpha, make_focal_loss
from mcu_ids.model.network import DEFAULT_FILTERS, NetworkConfig, build_network

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one training run."""

    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 3e-3
    gamma: float = DEFAULT_GAMMA
    validation_fraction: float = 0.1
    patience: int = 8
    seed: int = 0


@dataclass
class TrainResult:
    """A trained model and what happened while training it."""

    model: object
    config: NetworkConfig
    alpha: np.ndarray
    history: dict
    best_epoch: int
    rows_per_second: float


def seed_everything(seed: int) -> None:
    """Make Python, NumPy and TensorFlow draw the same numbers and pick deterministic kernels."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Stratified train/validation indices.

    A class with two rows or more gives at least one to validation; one with a single row keeps
    it for training.
    """
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        n_val = max(1, int(round(len(rows) * fraction))) if len(rows) > 1 else 0
        val_idx.append(rows[:n_val])
        train_idx.append(rows[n_val:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))


class _EpochProgress:
    """A Keras callback drawing one tqdm bar over epochs (stderr), with the latest losses."""

    def __new__(cls, total: int, enabled: bool):
        import keras
        from tqdm import tqdm

        class Progress(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.bar = tqdm(total=total, desc="training", unit="epoch", disable=not enabled)

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                self.bar.set_postfix(
                    {k: f"{v:.4f}" for k, v in logs.items() if k in ("loss", "val_loss")}
                )
                self.bar.update(1)

            def on_train_end(self, logs=None):
                self.bar.close()

        return Progress()


def train_model(
    x_train: np.ndarray,
    y_train: np.ndarray,
    n_classes: int,
    settings: TrainSettings,
    filters: tuple[int, ...] = DEFAULT_FILTERS,
    progress: bool = True,
) -> TrainResult:
    """Train on scaled features; returns the model with the best validation loss."""
    import time

    import keras

    if len(x_train) < 2 * n_classes:
        raise DataError(
            f"only {len(x_train)} training rows for {n_classes} classes",
            hint="point --data at a folder with more rows, or use fewer classes",
        )
    seed_everything(settings.seed)
    config = NetworkConfig(n_features=x_train.shape[1], n_classes=n_classes, filters=filters)
    model = build_network(config)
    alpha = balanced_alpha(y_train, n_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss=make_focal_loss(alpha, settings.gamma),
        metrics=["accuracy"],
    )
    fit_idx, val_idx = validation_split(y_train, settings.validation_fraction, settings.seed)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=settings.patience, restore_best_weights=True
    )
    log.info(
        "training on %d rows, validating on %d, %d classes, alpha=%s",
        len(fit_idx),
        len(val_idx),
        n_classes,
        [round(float(value), 3) for value in alpha],
    )
    started = time.perf_counter()
    history = model.fit(
        x_train[fit_idx],
        y_train[fit_idx],
        validation_data=(x_train[val_idx], y_train[val_idx]),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[stop, _EpochProgress(settings.epochs, progress)],
    )
    elapsed = time.perf_counter() - started
    epochs_run = len(history.history["loss"])
    val_losses = history.history["val_loss"]
    return TrainResult(
        model=model,
        config=config,
        alpha=alpha,
        history={k: [float(v) for v in values] for k, values in history.history.items()},
        best_epoch=int(np.argmin(val_losses)) + 1,
        rows_per_second=len(fit_idx) * epochs_run / elapsed,
    )


def predict_classes(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Class indices predicted by the float model."""
    return np.argmax(model.predict(x, batch_size=batch_size, verbose=0), axis=1)
