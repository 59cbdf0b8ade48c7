"""The authors' published AVA heads (Keras 2.2 weight files), imported as scorer folders of this kit.

Hosu et al. released three trained heads in GitHub `subpic/ava-mlsp`, folder `models/` (also on
https://osf.io/ubps5/files/). Each is a `model_best_weights.h5` written by Keras 2.2.4 (TensorFlow
1.14, Python 2.7) through `ModelCheckpoint(save_weights_only=True)` in kutils' `model_helper.py`,
i.e. Keras 2's legacy HDF5 weight layout (keras `engine/saving.py`, `save_weights_to_hdf5_group`):

    root attrs  layer_names (every layer, in model order), backend, keras_version
    /<layer>    one group per layer, attr weight_names (possibly split into weight_names0, 1, ...)
    /<layer>/<layer>/kernel:0, .../bias:0, ...   one dataset per weight, named after the TF variable

The heads are built by kutils' `applications.py` as the ava-mlsp notebooks call it
(`train_mlsp_narrow.ipynb`, `train_mlsp_narrow_aug.ipynb`, `train_mlsp_wide.ipynb`,
`predict_mlsp_wide.ipynb`): `fc_layers(x, name='head', fc_sizes=[2048, 1024, 256, 1],
dropout_rates=[0.25, 0.25, 0.5, 0], batch_norm=2)`, on the wide features after
`inception_block(x, size=1024)` (name '') and `GlobalAveragePooling2D(name='final_GAP')`. Their layer
names, mapped onto `mlsp.heads` by name and checked by shape (`weight_plan`):

    kutils (authors)                      mlsp.heads           weights
    head_fc0, head_fc1, head_fc2          fc1, fc2, fc3        kernel, bias (Dense, ReLU)
    head_bn0, head_bn1, head_bn2          fc1_bn .. fc3_bn     gamma, beta, moving_mean, moving_variance
    head_out                              fc_mos               kernel, bias (Dense(1), linear)
    branch_1x1_conv / _bn                 column1_1x1 / _bn    kernel / beta, moving_mean, moving_variance
    3x3_1x1_conv / _bn                    column2_1x1 / _bn    (convs without bias; BN with scale=False,
    3x3_1x3_conv / _bn                    column2_1x3 / _bn     so no gamma: kutils' conv2d_bn)
    3x3_3x1_conv / _bn                    column2_3x1 / _bn
    branch_pool_conv / _bn                column3_1x1 / _bn

Dropout (`head_do<i>`), activation, pooling, concatenation and input layers carry no weights. Our
heads have the same structure (Dense -> BN -> Dropout per fc layer; conv -> BN(scale=False) -> ReLU;
concatenation in the order 1x1, 1x3, 3x1, pool, as kutils' `mixed_final`), so the import is exact.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import shutil
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mlsp.errors import first_line

# AVA's images are at most 800 x 800 px (paper, Sec. 1). The authors extracted their features from
# the original images as stored (extract_mlsp.ipynb: input_shape ('orig',), batch of one image), so
# their heads have seen photos up to 800 px on the longer side; new photos are brought to that range.
AVA_MAX_SIDE = 800
# AVA's MOS range (votes 1-10), the scale the authors' heads predict on.
AVA_SCORE_SCALE = (1, 10)

# Channel counts of the concatenated MLSP features (design notes; tests/test_backbones.py): a file
# imported with --force is paired with the backbone whose features its first layer takes.
BACKBONE_BY_CHANNELS = {16_928: "inception_resnet_v2", 10_048: "inception_v3"}

# kutils' fc_layers as called in the ava-mlsp notebooks: fc_sizes [2048, 1024, 256, 1], batch_norm=2
# (BN after every Dense but the last); inception_block(size=1024).
FC_SIZES = (2048, 1024, 256)
INCEPTION_SIZE = 1024
# Keras 2.2's BatchNormalization default, which kutils does not change; ours must agree.
KERAS2_BATCH_NORM_EPSILON = 1e-3

# The import's check of what a head predicts (check_predictions): typical MLSP features are averaged
# post-ReLU activations, non-negative with means of tenths to about one; PROBE_SCALES are the means of
# the random probes, beside an all-zero one. A prediction more than ABSURD_SCALE_WIDTHS widths of the
# score scale beyond either end (AVA: below -89 or above 100) is no photo's score but broken weights;
# predictions that differ by no more than CONSTANT_TOLERANCE (relative) are float32 rounding of one value.
PROBE_SCALES = (0.1, 0.3, 1.0)
PROBE_SEED = 0
ABSURD_SCALE_WIDTHS = 10
CONSTANT_TOLERANCE = 1e-6

SOURCE = "https://github.com/subpic/ava-mlsp/tree/master/models (also https://osf.io/ubps5/files/)"


@dataclass(frozen=True)
class PublishedHead:
    """One of the authors' released heads, with what the paper reports for the matching Table 3 row
    (SRCC, PLCC, binary accuracy on AVA's official test set; which row is our reading of the
    authors' README: "wide ... without augmentation", "narrow ... with and without augmentation")."""

    name: str          # the folder under models/ in subpic/ava-mlsp
    size: int          # bytes
    sha256: str
    head: str          # mlsp.heads builder
    kind: str          # "narrow" or "wide" MLSP features
    views: int         # 1: trained and tested on the whole original image; 8: on the 8 stored crops
    paper_row: str     # Table 3 row; (*) = InceptionResNet-v2, (-aug) = no crop/flip augmentation
    paper_srcc: float
    paper_plcc: float
    paper_accuracy: float  # percent


PUBLISHED_HEADS = (
    PublishedHead("irnv2_mlsp_wide_orig", 255_383_120, "47f9a29caed163d9dea2ed15b75aada4477cdb76bc2eac9c55f21dd3573a7a90",
                  "pool_3fc", "wide", 1, "Pool-3FC (*)(-aug)", 0.752, 0.755, 81.61),
    PublishedHead("irnv2_mlsp_narrow_orig", 148_210_528, "0121f3235245df3db37e82fc3e5a84e22aaa731f24b3ffd3ea63d421c2b60102",
                  "single_3fc", "narrow", 1, "Single-3FC (*)(-aug)", 0.740, 0.742, 80.96),
    PublishedHead("irnv2_mlsp_narrow_orig_aug", 148_210_608, "6e069d80b8c31a5e683129bc9ee242707773cec14ab91edaa36ababb94135636",
                  "single_3fc", "narrow", 8, "Single-3FC (*)", 0.743, 0.745, 81.37),
)
PUBLISHED_CHANNELS = 16_928  # all three take InceptionResNet-v2 features


class AuthorsFileError(ValueError):
    """A file that is not (or not exactly) one of the authors' heads; the message names the file and
    the layer concerned."""


@dataclass(frozen=True)
class LayerPlan:
    """One layer of the authors' head: its kutils name, our layer's name, and each weight's shape by
    name (Keras 2 and Keras 3 name a layer's weights alike: kernel, bias, gamma, beta, ...)."""

    authors: str
    ours: str
    shapes: dict


def _dense(authors: str, ours: str, inputs: int, units: int) -> LayerPlan:
    return LayerPlan(authors, ours, {"kernel": (inputs, units), "bias": (units,)})


def _batch_norm(authors: str, ours: str, channels: int, scale: bool = True) -> LayerPlan:
    # Keras 2 writes gamma (only with scale=True), beta, moving_mean, moving_variance, in that order
    names = (("gamma",) if scale else ()) + ("beta", "moving_mean", "moving_variance")
    return LayerPlan(authors, ours, {name: (channels,) for name in names})


def _conv(authors: str, ours: str, rows: int, columns: int, inputs: int, filters: int) -> LayerPlan:
    return LayerPlan(authors, ours, {"kernel": (rows, columns, inputs, filters)})  # use_bias=False


def _three_fc_plan(inputs: int) -> list[LayerPlan]:
    plan = []
    for index, units in enumerate(FC_SIZES):
        # kutils counts from 0 (head_fc0); mlsp.heads.three_fc from 1 (fc1)
        plan += [_dense(f"head_fc{index}", f"fc{index + 1}", inputs, units), _batch_norm(f"head_bn{index}", f"fc{index + 1}_bn", units)]
        inputs = units
    return plan + [_dense("head_out", "fc_mos", inputs, 1)]


def _inception_plan(channels: int, size: int = INCEPTION_SIZE) -> list[LayerPlan]:
    # kutils' conv2d_bn(x, filters, rows, cols, name=n) makes layers n_conv, n_bn (scale=False), n (ReLU)
    plan = []
    for authors, ours, rows, columns, inputs, filters in (
        ("branch_1x1", "column1_1x1", 1, 1, channels, size),
        ("3x3_1x1", "column2_1x1", 1, 1, channels, size),
        ("3x3_1x3", "column2_1x3", 1, 3, size, size // 2),
        ("3x3_3x1", "column2_3x1", 3, 1, size, size // 2),
        ("branch_pool", "column3_1x1", 1, 1, channels, size),
    ):
        plan += [_conv(f"{authors}_conv", ours, rows, columns, inputs, filters), _batch_norm(f"{authors}_bn", f"{ours}_bn", filters, scale=False)]
    return plan


def weight_plan(head: str, channels: int) -> list[LayerPlan]:
    """Every weighted layer of the authors' head on `channels` input channels, in model order.

    head: "single_3fc" (narrow features, shape (channels,)) or "pool_3fc" (wide, (5, 5, channels)).
    Source: kutils `applications.py` fc_layers / inception_block / conv2d_bn, as called in
    ava-mlsp's train_mlsp_*.ipynb. Raises ValueError for another head.
    """
    if head == "single_3fc":
        return _three_fc_plan(channels)
    if head == "pool_3fc":
        concatenated = INCEPTION_SIZE + INCEPTION_SIZE // 2 + INCEPTION_SIZE // 2 + INCEPTION_SIZE  # kutils' mixed_final: 3072
        return _inception_plan(channels) + _three_fc_plan(concatenated)
    raise ValueError(f"the authors released no '{head}' head (only single_3fc and pool_3fc)")


def parameter_count(plan: list[LayerPlan]) -> int:
    """Number of values in the plan (Keras' count_params, non-trainable BN statistics included)."""
    return sum(int(np.prod(shape)) for layer in plan for shape in layer.shapes.values())


# --- the file ---------------------------------------------------------------------------------------


def fingerprint(path) -> tuple[int, str]:
    """(size in bytes, sha256 hex digest) of a file, read in 8 MiB pieces."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while piece := handle.read(8 << 20):
            digest.update(piece)
            size += len(piece)
    return size, digest.hexdigest()


@dataclass(frozen=True)
class Identification:
    """What a file is: its size (bytes) and sha256, the published head it is (or None), and if none,
    the reason in words."""

    size: int
    sha256: str
    match: PublishedHead | None
    reason: str
    lfs_pointer: bool = False  # no weights in it at all: --force cannot help


def identify(path, published=None) -> Identification:
    """Which published head the file at `path` is, by size and sha256.

    The reason (when none) gives the size and hash found and those expected, and says when the file
    is a Git LFS pointer (a clone without git-lfs) or has a published file's size but another hash
    (a damaged copy). published: the list to match (default PUBLISHED_HEADS).
    """
    published = PUBLISHED_HEADS if published is None else published
    size, sha256 = fingerprint(path)
    for candidate in published:
        if candidate.sha256 == sha256 and candidate.size == size:
            return Identification(size, sha256, candidate, "")
    found = f"{path}: {size:,} bytes, sha256 {sha256}"
    with open(path, "rb") as handle:
        lfs_pointer = handle.read(40).startswith(b"version https://git-lfs")
    same_size = [candidate for candidate in published if candidate.size == size]
    if lfs_pointer:
        reason = f"{found}: a Git LFS pointer, not the weights (clone with git-lfs installed, or download the file from {SOURCE})"
    elif same_size:
        reason = f"{found}: the size of the published {same_size[0].name} but not its sha256 {same_size[0].sha256} (a damaged or modified copy?)"
    else:
        expected = "; ".join(f"{candidate.name}: {candidate.size:,} bytes, sha256 {candidate.sha256}" for candidate in published)
        reason = f"{found}: not one of the authors' published heads (expected {expected})"
    return Identification(size, sha256, None, reason, lfs_pointer)


def _strings(values, where: str) -> list[str]:
    """An HDF5 string attribute as a list of str; `where` (file, group, attribute) names it in the
    AuthorsFileError raised for bytes that are not UTF-8."""
    values = np.atleast_1d(values)
    try:
        return [value.decode("utf8") if isinstance(value, bytes) else str(value) for value in values]
    except UnicodeDecodeError as error:
        raise AuthorsFileError(f"{where} holds bytes that are not UTF-8 text ({error.object[max(0, error.start - 8):error.end + 8]!r}), so not a name Keras 2 wrote") from None


def _string_list_attribute(group, name: str, where: str) -> list[str] | None:
    """A list-of-strings attribute as Keras 2 writes it: whole, or split into name0, name1, ... when
    longer than HDF5's 64 KB object header allows (keras save_attributes_to_hdf5_group). None if absent.
    where: the file and group, for messages. Raises AuthorsFileError for bytes that are not UTF-8 and
    for a split list with a chunk missing (name0, name2 but no name1)."""
    if name in group.attrs:
        return _strings(group.attrs[name], f"{where} attribute '{name}'")
    if f"{name}0" not in group.attrs:
        return None
    values, chunk = [], 0
    while f"{name}{chunk}" in group.attrs:
        values += _strings(group.attrs[f"{name}{chunk}"], f"{where} attribute '{name}{chunk}'")
        chunk += 1
    # a chunk missing in the middle would silently cut the list short, and the layers after it
    # would be reported as missing although the file has them
    later = sorted(int(key[len(name):]) for key in group.attrs if key.startswith(name) and key[len(name):].isdigit() and int(key[len(name):]) > chunk)
    if later:
        raise AuthorsFileError(f"{where} attribute '{name}' is split into chunks, but '{name}{chunk}' is missing (there is a '{name}{later[0]}'): the list is cut short")
    return values


class StoredWeight(NamedTuple):
    """One weight's dataset as the file declares it, read without its values: path in the file,
    shape, dtype, and what HDF5 says of its storage (so that a dataset declared but never written,
    or kept in another file, is refused before any value is read)."""

    path: str
    shape: tuple
    dtype: np.dtype
    external: bool      # values in a file outside this one (HDF5 external storage)
    unwritten: str      # "" when every value is stored, else what is missing, in words


def _unwritten(dataset) -> str:
    """What of a dataset HDF5 never stored ("" when all is): reading it would give the fill value
    (zeros) without an error, a head of zeros that scores every photo alike."""
    if dataset.size == 0:
        return ""
    if dataset.chunks is None:
        return "" if dataset.id.get_storage_size() > 0 else "declared but never written (no storage allocated)"
    expected = int(np.prod([-(-extent // chunk) for extent, chunk in zip(dataset.shape, dataset.chunks)]))
    stored = dataset.id.get_num_chunks()
    return "" if stored >= expected else f"only {stored} of its {expected} chunks written"


@dataclass
class LegacyWeightsFile:
    """The layout of a Keras 2 weights file, read without its values. layers: layer name ->
    {weight name (kernel, bias, ...): StoredWeight (path, shape, ...)}, in the file's layer order."""

    path: Path
    backend: str
    keras_version: str
    layers: dict
    # what the file holds but its name attributes do not list: a partly written layer_names or
    # weight_names then reads as "listed N of M" rather than as weights that do not exist
    unlisted_layers: tuple = ()    # groups beside the listed layers
    unlisted_weights: dict = None  # layer name -> short names of datasets in its group but not in weight_names


def _describe_link(link) -> str:
    import h5py

    if isinstance(link, h5py.ExternalLink):
        return f"an HDF5 external link to {link.path} in file {link.filename}"
    if isinstance(link, h5py.SoftLink):
        return f"an HDF5 soft link to {link.path}"
    return f"an HDF5 {type(link).__name__}"


def _first_link(group, name: str) -> tuple[str, object] | None:
    """The first soft or external link met on the way to `name` under `group`, as (the path up to
    and including it, the link); None when every step is a hard link or the name does not exist.
    h5py follows links silently: an external link's dataset then reports its path in the other file,
    which the reader would look up in this one, and a link's target may be missing altogether."""
    import h5py

    parts = [part for part in name.split("/") if part]
    node = group
    for index, part in enumerate(parts):
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            return "/".join(parts[: index + 1]), link
        if index < len(parts) - 1:
            node = node[part]
            if not isinstance(node, h5py.Group):
                return None
    return None


def read_layout(path) -> LegacyWeightsFile:
    """Names, shapes and storage of every weight in a Keras 2 legacy HDF5 weights file (values are
    not read).

    Accepts a whole-model file too (weights under `model_weights`, as Keras 2's load_weights does).
    Raises AuthorsFileError naming the file (not HDF5, not the legacy layout, a backend other than
    TensorFlow or none named, Keras other than 2.x or none named, a name list cut short) or the layer
    (group or dataset missing, a weight named twice, a name attribute that is not UTF-8, an HDF5 soft
    or external link where a layer's group or a weight should be, an absolute weight name).
    """
    import h5py

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise AuthorsFileError(f"{path}: cannot be read as HDF5 ({error})") from None
    try:
        with handle:
            return _read_layout(path, handle)
    except AuthorsFileError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:  # h5py's errors on a damaged or unusual file
        raise AuthorsFileError(f"{path}: cannot be read as Keras 2 weights ({first_line(error)})") from None


def _read_layout(path: Path, handle) -> LegacyWeightsFile:
    import h5py

    root = handle
    if "layer_names" not in handle.attrs and "layer_names0" not in handle.attrs and "model_weights" in handle:
        linked = _first_link(handle, "model_weights")
        if linked:
            raise AuthorsFileError(f"{path}: group 'model_weights' is {_describe_link(linked[1])}, not a group stored in this file; only weights stored in the file itself are read")
        root = handle["model_weights"]
    where = f"{path}: {'group /model_weights' if root is not handle else 'root'}"
    layer_names = _string_list_attribute(root, "layer_names", where)
    if layer_names is None:
        raise AuthorsFileError(f"{path}: no root attribute 'layer_names', so not Keras 2's HDF5 weights layout (a Keras 3 .weights.h5?)")
    backend, keras_version = (
        _strings(root.attrs[name], f"{where} attribute '{name}'")[0] if name in root.attrs and np.size(root.attrs[name]) else ""
        for name in ("backend", "keras_version")
    )
    if not backend:
        raise AuthorsFileError(f"{path}: the file does not say which backend wrote it (no attribute 'backend'); only files written with TensorFlow's weight layout are read")
    if backend != "tensorflow":
        # Theano / CNTK files store conv kernels flipped or transposed; Keras 2 converted them on load
        raise AuthorsFileError(f"{path}: written with the '{backend}' backend; only TensorFlow's weight layout is read")
    if not keras_version:
        raise AuthorsFileError(f"{path}: the file does not say which Keras version wrote it (no attribute 'keras_version'); only Keras 2's legacy layout is read")
    if not keras_version.startswith("2."):
        raise AuthorsFileError(f"{path}: written by Keras {keras_version}; only Keras 2's legacy layout is read")
    layers, unlisted_weights = {}, {}
    for layer in layer_names:
        # links first: h5py would follow them into another file, or fail on a missing target
        linked = _first_link(root, layer) if layer else None
        if linked:
            part = "" if linked[0] == layer.strip("/") else f" ('{linked[0]}' on its path)"
            raise AuthorsFileError(f"{path}: layer '{layer}'{part} is {_describe_link(linked[1])}, not a group stored in this file; only weights stored in the file itself are read")
        if not layer or layer not in root or not isinstance(root[layer], h5py.Group):
            raise AuthorsFileError(f"{path}: layer '{layer}' is listed in layer_names but has no group")
        group = root[layer]
        weight_names = _string_list_attribute(group, "weight_names", f"{path}: layer '{layer}'")
        if weight_names is None:
            raise AuthorsFileError(f"{path}: layer '{layer}' has no attribute 'weight_names'")
        weights = {}
        for full_name in weight_names:
            if full_name.startswith("/"):  # resolved from the file's root, i.e. another layer's weight
                raise AuthorsFileError(f"{path}: layer '{layer}' lists weight '{full_name}', an absolute path outside its group (Keras 2 writes names relative to the layer's group)")
            linked = _first_link(group, full_name) if full_name else None
            if linked:
                part = "" if linked[0] == full_name.strip("/") else f" ('{linked[0]}' on its path)"
                raise AuthorsFileError(
                    f"{path}: layer '{layer}' weight '{full_name}'{part} is {_describe_link(linked[1])}, not a dataset stored in this file; "
                    "only weights stored in the file itself are read"
                )
            dataset = group.get(full_name) if full_name else None
            if not isinstance(dataset, h5py.Dataset):
                raise AuthorsFileError(f"{path}: layer '{layer}' lists weight '{full_name}' but the file has no such dataset")
            # 'head_fc0/kernel:0' -> 'kernel'. The scope is usually the layer's name, but TF 1
            # renames it ('head_fc0_1/...') when a notebook cell built the model twice, which
            # Keras 2 itself ignores on load; the layer is identified by its group instead.
            short = full_name.rsplit("/", 1)[-1].split(":", 1)[0]
            if short in weights:
                raise AuthorsFileError(f"{path}: layer '{layer}' has two weights named '{short}'")
            weights[short] = StoredWeight(
                dataset.name, tuple(int(n) for n in dataset.shape), dataset.dtype, dataset.external is not None,
                "" if dataset.external is not None else _unwritten(dataset),
            )
        layers[layer] = weights
        listed = {"/".join(part for part in full_name.split("/") if part) for full_name in weight_names}
        members = []
        group.visit_links(members.append)  # not into links' targets: it neither leaves the file nor fails on a missing one
        unlisted_weights[layer] = [
            name.rsplit("/", 1)[-1].split(":", 1)[0] for name in members
            if name not in listed and isinstance(group.get(name, getlink=True), h5py.HardLink) and isinstance(group.get(name), h5py.Dataset)
        ]
    unlisted_layers = tuple(name for name in root if name not in layers)
    return LegacyWeightsFile(path, backend, keras_version, layers, unlisted_layers, unlisted_weights)


def infer_head(layout: LegacyWeightsFile) -> tuple[str, int]:
    """(head, input channels) of a file, from the authors' layer names and the first layer's kernel:
    pool_3fc if it has kutils' inception block (branch_1x1_conv), single_3fc if only the fc chain.
    Raises AuthorsFileError naming the layer looked for (and saying so when the file stores it but
    its layer_names does not list it)."""
    layers = layout.layers
    if "branch_1x1_conv" in layers:
        kernel = layers["branch_1x1_conv"].get("kernel", (None, ()))[1]
        if len(kernel) != 4:
            raise AuthorsFileError(f"{layout.path}: layer 'branch_1x1_conv' has no 4-d kernel (found {kernel or 'none'})")
        return "pool_3fc", kernel[2]
    if "head_fc0" in layers:
        kernel = layers["head_fc0"].get("kernel", (None, ()))[1]
        if len(kernel) != 2:
            raise AuthorsFileError(f"{layout.path}: layer 'head_fc0' has no 2-d kernel (found {kernel or 'none'})")
        return "single_3fc", kernel[0]
    unlisted = [name for name in ("branch_1x1_conv", "head_fc0") if name in layout.unlisted_layers]
    if unlisted:
        raise AuthorsFileError(f"{layout.path}: the file has a group '{unlisted[0]}', but its layer_names does not list it (an attribute cut short or rewritten?)")
    weighted = [name for name, weights in layers.items() if weights]
    raise AuthorsFileError(
        f"{layout.path}: neither layer 'branch_1x1_conv' (Pool-3FC) nor 'head_fc0' (Single-3FC) found, so not one of the "
        f"authors' heads (layers with weights: {', '.join(weighted) or 'none'})"
    )


def check_layout(layout: LegacyWeightsFile, plan: list[LayerPlan]) -> None:
    """Every planned layer present with exactly its weights and shapes, and no other weighted layer.
    Raises AuthorsFileError naming the file, the layer and what was expected and found; when the
    file's layer_names (or a layer's weight_names) lists only some of them, it says how many it lists
    and whether the first absent one is stored in the file all the same."""
    planned = {layer.authors for layer in plan}
    absent = [layer for layer in plan if layer.authors not in layout.layers]
    if absent:
        first, listed = absent[0], f"the file's layer_names lists {len(plan) - len(absent)} of the {len(plan)} layers with weights the head needs"
        if first.authors in layout.unlisted_layers:
            raise AuthorsFileError(
                f"{layout.path}: {listed}; the first absent, '{first.authors}' (our {first.ours}), has a group in the file but is not "
                "listed (a layer_names attribute cut short or rewritten?)"
            )
        raise AuthorsFileError(f"{layout.path}: layer '{first.authors}' (our {first.ours}) is missing: {listed}, and the file has no group '{first.authors}'")
    for layer in plan:
        found = layout.layers[layer.authors]
        if set(found) != set(layer.shapes):
            unlisted = sorted(set((layout.unlisted_weights or {}).get(layer.authors, ())) & (set(layer.shapes) - set(found)))
            stored = f" (its group also stores {', '.join(unlisted)}, which its weight_names does not list)" if unlisted else ""
            raise AuthorsFileError(
                f"{layout.path}: layer '{layer.authors}' holds weights {sorted(found)}, expected {sorted(layer.shapes)}{stored}"
            )
        for name, shape in layer.shapes.items():
            if found[name][1] != shape:
                raise AuthorsFileError(f"{layout.path}: layer '{layer.authors}' weight '{name}' has shape {found[name][1]}, expected {shape}")
    extra = [name for name, weights in layout.layers.items() if weights and name not in planned]
    if extra:
        raise AuthorsFileError(f"{layout.path}: layer '{extra[0]}' has weights but is not part of the authors' head (unexpected: {', '.join(extra)})")


def check_storage(layout: LegacyWeightsFile, plan: list[LayerPlan]) -> None:
    """Every planned weight's dataset holds floating-point values stored in the file itself, all of
    them written: a string-typed weight cannot be a number, an external file may be missing or
    changed, and an unwritten dataset reads as zeros without any error. Reads metadata only.
    Raises AuthorsFileError naming the file, the layer and the weight."""
    for layer in plan:
        for name in layer.shapes:
            stored = layout.layers[layer.authors][name]
            where = f"{layout.path}: layer '{layer.authors}' weight '{name}' ({stored.path})"
            if stored.dtype.kind != "f":
                raise AuthorsFileError(f"{where} holds values of type {stored.dtype}, not floating-point numbers (Keras 2 writes float32)")
            if stored.external:
                raise AuthorsFileError(f"{where} keeps its values in an external file (HDF5 external storage); only weights stored in the file itself are read")
            if stored.unwritten:
                raise AuthorsFileError(f"{where} is {stored.unwritten}: it would read as zeros, a head that scores every photo alike")


def _check_our_head(model, plan: list[LayerPlan], head: str) -> None:
    """Our head must have the authors' weights, shapes and BN epsilon; a difference is a bug in
    mlsp.heads, not in the file (RuntimeError naming our layer)."""
    for layer in plan:
        ours = model.get_layer(layer.ours)
        shapes = {weight.name: tuple(weight.shape) for weight in ours.weights}
        if shapes != layer.shapes:
            raise RuntimeError(f"mlsp.heads.{head}: layer '{layer.ours}' has weights {shapes}, the authors' '{layer.authors}' {layer.shapes}")
        if hasattr(ours, "epsilon") and not np.isclose(ours.epsilon, KERAS2_BATCH_NORM_EPSILON):
            raise RuntimeError(f"mlsp.heads.{head}: layer '{layer.ours}' has epsilon {ours.epsilon}, the authors' Keras 2 default {KERAS2_BATCH_NORM_EPSILON}")


@dataclass
class ImportedHead:
    """Our head holding the authors' weights, with what it is: head builder name, input channels,
    and the file's layout (Keras version, layers)."""

    model: object  # keras.Model
    head: str
    channels: int
    layout: LegacyWeightsFile


@dataclass
class ImportPlan:
    """What a file will be imported as, found from its metadata alone: layout, head, input channels
    and the layer plan, all checked."""

    layout: LegacyWeightsFile
    head: str
    channels: int
    plan: list


def plan_import(path, head: str | None = None, channels: int | None = None, known_channels=None) -> ImportPlan:
    """Every check that HDF5's metadata allows (names, shapes, input channels, dtypes, storage),
    before any value is read or any model built: a file declaring a huge shape costs nothing.
    head, channels as in build_head; known_channels: {channels: backbone} the input channels must be
    among (None: any). Raises AuthorsFileError naming the file and the layer."""
    layout = read_layout(path)
    if head is None or channels is None:
        head, channels = infer_head(layout)
    plan = weight_plan(head, channels)
    check_layout(layout, plan)
    if known_channels is not None and channels not in known_channels:
        known = ", ".join(f"{name} {count:,}" for count, name in known_channels.items())
        raise AuthorsFileError(f"{layout.path}: layer '{plan[0].authors}' takes {channels:,} input channels; no backbone of this kit gives that many ({known})")
    check_storage(layout, plan)
    return ImportPlan(layout, head, channels, plan)


def _read_weight(handle, layout: LegacyWeightsFile, layer: LayerPlan, name: str) -> np.ndarray:
    stored = layout.layers[layer.authors][name]
    where = f"{layout.path}: layer '{layer.authors}' weight '{name}'"
    try:
        stored_value = np.asarray(handle[stored.path][()])
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:  # a truncated file, a missing HDF5 filter
        raise AuthorsFileError(f"{where} cannot be read ({first_line(error)})") from None
    if not np.isfinite(stored_value).all():  # a damaged file would score every photo NaN
        raise AuthorsFileError(f"{where} holds NaN or infinite values")  # also with --force: nothing can score with them
    largest, limit = float(np.abs(stored_value).max(initial=0)), float(np.finfo(np.float32).max)  # compared as Python floats: no cast, no warning
    if largest > limit:  # a float64 weight the cast would turn into inf, and a NaN score
        raise AuthorsFileError(f"{where}: value {largest:g} does not fit in float32 (at most {limit:g}), the type the head computes in")
    value = stored_value.astype(np.float32)
    if name == "moving_variance" and (value < 0).any():  # BN divides by sqrt(variance + epsilon): NaN scores
        raise AuthorsFileError(f"{where} holds negative variances (smallest {value.min():g}), which no training writes")
    return value


def probe_features(input_shape, seed: int = PROBE_SEED) -> np.ndarray:
    """Inputs like those a head is given, for checking what it predicts: all zeros, and one seeded
    random vector per PROBE_SCALES of non-negative values (exponentially distributed with that mean),
    the way MLSP features are averages of post-ReLU activations (InceptionResNet-v2's 'mixed' layers
    concatenate ReLU outputs). input_shape: one sample's shape, e.g. (16928,) or (5, 5, 16928)."""
    rng = np.random.default_rng(seed)
    samples = [np.zeros(input_shape)] + [rng.exponential(scale, input_shape) for scale in PROBE_SCALES]
    return np.stack(samples).astype(np.float32)


def _first_layer(model, plan: list[LayerPlan], head: str, probes: np.ndarray, failing, block_as_one: bool = False) -> str:
    """The first layer along the head whose output on `probes` is `failing` (a test of the output
    array), named as "layer 'head_fc0' (our fc1)"; "" when none is. block_as_one: pool_3fc's
    inception columns are judged by their concatenation, named as the block (one constant column is
    harmless while the others vary)."""
    import keras

    chain = [(layer.ours, f"layer '{layer.authors}' (our {layer.ours})") for layer in plan]
    if head == "pool_3fc" and block_as_one:
        columns = [layer for layer in plan if layer.ours.startswith("column")]
        block = f"the inception block (layers '{columns[0].authors}' to '{columns[-1].authors}')"
        chain = [("inception_concat", block)] + [item for item in chain if not item[0].startswith("column")]
    outputs = keras.Model(model.inputs, [model.get_layer(ours).output for ours, _ in chain]).predict_on_batch(probes)
    for (_, name), output in zip(chain, outputs):
        if failing(np.asarray(output, np.float64)):
            return name
    return ""


def _constant(output: np.ndarray) -> bool:
    """Every sample of the batch gives the same output, up to float32 rounding."""
    spread = np.ptp(output, axis=0).max() if output.size else 0.0
    return bool(spread <= CONSTANT_TOLERANCE * max(1.0, float(np.abs(output).max())))


def check_predictions(model, plan: list[LayerPlan], head: str, path, largest: tuple, score_scale=AVA_SCORE_SCALE) -> None:
    """The head's predictions on `probe_features` must be finite, within ABSURD_SCALE_WIDTHS widths of
    the score scale on either side (for AVA's 1-10: between -89 and 100), and not all equal: weights
    that pass every other check can still overflow float32, predict far off the scale, or give every
    photo one score (a kernel written as zeros, every ReLU dead).
    largest: (magnitude, authors' layer, weight) of the largest weight, named in the messages.
    Raises AuthorsFileError naming the file, the reason and where possible the layer."""
    probes = probe_features(tuple(model.input_shape[1:]))
    predictions = np.asarray(model.predict_on_batch(probes), np.float64).reshape(-1)
    low, high = score_scale
    reach = ABSURD_SCALE_WIDTHS * (high - low)
    weights = f"largest weight {largest[0]:.3g}, layer '{largest[1]}' weight '{largest[2]}'"
    if not np.isfinite(predictions).all():
        layer = _first_layer(model, plan, head, probes, lambda output: not np.isfinite(output).all())
        raise AuthorsFileError(
            f"{path}: the head's predictions for typical features are not finite{f', from {layer} on' if layer else ''} "
            f"(weights too large for float32 arithmetic; {weights})"
        )
    worst = predictions[np.argmax(np.maximum(low - predictions, predictions - high))]
    if worst < low - reach or worst > high + reach:
        raise AuthorsFileError(
            f"{path}: the head predicts {worst:.4g} for typical features, more than {ABSURD_SCALE_WIDTHS} scale-widths outside the "
            f"{low:g}-{high:g} score scale (allowed {low - reach:g} to {high + reach:g}; {weights})"
        )
    if _constant(predictions[:, None]):
        layer = _first_layer(model, plan, head, probes, _constant, block_as_one=True)
        raise AuthorsFileError(
            f"{path}: the head predicts {predictions[0]:.4g} for each of {len(predictions)} different typical feature vectors, so it "
            f"would score every photo alike ({f'the output of {layer} is already the same for all of them' if layer else 'no layer output varies'}: "
            "a kernel written as zeros, or ReLUs that never fire?)"
        )


def build_head(path, head: str | None = None, channels: int | None = None, planned: ImportPlan | None = None, score_scale=AVA_SCORE_SCALE) -> ImportedHead:
    """Our head (`mlsp.heads`) holding the weights of the authors' file at `path`.

    head, channels: what the file must be ("single_3fc" or "pool_3fc", input channels); None infers
    them from the layer names and the first kernel's shape (`infer_head`). planned: the result of
    `plan_import` when the caller already has it. score_scale: the scale the head predicts on (AVA's
    1-10). Every weight is matched by the authors' layer name and the weight's name (never by order),
    and every name, shape and storage is checked before any value is read. Raises AuthorsFileError
    naming the file and the layer (also for a weight holding NaN or infinite values, a negative BN
    variance, and, by `check_predictions`, a head whose predictions for typical features are not
    finite, absurdly far outside score_scale, or all equal).
    """
    import h5py

    from mlsp import heads

    planned = planned or plan_import(path, head, channels)
    layout, head, channels, plan = planned.layout, planned.head, planned.channels, planned.plan
    model = heads.build(head, channels)
    _check_our_head(model, plan, head)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise AuthorsFileError(f"{path}: cannot be read as HDF5 ({error})") from None
    largest = (0.0, plan[0].authors, next(iter(plan[0].shapes)))
    with handle:
        for layer in plan:
            for weight in model.get_layer(layer.ours).weights:
                value = _read_weight(handle, layout, layer, weight.name)
                if value.size and float(np.abs(value).max()) > largest[0]:
                    largest = (float(np.abs(value).max()), layer.authors, weight.name)
                weight.assign(value)
    check_predictions(model, plan, head, layout.path, largest, score_scale)
    return ImportedHead(model, head, channels, layout)


# --- the scorer folder ------------------------------------------------------------------------------


def check_file(path) -> Path:
    """The FILE argument: an existing, readable file. Raises AuthorsFileError naming it."""
    path = Path(path)
    if path.is_dir():
        raise AuthorsFileError(f"{path}: is a folder; give the model_best_weights.h5 file in it")
    if not path.exists():
        raise AuthorsFileError(f"{path}: no such file" + (" (a symbolic link to a missing file)" if path.is_symlink() else ""))
    if not path.is_file():  # a FIFO or a device would be hashed forever
        raise AuthorsFileError(f"{path}: not a regular file; give the model_best_weights.h5 file")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise AuthorsFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    return path


def check_output_folder(out) -> Path:
    """The --out folder, checked before anything is read or built: it must not exist (or be an
    empty folder), and its nearest existing parent must be a folder this process may write in.
    A symbolic link to a folder is followed. Returns the folder to write, as an absolute path (links
    resolved). Raises AuthorsFileError naming the path: also for the current directory or one of its
    parents ('.', './', '..', the same as an absolute path) and a mount point, which the import's
    final rename cannot replace (or, for the current directory, would replace under the user's shell)."""
    given = str(out)
    # absolute first: '.' and '..' have no name and no parent to write the folder beside
    out = Path(os.path.abspath(out))
    if out.is_symlink():
        if not out.exists():
            raise AuthorsFileError(f"{out}: is a symbolic link to {os.readlink(out)}, which does not exist; remove the link or choose another --out")
        out = out.resolve()
    real, cwd = Path(os.path.realpath(out)), Path(os.path.realpath(os.getcwd()))
    named = str(out) if given == str(out) else f"{out} (--out {shlex.quote(given)})"
    instead = f"give the path of a new folder, e.g. --out {shlex.quote(os.path.join(given, 'authors_scorer'))}"
    if real == cwd:
        raise AuthorsFileError(f"{named}: is the current directory, which the import cannot replace; {instead}")
    if real in cwd.parents:
        raise AuthorsFileError(f"{named}: is a parent of the current directory, which the import cannot replace; {instead}")
    if os.path.ismount(real):
        raise AuthorsFileError(f"{named}: is a mount point, which the import cannot replace; {instead}")
    if out.exists() and not out.is_dir():
        mode = out.stat().st_mode
        what = "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a file, not a folder" if stat.S_ISREG(mode) else "not a folder"
        raise AuthorsFileError(f"{named}: is {what}; give the path of a new folder as --out")
    if out.exists() and any(out.iterdir()):
        raise AuthorsFileError(f"{out}: exists and is not an empty folder; choose another --out or remove it")
    parent = out.parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        what = "a broken symbolic link" if parent.is_symlink() and not parent.exists() else "not a folder"
        raise AuthorsFileError(f"{out}: cannot be made, {parent} is {what}; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AuthorsFileError(f"{out}: cannot be made, the folder {parent} is not writable; choose another --out")
    return out


def _why_force_would_fail(path) -> str:
    """"" when --force would import the file, else why not (from the metadata; values are not read)."""
    try:
        plan_import(path, known_channels=BACKBONE_BY_CHANNELS)
    except AuthorsFileError as error:
        return str(error)
    return ""


def import_authors(path, out, force: bool = False, published=None) -> tuple[Path, PublishedHead | None]:
    """Write a scorer folder (`mlsp.score.save_scorer`) from one of the authors' head files.

    path: a `model_best_weights.h5` from subpic/ava-mlsp `models/`; it must be one of
    `published` (default PUBLISHED_HEADS) by size and sha256 unless `force`: then the head is
    inferred from the file's layer names and shapes, the backbone from its input channels, and views 1
    (whole image) and max_side 800 are assumed.
    out: the folder to write (must not exist, or be empty): head.keras, scorer.json (backbone with
    ImageNet weights; views 1 for the `orig` heads, 8 for `orig_aug`; max_side 800, AVA's largest
    side, since the authors fed the original AVA images; AVA's score scale 1-10) and authors.json
    (where the weights came from, and the layer mapping). The folder is written under a temporary
    name beside it and renamed when complete, so an interrupted or failed import leaves no `out`.
    Returns (folder, the PublishedHead or None when forced).
    Raises AuthorsFileError (no such file, a folder, unreadable, not published and not forced, a
    wrong layer name, shape, storage or link, no backbone for its input channels, weights whose
    predictions are not finite, absurd or constant, an output folder in use, not writable, or one
    that cannot be replaced: the current directory, a parent of it, a mount point).
    """
    # Every check that needs no Keras comes first: importing TensorFlow takes 10-15 s, too long to
    # wait for a refusal of the arguments or of the file's layout.
    path = check_file(path)
    out = check_output_folder(out)
    try:
        found = identify(path, published)
    except OSError as error:
        raise AuthorsFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    match = found.match
    if found.lfs_pointer:
        raise AuthorsFileError(found.reason)
    if match is None and not force:
        why_not = _why_force_would_fail(path)
        hint = (
            f"; --force would not help either: {why_not.removeprefix(f'{path}: ')}" if why_not
            else ". Pass --force to import it anyway (the head is then inferred from its layer names and shapes)"
        )
        raise AuthorsFileError(found.reason + hint)
    planned = plan_import(path, *((match.head, PUBLISHED_CHANNELS) if match is not None else ()), known_channels=BACKBONE_BY_CHANNELS)
    backbone = BACKBONE_BY_CHANNELS[planned.channels]
    from mlsp import score  # Keras and TensorFlow: only once the file's layout has passed

    imported = build_head(path, planned=planned, score_scale=AVA_SCORE_SCALE)
    kind, views = (match.kind, match.views) if match is not None else (("wide" if imported.head == "pool_3fc" else "narrow"), 1)
    label = match.name if match else f"{path.name} (not a published file; imported with --force)"
    trained_on = f"AVA, by Hosu et al.: {label}; {backbone} {kind} MLSP features of the original images" + ("; 8 stored crops" if views == 8 else "")
    provenance = {
        "source": SOURCE, "file": str(path.resolve()), "size": found.size, "sha256": found.sha256,
        "published": asdict(match) if match else None, "head": imported.head, "input_channels": imported.channels,
        "keras_version": imported.layout.keras_version,
        "layers": {layer.authors: layer.ours for layer in planned.plan},
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # not mkdtemp: its mode 0700 would stay on the renamed folder; mkdir follows the umask
        partial = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        partial.mkdir()
    except OSError as error:
        raise AuthorsFileError(f"{out}: cannot be made ({error.strerror or error}); choose another --out") from None
    try:
        imported.model.save(partial / "imported.keras")
        score.save_scorer(
            partial, partial / "imported.keras", backbone, "imagenet", kind, trained_on=trained_on, max_side=AVA_MAX_SIDE, views=views,
            score_min=AVA_SCORE_SCALE[0], score_max=AVA_SCORE_SCALE[1],
        )
        (partial / "imported.keras").unlink()
        (partial / "authors.json").write_text(json.dumps(provenance, indent=2))
        os.rename(partial, out)  # replaces an empty folder; refused if something appeared in it meanwhile
    except BaseException as error:  # KeyboardInterrupt too: nothing half-written is left behind
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(error, OSError):
            raise AuthorsFileError(f"{out}: cannot be written ({error.strerror or error}); nothing was written") from None
        raise
    return out, match
