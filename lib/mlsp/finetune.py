"""End-to-end fine-tuning for Table 2's "Finetune = yes" rows: backbone + head on images.

Training: random 224x224 crops of the 256x256 rescaled images with random horizontal flips,
batch 32, the same learning-rate protocol as feature training. Test: the mean prediction over 20
random crops and flips. "-aug" rows train and test on the whole 256x256 image instead.
"""
from __future__ import annotations

import math
import os
import time

import keras
import numpy as np

from mlsp import distribute, heads, metrics, train
from mlsp.features import RESCALED_SIZE, mlsp_model, prepare
from mlsp.images import load_rgb

CROP = 224
# Threads decoding images read from disk for fine-tuning: AVA's 255,000 photos are too many to hold
# rescaled in RAM (~50 GB), and one thread decodes ~120 images/s while a modern GPU trains on thousands
# (benchmarks/ava_scale.py). One per core, up to 16: on a 2-core CPU they wait for the step anyway.
FEED_WORKERS = max(1, min(16, os.cpu_count() or 1))


def finetune_model(backbone, row, batch_norm_momentum: float = heads.DEFAULT_BATCH_NORM_MOMENTUM) -> keras.Model:
    """image -> narrow MLSP of the row's blocks -> the row's head, one trainable model."""
    blocks = backbone.block_layers[-row.last_blocks :] if row.last_blocks else backbone.block_layers
    extractor = mlsp_model(backbone, kinds=("narrow",), blocks=blocks)
    channels = [int(backbone.model.get_layer(name).output.shape[-1]) for name in blocks]
    boundaries = [0] + list(np.cumsum(channels).astype(int))
    head = heads.build(row.head, boundaries[-1], boundaries, row.dropout, batch_norm_momentum)
    inputs = keras.Input(shape=(None, None, 3), name="image")
    return keras.Model(inputs, head(extractor(inputs)["narrow"]), name=f"finetune_{row.head}")


class ImageBatches(keras.utils.PyDataset):
    """Rescaled images (uint8 in memory, or paths read per batch) served as random crops and flips, or whole.

    `workers` threads prepare batches ahead of the training step (Pillow decodes and resizes without
    holding the GIL); the default is 1 for images in memory and up to FEED_WORKERS for paths. A batch
    depends only on (seed, epoch, batch index): its crops come from a generator seeded by those three,
    not from a stream shared by the threads, so any number of workers gives the same batches.
    """

    def __init__(self, images: np.ndarray, mos, preprocess, batch_size: int = 32, augment: bool = True, seed: int = 0, shuffle: bool = True, fill_last: bool = True, apply_exif_orientation: bool = False, workers: int | None = None):
        if workers is None:
            workers = 1 if np.asarray(images).dtype == np.uint8 else FEED_WORKERS
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max(2, 2 * workers))
        self.apply_exif_orientation = apply_exif_orientation
        self.images, self.mos = images, None if mos is None else np.asarray(mos, dtype=np.float32)
        self.preprocess, self.batch_size, self.augment, self.shuffle, self.fill_last = preprocess, batch_size, augment, shuffle, fill_last
        self.seed, self.epoch = seed, -1
        self.on_epoch_end()

    def on_epoch_end(self):
        # Keras stops its worker threads before calling this, so no batch of the old epoch is still being made
        self.epoch += 1
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.images)) if self.shuffle else np.arange(len(self.images))

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index):
        chosen = train.batch_indices(self.order, index, self.batch_size, self.fill_last)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        images = (rescaled(self.images, i, self.apply_exif_orientation) for i in chosen)
        batch = np.stack([random_view(image, rng) if self.augment else image for image in images])
        batch = self.preprocess(batch)
        return (batch,) if self.mos is None else (batch, self.mos[chosen])


