"""The feature store: one HDF5 file per (backbone, input mode, feature kind, augmentation).

Layout of a file:
  features   float16 [N, V, C] (narrow) or [N, V, 5, 5, C] (wide); V = 8 augmented views or 1 whole view;
             chunked one image per chunk, all chunks allocated when the file is made;
  image_ids  [N] strings, in the metadata CSV's order;
  done       [N] uint8 flags, set to 1 only after the image's features are written and flushed;
  attrs      backbone, weights, input mode, kind, views, block boundaries (channel offsets).

Crash safety: the file's whole structure is written once, at creation (into a temporary name that is
renamed when complete), with every chunk allocated; after that a record only overwrites raw chunk
data and then its done flag, so no HDF5 metadata changes while images are written. A process killed
at any point (kill -9 included) loses at most the image in flight, and a record whose flag is not set
is simply extracted again. (HDF5's SWMR mode is not used: a killed SWMR writer leaves a flag in the
file that only the h5clear tool removes, so the file could not be resumed from Python.)

Reads use contiguous slices or one record at a time: h5py's fancy indexing (ds[[i, j, k]]) is
10-60x slower on this layout.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


class StoreMismatch(ValueError):
    pass


def store_path(features_dir, backbone: str, mode: str, kind: str, augment: bool, shard_index: int = 0, num_shards: int = 1) -> Path:
    name = f"{mode}_{kind}_{'aug8' if augment else 'whole'}"
    if num_shards > 1:
        name += f".shard{shard_index:03d}-of-{num_shards:03d}"
    return Path(features_dir) / backbone / f"{name}.h5"


def _preallocated(handle, name: bytes, shape: tuple, chunk: tuple, dtype) -> None:
    """A chunked dataset whose chunks all exist from the start (zero-filled): later writes change
    raw data only, never the file's structure."""
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_chunk(chunk)
    plist.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    plist.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
    plist.set_obj_track_times(False)
    h5py.h5d.create(handle.id, name, dtype, h5py.h5s.create_simple(shape), dcpl=plist)


def _create(path: Path, image_ids: list[str], views: int, feature_shape: tuple, attrs: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".creating.h5")
    with h5py.File(temporary, "w") as handle:
        _preallocated(handle, b"features", (len(image_ids), views, *feature_shape), (1, views, *feature_shape), h5py.h5t.IEEE_F16LE)
        _preallocated(handle, b"done", (len(image_ids),), (max(1, min(len(image_ids), 4096)),), h5py.h5t.STD_U8LE)
        handle.create_dataset("image_ids", data=np.array(image_ids, dtype=object), dtype=h5py.string_dtype())
        for key, value in attrs.items():
            handle.attrs[key] = value
    temporary.replace(path)  # a file half-made by a killed process is never opened as a store


class _OpenFile:
    """Close the HDF5 handle once, on `close()` or at the end of a `with` block."""

    handle: h5py.File

    def close(self) -> None:
        if self.handle.id.valid:
            self.handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FeatureWriter(_OpenFile):
    """Open (or create) a store and write records; resumes where a previous run stopped."""

    def __init__(self, path, image_ids: list[str], views: int, feature_shape: tuple, attrs: dict | None = None):
        self.path = Path(path)
        if not self.path.exists():
            _create(self.path, list(image_ids), views, tuple(feature_shape), attrs or {})
        self.handle = h5py.File(self.path, "r+")
        stored_ids = [value.decode() if isinstance(value, bytes) else value for value in self.handle["image_ids"][:]]
        expected_shape = (len(image_ids), views, *feature_shape)
        if stored_ids != list(image_ids) or self.handle["features"].shape != expected_shape:
            self.handle.close()
            raise StoreMismatch(
                f"{self.path}: made for other images or another shape ({len(stored_ids)} images, "
                f"shape {expected_shape} wanted); delete it or choose another features_dir"
            )
        self.features = self.handle["features"]
        self.done_flags = self.handle["done"]

    def done(self) -> np.ndarray:
        return self.done_flags[:].astype(bool)

    def write(self, index: int, features: np.ndarray) -> None:
        self.features[index] = features.astype(np.float16)
        self.features.flush()
        self.done_flags[index] = 1
        self.done_flags.flush()



class FeatureReader(_OpenFile):
    """Read a store: `ids`, `done`, contiguous slices, or records one at a time."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no feature store here; run notebook 01_extract_features first")
        # no file lock: a reader may watch a store that an extraction is still filling
        self.handle = h5py.File(self.path, "r", locking=False)
        self.features = self.handle["features"]
        self.ids = [value.decode() if isinstance(value, bytes) else value for value in self.handle["image_ids"][:]]
        self.done = self.handle["done"][:].astype(bool)
        self.attrs = dict(self.handle.attrs)

    @property
    def shape(self) -> tuple:
        return self.features.shape

    def read_slice(self, start: int, stop: int) -> np.ndarray:
        return self.features[start:stop]

    def read_records(self, indices) -> np.ndarray:
        out = np.empty((len(indices), *self.features.shape[1:]), dtype=self.features.dtype)
        for position, index in enumerate(indices):
            self.features.read_direct(out, np.s_[int(index)], np.s_[position])
        return out

    def read_all(self) -> np.ndarray:
        return self.features[:]



def merge_shards(shard_paths: list, output, image_ids: list[str]) -> tuple[Path, int]:
    """Combine shard files (any order) into one store holding every image in `image_ids` order."""
    readers = [FeatureReader(path) for path in shard_paths]
    try:
        first = readers[0]
        views, feature_shape = first.shape[1], first.shape[2:]
        attrs = {key: value for key, value in first.attrs.items() if key not in ("shard_index", "num_shards")}
        position = {image_id: index for index, image_id in enumerate(image_ids)}
        with FeatureWriter(output, image_ids, views, feature_shape, attrs) as writer:
            for reader in readers:
                for index, image_id in enumerate(reader.ids):
                    if reader.done[index] and image_id in position:
                        writer.write(position[image_id], reader.read_records([index])[0])
            missing = int((~writer.done()).sum())
        return Path(output), missing
    finally:
        for reader in readers:
            reader.close()
