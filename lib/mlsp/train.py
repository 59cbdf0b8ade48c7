"""The paper's training protocol for heads on stored features.

MSE on the MOS; Adam (default betas); learning rate 1e-4, divided by 10 every 20 epochs or after 5
epochs without validation improvement, whichever comes first, down to 1e-6, reloading the best
weights at each change; training stops when a drop is due at the floor (early stopping) or at
`max_epochs`. Batch 128. Each epoch draws one of the stored views per image at random; test
predictions average over all stored views.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras
import numpy as np

from mlsp import distribute
from mlsp.names import GRAPH_OPTIMIZER_CHOICES
from mlsp.store import DEFAULT_READERS, FeatureReader

def configure_graph_optimizer(choice: str = "auto") -> bool:
    """Switch TensorFlow's graph optimizer (Grappler's meta-optimizer) on or off for this process, and
    return whether it is on: the `graph_optimizer` parameter of notebooks 02-05.

    "auto": off on a machine without a GPU, on with one. Grappler rewrites every traced function
    before its first run; on CPU that costs more than it saves in the short runs a CPU can afford
    (measured on 2 cores, one process each: a Single-3FC head on the demo's features 12 -> 7 s, Multi-3FC
    28 -> 21 s, Pool-3FC 78 -> 65 s for 10 epochs; a fine-tuned InceptionV3 row of the rehearsal 48 -> 40 s,
    Multi-3FC 65 -> 57 s). Heads of dense layers give the same numbers either way; Pool-3FC's
    convolutions differ in float rounding (demo SRCC 0.4426 vs 0.4415). Long GPU runs keep it (its
    fused kernels and layout rewrites pay off there).
    Call it before this process runs its first TensorFlow operation: TensorFlow reads the setting
    when it starts. Raises ValueError for another choice, RuntimeError when TensorFlow has started.
    """
    if choice not in GRAPH_OPTIMIZER_CHOICES:
        raise ValueError(f"graph_optimizer must be one of {', '.join(GRAPH_OPTIMIZER_CHOICES)}, got {choice!r}")
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf
    from tensorflow.python.eager import context

    on = bool(tf.config.list_physical_devices("GPU")) if choice == "auto" else choice == "on"
    wanted = {"disable_meta_optimizer": not on}
    if getattr(context.context(), "_initialized", False) and tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False) != (not on):
        raise RuntimeError(f"graph_optimizer {choice!r}: TensorFlow has already started in this process; set it before the first TensorFlow operation (the notebooks do, in their first cell)")
    tf.config.optimizer.set_experimental_options(wanted)
    return on


@dataclass
class Protocol:
    learning_rate: float = 1e-4
    drop_every: int = 20
    patience: int = 5
    floor: float = 1e-6
    max_epochs: int = 100
    batch_size: int = 128
    jit_compile: bool = False  # XLA lost on CPU here (Pool-3FC 0.83x, benchmarks/training.py)
    distribute: str = "none"  # "mirrored": all visible GPUs share each batch of batch_size (mlsp.distribute)
    batch_norm_momentum: float = 0.99  # the heads' BatchNormalization (mlsp.heads: why small profiles lower it)


class FeatureBatches(keras.utils.PyDataset):
    """Batches of (features, MOS) from a store or an in-memory array [N, V, ...].

    Each epoch draws one random view per image (`random_view=True`), or serves view `view` (one
    number, or one per row) for evaluation. From a store, a batch's records are read by `readers`
    threads at their byte offsets in the file, around h5py (FeatureReader.read_pairs; h5py's fancy
    indexing is never used); a store whose layout does not allow it is read one record at a time
    through h5py, with a warning.
    `channels` keeps a slice of the last axis (the block ablation of Fig. 7).
    The order and the views are drawn once per epoch (on_epoch_end, which Keras calls with its
    threads stopped), and each record's bytes are the same however they are read, so a batch is
    bit-identical for any number of readers or workers.
    `readers` (default mlsp.store.DEFAULT_READERS = 8): AVA's stores do not fit in RAM, so training
    reads them from the disk, where one read in flight at a time left the disk idle between reads
    (benchmarks/store.py --sections readers, batches of 128 random records, store evicted from the page
    cache, 2 cores: 5x5x2048 views 1,093 images/s through h5py, 1,516 with 1 reader, 3,048 with 8;
    IRv2 wide 846 kB views 162 / 295 / 377 images/s, an AVA epoch's reads 24 -> 10 min, the disk then
    near its bandwidth here). From the page cache 8 readers read as fast as 1 (0.91-0.94x), 3-4x h5py.
    `workers` (Keras threads reading whole batches ahead of the step) stays 1: the readers keep the
    disk busy within a batch, and Keras' tf.data path already reads the next batch while the step runs.
    """

    def __init__(self, source, rows, targets=None, batch_size: int = 128, random_view: bool = True, view: int | np.ndarray = 0, seed: int = 0, channels: slice | None = None, shuffle: bool = True, fill_last: bool = False, workers: int = 1, readers: int = DEFAULT_READERS):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max(2, 2 * workers))
        self.source, self.rows = source, np.asarray(rows)
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)
        self.batch_size, self.random_view, self.view = batch_size, random_view, view
        self.channels = channels or slice(None)
        self.shuffle, self.fill_last, self.readers = shuffle, fill_last, readers
        self.rng = np.random.default_rng(seed)
        self.n_views = source.shape[1]
        self.on_epoch_end()

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.rows)) if self.shuffle else np.arange(len(self.rows))
        self.views = self.rng.integers(0, self.n_views, size=len(self.rows)) if self.random_view else np.broadcast_to(self.view, len(self.rows))

    def __len__(self):
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, index):
        chosen = batch_indices(self.order, index, self.batch_size, self.fill_last)
        rows, views = self.rows[chosen], self.views[chosen]
        if isinstance(self.source, FeatureReader):
            features = self.source.read_pairs(rows, views, self.readers)
        else:
            features = self.source[rows, views]
        features = features[..., self.channels].astype(np.float32)
        if self.targets is None:
            return (features,)
        return features, self.targets[chosen]


def batch_indices(order: np.ndarray, index: int, batch_size: int, fill_last: bool) -> np.ndarray:
    """Positions of batch `index`. With `fill_last` a short last batch is topped up from the start of
    the order: every batch then has one shape, and Keras traces its step function once, not twice
    (a trace of a fine-tuned backbone costs ~10 s on CPU)."""
    chosen = order[index * batch_size : (index + 1) * batch_size]
    if fill_last and len(chosen) < batch_size <= len(order):
        chosen = np.concatenate([chosen, order[: batch_size - len(chosen)]])
    return chosen


class PaperSchedule(keras.callbacks.Callback):
    """Divide the learning rate by 10 every `drop_every` epochs or after `patience` epochs without
    validation improvement, whichever first; reload the best weights at each change; stop when a
    drop is due at the floor. Restores the best weights at the end."""

    def __init__(self, protocol: Protocol):
        super().__init__()
        self.protocol = protocol

    def on_train_begin(self, logs=None):
        self.best_loss, self.best_weights = np.inf, None
        self.epochs_at_rate, self.epochs_without_improvement = 0, 0
        self.model.optimizer.learning_rate.assign(self.protocol.learning_rate)
        self.learning_rates = []

    def on_epoch_end(self, epoch, logs=None):
        loss = float(logs["val_loss"])
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["learning_rate"] = rate
        self.learning_rates.append(rate)
        if loss < self.best_loss:
            self.best_loss, self.best_weights = loss, self.model.get_weights()
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        self.epochs_at_rate += 1
        if self.epochs_at_rate >= self.protocol.drop_every or self.epochs_without_improvement >= self.protocol.patience:
            if rate / 10 < self.protocol.floor * (1 - 1e-6):
                self.model.stop_training = True
                return
            self.model.optimizer.learning_rate.assign(rate / 10)
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            self.epochs_at_rate, self.epochs_without_improvement = 0, 0

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def start_at_mean(model: keras.Model, mean_mos: float) -> None:
    """Start every MOS output's bias at the training mean. With He-initialised layers the first
    predictions are near 0 against MOS near 5.5; on AVA thousands of steps erase that, on a small
    set it would eat the whole run. A starting point only: the protocol itself is unchanged."""
    for layer in model.layers:
        if layer.name.endswith("mos") and getattr(layer, "use_bias", False):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, np.full_like(bias, mean_mos)])


@keras.saving.register_keras_serializable(package="mlsp")
class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam whose update of each variable is TensorFlow's own ResourceApplyAdam kernel.

    The same rule as Keras' Adam (Kingma & Ba; epsilon added outside the square root, as Keras and
    the authors' Keras 2 do), in one graph op per variable instead of about fifteen. Tracing the
    step is what a short run on CPU mostly spends its time on, and the optimizer's ops were a third of
    it: CPU seconds of the first step, 2 cores (benchmarks/training.py --trace prints them):
    Multi-3FC on IRv2's 43 blocks (603 variables) 67 -> 44 s; a fine-tuned InceptionV3 +
    Single-3FC 46 -> 34 s. Results agree with Keras' Adam to float32 rounding (tests/test_train.py).
    Other Keras backends get Keras' own update.
    """

    def update_step(self, gradient, variable, learning_rate):
        if keras.backend.backend() != "tensorflow":
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        momentum, velocity = self._momentums[index], self._velocities[index]
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=momentum.value.handle, v=velocity.value.handle,
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step), beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step),
            lr=tf.cast(learning_rate, dtype), beta1=tf.cast(self.beta_1, dtype), beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype), use_locking=False,
        )


