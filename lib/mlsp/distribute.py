"""Training on several GPUs with `tf.distribute.MirroredStrategy`: the `distribute` parameter of
notebooks 02-04 (carried by `mlsp.train.Protocol.distribute`).

- "none": TensorFlow's default strategy (`tf.distribute.get_strategy()`): one device, as before.
- "mirrored": one replica per visible GPU, variables mirrored, gradients summed across replicas.

The global batch stays the Protocol's (128 on features, 32 fine-tuning): Keras' fit() hands each
PyDataset batch to `strategy.experimental_distribute_dataset`, which splits it across the replicas
(batch 16 on 2 replicas: 8 + 8; tests/test_distribute.py), and scales each replica's mean loss by
1 / replicas, so the summed gradient is the gradient of the global batch's mean loss. Batch
normalisation is made to agree too: with several replicas every BatchNormalization layer is switched
to `synchronized=True` (`global_batch_norm`), so its statistics are those of the global batch and not
of each replica's slice (fine-tuning's 32 on 8 GPUs would leave 4 images per statistic).

The batch order is kept too (`same_batch_order`): Keras' fit() shuffles a PyDataset's batch order
with Python's `random`, and under a strategy it starts one extra pass over the data to build the
model, which would draw one shuffle more and shift the order of every epoch. With the same seed,
"mirrored" therefore sees the batches of "none" in the same order, and the loss curves agree to float
rounding (tests/test_distribute.py).

What is not the same: float sums are reduced in another order; and dropout. Keras 3 (TF backend)
mirrors a Dropout layer's seed state, so every replica draws the same masks for its slice: within a
step the k-th image of each replica's slice shares one mask (seen on two CPU replicas), where one
device draws a mask per image. Each image's mask is still random, but the dropout noise of a step
is correlated across replicas: rows with dropout (Single-3FC, Multi-3FC, Pool-3FC, fine-tuning)
train on a slightly different noise than on one device.

"mirrored" with no visible GPU is an error naming the parameter, not a quiet fall-back to one CPU
device: a machine on which TensorFlow cannot see its GPUs (drivers, CUDA) should not train for days
on the CPU. The one exception is a CPU split into several logical devices on purpose
(`tf.config.set_logical_device_configuration`, as the tests do): then the strategy mirrors over them.
"""
from __future__ import annotations

import functools
import random

import keras
import tensorflow as tf

from mlsp.names import STRATEGIES

NO_GPU = (
    "distribute='mirrored' needs at least one GPU, and TensorFlow sees none (tf.config.list_physical_devices('GPU') is empty: "
    "check the CUDA drivers); set distribute: none to train on the CPU"
)


def unavailable(name: str) -> str | None:
    """Why `name` cannot train in this process (None when it can), found without building a
    strategy or starting TensorFlow's runtime, so that `mlsp run` can refuse a profile before
    notebook 00 rather than at notebook 02's first row: NO_GPU for "mirrored" when no GPU is visible
    and the CPU is not split into several logical devices."""
    if name != "mirrored" or tf.config.list_physical_devices("GPU"):
        return None
    cpus = tf.config.list_physical_devices("CPU")
    # get_, not list_logical_devices: listing would start the runtime and freeze the device setup
    split = tf.config.get_logical_device_configuration(cpus[0]) if cpus else None
    return None if split and len(split) >= 2 else NO_GPU


def strategy(name: str = "none") -> tf.distribute.Strategy:
    """The strategy for a `distribute` value. "none" gives the strategy in effect (the default one
    outside any scope); "mirrored" gives one MirroredStrategy for the whole process, since each row
    of a notebook asks again and a model must be trained under the strategy it was built under.

    Raises ValueError for a name outside STRATEGIES, and for "mirrored" when TensorFlow sees no GPU
    (and the CPU is not split into several logical devices)."""
    if name not in STRATEGIES:
        raise ValueError(f"distribute={name!r}: should be one of {', '.join(STRATEGIES)}")
    return tf.distribute.get_strategy() if name == "none" else _mirrored()


@functools.cache
def _mirrored() -> tf.distribute.MirroredStrategy:
    devices = [device.name for device in tf.config.list_logical_devices("GPU")]
    if not devices:
        devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        if len(devices) < 2:
            raise ValueError(NO_GPU)
        print(f"distribute='mirrored': no GPU visible; mirroring over the {len(devices)} logical CPU devices", flush=True)
    return tf.distribute.MirroredStrategy(devices)


def scope(name: str = "none"):
    """`with scope(protocol.distribute):` around building a model (and compiling it: its optimizer's
    variables must be mirrored too). For "none" the default strategy's scope, which changes nothing."""
    return strategy(name).scope()


def replicas(name: str = "none") -> int:
    """How many replicas share each global batch (1 for "none")."""
    return int(strategy(name).num_replicas_in_sync)


def global_batch_norm(model: keras.Model, name: str = "none") -> int:
    """With several replicas, switch every BatchNormalization layer of `model` (nested models too, a
    fine-tuned backbone's included) to statistics over the global batch. Call before the first
    training step (the flag is read when the step is traced). Returns how many layers were switched;
    with one replica none are, and the model is left exactly as it was."""
    if replicas(name) < 2:
        return 0
    switched = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            switched += 1
    return switched


class SameBatchOrder(keras.callbacks.Callback):
    """Puts Python's random state back, once fit() has built the model, to where it was when this
    callback was made (right before fit()): the extra data pass a strategy's build makes then leaves
    Keras' batch shuffles as they are without a strategy."""

    def __init__(self):
        super().__init__()
        self.state = random.getstate()

    def on_train_begin(self, logs=None):
        random.setstate(self.state)


def same_batch_order(name: str = "none") -> list:
    """Callbacks for a fit() under `name`, made in fit()'s own argument list: [] for "none" (whose
    path stays exactly as it was), [SameBatchOrder()] otherwise."""
    return [] if name == "none" else [SameBatchOrder()]


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
