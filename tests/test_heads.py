"""Heads: parameter counts of the authors' released heads, and shapes."""
import numpy as np
import pytest

from mlsp import heads


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda: heads.single_3fc(16_928), 37_044_737),
        (lambda: heads.single_3fc(10_048), 22_954_497),
        (lambda: heads.pool_3fc(16_928), 63_828_481),
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
