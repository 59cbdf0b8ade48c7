"""The paper's heads (Table 1), in the Keras functional API.

- single_1fc: one Dense(1) on the concatenated narrow features (Fig. 4a).
- single_3fc: the 3FC component on the narrow features (Fig. 4b, X = 2048).
- multi_3fc:  a 3FC head per block's narrow features, combined by a learned weighted sum (Fig. 5).
- pool_3fc:   an Inception-style module on the wide 5x5xC features, global average pooling, 3FC (Fig. 6).

3FC (Fig. 3): Dense X -> X/2 -> X/8 (ReLU, he_normal), each followed by BatchNorm then Dropout
(0.25, 0.25, 0.5 by default), then Dense(1), linear, predicting the MOS. With X = 2048 this is the
authors' 2048-1024-256 head; for Multi-3FC X is the block's channel count (our reading of Fig. 5).

Every BatchNormalization layer takes `batch_norm_momentum`, the weight of the old moving statistics at
each training step. The default 0.99 is Keras 2.2's, which the authors' kutils keeps (authors.py):
after n steps the moving mean still holds 0.99**n of its start (0), which on AVA's ~1,800 steps per
epoch is nothing, but after the demo's ~40 steps is 0.67, so inference would normalise with statistics
a third of the way to the true ones (measured: predictions biased by +1 to +2.5 MOS). Small profiles
set it lower (params/<profile>/common.yaml).
"""
from __future__ import annotations

import keras

from mlsp.names import DEFAULT_DROPOUT, HEADS

DEFAULT_BATCH_NORM_MOMENTUM = 0.99  # Keras 2.2's default, unchanged by kutils (the authors' fc_layers)


@keras.saving.register_keras_serializable(package="mlsp")
class ChannelSlice(keras.layers.Layer):
    """Channels [start, stop) of the last axis: one block out of the concatenated MLSP features."""

    def __init__(self, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, inputs):
        return inputs[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


def three_fc(x, width: int = 2048, dropout=DEFAULT_DROPOUT, prefix: str = "fc", batch_norm_momentum: float = DEFAULT_BATCH_NORM_MOMENTUM):
    for position, (units, rate) in enumerate(zip((width, width // 2, width // 8), dropout), start=1):
        x = keras.layers.Dense(max(int(units), 1), activation="relu", kernel_initializer="he_normal", name=f"{prefix}{position}")(x)
        x = keras.layers.BatchNormalization(momentum=batch_norm_momentum, name=f"{prefix}{position}_bn")(x)
        x = keras.layers.Dropout(rate, name=f"{prefix}{position}_dropout")(x)
    return keras.layers.Dense(1, name=f"{prefix}_mos")(x)


def single_1fc(channels: int) -> keras.Model:
    inputs = keras.Input(shape=(channels,), name="narrow_mlsp")
    return keras.Model(inputs, keras.layers.Dense(1, name="mos")(inputs), name="single_1fc")


def single_3fc(channels: int, dropout=DEFAULT_DROPOUT, batch_norm_momentum: float = DEFAULT_BATCH_NORM_MOMENTUM) -> keras.Model:
    inputs = keras.Input(shape=(channels,), name="narrow_mlsp")
    return keras.Model(inputs, three_fc(inputs, 2048, dropout, batch_norm_momentum=batch_norm_momentum), name="single_3fc")


def multi_3fc(block_boundaries: list[int], dropout=DEFAULT_DROPOUT, batch_norm_momentum: float = DEFAULT_BATCH_NORM_MOMENTUM) -> keras.Model:
    inputs = keras.Input(shape=(block_boundaries[-1],), name="narrow_mlsp")
    scores = []
    for index, (start, stop) in enumerate(zip(block_boundaries[:-1], block_boundaries[1:])):
        block = ChannelSlice(start, stop, name=f"block{index:02d}")(inputs)
        scores.append(three_fc(block, stop - start, dropout, prefix=f"block{index:02d}_fc", batch_norm_momentum=batch_norm_momentum))
    combined = keras.layers.Concatenate(name="block_scores")(scores)
    outputs = keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(1.0 / len(scores)), name="weighted_sum")(combined)
    return keras.Model(inputs, outputs, name="multi_3fc")


def _conv_bn_relu(x, filters: int, kernel, name: str, batch_norm_momentum: float):
    x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(scale=False, momentum=batch_norm_momentum, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def pool_3fc(channels: int, size: int = 5, dropout=DEFAULT_DROPOUT, batch_norm_momentum: float = DEFAULT_BATCH_NORM_MOMENTUM) -> keras.Model:
    inputs = keras.Input(shape=(size, size, channels), name="wide_mlsp")
    column_1x1 = _conv_bn_relu(inputs, 1024, 1, "column1_1x1", batch_norm_momentum)
    column_3x3 = _conv_bn_relu(inputs, 1024, 1, "column2_1x1", batch_norm_momentum)
    column_1x3 = _conv_bn_relu(column_3x3, 512, (1, 3), "column2_1x3", batch_norm_momentum)
    column_3x1 = _conv_bn_relu(column_3x3, 512, (3, 1), "column2_3x1", batch_norm_momentum)
    pooled = keras.layers.AveragePooling2D(3, strides=1, padding="same", name="column3_pool")(inputs)
    column_pool = _conv_bn_relu(pooled, 1024, 1, "column3_1x1", batch_norm_momentum)
    x = keras.layers.Concatenate(name="inception_concat")([column_1x1, column_1x3, column_3x1, column_pool])
    x = keras.layers.GlobalAveragePooling2D(name="inception_gap")(x)
    return keras.Model(inputs, three_fc(x, 2048, dropout, batch_norm_momentum=batch_norm_momentum), name="pool_3fc")


def build(name: str, channels: int, block_boundaries: list[int] | None = None, dropout=DEFAULT_DROPOUT, batch_norm_momentum: float = DEFAULT_BATCH_NORM_MOMENTUM) -> keras.Model:
    """The head `name` on `channels` input channels (narrow: [batch, channels]; pool_3fc: [batch, 5, 5,
    channels]), predicting [batch, 1] MOS. Raises ValueError for an unknown name."""
    if name == "single_1fc":
        return single_1fc(channels)
    if name == "single_3fc":
        return single_3fc(channels, dropout, batch_norm_momentum)
    if name == "multi_3fc":
        return multi_3fc(block_boundaries, dropout, batch_norm_momentum)
    if name == "pool_3fc":
        return pool_3fc(channels, dropout=dropout, batch_norm_momentum=batch_norm_momentum)
    raise ValueError(f"unknown head '{name}' (choose from {', '.join(HEADS)})")
