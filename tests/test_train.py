"""The training protocol: schedule, view sampling, HDF5 vs memory feeding."""
import keras
import numpy as np
import pytest

from mlsp import heads, train
from mlsp.store import FeatureReader, FeatureWriter


def drive(schedule, model, losses):
    schedule.set_model(model)
    schedule.on_train_begin()
    seen = []
    for epoch, loss in enumerate(losses):
        model.layers[-1].set_weights([np.full_like(w, epoch) for w in model.layers[-1].get_weights()])
        schedule.on_epoch_end(epoch, {"val_loss": loss})
        seen.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
        if model.stop_training:
            break
    return seen


@pytest.fixture
def model():
    m = heads.single_1fc(3)
    m.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
    m.stop_training = False
    return m


def test_drop_after_patience_reloads_best_weights(model):
    schedule = train.PaperSchedule(train.Protocol(patience=2, drop_every=20))
    rates = drive(schedule, model, [5.0, 4.0, 4.5, 4.6])
    assert rates == pytest.approx([1e-4, 1e-4, 1e-4, 1e-5])
    assert np.all(model.layers[-1].get_weights()[0] == 1)  # weights of epoch 1, the best


def test_drop_every_n_epochs_and_stop_at_floor(model):
    schedule = train.PaperSchedule(train.Protocol(patience=100, drop_every=2, floor=1e-6))
    rates = drive(schedule, model, list(np.linspace(10, 1, 20)))
    assert rates == pytest.approx([1e-4, 1e-5, 1e-5, 1e-6, 1e-6, 1e-6])
    assert model.stop_training and len(rates) == 6


def written_store(path, images: int, channels: int, seed: int) -> np.ndarray:
    """A store of `images` x 8 views x `channels` random float16 features at `path`; returns the array."""
    array = np.random.default_rng(seed).normal(size=(images, 8, channels)).astype(np.float16)
    with FeatureWriter(path, [str(i) for i in range(images)], 8, (channels,)) as writer:
        for i in range(images):
            writer.write(i, array[i])
    return array


def test_each_epoch_draws_random_views_and_hdf5_equals_memory(tmp_path):
    array = written_store(tmp_path / "s.h5", 10, 4, seed=0)
    mos = np.arange(10, dtype=np.float32)
    in_memory = train.FeatureBatches(array, np.arange(10), mos, batch_size=4, seed=3)
    with FeatureReader(tmp_path / "s.h5") as reader:
        from_store = train.FeatureBatches(reader, np.arange(10), mos, batch_size=4, seed=3)
        for index in range(len(in_memory)):
            np.testing.assert_array_equal(in_memory[index][0], from_store[index][0])
    views_first = in_memory.views.copy()
    in_memory.on_epoch_end()
    assert not np.array_equal(views_first, in_memory.views)
    assert set(np.concatenate([in_memory.views, views_first])) > {0}
    features, target = in_memory[0]
    assert features.dtype == np.float32 and target.shape == (4,)


def test_fill_last_keeps_one_batch_shape():
    order = np.arange(10)
    assert len(train.batch_indices(order, 2, 4, fill_last=True)) == 4
    assert list(train.batch_indices(order, 2, 4, fill_last=False)) == [8, 9]


def test_fit_learns_a_linear_target_and_predict_averages_views():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 8, 6)).astype(np.float32)
    mos = 5 + features[:, 0, :].sum(axis=1) * 0.3
    model = heads.single_1fc(6)
    result = train.fit(model, features, np.arange(200), mos[:200], np.arange(200, 250), mos[200:250], train.Protocol(learning_rate=1e-2, max_epochs=30, batch_size=32), seed=0)
    assert result.epochs >= 5 and len(result.history["learning_rate"]) == result.epochs
    predicted = train.predict(model, features, np.arange(250, 300))
    expected = np.mean([model.predict_on_batch(features[250:, v]).reshape(-1) for v in range(8)], axis=0)
    np.testing.assert_allclose(predicted, expected, rtol=1e-5)


