"""Run by tests/test_distribute.py in a fresh Python: the CPU must be split into two logical devices
before TensorFlow starts its runtime, which the test process has long done.

usage: python tests/distribute_rows.py WORK_DIR OUT_JSON

Trains one feature row and one fine-tuning row with distribute "none" and "mirrored" (two replicas,
one per logical CPU) and writes what the test compares: the loss curves, the test predictions, the
steps per epoch, the per-replica batch sizes Keras hands a model, and how many BatchNormalization
layers were switched to global statistics.
"""
import json
import sys
from pathlib import Path

import tensorflow as tf

# Two replicas on any machine: GPUs hidden (else "mirrored" would take them), the CPU split in two.
tf.config.set_visible_devices([], "GPU")
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mlsp import backbones, distribute, experiments, finetune, train  # noqa: E402
from mlsp.features import RESCALED_SIZE  # noqa: E402
from mlsp.store import FeatureWriter, store_path  # noqa: E402

FEATURE_BATCH, FINETUNE_BATCH = 16, 8
FEATURE_EPOCHS, FINETUNE_EPOCHS = 2, 2
# Single-3FC (BatchNorm after each Dense) without dropout: a replica slice draws other dropout masks
# than the whole batch does, which would hide whether everything else agrees.
FEATURE_ROW = experiments.Row("Single-3FC (no dropout)", "single_3fc", "rescaled", "narrow", True, dropout=(0.0, 0.0, 0.0))
FINETUNE_ROW = experiments.Row("Single-1FC (all)", "single_1fc", "rescaled", "narrow", True)


class CountingSchedule(train.PaperSchedule):
    """The paper's schedule, also counting the training steps of each epoch."""

    steps: list = []

    def on_epoch_begin(self, epoch, logs=None):
        CountingSchedule.steps.append(0)

    def on_train_batch_end(self, batch, logs=None):
        CountingSchedule.steps[-1] += 1


class ReplicaBatch(keras.layers.Layer):
    """Identity that records the batch size each replica's step receives."""

    sizes: list = []

    def call(self, x):
        size = tf.py_function(lambda n: ReplicaBatch.sizes.append(int(n)) or n, [tf.shape(x)[0]], tf.int32)
        with tf.control_dependencies([size]):
            return tf.identity(x)


def feature_store(work: Path, rng) -> experiments.Split:
    n, channels = 96, 48
    ids = [f"i{k}" for k in range(n)]
    mos = rng.uniform(3, 7, n).astype(np.float32)
    features = (rng.normal(size=(n, 8, channels)) + mos[:, None, None] * np.linspace(-0.2, 0.2, channels)).astype(np.float16)
    path = store_path(work / "features", "tiny", "rescaled", "narrow", True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FeatureWriter(path, ids, 8, (channels,), {"block_boundaries": [0, 16, 32, 48], "weights": "random"}) as writer:
        for k in range(n):
            writer.write(k, features[k])
    metadata = pd.DataFrame({"image_id": ids, "mos": mos, "width": 256, "height": 256})
    return experiments.Split(metadata, np.arange(64), np.arange(64, 80), np.arange(80, 96))


def tiny_backbone() -> backbones.Backbone:
    """Two strided conv blocks with BatchNorm: a backbone whose batch statistics matter."""
    inputs = keras.Input((None, None, 3))
    x = inputs
    for index in (1, 2):
        x = keras.layers.Conv2D(4, 3, strides=4 if index == 1 else 2, name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"block{index}")(x)
    return backbones.Backbone("tiny", "random", keras.Model(inputs, x), lambda images: images.astype("float32") / 127.5 - 1, ["block1", "block2"])


def synchronized_layers(model_file: Path) -> list[bool]:
    model = keras.saving.load_model(model_file)
    return [layer.synchronized for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def replica_batches(name: str) -> list[int]:
    """Per-replica batch sizes of one epoch of fit() on FeatureBatches of FEATURE_BATCH (40 rows)."""
    ReplicaBatch.sizes.clear()
    with distribute.scope(name):
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(1)(ReplicaBatch()(inputs)))
        model.compile("sgd", "mse")
    rows = np.arange(40)
    model.fit(train.FeatureBatches(np.zeros((40, 1, 3), np.float32), rows, np.zeros(40), FEATURE_BATCH, shuffle=False), epochs=1, verbose=0)
    return sorted(ReplicaBatch.sizes)


def main(work: Path, out: Path) -> None:
    train.PaperSchedule = CountingSchedule  # what fit() and run_finetune_row instantiate
    rng = np.random.default_rng(0)
    split = feature_store(work, rng)
    images = rng.integers(0, 255, size=(24, RESCALED_SIZE, RESCALED_SIZE, 3), dtype=np.uint8)
    finetune_split = experiments.Split(pd.DataFrame({"image_id": [str(k) for k in range(24)], "mos": rng.uniform(3, 7, 24)}), np.arange(16), np.arange(16, 20), np.arange(20, 24))
    found = {"replicas": distribute.replicas("mirrored"), "train_images": [len(split.train), len(finetune_split.train)], "batch": [FEATURE_BATCH, FINETUNE_BATCH], "epochs": [FEATURE_EPOCHS, FINETUNE_EPOCHS]}
    for name in ("none", "mirrored"):
        CountingSchedule.steps = []
        model_file = work / f"head_{name}.keras"
        feature = experiments.run_feature_row(FEATURE_ROW, split, work / "features", "tiny", train.Protocol(max_epochs=FEATURE_EPOCHS, batch_size=FEATURE_BATCH, distribute=name), seed=0, model_path=model_file)
        feature_steps = CountingSchedule.steps
        CountingSchedule.steps = []
        tuned = finetune.run_finetune_row(FINETUNE_ROW, tiny_backbone, images, finetune_split, train.Protocol(max_epochs=FINETUNE_EPOCHS, batch_size=FINETUNE_BATCH, distribute=name), seed=0, test_crops=4)
        found[name] = {
            "feature_loss": feature["history"]["loss"], "feature_val_loss": feature["history"]["val_loss"], "feature_predicted": feature["predicted"].tolist(),
            "feature_steps": feature_steps, "feature_synchronized": synchronized_layers(model_file),
            "finetune_loss": tuned["history"]["loss"], "finetune_val_loss": tuned["history"]["val_loss"], "finetune_predicted": tuned["predicted"].tolist(),
            "finetune_steps": CountingSchedule.steps, "replica_batches": replica_batches(name),
        }
    out.write_text(json.dumps(found))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
