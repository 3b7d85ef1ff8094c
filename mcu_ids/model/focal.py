"""Multi-class focal loss with per-class alpha (Lin et al., 2017) for imbalanced classes."""

import numpy as np

DEFAULT_GAMMA = 2.0


def balanced_alpha(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class weights ``n_rows / (n_classes * n_rows_of_class)``, normalised to mean 1.

    Classes absent from ``labels`` get weight 0: they cannot contribute to the loss anyway, and a
    finite value keeps the normalisation meaningful for the classes that are there.
    """
    counts = np.bincount(np.asarray(labels, np.int64), minlength=n_classes).astype(np.float64)
    alpha = np.zeros(n_classes, dtype=np.float64)
    present = counts > 0
    alpha[present] = counts.sum() / (present.sum() * counts[present])
    alpha[present] /= alpha[present].mean()
    return alpha.astype(np.float32)


def focal_loss_numpy(
    labels: np.ndarray, probabilities: np.ndarray, alpha: np.ndarray, gamma: float
) -> float:
    """Mean focal loss computed with NumPy; the reference the Keras loss is tested against."""
    probs = np.clip(np.asarray(probabilities, np.float64), 1e-7, 1.0 - 1e-7)
    p_true = probs[np.arange(len(labels)), labels]
    weights = np.asarray(alpha, np.float64)[labels]
    return float(np.mean(-weights * (1.0 - p_true) ** gamma * np.log(p_true)))


def make_focal_loss(alpha: np.ndarray, gamma: float = DEFAULT_GAMMA):
    """A Keras loss ``(y_true, y_prob)`` for integer labels and softmax outputs.

    ``loss = -alpha[y] * (1 - p_y) ** gamma * log(p_y)``, averaged over the batch.
    """
    import keras
    from keras import ops

    alpha_const = np.asarray(alpha, np.float32)

    @keras.saving.register_keras_serializable(package="mcu_ids")
    def focal_loss(y_true, y_prob):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        probs = ops.clip(y_prob, 1e-7, 1.0 - 1e-7)
        p_true = ops.take_along_axis(probs, ops.expand_dims(labels, -1), axis=-1)[:, 0]
        weights = ops.take(ops.convert_to_tensor(alpha_const), labels)
        return -weights * ops.power(1.0 - p_true, gamma) * ops.log(p_true)

    return focal_loss
