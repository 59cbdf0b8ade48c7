"""Importing the authors' published heads (Keras 2 legacy HDF5 weight files) as scorer folders.

The test files are written in Keras 2's layout (root attrs layer_names/backend/keras_version, one
group per layer with attr weight_names, datasets `<layer>/<layer>/kernel:0`) from a reference model
built here the way kutils' fc_layers / inception_block build it, with kutils' layer names, at a
reduced number of input channels. The full-size name/shape plan is checked on files whose datasets
are declared but never written (HDF5 allocates nothing for them).
"""
import json
import os
import shlex
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from mlsp import authors, backbones, cli, heads, score

CHANNELS = 24  # input channels of the reduced test heads; all other widths are the authors'


# --- a reference model in the authors' structure, and Keras 2's writer ---------------------------------


def kutils_fc_layers(x):
    """fc_layers(x, name='head', fc_sizes=[2048, 1024, 256, 1], dropout_rates=[0.25, 0.25, 0.5, 0], batch_norm=2)."""
    for index, (units, rate) in enumerate(zip((2048, 1024, 256), (0.25, 0.25, 0.5))):
        x = keras.layers.Dense(units, activation="relu", name=f"head_fc{index}")(x)
        x = keras.layers.BatchNormalization(name=f"head_bn{index}")(x)
        x = keras.layers.Dropout(rate, name=f"head_do{index}")(x)
    return keras.layers.Dense(1, name="head_out")(x)


