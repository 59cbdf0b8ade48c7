"""The feature store: one HDF5 file per (backbone, input mode, feature kind, augmentation).

Layout of a file:
  features   float16 [N, V, C] (narrow) or [N, V, 5, 5, C] (wide); V = 8 augmented views or 1 whole view;
             chunked one view of one image per chunk, (1, 1, ...), all chunks allocated (not filled)
             when the file is made;
  image_ids  [N] strings, in the metadata CSV's order;
  done       [N] uint8 status per image: 0 pending, 1 written (set only after the features are written
             and flushed), 2 failed (the image could not be decoded, was too small for the backbone,
             or its forward pass failed; the reason is appended to `<store>.failures.csv`);
  attrs      backbone, weights, input mode, kind, views, block boundaries (channel offsets).

A failed image is not retried by a resume (it would fail again, forever): the notebooks that train
read only the images whose status is 1 and list the others. `retry_failed` in extraction retries them.

Crash safety: the file's whole structure is written once, at creation (into a temporary name that is
renamed when complete), with every chunk allocated (its file address fixed); after that a record only overwrites raw chunk
data and then its done flag, so no HDF5 metadata changes while images are written. A process killed
at any point (kill -9 included) loses at most the image in flight, and a record whose flag is not set
is simply extracted again. A failed status is written the same way (raw data only); its reason goes
to a small CSV beside the store, appended and flushed line by line. (HDF5's SWMR mode is not used: a killed SWMR writer leaves a flag in the
file that only the h5clear tool removes, so the file could not be resumed from Python.)

No zero-fill: the chunks' space is reserved but not written at creation (FILL_TIME_NEVER), so a new
store is a sparse file that costs disk only as records are written. Zero-filling ran at 0.4-0.76 GB/s
here: 40-65 minutes and 1.7 TB written before the first IRv2 wide feature of AVA with 8 views. A
record never written reads back without error, with undefined values (zeros in a fresh file); its
status says pending, and readers use only written records. The small `done` flags are zero-filled.

Chunk shape, from the read pattern (benchmarks/store.py, 3000 images x 8 x 5x5x2048, one run):
training reads one random view per image per epoch; with one image per chunk, (1, 8, ...), HDF5 read
the whole 8-view chunk for it whenever a chunk fits its 1 MiB chunk cache: 8x the bytes (7.4x from
disk), 3.1x slower with a cold page cache and 1.8x warm; the same 8x for the paper's narrow features
(IV3 161 kB, IRv2 271 kB read per 20 / 34 kB view). Chunks larger than the cache (IV3 / IRv2 wide,
4-7 MB per image) are read view by view either way. Prediction reads every view of consecutive images
and gains from whole-image chunks (0.74x the time cold, equal warm), but it runs once per test set
against every epoch of training. So one view per chunk. Its costs: 8x the chunks (AVA with 8 views:
2 million; creating them took 3-9 s instead of 1 s, an index of ~130 MB more; a random lookup cost
the same, ~50 us) and a write of 8 chunks per image (3.4 ms instead of 1.0, beside a forward pass of
100s of ms). Old stores (one image per chunk) stay readable
and resumable: neither reading nor writing depends on the chunk shape.

Reads use contiguous slices or one record at a time: h5py's fancy indexing (ds[[i, j, k]]) is
10-60x slower on this layout.
"""
from __future__ import annotations

import csv
import errno
from pathlib import Path

import h5py
import numpy as np

PENDING, WRITTEN, FAILED = 0, 1, 2


class StoreMismatch(ValueError):
    """Existing stores made for other images or another shape; the message names every one of them."""


def mismatch(path, image_ids: list[str], views: int, feature_shape: tuple) -> str | None:
    """Why the existing store at `path` cannot take these images' features, or None (also when absent).

    Stores are made for one metadata CSV's image list: after notebook 00 reads other labels, every
    store of the earlier list mismatches, and a message about the first alone would send its reader
    round the loop once per store."""
    path = Path(path)
    if not path.exists():
        return None
    with h5py.File(path, "r", locking=False) as handle:
        stored_ids = [value.decode() if isinstance(value, bytes) else value for value in handle["image_ids"][:]]
        stored_shape = tuple(int(size) for size in handle["features"].shape)
    wanted_shape = (len(image_ids), int(views), *(int(size) for size in feature_shape))
    if stored_ids == list(image_ids) and stored_shape == wanted_shape:
        return None
    if stored_ids == list(image_ids):
        why = f"features of shape {stored_shape}, not {wanted_shape}"
    elif sorted(stored_ids) == sorted(image_ids):
        why = f"made for the same {len(image_ids)} images in another order"
    else:
        foreign = len(set(stored_ids) - set(image_ids))
        why = f"made for {len(stored_ids)} images, {foreign} of them not among the {len(image_ids)} wanted"
    return f"{path}: {why}"


class StoreLocked(OSError):
    """HDF5 could not lock a store for writing; the message names the file, why, and what to do."""


def _open_for_writing(path: Path, mode: str) -> h5py.File:
    """h5py.File(path, mode), with HDF5's bare lock error ("errno = 11") turned into an explanation."""
    try:
        return h5py.File(path, mode)
    except OSError as error:
        text = str(error)
        if "lock" not in text.lower():
            raise
        if f"errno = {errno.ENOSYS}" in text or "not implemented" in text.lower():
            why = "this file system does not support file locks (some network or parallel file systems)"
            remedy = "set the environment variable HDF5_USE_FILE_LOCKING=FALSE before starting Python (only one writer per file then)"
        else:
            why = "another process has it open (a notebook kernel or script with h5py.File(..., 'r') left open, or a second extraction)"
            remedy = "close that handle or restart that kernel; readers that should not block writers open with h5py.File(path, 'r', locking=False), as mlsp.store.FeatureReader does"
        raise StoreLocked(f"{path}: cannot lock the feature store for writing: {why}; {remedy}. (HDF5 said: {text})") from None