def test_fit_traces_the_training_step_once():
    """Optimizer slots created inside the first step would make TensorFlow trace it twice."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 2, 6)).astype(np.float32)
    model = heads.single_3fc(6)
    traces = []
    step = model.train_step
    model.train_step = lambda data: traces.append(1) or step(data)
    train.fit(model, features, np.arange(32), np.full(32, 5.0), np.arange(32, 40), np.full(8, 5.0), train.Protocol(max_epochs=2, batch_size=8), seed=0)
    assert len(traces) == 1


def test_block_ablation_slices_the_last_k_blocks_and_refuses_more_than_there_are():
    from mlsp import experiments

    boundaries = [0, 4, 10, 16]
    assert experiments.block_channels(boundaries, 2) == (slice(4, None), [0, 6, 12])
    assert experiments.block_channels(boundaries, 3) == (None, boundaries)
    with pytest.raises(ValueError, match="last_blocks=4, but the features have 3 blocks"):
        experiments.block_channels(boundaries, 4)


def test_largest_training_side_ignores_validation_and_test_images():
    import pandas as pd

    from mlsp import experiments

    metadata = pd.DataFrame({"width": [300, 640, 900, 120], "height": [500, 480, 100, 1000], "mos": 5.0})
    split = experiments.Split(metadata, train=np.array([0, 1]), validation=np.array([2]), test=np.array([3]))
    assert split.largest_training_side == 640


def test_parallel_readers_serve_the_same_batches_for_the_same_seed(tmp_path):
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    written_store(tmp_path / "s.h5", 37, 6, seed=1)

    def served(workers, seed=5):
        with FeatureReader(tmp_path / "s.h5") as reader:
            adapter = PyDatasetAdapter(train.FeatureBatches(reader, np.arange(37), np.arange(37, dtype=np.float32), batch_size=8, seed=seed, workers=workers), shuffle=False)
            epochs = []
            for _ in range(3):
                adapter.on_epoch_begin()
                epochs.append(np.concatenate([x for x, _ in adapter.get_numpy_iterator()]))
                adapter.on_epoch_end()
            return epochs

    one, four = served(1), served(4)
    for a, b in zip(one, four):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(one[0], one[1])  # each epoch a new order and new views
    assert not np.array_equal(served(4, seed=6)[0], one[0])


def test_reader_threads_serve_the_batches_of_memory_for_the_same_seed(tmp_path):
    """Batches (rows, views, feature values) are bit-identical for 1 and N reader threads, with
    Keras' workers too, and equal the in-memory array's batches; every epoch draws anew."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    array = written_store(tmp_path / "s.h5", 45, 5, seed=2)
    mos = np.arange(45, dtype=np.float32)

    def epochs(source, readers=1, workers=1):
        batches = train.FeatureBatches(source, np.arange(45), mos, batch_size=16, seed=9, fill_last=True, readers=readers, workers=workers)
        adapter = PyDatasetAdapter(batches, shuffle=False)
        served = []
        for _ in range(3):
            adapter.on_epoch_begin()
            served.append([(x, y) for x, y in adapter.get_numpy_iterator()])
            adapter.on_epoch_end()
        return served

    expected = epochs(array)
    with FeatureReader(tmp_path / "s.h5") as reader:
        assert reader.direct_problem is None
        for readers, workers in ((1, 1), (4, 1), (16, 1), (8, 3)):
            got = epochs(reader, readers, workers)
            for epoch_expected, epoch_got in zip(expected, got, strict=True):
                for (x_expected, y_expected), (x_got, y_got) in zip(epoch_expected, epoch_got, strict=True):
                    assert x_got.dtype == np.float32
                    np.testing.assert_array_equal(x_got, x_expected)
                    np.testing.assert_array_equal(y_got, y_expected)
    assert not np.array_equal(expected[0][0][0], expected[1][0][0])


def test_fused_adam_follows_keras_adam_and_survives_save_and_load(tmp_path):
    """FusedAdam (TensorFlow's ResourceApplyAdam) must be the same rule as Keras' Adam: after 30
    steps with a learning-rate change the weights agree to float32 rounding, while a different
    epsilon or beta (a wrong argument passed to the kernel) moves them by orders of magnitude more."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(96, 12)).astype(np.float32)
    targets = (features @ rng.normal(size=12) + 5).astype(np.float32)

    def trained(optimizer):
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu"), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
        model.compile(optimizer=optimizer, loss="mean_squared_error")
        model.fit(features, targets, batch_size=16, epochs=3, verbose=0, shuffle=False)
        model.optimizer.learning_rate.assign(1e-4)
        model.fit(features, targets, batch_size=16, epochs=2, verbose=0, shuffle=False)
        return model, np.concatenate([weight.ravel() for weight in model.get_weights()])

    _, reference = trained(keras.optimizers.Adam(1e-2))
    fused_model, fused = trained(train.FusedAdam(1e-2))
    _, other_beta = trained(train.FusedAdam(1e-2, beta_2=0.99))
    assert np.abs(fused - reference).max() < 1e-4 * np.abs(reference).max()
    assert np.abs(other_beta - reference).max() > 100 * np.abs(fused - reference).max()

    path = tmp_path / "head.keras"
    fused_model.save(path)
    again = keras.models.load_model(path)
    assert type(again.optimizer) is train.FusedAdam
    np.testing.assert_array_equal(again.predict(features, verbose=0), fused_model.predict(features, verbose=0))


GRAPH_OPTIMIZER_PROBE = """
import sys
import tensorflow as tf
from mlsp import train
choice, start_first = sys.argv[1], sys.argv[2] == "started"
if start_first:
    tf.constant(1.0) + 1.0  # TensorFlow's first operation: the context is set up
try:
    on = train.configure_graph_optimizer(choice)
except (RuntimeError, ValueError) as error:
    print(type(error).__name__, error)
else:
    print("on" if on else "off", tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False))
"""


@pytest.mark.parametrize(
    ("choice", "when", "expected"),
    [
        ("auto", "fresh", "auto"),  # off without a GPU, on with one
        ("off", "fresh", "off True"),
        ("on", "fresh", "on False"),
        ("off", "started", "RuntimeError graph_optimizer 'off': TensorFlow has already started"),
        ("on", "started", "on False"),  # already on: nothing to change, nothing refused
        ("sometimes", "fresh", "ValueError graph_optimizer must be one of auto, on, off, got 'sometimes'"),
    ],
)
def test_configure_graph_optimizer_sets_grappler_before_tensorflow_starts_and_refuses_after(choice, when, expected):
    """A process-wide TensorFlow setting: each case runs in its own interpreter."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import tensorflow as tf

    if expected == "auto":
        expected = "on False" if tf.config.list_physical_devices("GPU") else "off True"
    lib = Path(__file__).resolve().parents[1] / "lib"
    completed = subprocess.run([sys.executable, "-c", GRAPH_OPTIMIZER_PROBE, choice, when], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(lib)}, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1].startswith(expected), completed.stdout
