"""MLSP features: narrow (global average pooling per block) and wide (each block resized to 5x5
with area interpolation), concatenated over all blocks, from one forward pass.

Inputs (the paper's two settings):
  "original": the image at its own resolution (Table 3);
  "rescaled": the image resized to 256x256 (Table 2), whose 87.5% crops are 224x224.
Augmentation: crops of 87.5% of width and height at the four corners, each with and without a
horizontal flip: 8 views per image, run through the network as one batch of 8. "Whole" views are
the unaugmented image (one view), which the paper's "-aug" rows train and test on.
"""
from __future__ import annotations

import keras
import numpy as np

from mlsp.names import CROP_FRACTION, FEATURE_KINDS, INPUT_MODES, crop_size  # noqa: F401 (crop_size: read here by score and the benchmarks)

WIDE_SIZE = 5
RESCALED_SIZE = 256


def mlsp_model(backbone, kinds=FEATURE_KINDS, blocks: list[str] | None = None) -> keras.Model:
    """image batch -> {"narrow": [B, C], "wide": [B, 5, 5, C]} for the chosen blocks (default: all)."""
    names = blocks or backbone.block_layers
    activations = [backbone.model.get_layer(name).output for name in names]
    outputs = {}
    if "narrow" in kinds:
        pooled = [keras.layers.GlobalAveragePooling2D(name=f"gap_{name}")(a) for name, a in zip(names, activations)]
        outputs["narrow"] = keras.layers.Concatenate(axis=-1, name="narrow_mlsp")(pooled) if len(pooled) > 1 else pooled[0]
    if "wide" in kinds:
        resized = [_area_resize(name)(a) for name, a in zip(names, activations)]
        outputs["wide"] = keras.layers.Concatenate(axis=-1, name="wide_mlsp")(resized) if len(resized) > 1 else resized[0]
    return keras.Model(backbone.model.input, outputs, name=f"mlsp_{backbone.name}")


def _area_resize(name: str) -> keras.layers.Layer:
    """Keras' area Resizing on TensorFlow (the kit's path); AreaResize, the same numbers, elsewhere."""
    if keras.backend.backend() == "tensorflow":
        return keras.layers.Resizing(WIDE_SIZE, WIDE_SIZE, interpolation="area", name=f"area_{name}")
    return AreaResize(WIDE_SIZE, name=f"area_{name}")


def traced(model: keras.Model):
    """One trace for every input shape: AVA has ~25,000 distinct resolutions, and a per-shape trace
    costs seconds, while eager calls are 4-8x slower than a traced function.

    Under another Keras backend (allowed only for speed measurements, see mlsp/__init__) the model's
    own predict_on_batch: JAX compiles it once per input shape, PyTorch runs it eagerly; it returns
    numpy arrays."""
    if keras.backend.backend() != "tensorflow":
        return model.predict_on_batch
    import tensorflow as tf

    return tf.function(
        lambda images: model(images, training=False),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )


def block_boundaries(backbone) -> list[int]:
    """Channel offsets of each block in the concatenated features (len = blocks + 1)."""
    return [0] + list(np.cumsum(backbone.block_channels()).astype(int))


def prepare(image: np.ndarray, mode: str) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> the network-resolution image for an input mode."""
    if mode == "original":
        return image
    if mode == "rescaled":
        from PIL import Image

        return np.asarray(Image.fromarray(image).resize((RESCALED_SIZE, RESCALED_SIZE), Image.BILINEAR))
    raise ValueError(f"input mode '{mode}' is not one of {INPUT_MODES}")


def augmented_views(image: np.ndarray, indices=range(8)) -> np.ndarray:
    """The 8 views [8, h, w, 3]: top-left, top-right, bottom-left, bottom-right, then the same
    mirrored; or only the views `indices` (0-7), in that order, without building the others."""
    height, width = image.shape[:2]
    crop_height, crop_width = crop_size(height, width)
    corners = [(0, 0), (0, width - crop_width), (height - crop_height, 0), (height - crop_height, width - crop_width)]
    views = []
    for index in indices:
        top, left = corners[index % 4]
        crop = image[top : top + crop_height, left : left + crop_width]
        views.append(crop[:, ::-1] if index >= 4 else crop)
    return np.stack(views)


def views(image: np.ndarray, mode: str, augment: bool) -> np.ndarray:
    prepared = prepare(image, mode)
    return augmented_views(prepared) if augment else prepared[None]


def area_resize_reference(block: np.ndarray, size: int = WIDE_SIZE) -> np.ndarray:
    """Numpy reference of TensorFlow's area resize, [H, W, C] -> [size, size, C].

    Each output cell averages the input over its box [o*s, (o+1)*s) with s = in/out, pixels weighted
    by their overlap with the box; for maps smaller than the output the box lies inside one pixel.
    """

    rows, columns = area_weights(block.shape[0], size), area_weights(block.shape[1], size)
    return np.einsum("oh,hwc,pw->opc", rows, block.astype(np.float64), columns)


def area_weights(length: int, size: int = WIDE_SIZE) -> np.ndarray:
    """[size, length]: the weight of each input pixel in each output cell of an area resize (see
    area_resize_reference)."""
    scale = length / size
    matrix = np.zeros((size, length))
    for out in range(size):
        start, stop = out * scale, (out + 1) * scale
        for pixel in range(int(np.floor(start)), min(length, int(np.ceil(stop)))):
            matrix[out, pixel] = max(0.0, min(stop, pixel + 1) - max(start, pixel))
    return matrix / scale


class AreaResize(keras.layers.Layer):
    """TensorFlow's area resize [B, H, W, C] -> [B, size, size, C] as two weighted sums (area_weights),
    for Keras backends whose Resizing lacks "area" (JAX, PyTorch). The weights come from the map's
    static height and width, which JAX knows for each shape it compiles and PyTorch for each call."""

    def __init__(self, size: int = WIDE_SIZE, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def call(self, inputs):
        rows = keras.ops.convert_to_tensor(area_weights(int(inputs.shape[1]), self.size), dtype=inputs.dtype)
        columns = keras.ops.convert_to_tensor(area_weights(int(inputs.shape[2]), self.size), dtype=inputs.dtype)
        return keras.ops.einsum("bowc,pw->bopc", keras.ops.einsum("oh,bhwc->bowc", rows, inputs), columns)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[3])

    def get_config(self):
        return dict(super().get_config(), size=self.size)


def feature_sizes(backbone) -> dict:
    """Blocks, channels and float16 bytes per image and view, narrow and wide."""
    channels = block_boundaries(backbone)[-1]
    return {
        "backbone": backbone.name, "blocks": len(backbone.block_layers), "channels": channels,
        "narrow KB / view": channels * 2 / 1e3, "wide KB / view": channels * WIDE_SIZE * WIDE_SIZE * 2 / 1e3,
        "wide MB / image (8 views)": channels * WIDE_SIZE * WIDE_SIZE * 2 * 8 / 1e6,
    }


def block_activations(backbone, image: np.ndarray, blocks: list[str]) -> dict[str, np.ndarray]:
    """The raw activation maps of a few blocks for one image (for Fig. 2-style plots)."""
    probe = keras.Model(backbone.model.input, [backbone.model.get_layer(name).output for name in blocks])
    outputs = probe.predict_on_batch(backbone.preprocess(image[None]))
    return {name: np.asarray(output[0]) for name, output in zip(blocks, outputs)}