def failures_path(path) -> Path:
    """The CSV beside a store that lists its failed images and why."""
    path = Path(path)
    return path.with_name(path.stem + ".failures.csv")


def read_failures(path) -> dict[str, str]:
    """image id -> reason of the last recorded failure, from the CSV beside a store (empty if none)."""
    reasons = {}
    log = failures_path(path)
    if log.exists():
        with open(log, newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle):
                if len(row) == 2:
                    reasons[row[0]] = row[1]
    return reasons


def store_path(features_dir, backbone: str, mode: str, kind: str, augment: bool, shard_index: int = 0, num_shards: int = 1) -> Path:
    name = f"{mode}_{kind}_{'aug8' if augment else 'whole'}"
    if num_shards > 1:
        name += f".shard{shard_index:03d}-of-{num_shards:03d}"
    return Path(features_dir) / backbone / f"{name}.h5"


def record_chunk(feature_shape: tuple) -> tuple:
    """The chunk of `features`: one view of one image, (1, 1, *feature_shape); see the module docstring."""
    return (1, 1, *feature_shape)


def _preallocated(handle, name: bytes, shape: tuple, chunk: tuple, dtype, fill: bool) -> None:
    """A chunked dataset whose chunks all have their file address from the start (ALLOC_TIME_EARLY):
    later writes change raw data only, never the file's structure.

    fill=False reserves the chunks' space without writing it (FILL_TIME_NEVER): the file is sparse
    until written, and a chunk never written reads as whatever the space holds (zeros in a fresh
    file on Linux). fill=True writes zeros at creation (for the small `done` flags, which must read 0).
    """
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_chunk(chunk)
    plist.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    plist.set_fill_time(h5py.h5d.FILL_TIME_ALLOC if fill else h5py.h5d.FILL_TIME_NEVER)
    plist.set_obj_track_times(False)
    h5py.h5d.create(handle.id, name, dtype, h5py.h5s.create_simple(shape), dcpl=plist)


def _create(path: Path, image_ids: list[str], views: int, feature_shape: tuple, attrs: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".creating.h5")
    with _open_for_writing(temporary, "w") as handle:
        _preallocated(handle, b"features", (len(image_ids), views, *feature_shape), record_chunk(feature_shape), h5py.h5t.IEEE_F16LE, fill=False)
        _preallocated(handle, b"done", (len(image_ids),), (max(1, min(len(image_ids), 4096)),), h5py.h5t.STD_U8LE, fill=True)
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
        problem = mismatch(self.path, list(image_ids), views, tuple(feature_shape))
        if problem:
            raise StoreMismatch(f"{problem}; delete it (its features belong to an earlier metadata.csv) or give notebook 01 another work_dir")
        self.handle = _open_for_writing(self.path, "r+")
        self.features = self.handle["features"]
        self.done_flags = self.handle["done"]
        self.ids = list(image_ids)

    def status(self) -> np.ndarray:
        """[N] uint8: PENDING, WRITTEN or FAILED per image."""
        return self.done_flags[:]

    def done(self) -> np.ndarray:
        return self.status() == WRITTEN

    def write(self, index: int, features: np.ndarray) -> None:
        self.features[index] = features.astype(np.float16)
        self.features.flush()
        self.done_flags[index] = WRITTEN
        self.done_flags.flush()

    def mark_failed(self, index: int, reason: str) -> None:
        """Record that image `index` cannot be extracted: the reason first (appended to the CSV beside
        the store), then the status, so a crash between the two leaves it pending, not unexplained."""
        with open(failures_path(self.path), "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow([self.ids[index], " ".join(str(reason).split())])
        self.done_flags[index] = FAILED
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
        self.status = self.handle["done"][:]
        self.done = self.status == WRITTEN
        self.failed = self.status == FAILED
        self.pending = self.status == PENDING
        self.attrs = dict(self.handle.attrs)

    def failure_reasons(self) -> dict[str, str]:
        """image id -> reason, for the images whose status is FAILED."""
        logged = read_failures(self.path)
        return {self.ids[index]: logged.get(self.ids[index], "failed (reason not recorded)") for index in np.flatnonzero(self.failed)}

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
    """Combine shard files (any order) into one store holding every image in `image_ids` order; failed
    images stay failed, with their reasons. Returns the store and the number of images still pending."""
    readers = [FeatureReader(path) for path in shard_paths]
    try:
        first = readers[0]
        views, feature_shape = first.shape[1], first.shape[2:]
        attrs = {key: value for key, value in first.attrs.items() if key not in ("shard_index", "num_shards")}
        position = {image_id: index for index, image_id in enumerate(image_ids)}
        with FeatureWriter(output, image_ids, views, feature_shape, attrs) as writer:
            for reader in readers:
                reasons = reader.failure_reasons()
                for index, image_id in enumerate(reader.ids):
                    if image_id not in position:
                        continue
                    if reader.done[index]:
                        writer.write(position[image_id], reader.read_records([index])[0])
                    elif reader.failed[index]:
                        writer.mark_failed(position[image_id], reasons[image_id])
            missing = int((writer.status() == PENDING).sum())
        return Path(output), missing
    finally:
        for reader in readers:
            reader.close()