def kutils_conv2d_bn(x, filters, rows, columns, name):
    x = keras.layers.Conv2D(filters, (rows, columns), padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(scale=False, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=name)(x)


def kutils_inception_block(x, size=1024):
    branch1x1 = kutils_conv2d_bn(x, size, 1, 1, "branch_1x1")
    branch3x3 = kutils_conv2d_bn(x, size, 1, 1, "3x3_1x1")
    branch3x3_1 = kutils_conv2d_bn(branch3x3, size // 2, 1, 3, "3x3_1x3")
    branch3x3_2 = kutils_conv2d_bn(branch3x3, size // 2, 3, 1, "3x3_3x1")
    branch3x3 = keras.layers.Concatenate(name="branch_3x3")([branch3x3_1, branch3x3_2])
    branch_pool = keras.layers.AveragePooling2D(3, strides=1, padding="same", name="avg_pool_2d")(x)
    branch_pool = kutils_conv2d_bn(branch_pool, size, 1, 1, "branch_pool")
    return keras.layers.Concatenate(name="mixed_final")([branch1x1, branch3x3, branch_pool])


def authors_model(head: str, channels: int, seed: int = 0) -> keras.Model:
    """The authors' head as train_mlsp_narrow.ipynb / train_mlsp_wide.ipynb build it, with random
    weights everywhere (BN statistics too, variances positive), so that no layer is an identity."""
    if head == "single_3fc":
        inputs = keras.Input((channels,), name="input_1")
        outputs = kutils_fc_layers(inputs)
    else:
        inputs = keras.Input((5, 5, channels), name="input_1")
        x = keras.layers.GlobalAveragePooling2D(name="final_GAP")(kutils_inception_block(inputs))
        outputs = kutils_fc_layers(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape = tuple(weight.shape)
        if weight.name == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        elif weight.name == "kernel":
            value = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0, 0.3, shape)
        weight.assign(value.astype(np.float32))
    return model


def write_keras2_weights(path, model, rename=None, replace=None, drop=None, scope_suffix="", split_layer_names=False):
    """Write `model` as Keras 2.2.4's save_weights_to_hdf5_group does (keras/engine/saving.py).

    rename: {layer: new name}; replace: {(layer, weight): array}; drop: {(layer, weight)};
    scope_suffix: TF 1's variable-scope renaming ('head_fc0_1/kernel:0'); split_layer_names: store
    layer_names as layer_names0, layer_names1 (what Keras 2 does past HDF5's 64 KB header limit).
    """
    rename, replace, drop = rename or {}, replace or {}, drop or set()
    names = [rename.get(layer.name, layer.name) for layer in model.layers]
    with h5py.File(path, "w") as handle:
        if split_layer_names:
            handle.attrs["layer_names0"] = np.array([n.encode() for n in names[:3]])
            handle.attrs["layer_names1"] = np.array([n.encode() for n in names[3:]])
        else:
            handle.attrs["layer_names"] = np.array([n.encode() for n in names])
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.2.4"
        for layer, name in zip(model.layers, names):
            group = handle.create_group(name)
            weights = [w for w in layer.weights if (layer.name, w.name) not in drop]
            full_names = [f"{name}{scope_suffix}/{w.name}:0" for w in weights]
            group.attrs["weight_names"] = np.array([n.encode() for n in full_names]) if full_names else np.array([])
            for full_name, weight in zip(full_names, weights):
                group.create_dataset(full_name, data=replace.get((layer.name, weight.name), np.asarray(weight.numpy())))
    return Path(path)


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    model = authors_model("single_3fc", CHANNELS, seed=1)
    return model, write_keras2_weights(tmp_path_factory.mktemp("narrow") / "model_best_weights.h5", model)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    model = authors_model("pool_3fc", CHANNELS, seed=2)
    return model, write_keras2_weights(tmp_path_factory.mktemp("wide") / "model_best_weights.h5", model)


def features(head, batch=5, seed=3):
    """Random features; each sample with its own offset, so that the 5x5 average pooling of the wide
    head does not average the samples' differences away."""
    rng = np.random.default_rng(seed)
    shape = (batch, CHANNELS) if head == "single_3fc" else (batch, 5, 5, CHANNELS)
    offsets = rng.normal(0, 2, (batch,) + (1,) * (len(shape) - 1))
    return (rng.normal(size=shape) + offsets).astype(np.float32)


# --- the plan at full size ---------------------------------------------------------------------------


@pytest.mark.parametrize("published", authors.PUBLISHED_HEADS, ids=lambda p: p.name)
def test_full_size_plan_matches_the_published_files(published):
    plan = authors.weight_plan(published.head, authors.PUBLISHED_CHANNELS)
    count = authors.parameter_count(plan)
    assert count == {"pool_3fc": 63_828_481, "single_3fc": 37_044_737}[published.head]
    # a published file is its float32 values plus HDF5's metadata (tens of KB): no optimizer state, no other layers
    assert 0 < published.size - 4 * count < 100_000


@pytest.mark.parametrize("head", ["single_3fc", "pool_3fc"])
def test_full_size_file_layout_is_checked_without_reading_values(head, tmp_path):
    # datasets declared but never written: HDF5 allocates no space, so the file stays small
    path = tmp_path / "full.h5"
    plan = authors.weight_plan(head, authors.PUBLISHED_CHANNELS)
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = np.array([b"input_1"] + [layer.authors.encode() for layer in plan])
        handle.attrs["backend"], handle.attrs["keras_version"] = b"tensorflow", b"2.2.4"
        handle.create_group("input_1").attrs["weight_names"] = np.array([])
        for layer in plan:
            group = handle.create_group(layer.authors)
            group.attrs["weight_names"] = np.array([f"{layer.authors}/{name}:0".encode() for name in layer.shapes])
            for name, shape in layer.shapes.items():
                group.create_dataset(f"{layer.authors}/{name}:0", shape=shape, dtype="float32")
    assert path.stat().st_size < 1_000_000
    layout = authors.read_layout(path)
    assert authors.infer_head(layout) == (head, 16_928)
    authors.check_layout(layout, plan)  # raises on any difference
    if head == "pool_3fc":
        assert layout.layers["3x3_1x3_conv"]["kernel"][1] == (1, 3, 1024, 512)
        assert layout.layers["head_fc0"]["kernel"][1] == (3072, 2048)
    assert layout.layers["head_bn2"]["moving_variance"][1] == (256,)


@pytest.mark.parametrize("head", ["single_3fc", "pool_3fc"])
def test_our_heads_have_the_plans_layers_and_shapes(head):
    plan = authors.weight_plan(head, CHANNELS)
    model = heads.build(head, CHANNELS)
    ours = {layer.name: {w.name: tuple(w.shape) for w in layer.weights} for layer in model.layers if layer.weights}
    assert ours == {layer.ours: layer.shapes for layer in plan}


# --- importing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["narrow", "wide"])
def test_imported_head_predicts_as_the_authors_model(which, request):
    reference, path = request.getfixturevalue(which)
    imported = authors.build_head(path)
    assert (imported.head, imported.channels) == ({"narrow": "single_3fc", "wide": "pool_3fc"}[which], CHANNELS)
    x = features(imported.head)
    expected = np.asarray(reference.predict_on_batch(x))
    np.testing.assert_allclose(np.asarray(imported.model.predict_on_batch(x)), expected, rtol=1e-5, atol=1e-5)
    assert np.std(expected) > 1e-3  # the inputs give different scores: the comparison means something


def test_weights_are_matched_by_name_not_by_order_or_scope(narrow, tmp_path):
    reference, _ = narrow
    # TF 1 renames variable scopes when a cell is run twice; the chunked layer_names of large models
    path = write_keras2_weights(tmp_path / "renamed_scope.h5", reference, scope_suffix="_1", split_layer_names=True)
    with h5py.File(path, "a") as handle:  # list head_bn0's weights in reversed order
        group = handle["head_bn0"]
        group.attrs["weight_names"] = group.attrs["weight_names"][::-1]
    imported = authors.build_head(path)
    x = features("single_3fc")
    np.testing.assert_allclose(imported.model.predict_on_batch(x), reference.predict_on_batch(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(rename={"head_bn1": "head_bn_1"}), "layer 'head_bn1'"),
        (dict(replace={("head_fc1", "kernel"): np.zeros((2048, 1000), np.float32)}), r"layer 'head_fc1' weight 'kernel' has shape \(2048, 1000\), expected \(2048, 1024\)"),
        (dict(drop={("head_bn0", "gamma")}), r"layer 'head_bn0' holds weights \['beta', 'moving_mean', 'moving_variance'\]"),
        (dict(replace={("head_out", "bias"): np.array([np.nan], np.float32)}), "layer 'head_out' weight 'bias' holds NaN"),
    ],
    ids=["renamed_layer", "wrong_shape", "missing_gamma", "nan_value"],
)
def test_a_wrong_layer_is_refused_naming_it(narrow, tmp_path, change, message):
    reference, _ = narrow
    path = write_keras2_weights(tmp_path / "broken.h5", reference, **change)
    with pytest.raises(authors.AuthorsFileError, match=message) as error:
        authors.build_head(path)
    assert str(path) in str(error.value)


def test_a_wide_file_missing_a_conv_is_refused_naming_it(wide, tmp_path):
    reference, _ = wide
    path = write_keras2_weights(tmp_path / "broken.h5", reference, rename={"3x3_3x1_conv": "3x1_conv"})
    with pytest.raises(authors.AuthorsFileError, match=r"layer '3x3_3x1_conv' \(our column2_3x1\) is missing"):
        authors.build_head(path)


def test_files_that_are_not_keras2_weights_are_refused(tmp_path):
    keras3 = tmp_path / "model.weights.h5"
    with h5py.File(keras3, "w") as handle:
        handle.create_group("layers")
    with pytest.raises(authors.AuthorsFileError, match="no root attribute 'layer_names'"):
        authors.read_layout(keras3)
    pointer = tmp_path / "model_best_weights.h5"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0121f3\nsize 148210528\n")
    assert "Git LFS pointer" in authors.identify(pointer).reason
    with pytest.raises(authors.AuthorsFileError, match="a Git LFS pointer, not the weights") as error:
        authors.import_authors(pointer, tmp_path / "scorer", force=True)  # --force cannot help
    assert "--force" not in str(error.value)
    with pytest.raises(authors.AuthorsFileError, match="cannot be read as HDF5"):
        authors.read_layout(pointer)


# --- the scorer folder -------------------------------------------------------------------------------


@pytest.fixture
def reduced_backbone(monkeypatch):
    """A 24-channel stand-in for InceptionResNetV2 (whose ImageNet weights are not on this machine):
    two 'mixed' blocks of 8 and 16 channels, so the scorer folder loads and scores as with the real one."""
    monkeypatch.setitem(authors.BACKBONE_BY_CHANNELS, CHANNELS, "inception_resnet_v2")

    def load(name, weights="imagenet", input_shape=(None, None, 3), cache_dir=None):
        assert (name, weights) == ("inception_resnet_v2", "imagenet")
        inputs = keras.Input(input_shape)
        first = keras.layers.Conv2D(8, 3, strides=2, name="mixed_5b")(inputs)
        second = keras.layers.Conv2D(16, 3, strides=2, name="block35_1_mixed")(first)
        return backbones.Backbone(name, weights, keras.Model(inputs, second), lambda images: images / 127.5 - 1, ["mixed_5b", "block35_1_mixed"])

    monkeypatch.setattr(backbones, "load", load)
    monkeypatch.setattr(backbones, "min_image_side", lambda name, augment: 86 if augment else 75)


def test_published_file_becomes_a_scorer_that_loads_and_scores(narrow, reduced_backbone, monkeypatch, tmp_path):
    reference, path = narrow
    size, sha256 = authors.fingerprint(path)
    published = authors.PublishedHead("irnv2_mlsp_narrow_orig_aug", size, sha256, "single_3fc", "narrow", 8, "Single-3FC (*)", 0.743, 0.745, 81.37)
    monkeypatch.setattr(authors, "PUBLISHED_HEADS", (published,))
    monkeypatch.setattr(authors, "PUBLISHED_CHANNELS", CHANNELS)

    assert cli.main(["import-authors", str(path), "--out", str(tmp_path / "scorer")]) == 0
    config = score.read_config(tmp_path / "scorer")
    assert {key: config[key] for key in ("backbone", "weights", "kind", "views", "max_side")} == {
        "backbone": "inception_resnet_v2", "weights": "imagenet", "kind": "narrow", "views": 8, "max_side": 800}
    provenance = json.loads((tmp_path / "scorer" / "authors.json").read_text())
    assert provenance["sha256"] == sha256 and provenance["published"]["paper_row"] == "Single-3FC (*)"
    assert provenance["layers"]["head_bn2"] == "fc3_bn"

    scorer = score.load_scorer(tmp_path / "scorer")
    x = features("single_3fc")
    np.testing.assert_allclose(scorer.head.predict_on_batch(x), reference.predict_on_batch(x), rtol=1e-5, atol=1e-5)
    image = np.random.default_rng(4).integers(0, 256, (120, 100, 3), dtype=np.uint8)
    assert np.isfinite(score.score_image(scorer, image, memory_budget_bytes=1e9))


def test_an_unpublished_file_is_refused_unless_forced(wide, reduced_backbone, tmp_path, capsys):
    reference, path = wide
    out = tmp_path / "scorer"
    size, sha256 = authors.fingerprint(path)
    assert cli.main(["import-authors", str(path), "--out", str(out)]) == 2
    message = capsys.readouterr().err
    assert f"{size:,} bytes, sha256 {sha256}" in message  # what was found
    assert all(f"{p.size:,} bytes, sha256 {p.sha256}" in message for p in authors.PUBLISHED_HEADS)  # what was expected
    assert "--force" in message and not out.exists()

    folder, published = authors.import_authors(path, out, force=True)
    assert published is None
    config = score.read_config(folder)
    assert (config["kind"], config["views"], config["max_side"]) == ("wide", 1, 800)
    head = keras.models.load_model(folder / "head.keras")
    x = features("pool_3fc", batch=3)
    np.testing.assert_allclose(head.predict_on_batch(x), reference.predict_on_batch(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(authors.AuthorsFileError, match="not an empty folder"):
        authors.import_authors(path, out, force=True)


def test_a_damaged_copy_of_a_published_size_is_named(narrow, monkeypatch):
    _, path = narrow
    size, _ = authors.fingerprint(path)
    damaged = authors.PublishedHead("irnv2_mlsp_narrow_orig", size, "0" * 64, "single_3fc", "narrow", 1, "Single-3FC (*)(-aug)", 0.740, 0.742, 80.96)
    found = authors.identify(path, published=(damaged,))
    assert found.match is None and "the size of the published irnv2_mlsp_narrow_orig but not its sha256" in found.reason


# --- bad input: one clear line, exit 2, nothing written ------------------------------------------------


def import_cli(capsys, *arguments):
    """`mlsp import-authors ARGUMENTS`: (exit status, stderr); stderr must be one `error:` line."""
    status = cli.main(["import-authors", *map(str, arguments)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if status == 2:
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return status, err


@pytest.fixture
def nothing_read(monkeypatch):
    """Fails the test if the FILE is hashed or any head is built: the arguments must be refused first."""
    def reached(*args, **kwargs):
        raise AssertionError("the file was read or a head built before the arguments were checked")

    monkeypatch.setattr(authors, "identify", reached)
    monkeypatch.setattr(heads, "build", reached)


def test_a_file_argument_that_is_a_folder_missing_or_unreadable_is_named(narrow, tmp_path, capsys, monkeypatch):
    _, path = narrow
    out = tmp_path / "scorer"
    status, err = import_cli(capsys, path.parent, "--out", out)
    assert status == 2 and f"{path.parent}: is a folder; give the model_best_weights.h5 file in it" in err
    status, err = import_cli(capsys, tmp_path / "absent.h5", "--out", out)
    assert status == 2 and f"{tmp_path / 'absent.h5'}: no such file" in err
    (tmp_path / "link.h5").symlink_to(tmp_path / "gone.h5")
    status, err = import_cli(capsys, tmp_path / "link.h5", "--out", out)
    assert status == 2 and "a symbolic link to a missing file" in err
    os.mkfifo(tmp_path / "pipe.h5")
    status, err = import_cli(capsys, tmp_path / "pipe.h5", "--out", out)
    assert status == 2 and "pipe.h5: not a regular file" in err

    unreadable = tmp_path / "unreadable.h5"
    unreadable.write_bytes(path.read_bytes())
    if os.geteuid() != 0:
        unreadable.chmod(0)
    else:  # root reads whatever the mode says: make opening this one file fail as it would for a user
        def denied(file, *args, **kwargs):
            if Path(file) == unreadable:
                raise PermissionError(13, "Permission denied", str(file))
            return open(file, *args, **kwargs)

        monkeypatch.setattr(authors, "open", denied, raising=False)
    status, err = import_cli(capsys, unreadable, "--out", out, "--force")
    assert status == 2 and f"{unreadable}: cannot be read (Permission denied)" in err
    assert not out.exists()


@pytest.mark.parametrize("case", ["under_a_file", "read_only_folder", "broken_link", "link_to_a_file", "a_file", "a_device", "not_empty"])
def test_a_bad_output_folder_is_refused_before_the_file_is_read(narrow, nothing_read, tmp_path, capsys, monkeypatch, case):
    _, path = narrow
    if case == "under_a_file":
        (tmp_path / "plain").write_text("x")
        out, expected = tmp_path / "plain" / "deeper" / "scorer", f"{tmp_path / 'plain'} is not a folder"
    elif case == "read_only_folder":
        locked = tmp_path / "locked"
        locked.mkdir()
        out, expected = locked / "scorer", f"the folder {locked} is not writable"
        if os.geteuid() != 0:
            locked.chmod(0o555)
        else:  # root may write anywhere but on a read-only file system: answer as such a folder would
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == locked and mode & os.W_OK else real_access(p, mode, **k))
    elif case == "broken_link":
        out = tmp_path / "scorer"
        out.symlink_to(tmp_path / "missing_target")
        expected = f"{out}: is a symbolic link to {tmp_path / 'missing_target'}, which does not exist"
    elif case == "link_to_a_file":
        (tmp_path / "plain").write_text("x")
        out = tmp_path / "scorer"
        out.symlink_to(tmp_path / "plain")
        expected = f"{tmp_path / 'plain'} (--out {out}): is a file, not a folder"
    elif case == "a_file":
        out = tmp_path / "plain"
        out.write_text("x")
        expected = f"{out}: is a file, not a folder"
    elif case == "a_device":
        out, expected = Path("/dev/null"), "/dev/null: is a device"
    else:
        out = tmp_path / "scorer"
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        expected = "exists and is not an empty folder"
    status, err = import_cli(capsys, path, "--out", out, "--force")
    assert status == 2 and expected in err
    if case == "not_empty":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    if case == "read_only_folder":
        assert list((tmp_path / "locked").iterdir()) == []


def keras2_file_without_values(path, head, channels, dtype="float32"):
    """A file in Keras 2's layout whose datasets are declared but never written (no storage)."""
    plan = authors.weight_plan(head, channels)
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = np.array([layer.authors.encode() for layer in plan])
        handle.attrs["backend"], handle.attrs["keras_version"] = b"tensorflow", b"2.2.4"
        for layer in plan:
            group = handle.create_group(layer.authors)
            group.attrs["weight_names"] = np.array([f"{layer.authors}/{name}:0".encode() for name in layer.shapes])
            for name, shape in layer.shapes.items():
                group.create_dataset(f"{layer.authors}/{name}:0", shape=shape, dtype=dtype)
    return path


def test_a_huge_declared_shape_is_refused_from_the_metadata_alone(tmp_path, capsys, monkeypatch):
    # 4 million input channels: head_fc0's kernel alone would take 32 GB; the file takes kilobytes
    path = keras2_file_without_values(tmp_path / "huge.h5", "single_3fc", 4_000_000)
    assert path.stat().st_size < 1_000_000
    monkeypatch.setattr(heads, "build", lambda *a, **k: pytest.fail("a head was built for a file that cannot be imported"))
    status, err = import_cli(capsys, path, "--out", tmp_path / "scorer", "--force")
    assert status == 2 and "layer 'head_fc0' takes 4,000,000 input channels; no backbone of this kit gives that many" in err
    status, err = import_cli(capsys, path, "--out", tmp_path / "scorer")  # unforced: --force is not offered
    assert status == 2 and "--force would not help either: layer 'head_fc0' takes 4,000,000" in err and "Pass --force" not in err
    assert not (tmp_path / "scorer").exists()


def test_force_is_offered_only_for_files_it_would_import(narrow, reduced_backbone, tmp_path, capsys):
    _, importable = narrow
    status, err = import_cli(capsys, importable, "--out", tmp_path / "scorer")
    assert status == 2 and "Pass --force to import it anyway" in err

    not_hdf5 = tmp_path / "not_hdf5.h5"
    not_hdf5.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    keras3 = tmp_path / "model.weights.h5"
    with h5py.File(keras3, "w") as handle:
        handle.create_group("layers")
    for path, reason in ((not_hdf5, "cannot be read as HDF5"), (keras3, "no root attribute 'layer_names'")):
        status, err = import_cli(capsys, path, "--out", tmp_path / "scorer")
        assert status == 2 and "not one of the authors' published heads" in err
        assert f"--force would not help either: {reason}" in err and "Pass --force" not in err, err


def rewrite_dataset(path, layer, weight, **create):
    """Replace one weight's dataset of a Keras 2 file (`h5py.Group.create_dataset` keywords); returns
    the new dataset's name."""
    with h5py.File(path, "a") as handle:
        name = f"{layer}/{weight}:0"
        del handle[layer][name]
        handle[layer].create_dataset(name, **create)
    return name


def broken_file(reference, tmp_path, case):
    """A copy of the reference narrow head with one fault; returns (path, what the message must say)."""
    path = write_keras2_weights(tmp_path / f"{case}.h5", reference)
    if case == "negative_variance":
        variance = np.asarray(reference.get_layer("head_bn1").moving_variance.numpy()).copy()
        variance[3] = -0.25
        rewrite_dataset(path, "head_bn1", "moving_variance", data=variance)
        return path, "layer 'head_bn1' weight 'moving_variance' holds negative variances (smallest -0.25)"
    if case == "unwritten":
        rewrite_dataset(path, "head_bn0", "beta", shape=(2048,), dtype="float32")
        return path, "layer 'head_bn0' weight 'beta' (/head_bn0/head_bn0/beta:0) is declared but never written"
    if case == "half_written":
        kernel = np.asarray(reference.get_layer("head_fc1").kernel.numpy())
        rewrite_dataset(path, "head_fc1", "kernel", shape=kernel.shape, dtype="float32", chunks=(1024, 1024))
        with h5py.File(path, "a") as handle:
            handle["head_fc1/head_fc1/kernel:0"][:1024] = kernel[:1024]
        return path, "layer 'head_fc1' weight 'kernel' (/head_fc1/head_fc1/kernel:0) is only 1 of its 2 chunks written"
    if case == "infinite":
        rewrite_dataset(path, "head_fc2", "bias", data=np.full((256,), np.inf, np.float32))
        return path, "layer 'head_fc2' weight 'bias' holds NaN or infinite values"
    if case == "float64_beyond_float32":  # finite as stored, infinite once cast to float32
        rewrite_dataset(path, "head_fc2", "bias", data=np.full((256,), 1e39, np.float64))
        return path, "layer 'head_fc2' weight 'bias': value 1e+39 does not fit in float32"
    if case == "overflowing":
        rewrite_dataset(path, "head_fc0", "bias", data=np.full((2048,), 3e38, np.float32))
        return path, "the head's predictions for typical features are not finite, from layer 'head_bn0' (our fc1_bn) on"
    if case == "string_typed":
        rewrite_dataset(path, "head_out", "bias", data=np.array([b"0.5"]))
        return path, "layer 'head_out' weight 'bias' (/head_out/head_out/bias:0) holds values of type |S3, not floating-point numbers"
    if case == "external":
        values = np.asarray(reference.get_layer("head_out").bias.numpy(), np.float32)
        (tmp_path / "bias.bin").write_bytes(values.tobytes())
        rewrite_dataset(path, "head_out", "bias", shape=(1,), dtype="float32", external=[(str(tmp_path / "bias.bin"), 0, 4)])
        return path, "layer 'head_out' weight 'bias' (/head_out/head_out/bias:0) keeps its values in an external file"
    if case == "layer_names_not_utf8":
        with h5py.File(path, "a") as handle:
            names = list(handle.attrs["layer_names"])
            handle.attrs["layer_names"] = np.array(names[:2] + [b"head_\xff\xfebn0"] + names[3:])
        return path, "root attribute 'layer_names' holds bytes that are not UTF-8 text"
    if case == "weight_names_not_utf8":
        with h5py.File(path, "a") as handle:
            handle["head_fc1"].attrs["weight_names"] = np.array([b"head_fc1/kernel:0", b"head_fc1/bias\xe9:0"])
        return path, "layer 'head_fc1' attribute 'weight_names' holds bytes that are not UTF-8 text"
    raise AssertionError(case)


FAULTS = ["negative_variance", "unwritten", "half_written", "infinite", "float64_beyond_float32", "overflowing", "string_typed", "external", "layer_names_not_utf8", "weight_names_not_utf8"]


@pytest.mark.parametrize("case", FAULTS)
def test_force_refuses_a_head_that_cannot_score_naming_the_layer(narrow, reduced_backbone, tmp_path, capsys, case):
    reference, _ = narrow
    path, expected = broken_file(reference, tmp_path, case)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, err = import_cli(capsys, path, "--out", tmp_path / "scorer", "--force")
    assert status == 2 and f"error: {path}: " in err and expected in err, err
    assert not [(w.filename, w.lineno, str(w.message)) for w in caught if issubclass(w.category, RuntimeWarning)]  # numpy's overflow warning is not the user's business
    assert not (tmp_path / "scorer").exists()
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]
    if case not in ("negative_variance", "infinite", "float64_beyond_float32", "overflowing"):  # found from the metadata: --force is not offered
        status, err = import_cli(capsys, path, "--out", tmp_path / "scorer")
        assert status == 2 and "--force would not help either" in err and expected in err


def test_the_broken_file_helper_changes_only_the_fault(narrow, reduced_backbone, tmp_path):
    # the faults' files are the importable reference but for one dataset or attribute: the unchanged
    # copy imports, so each refusal above is the fault's
    reference, _ = narrow
    path = write_keras2_weights(tmp_path / "intact.h5", reference)
    folder, _ = authors.import_authors(path, tmp_path / "scorer", force=True)
    assert (folder / "head.keras").is_file()


def test_an_interrupted_import_leaves_nothing_and_a_rerun_completes(wide, reduced_backbone, tmp_path, capsys, monkeypatch):
    _, path = wide
    parent = tmp_path / "my scorers $HOME"
    parent.mkdir()
    out = parent / "authors wide"
    real_save = score.save_scorer

    def interrupted(folder, *args, **kwargs):
        real_save(folder, *args, **kwargs)  # head.keras and scorer.json written: then Ctrl-C
        assert (Path(folder) / "head.keras").is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(score, "save_scorer", interrupted)
    assert cli.main(["import-authors", str(path), "--out", str(out), "--force"]) == 130
    assert "interrupted: nothing was written" in capsys.readouterr().err
    assert list(parent.iterdir()) == []
    monkeypatch.setattr(score, "save_scorer", real_save)

    assert cli.main(["import-authors", str(path), "--out", str(out), "--force"]) == 0
    printed = capsys.readouterr().out
    follow_up = printed.split("`")[1]
    assert follow_up == f"mlsp score PHOTOS --model {shlex.quote(str(out))}"
    assert shlex.split(follow_up)[-1] == str(out)  # a shell gives the command the folder as one word
    assert sorted(p.name for p in out.iterdir()) == ["authors.json", "head.keras", "scorer.json"]
    assert [p.name for p in parent.iterdir()] == ["authors wide"]
    (tmp_path / "made_by_mkdir").mkdir()
    assert out.stat().st_mode & 0o777 == (tmp_path / "made_by_mkdir").stat().st_mode & 0o777  # readable as a plain folder is


def test_imported_scorers_record_avas_score_scale(wide, reduced_backbone, tmp_path):
    _, path = wide
    folder, _ = authors.import_authors(path, tmp_path / "scorer", force=True)
    config = score.read_config(folder)
    assert (config["score_min"], config["score_max"]) == (1, 10)
    assert score.load_scorer(folder).score_scale == (1, 10)


# --- HDF5 links where a layer or a weight should be ------------------------------------------------------


def linked_file(reference, tmp_path, case):
    """A copy of the reference narrow head with one layer group, weight or group on a weight's path
    replaced by an HDF5 link; returns (path, what the message must say). The external targets hold
    another head of the same shapes, so following the link would import other weights."""
    path = write_keras2_weights(tmp_path / f"{case}.h5", reference)
    other = write_keras2_weights(tmp_path / f"other_{case}.h5", authors_model("single_3fc", CHANNELS, seed=7))
    with h5py.File(path, "a") as handle:
        if case == "external_weight":
            del handle["head_fc1/head_fc1/kernel:0"]
            handle["head_fc1/head_fc1/kernel:0"] = h5py.ExternalLink(str(other), "/head_fc1/head_fc1/kernel:0")
            return path, f"layer 'head_fc1' weight 'head_fc1/kernel:0' is an HDF5 external link to /head_fc1/head_fc1/kernel:0 in file {other}"
        if case == "external_weight_missing_file":
            del handle["head_fc1/head_fc1/kernel:0"]
            handle["head_fc1/head_fc1/kernel:0"] = h5py.ExternalLink(str(tmp_path / "gone.h5"), "/head_fc1/head_fc1/kernel:0")
            return path, f"layer 'head_fc1' weight 'head_fc1/kernel:0' is an HDF5 external link to /head_fc1/head_fc1/kernel:0 in file {tmp_path / 'gone.h5'}"
        if case == "soft_weight":  # gamma read from beta: the same shape, the wrong values
            del handle["head_bn0/head_bn0/gamma:0"]
            handle["head_bn0/head_bn0/gamma:0"] = h5py.SoftLink("/head_bn0/head_bn0/beta:0")
            return path, "layer 'head_bn0' weight 'head_bn0/gamma:0' is an HDF5 soft link to /head_bn0/head_bn0/beta:0"
        if case == "dangling_soft_weight":
            del handle["head_out/head_out/bias:0"]
            handle["head_out/head_out/bias:0"] = h5py.SoftLink("/nowhere/bias:0")
            return path, "layer 'head_out' weight 'head_out/bias:0' is an HDF5 soft link to /nowhere/bias:0"
        if case == "external_scope_group":  # the group on the weights' path, not the dataset, is the link
            del handle["head_fc2/head_fc2"]
            handle["head_fc2/head_fc2"] = h5py.ExternalLink(str(other), "/head_fc2/head_fc2")
            return path, f"layer 'head_fc2' weight 'head_fc2/kernel:0' ('head_fc2' on its path) is an HDF5 external link to /head_fc2/head_fc2 in file {other}"
        if case == "external_layer":
            del handle["head_fc0"]
            handle["head_fc0"] = h5py.ExternalLink(str(other), "/head_fc0")
            return path, f"layer 'head_fc0' is an HDF5 external link to /head_fc0 in file {other}"
        if case == "soft_layer":
            handle.move("head_bn2", "stored_elsewhere")
            handle["head_bn2"] = h5py.SoftLink("/stored_elsewhere")
            return path, "layer 'head_bn2' is an HDF5 soft link to /stored_elsewhere"
        if case == "absolute_weight_name":  # resolved from the root: another layer's dataset
            handle["head_bn1"].attrs["weight_names"] = np.array([b"/head_bn0/head_bn0/gamma:0", b"head_bn1/beta:0", b"head_bn1/moving_mean:0", b"head_bn1/moving_variance:0"])
            return path, "layer 'head_bn1' lists weight '/head_bn0/head_bn0/gamma:0', an absolute path outside its group"
    raise AssertionError(case)


LINKS = ["external_weight", "external_weight_missing_file", "soft_weight", "dangling_soft_weight", "external_scope_group", "external_layer", "soft_layer", "absolute_weight_name"]


@pytest.mark.parametrize("case", LINKS)
def test_links_where_a_layer_or_weight_should_be_are_refused_naming_them(narrow, reduced_backbone, tmp_path, capsys, case):
    reference, _ = narrow
    path, expected = linked_file(reference, tmp_path, case)
    status, err = import_cli(capsys, path, "--out", tmp_path / "scorer", "--force")
    assert status == 2 and f"error: {path}: " in err and expected in err, err
    assert "no such dataset" not in err and "KeyError" not in err
    assert not (tmp_path / "scorer").exists()
    status, err = import_cli(capsys, path, "--out", tmp_path / "scorer")  # found from the metadata: --force is not offered
    assert status == 2 and "--force would not help either" in err and expected in err, err


def test_the_linked_file_helper_changes_only_the_link(narrow, reduced_backbone, tmp_path):
    # the same moves without links import: each refusal above is the link's
    reference, _ = narrow
    path = write_keras2_weights(tmp_path / "moved.h5", reference)
    with h5py.File(path, "a") as handle:
        handle.move("head_bn2", "stored_elsewhere")
        handle.move("stored_elsewhere", "head_bn2")
    imported = authors.build_head(path)
    x = features("single_3fc")
    np.testing.assert_allclose(imported.model.predict_on_batch(x), reference.predict_on_batch(x), rtol=1e-5, atol=1e-5)


# --- what the imported head predicts ------------------------------------------------------------------------


def test_probe_features_are_typical_distinct_and_repeatable():
    probes = authors.probe_features((5, 5, CHANNELS))
    assert probes.shape == (1 + len(authors.PROBE_SCALES), 5, 5, CHANNELS) and probes.dtype == np.float32
    assert not probes[0].any() and (probes >= 0).all()  # zeros, and non-negative like post-ReLU averages
    assert len({probe.tobytes() for probe in probes}) == len(probes)
    means = probes[1:].reshape(len(authors.PROBE_SCALES), -1).mean(axis=1)
    np.testing.assert_allclose(means, authors.PROBE_SCALES, rtol=0.25)
    np.testing.assert_array_equal(probes, authors.probe_features((5, 5, CHANNELS)))


class FixedHead:
    """Predicts the given scores, whatever the features."""

    input_shape = (None, CHANNELS)

    def __init__(self, scores):
        self.scores = np.asarray(scores, np.float32).reshape(-1, 1)

    def predict_on_batch(self, x):
        assert len(x) == len(self.scores)
        return self.scores


@pytest.mark.parametrize(
    "scores, refused",
    [
        ([1, 5.5, 10, 7], None),
        ([-89, 3, 100, 4], None),  # 10 widths of AVA's 1-10 scale beyond either end: still accepted
        ([-89.5, 3, 5, 4], "the head predicts -89.5 for typical features, more than 10 scale-widths outside the 1-10 score scale (allowed -89 to 100"),
        ([2, 3, 100.5, 4], "the head predicts 100.5 for typical features, more than 10 scale-widths"),
        ([2, np.inf, 5, 4], "the head's predictions for typical features are not finite"),
        ([5.25, 5.25, 5.25, 5.25], "the head predicts 5.25 for each of 4 different typical feature vectors, so it would score every photo alike"),
    ],
    ids=["within", "at_the_bound", "below", "above", "infinite", "constant"],
)
def test_the_prediction_check_states_its_bounds(scores, refused, monkeypatch):
    monkeypatch.setattr(authors, "_first_layer", lambda *args, **kwargs: "")  # no layers in a fixed head
    plan = authors.weight_plan("single_3fc", CHANNELS)
    check = lambda: authors.check_predictions(FixedHead(scores), plan, "single_3fc", "head.h5", (1.0, "head_fc0", "kernel"))  # noqa: E731
    if refused is None:
        check()
    else:
        with pytest.raises(authors.AuthorsFileError, match="^head.h5: ") as error:
            check()
        assert refused in str(error.value)
        assert "largest weight 1, layer 'head_fc0' weight 'kernel'" in str(error.value) or "alike" in str(error.value)


def out_of_range_file(reference, tmp_path, case):
    """A copy of the reference narrow head whose weights are all finite and of the right shapes but
    predict nonsense; returns (path, what the message must say)."""
    kernel = np.asarray(reference.get_layer("head_fc0").kernel.numpy()).copy()
    if case == "kernel_row_3e38":  # no effect on all-zero features, ~1e35 on typical ones
        kernel[3] = 3e38
        change = {("head_fc0", "kernel"): kernel}
        expected = "e+35 for typical features, more than 10 scale-widths outside the 1-10 score scale (allowed -89 to 100; largest weight 3e+38, layer 'head_fc0' weight 'kernel')"
    elif case == "kernel_row_1e6":
        kernel[3] = 1e6
        change = {("head_fc0", "kernel"): kernel}
        expected = "more than 10 scale-widths outside the 1-10 score scale (allowed -89 to 100; largest weight 1e+06, layer 'head_fc0' weight 'kernel')"
    elif case == "output_bias_1e4":
        change = {("head_out", "bias"): np.array([1e4], np.float32)}
        expected = "the head predicts 1e+04 for typical features"
    elif case == "zero_first_kernel":
        change = {("head_fc0", "kernel"): np.zeros_like(kernel)}
        expected = "so it would score every photo alike (the output of layer 'head_fc0' (our fc1) is already the same for all of them"
    elif case == "zero_final_kernel":
        change = {("head_out", "kernel"): np.zeros((256, 1), np.float32)}
        expected = "so it would score every photo alike (the output of layer 'head_out' (our fc_mos) is already the same for all of them"
    elif case == "dead_relus":
        change = {("head_fc1", "bias"): np.full((1024,), -1e3, np.float32)}
        expected = "so it would score every photo alike (the output of layer 'head_fc1' (our fc2) is already the same for all of them"
    elif case == "infinite_kernel_row":
        kernel[5] = np.inf
        change = {("head_fc0", "kernel"): kernel}
        expected = "layer 'head_fc0' weight 'kernel' holds NaN or infinite values"
    else:
        raise AssertionError(case)
    return write_keras2_weights(tmp_path / f"{case}.h5", reference, replace=change), expected


@pytest.mark.parametrize("case", ["kernel_row_3e38", "kernel_row_1e6", "output_bias_1e4", "zero_first_kernel", "zero_final_kernel", "dead_relus", "infinite_kernel_row"])
def test_force_refuses_weights_that_predict_nonsense_for_typical_features(narrow, reduced_backbone, tmp_path, capsys, case):
    reference, _ = narrow
    path, expected = out_of_range_file(reference, tmp_path, case)
    status, err = import_cli(capsys, path, "--out", tmp_path / "scorer", "--force")
    assert status == 2 and f"error: {path}: " in err and expected in err, err
    assert not (tmp_path / "scorer").exists()


def test_a_wide_head_with_a_constant_inception_block_is_refused(wide, reduced_backbone, tmp_path, capsys):
    reference, _ = wide
    zeros = {(f"{column}_conv", "kernel"): np.zeros(tuple(reference.get_layer(f"{column}_conv").kernel.shape), np.float32)
             for column in ("branch_1x1", "3x3_1x1", "3x3_1x3", "3x3_3x1", "branch_pool")}
    path = write_keras2_weights(tmp_path / "constant.h5", reference, replace=zeros)
    status, err = import_cli(capsys, path, "--out", tmp_path / "scorer", "--force")
    assert status == 2 and "would score every photo alike (the output of the inception block (layers 'branch_1x1_conv' to 'branch_pool_bn')" in err, err


# --- an output folder the final rename cannot replace ----------------------------------------------------------


@pytest.mark.parametrize("given", [".", "./", "", "..", "cwd_absolute", "link_to_cwd", "mount_point"])
def test_an_output_that_cannot_be_replaced_is_refused_first(narrow, nothing_read, tmp_path, capsys, monkeypatch, given):
    _, path = narrow
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    if given == "cwd_absolute":
        given, expected = str(work), f"{work}: is the current directory, which the import cannot replace; give the path of a new folder, e.g. --out {work / 'authors_scorer'}"
    elif given == "link_to_cwd":
        (tmp_path / "link").symlink_to(work)
        given, expected = str(tmp_path / "link"), f"{work} (--out {tmp_path / 'link'}): is the current directory"
    elif given == "mount_point":
        mounted = tmp_path / "mounted"
        mounted.mkdir()
        real_ismount = os.path.ismount
        monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == mounted or real_ismount(p))
        given, expected = str(mounted), f"{mounted}: is a mount point, which the import cannot replace"
    elif given == "..":
        expected = f"{tmp_path} (--out ..): is a parent of the current directory, which the import cannot replace; give the path of a new folder, e.g. --out ../authors_scorer"
    else:
        expected = f"{work} (--out {given or repr('')}): is the current directory, which the import cannot replace; give the path of a new folder, e.g. --out {os.path.join(given, 'authors_scorer')}"
    status, err = import_cli(capsys, path, "--out", given, "--force")
    assert status == 2 and expected in err, err
    assert list(work.iterdir()) == [] and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_a_relative_output_is_written_and_reported_as_an_absolute_path(narrow, reduced_backbone, tmp_path, capsys, monkeypatch):
    _, path = narrow
    monkeypatch.chdir(tmp_path)
    assert cli.main(["import-authors", str(path), "--out", "./scorer", "--force"]) == 0
    assert f"wrote {tmp_path / 'scorer'}:" in capsys.readouterr().out
    assert (tmp_path / "scorer" / "head.keras").is_file()


# --- name attributes that list only part of the file ------------------------------------------------------------


def partly_listed_file(reference, tmp_path, case):
    """A copy of the reference narrow head whose name attributes leave something out; returns (path,
    what the message must say)."""
    path = write_keras2_weights(tmp_path / f"{case}.h5", reference, split_layer_names=case == "layer_names_chunk_missing")
    with h5py.File(path, "a") as handle:
        if case == "layer_names_cut_short":  # the groups of head_bn1 onwards are all there
            handle.attrs["layer_names"] = handle.attrs["layer_names"][:6]
            return path, "the file's layer_names lists 4 of the 7 layers with weights the head needs; the first absent, 'head_fc2' (our fc3), has a group in the file but is not listed"
        if case == "first_layer_unlisted":
            handle.attrs["layer_names"] = np.array([name for name in handle.attrs["layer_names"] if name != b"head_fc0"])
            return path, "the file has a group 'head_fc0', but its layer_names does not list it"
        if case == "layer_names_chunk_missing":
            handle.attrs["layer_names2"] = handle.attrs["layer_names1"]
            del handle.attrs["layer_names1"]
            return path, "root attribute 'layer_names' is split into chunks, but 'layer_names1' is missing (there is a 'layer_names2'): the list is cut short"
        if case == "weight_unlisted":
            handle["head_bn0"].attrs["weight_names"] = handle["head_bn0"].attrs["weight_names"][1:]
            return path, "layer 'head_bn0' holds weights ['beta', 'moving_mean', 'moving_variance'], expected ['beta', 'gamma', 'moving_mean', 'moving_variance'] (its group also stores gamma, which its weight_names does not list)"
        if case == "no_backend":
            del handle.attrs["backend"]
            return path, "the file does not say which backend wrote it (no attribute 'backend')"
        if case == "no_keras_version":
            del handle.attrs["keras_version"]
            return path, "the file does not say which Keras version wrote it (no attribute 'keras_version')"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["layer_names_cut_short", "first_layer_unlisted", "layer_names_chunk_missing", "weight_unlisted", "no_backend", "no_keras_version"])
def test_name_attributes_that_leave_something_out_are_named(narrow, tmp_path, capsys, case):
    reference, _ = narrow
    path, expected = partly_listed_file(reference, tmp_path, case)
    status, err = import_cli(capsys, path, "--out", tmp_path / "scorer", "--force")
    assert status == 2 and f"error: {path}: " in err and expected in err, err
    assert "'?'" not in err and ") is missing" not in err  # not "layer 'X' (our Y) is missing": the file has it


# --- refusals come before TensorFlow --------------------------------------------------------------------------------


def test_refusals_do_not_import_tensorflow(narrow, tmp_path):
    # importing TensorFlow takes 10-15 s: every refusal that needs no model must come without it
    import subprocess
    import sys

    _, path = narrow
    huge = keras2_file_without_values(tmp_path / "huge.h5", "single_3fc", 4_000_000)
    linked = tmp_path / "linked.h5"
    linked.write_bytes(path.read_bytes())
    with h5py.File(linked, "a") as handle:
        del handle["head_out/head_out/bias:0"]
        handle["head_out/head_out/bias:0"] = h5py.ExternalLink(str(tmp_path / "gone.h5"), "/bias")
    refusals = [
        [str(tmp_path / "absent.h5"), "--out", str(tmp_path / "a")],
        [str(path), "--out", "."],
        [str(path), "--out", str(tmp_path / "b")],  # not published, not forced
        [str(huge), "--out", str(tmp_path / "c"), "--force"],
        [str(linked), "--out", str(tmp_path / "d"), "--force"],
    ]
    script = (
        "import sys; from mlsp import cli\n"
        f"statuses = [cli.main(['import-authors', *arguments]) for arguments in {refusals!r}]\n"
        "print(statuses, sorted(name for name in ('keras', 'tensorflow') if name in sys.modules))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(Path(authors.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "[2, 2, 2, 2, 2] []", done.stdout + done.stderr