def compile_head(model: keras.Model, protocol: Protocol) -> keras.Model:
    """Adam (FusedAdam) on the MSE, with the optimizer's slots built now rather than inside the first step:
    variables created during a trace make TensorFlow trace the step a second time (12 s of the
    24 s it takes to trace a fine-tuned backbone on CPU).

    The model must have been built under `mlsp.distribute.scope(protocol.distribute)`; the optimizer
    is made under it here, and with several replicas batch normalisation is switched to the global
    batch's statistics (mlsp.distribute.global_batch_norm)."""
    with distribute.scope(protocol.distribute):
        distribute.global_batch_norm(model, protocol.distribute)
        model.compile(optimizer=FusedAdam(learning_rate=protocol.learning_rate), loss="mean_squared_error", jit_compile=bool(protocol.jit_compile))
        model.optimizer.build(model.trainable_variables)
    return model


@dataclass
class TrainResult:
    model: keras.Model
    history: dict = field(default_factory=dict)
    epochs: int = 0
    best_validation_loss: float = float("nan")


def fit(model: keras.Model, source, train_rows, train_mos, validation_rows, validation_mos, protocol: Protocol, seed: int, channels: slice | None = None, verbose: int = 0) -> TrainResult:
    """Train a head on stored features with the paper's protocol; the best weights are kept.
    Build `model` under `mlsp.distribute.scope(protocol.distribute)`: with "mirrored" each batch of
    `protocol.batch_size` is split across the replicas."""
    keras.utils.set_random_seed(seed)
    start_at_mean(model, float(np.mean(train_mos)))
    compile_head(model, protocol)
    training = FeatureBatches(source, train_rows, train_mos, protocol.batch_size, random_view=True, seed=seed, channels=channels, fill_last=True)
    validation = FeatureBatches(source, validation_rows, validation_mos, protocol.batch_size, random_view=True, seed=seed + 1, channels=channels, shuffle=False, fill_last=True)
    schedule = PaperSchedule(protocol)
    history = model.fit(training, validation_data=validation, epochs=protocol.max_epochs, callbacks=[schedule, *distribute.same_batch_order(protocol.distribute)], verbose=verbose)
    record = {key: [float(v) for v in values] for key, values in history.history.items()}
    record["learning_rate"] = schedule.learning_rates
    return TrainResult(model, record, len(record["loss"]), float(schedule.best_loss))


