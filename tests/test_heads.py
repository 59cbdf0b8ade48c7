"""Heads: parameter counts of the authors' released heads, and shapes."""
import numpy as np
import pytest

from mlsp import heads

# The authors' released Pool-3FC head on InceptionResNetV2's 5x5x16,928 wide features: 63.8 M parameters.
POOL_3FC_IRV2_PARAMETERS = 63_828_481


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda: heads.single_3fc(16_928), 37_044_737),
        (lambda: heads.single_3fc(10_048), 22_954_497),
        (lambda: heads.pool_3fc(16_928), POOL_3FC_IRV2_PARAMETERS),
        (lambda: heads.pool_3fc(10_048), 42_693_121),
    ],
    ids=["single_3fc_irv2", "single_3fc_iv3", "pool_3fc_irv2", "pool_3fc_iv3"],
)
def test_parameter_counts_of_the_released_heads(build, expected):
    assert build().count_params() == expected


def test_single_1fc_and_multi_3fc():
    assert heads.single_1fc(1808).count_params() == 1809
    boundaries = [0, 16, 40, 64]
    model = heads.multi_3fc(boundaries)
    assert [layer.name for layer in model.layers if layer.name.startswith("block") and layer.name[-2:].isdigit()] == ["block00", "block01", "block02"]
    x = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
    assert model.predict_on_batch(x).shape == (4, 1)
    # block 1's head sees channels 16..40 only: changing other channels of a one-block model changes nothing
    single = heads.multi_3fc([0, 16, 40])
    y = x[:, :40].copy()
    z = y.copy()
    z[:, 16:] += 1.0
    assert not np.allclose(single.predict_on_batch(y), single.predict_on_batch(z))


def test_pool_3fc_dropout_rates():
    model = heads.single_3fc(100, dropout=(0.5, 0.5, 0.75))
    assert [layer.rate for layer in model.layers if layer.name.endswith("_dropout")] == [0.5, 0.5, 0.75]
    with pytest.raises(ValueError, match="unknown head"):
        heads.build("wide_5fc", 10)


def test_batch_norm_momentum_reaches_every_layer_and_sets_how_far_short_statistics_lag():
    """After n steps a BatchNormalization's moving mean holds momentum**n of its start (0): at Keras'
    0.99 and a small profile's ~40 steps inference normalises with a third of the true mean."""
    import keras

    pool = heads.build("pool_3fc", 6, batch_norm_momentum=0.9)
    norms = [layer for layer in pool.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 8 and {layer.momentum for layer in norms} == {0.9}  # five convolutions, three FC
    assert {layer.momentum for layer in heads.build("single_3fc", 6).layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.99}

    rng = np.random.default_rng(0)
    features = rng.uniform(0.5, 1.5, size=(128, 8)).astype("float32")
    mos = features.sum(axis=1, keepdims=True)
    lag = {}
    for momentum in (0.99, 0.9):
        keras.utils.set_random_seed(0)
        model = heads.build("single_3fc", 8, dropout=(0, 0, 0), batch_norm_momentum=momentum)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
        model.fit(features, mos, batch_size=32, epochs=10, shuffle=False, verbose=0)  # 40 steps, as the demo's rows
        activations = keras.Model(model.input, model.get_layer("fc1").output).predict(features, verbose=0)
        lag[momentum] = float(np.mean(model.get_layer("fc1_bn").moving_mean.numpy()) / np.mean(activations))
    assert lag[0.99] < 0.5 and 0.9 < lag[0.9] < 1.1, lag


@pytest.mark.slow
def test_one_pool_3fc_step_on_irv2_wide_features_at_the_papers_batch():
    """The paper's largest head at its batch size, through one real step of the kit's optimizer: the
    rehearsal's 9 training images never fill a batch of 128. 128 x 5x5x16,928 float32 inputs (217 MB)
    and the weights, their gradients and Adam's two slots: a peak of 3.2 GB. The step is ~0.67 TFLOP
    (three 1x1 convolutions over 16,928 channels, forward and weight gradients): 53-56 CPU seconds
    measured on 2 shared AMD EPYC cores, so about half a minute on 2 idle ones; hence `slow`."""
    import keras

    from mlsp import train

    protocol = train.Protocol()
    assert protocol.batch_size == 128  # the paper's
    keras.utils.set_random_seed(0)
    model = heads.pool_3fc(16_928)
    assert model.count_params() == POOL_3FC_IRV2_PARAMETERS
    train.compile_head(model, protocol)
    rng = np.random.default_rng(0)
    features = rng.random((protocol.batch_size, 5, 5, 16_928), dtype=np.float32)
    mos = rng.uniform(2.0, 8.0, size=(protocol.batch_size, 1)).astype(np.float32)
    kernels = {layer.name: layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))}
    assert len(kernels) == 9  # five convolutions, three FC layers and the MOS output
    before = {name: keras.ops.convert_to_numpy(layer.kernel) for name, layer in kernels.items()}
    loss = float(np.asarray(model.train_on_batch(features, mos)))
    assert np.isfinite(loss) and loss > 0
    unchanged = [name for name, layer in kernels.items() if np.array_equal(keras.ops.convert_to_numpy(layer.kernel), before[name])]
    assert unchanged == []  # every layer took the step, the 1x1 convolutions on all 16,928 channels first