def random_view(image: np.ndarray, rng) -> np.ndarray:
    top, left = rng.integers(0, RESCALED_SIZE - CROP + 1, size=2)
    crop = image[top : top + CROP, left : left + CROP]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def load_rescaled(paths, rows=None, apply_exif_orientation: bool = False) -> np.ndarray:
    """The rescaled images [N, 256, 256, 3] uint8 in memory (196 KB each): right for the demo, not for
    AVA's 255,000. Only `rows` (default: all) are decoded; the others stay black, so that indices into
    the metadata stay valid when some images have no features and are left out of the split."""
    rows = range(len(paths)) if rows is None else rows
    images = np.zeros((len(paths), RESCALED_SIZE, RESCALED_SIZE, 3), dtype=np.uint8)
    for row in rows:
        images[row] = prepare(load_rgb(paths[row], apply_exif_orientation=apply_exif_orientation), "rescaled")
    return images


def rescaled(images: np.ndarray, index: int, apply_exif_orientation: bool = False) -> np.ndarray:
    """`images` holds either decoded 256x256 images or paths (then each is read when needed)."""
    item = images[index]
    return item if images.dtype == np.uint8 else prepare(load_rgb(item, apply_exif_orientation=apply_exif_orientation), "rescaled")


def run_finetune_row(row, backbone_loader, images: np.ndarray, split, protocol: train.Protocol, seed: int, test_crops: int = 20, apply_exif_orientation: bool = False) -> dict:
    """Fine-tune a fresh backbone + head (backbone_loader() gives the pretrained backbone).

    images: the rescaled images or their paths (mlsp.data.image_paths of split.metadata), indexed as
    the metadata's rows; split: an experiments.Split, whose scale sets the accuracy threshold."""
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    with distribute.scope(protocol.distribute):  # "mirrored": backbone and head on every GPU
        backbone = backbone_loader()
        model = finetune_model(backbone, row, protocol.batch_norm_momentum)
    mos = split.mos
    train.start_at_mean(model.layers[-1], float(mos[split.train].mean()))
    train.compile_head(model, protocol)
    training = ImageBatches(images[split.train], mos[split.train], backbone.preprocess, protocol.batch_size, augment=row.augment, seed=seed, apply_exif_orientation=apply_exif_orientation)
    validation = ImageBatches(images[split.validation], mos[split.validation], backbone.preprocess, protocol.batch_size, augment=False, shuffle=False, apply_exif_orientation=apply_exif_orientation)
    schedule = train.PaperSchedule(protocol)
    history = model.fit(training, validation_data=validation, epochs=protocol.max_epochs, callbacks=[schedule, *distribute.same_batch_order(protocol.distribute)], verbose=0)
    rng = np.random.default_rng(seed + 2)
    predicted = np.empty(len(split.test), dtype=np.float64)
    # one image's crops as one batch; under "mirrored" predict_on_batch gives each replica the whole
    # batch and returns one copy per replica, which leaves the mean as it is
    for position, index in enumerate(split.test):
        image = rescaled(images, index, apply_exif_orientation)
        batch = np.stack([random_view(image, rng) for _ in range(test_crops)]) if row.augment else image[None]
        predicted[position] = float(np.mean(model.predict_on_batch(backbone.preprocess(batch))))
    record = {key: [float(v) for v in values] for key, values in history.history.items()}
    record["learning_rate"] = schedule.learning_rates
    # accuracy at the data set's threshold, out_of_range on its scale; intervals drawn from the run's seed
    evaluation = metrics.evaluate(predicted, mos[split.test], seed=seed, threshold=split.scale.accuracy_threshold, score_range=split.scale.score_range)
    print(f"{row.label:<20} fine-tuned {backbone.name}: {len(record['loss'])} epochs in {time.perf_counter() - started:5.1f} s, test SRCC {evaluation['srcc']:.3f}", flush=True)
    return {
        "label": row.label, "head": row.head, "backbone": backbone.name, "weights": str(backbone.weights), "seed": seed,
        "parameters": int(model.count_params()), "epochs": len(record["loss"]), "history": record,
        "predicted": predicted, "true": mos[split.test], **evaluation,
    }