def predict(model: keras.Model, source, rows, batch_size: int = 256, channels: slice | None = None) -> np.ndarray:
    """Mean prediction over all stored views of each image, every (image, view) pair in one pass.

    Every batch has `batch_size` rows, whatever the number of images: the pairs are cycled up to a
    whole number of batches and the repeats' predictions dropped. One model predicting sets of
    different sizes (test, then validation) then traces its predict step once, not once per size."""
    n_views = source.shape[1]
    pairs = np.repeat(np.asarray(rows), n_views)
    views = np.tile(np.arange(n_views), len(rows))
    padded = np.resize(np.arange(len(pairs)), math.ceil(len(pairs) / batch_size) * batch_size)
    batches = FeatureBatches(source, pairs[padded], None, batch_size, random_view=False, view=views[padded], channels=channels, shuffle=False)
    per_view = model.predict(batches, verbose=0).reshape(-1)[: len(pairs)]
    return per_view.reshape(len(rows), n_views).mean(axis=1)


def load_features(path, in_memory: bool = True, image_ids=None, rows=None):
    """A store's features (its reader, or the whole array read with one contiguous slice when it
    fits in memory) and its attributes, from one opening.

    Raises ValueError when, given `image_ids`, the store holds other images, or when one of `rows`
    (default: every image) has no features because its extraction failed; RuntimeError when images
    are still pending (extraction not finished). Training on a store with failed images takes a split
    restricted to the written ones (`mlsp.experiments.usable_split`)."""
    reader = FeatureReader(path)
    checked = np.arange(len(reader.ids)) if rows is None else np.asarray(rows, dtype=np.int64)
    problem = None
    if image_ids is not None and list(reader.ids) != list(image_ids):
        problem = ValueError(f"{path}: its images differ from the metadata CSV; rerun notebook 01_extract_features")
    elif reader.pending[checked].any():
        problem = RuntimeError(f"{path}: {int(reader.pending[checked].sum())} images have not been extracted yet; rerun notebook 01_extract_features")
    elif reader.failed[checked].any():
        first = reader.ids[int(checked[np.flatnonzero(reader.failed[checked])[0]])]
        problem = ValueError(f"{path}: {int(reader.failed[checked].sum())} of the requested images failed extraction (first: {first}); train on mlsp.experiments.usable_split")
    if problem is not None:
        reader.close()
        raise problem
    attrs = reader.attrs
    if not in_memory:
        return reader, attrs
    array = reader.read_all()
    reader.close()
    return array, attrs
