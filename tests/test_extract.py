"""Batched extraction: many images' views in one forward pass give the features of one image at a time."""
import numpy as np
import pytest
from PIL import Image

from mlsp import backbones, extract
from mlsp.features import mlsp_model, traced
from mlsp.store import FeatureReader, store_path


@pytest.fixture(scope="module")
def lite0():
    return backbones.load("efficientnet_lite0", "imagenet")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Seven photos, three sizes among them repeated, in an order that interleaves the sizes."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    sizes = [(120, 96), (100, 90), (120, 96), (96, 120), (100, 90), (120, 96), (64, 80)]
    paths = []
    for index, (width, height) in enumerate(sizes):
        path = folder / f"{index}.png"
        Image.fromarray(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return [str(index) for index in range(len(sizes))], paths, sizes


def features_of(features_dir, mode, augment):
    with FeatureReader(store_path(features_dir, "efficientnet_lite0", mode, "narrow", augment)) as reader:
        return reader.status.copy(), reader.read_all().astype(np.float32)


class Recording:
    """The traced network, recording batch sizes; optionally failing on every batch of several images."""

    def __init__(self, backbone, refuse_groups=False):
        self.forward, self.sizes, self.refuse_groups = traced(mlsp_model(backbone, ("narrow",))), [], refuse_groups

    def __call__(self, batch):
        self.sizes.append(len(batch))
        if self.refuse_groups and len(batch) > 8:
            raise RuntimeError("simulated out of memory for a large batch")
        return self.forward(batch)


@pytest.mark.parametrize("mode, augment", [("rescaled", True), ("original", True), ("original", False)])
def test_batched_extraction_equals_one_image_at_a_time(lite0, photos, tmp_path, mode, augment):
    ids, paths, sizes = photos
    single, batched = Recording(lite0), Recording(lite0)
    extract.extract(ids, paths, lite0, mode, augment, ("narrow",), tmp_path / "single", progress=False, extractor=single)
    extract.extract(ids, paths, lite0, mode, augment, ("narrow",), tmp_path / "batched", progress=False, extractor=batched, batch_images=4, sizes=sizes)
    views = 8 if augment else 1
    assert single.sizes == [views] * 7
    # rescaled: every image has one shape, so 4 + 3; original: sorted by size, equal sizes grouped:
    # 64x80, 96x120, 100x90 (twice), 120x96 (three times)
    expected = [4 * views, 3 * views] if mode == "rescaled" else [views, views, 2 * views, 3 * views]
    assert batched.sizes == expected
    single_status, single_features = features_of(tmp_path / "single", mode, augment)
    batched_status, batched_features = features_of(tmp_path / "batched", mode, augment)
    assert (single_status == 1).all() and (batched_status == 1).all()
    # float16 storage; a batch may take other kernels than a single image, so equal to float16 precision
    np.testing.assert_allclose(batched_features, single_features, rtol=2e-3, atol=2e-3)


def test_a_failing_batch_is_retried_image_by_image(lite0, photos, tmp_path):
    ids, paths, sizes = photos
    refusing = Recording(lite0, refuse_groups=True)
    summary = extract.extract(ids, paths, lite0, "rescaled", True, ("narrow",), tmp_path, progress=False, extractor=refusing, batch_images=4)
    assert summary["extracted"] == 7 and summary["skipped"] == []
    assert refusing.sizes == [32] + [8] * 4 + [24] + [8] * 3


def test_batch_images_below_one_is_refused(lite0, photos, tmp_path):
    ids, paths, _ = photos
    with pytest.raises(ValueError, match="batch_images=0"):
        extract.extract(ids, paths, lite0, "rescaled", True, ("narrow",), tmp_path, progress=False, batch_images=0)
