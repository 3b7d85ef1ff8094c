"""The separable 1D-CNN, laid out so that int8 conversion folds every BatchNorm.

Each block is SeparableConv1D -> BatchNormalization -> ReLU: with the normalisation directly after
the convolution, the converter folds it into the convolution's weights, and ReLU fuses into the
int8 kernel. A BatchNorm after the ReLU would survive as separate int8 MUL and ADD operators.
"""

from dataclasses import asdict, dataclass

# Filters of each separable block: about 1.4k parameters, the size of the published model's class.
DEFAULT_FILTERS = (16, 32)


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the network; stored with the trained model so the deploy copy matches."""

    n_features: int
    n_classes: int
    filters: tuple[int, ...] = DEFAULT_FILTERS
    kernel_size: int = 3
    pool_size: int = 2

    def to_dict(self) -> dict:
        return {**asdict(self), "filters": list(self.filters)}

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkConfig":
        return cls(**{**data, "filters": tuple(data["filters"])})


def build_network(config: NetworkConfig, batch_size: int | None = None):
    """Build the Keras model; ``batch_size=1`` gives the deploy model without dynamic shape ops."""
    import keras
    from keras import layers

    inputs = keras.Input((config.n_features,), batch_size=batch_size, name="features")
    x = layers.Reshape((config.n_features, 1), name="as_sequence")(inputs)
    for index, filters in enumerate(config.filters):
        x = layers.SeparableConv1D(
            filters, config.kernel_size, padding="same", use_bias=False, name=f"sepconv{index}"
        )(x)
        x = layers.BatchNormalization(name=f"bn{index}")(x)
        x = layers.ReLU(name=f"relu{index}")(x)
        # Pool between blocks only: after the last block the global average does the reduction.
        if index < len(config.filters) - 1:
            x = layers.MaxPooling1D(config.pool_size, name=f"pool{index}")(x)
    x = layers.GlobalAveragePooling1D(name="average")(x)
    x = layers.Dense(config.n_classes, name="logits")(x)
    outputs = layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mcu_ids_cnn")


def deploy_copy(trained, config: NetworkConfig):
    """A batch-1 model carrying the trained weights, for conversion to TFLite."""
    model = build_network(config, batch_size=1)
    model.set_weights(trained.get_weights())
    return model
