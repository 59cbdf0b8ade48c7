"""MLSP features: area pooling against numpy, channel counts, views."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mlsp import backbones, features


@pytest.mark.parametrize("height, width", [(10, 10), (7, 9), (13, 6), (5, 5), (3, 4), (1, 1), (17, 11)])
def test_area_pooling_matches_numpy_reference(height, width):
    block = np.random.default_rng(height * 100 + width).normal(size=(height, width, 6)).astype(np.float32)
    reference = features.area_resize_reference(block)
    layer = keras.layers.Resizing(5, 5, interpolation="area")(block[None]).numpy()[0]
    direct = tf.image.resize(block[None], (5, 5), method="area").numpy()[0]
    np.testing.assert_allclose(layer, reference, atol=1e-5)
    np.testing.assert_allclose(direct, reference, atol=1e-5)


@pytest.mark.parametrize("height, width", [(10, 10), (7, 9), (13, 6), (3, 4), (1, 1), (17, 11)])
def test_area_resize_layer_for_other_backends_matches_tensorflow(height, width):
    block = np.random.default_rng(height * 100 + width).normal(size=(2, height, width, 6)).astype(np.float32)
    layer = np.asarray(features.AreaResize(5)(block))
    direct = tf.image.resize(block, (5, 5), method="area").numpy()
    np.testing.assert_allclose(layer, direct, atol=1e-5)


def test_reference_is_a_plain_mean_when_divisible():
    block = np.arange(10 * 10 * 2, dtype=np.float64).reshape(10, 10, 2)
    expected = block.reshape(5, 2, 5, 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(features.area_resize_reference(block), expected)


@pytest.fixture(scope="module")
def inception_v3():
    return backbones.load("inception_v3", "random")


def test_narrow_and_wide_from_one_pass(inception_v3):
    model = features.mlsp_model(inception_v3)
    image = np.random.default_rng(0).uniform(-1, 1, size=(2, 75, 75, 3)).astype(np.float32)  # the smallest input
    outputs = features.traced(model)(image)
    assert outputs["narrow"].shape == (2, 10_048) and outputs["wide"].shape == (2, 5, 5, 10_048)
    # narrow = mean of each block = mean of its area-pooled 5x5 only when sizes divide; check on the first block directly
    probe = keras.Model(inception_v3.model.input, inception_v3.model.get_layer("mixed0").output)
    block = probe(image).numpy()
    np.testing.assert_allclose(outputs["narrow"].numpy()[:, :256], block.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs["wide"].numpy()[0, :, :, :256], features.area_resize_reference(block[0]), rtol=1e-4, atol=1e-4)


def test_traced_extractor_accepts_any_size(inception_v3):
    forward = features.traced(features.mlsp_model(inception_v3, kinds=("narrow",)))
    for shape in [(1, 80, 120, 3), (8, 99, 77, 3)]:
        assert forward(np.zeros(shape, np.float32))["narrow"].shape == (shape[0], 10_048)
    assert forward.experimental_get_tracing_count() == 1  # one trace for every shape


def test_inception_resnet_v2_channels():
    backbone = backbones.load("inception_resnet_v2", "random")
    outputs = features.mlsp_model(backbone)(np.zeros((1, 75, 75, 3), np.float32))
    assert outputs["narrow"].shape == (1, 16_928) and outputs["wide"].shape == (1, 5, 5, 16_928)


def test_augmented_views_are_corner_crops_and_mirrors():
    image = np.arange(40 * 64 * 3, dtype=np.uint8).reshape(40, 64, 3)
    views = features.augmented_views(image)
    assert views.shape == (8, 35, 56, 3)
    np.testing.assert_array_equal(views[0], image[:35, :56])
    np.testing.assert_array_equal(views[3], image[5:, 8:])
    np.testing.assert_array_equal(views[4], image[:35, :56][:, ::-1])
    assert features.views(image, "rescaled", augment=True).shape == (8, 224, 224, 3)
    assert features.views(image, "original", augment=False).shape == (1, 40, 64, 3)
