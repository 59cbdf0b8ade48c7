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
10-60x slower on this layout. Training's random records go around h5py (`FeatureReader.read_pairs`):
the features are uncompressed, so each record lies at a fixed byte offset in the file, and several
threads read records with os.preadv at once; h5py runs one call at a time (a global lock), which
leaves a disk with one small read in flight.
"""
from __future__ import annotations

import csv
import errno
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
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



# Reader threads per batch (FeatureReader.read_pairs, mlsp.train.FeatureBatches), from
# benchmarks/store.py --sections readers (benchmarks/measured/store_readers.log; batches of 128 random
# records, 2 busy cores, a virtio disk). From the disk, 8 readers against 1 (and h5py, one per call):
# 102 kB views 3,048 vs 1,516 (1,093) images/s; IRv2 wide 846 kB views 377 vs 295 (162) images/s, the
# disk then near its ~300-450 MB/s. From the page cache threads neither helped nor hurt clearly (8 vs 1:
# 0.91-0.94x; 16: 1.03-1.53x), while any pread beat h5py 3-4x. 4-16 were within the noise of each other
# from the disk; 8 was best or near it for both sizes in two runs.
DEFAULT_READERS = 8


class UnsupportedLayout(ValueError):
    """The features' layout does not allow reading records at byte offsets; the message says why."""


class UnwrittenRecord(LookupError):
    """A record has no space in the file (its chunk was never allocated): it was never written."""


def direct_read_problem(dataset: h5py.Dataset) -> str | None:
    """Why the records [row, view] of `dataset` cannot be read straight from the file at byte
    offsets, or None when they can: an uncompressed, unfiltered chunked or contiguous dataset, in a
    file of HDF5's default driver (sec2) with no user block, each chunk holding whole records."""
    if not hasattr(os, "preadv"):
        return "os.preadv is not available on this system"
    if dataset.file.driver != "sec2":
        return f"the file is opened with HDF5's {dataset.file.driver!r} driver, not sec2"
    if dataset.file.id.get_create_plist().get_userblock():
        return "the file has a user block (HDF5 addresses would not be file offsets)"
    plist = dataset.id.get_create_plist()
    layout = plist.get_layout()
    if layout not in (h5py.h5d.CHUNKED, h5py.h5d.CONTIGUOUS):
        return "its layout is neither chunked nor contiguous (compact or virtual)"
    if plist.get_external_count():
        return "its data lives in external files"
    if plist.get_nfilters():
        names = [plist.get_filter(index)[3].decode(errors="replace") for index in range(plist.get_nfilters())]
        return f"it is filtered ({', '.join(names)}): a chunk's bytes are not the features"
    if layout == h5py.h5d.CHUNKED and tuple(dataset.chunks[2:]) != tuple(dataset.shape[2:]):
        return f"its chunks {dataset.chunks} split a record {tuple(dataset.shape[2:])}"
    if layout == h5py.h5d.CHUNKED and not hasattr(dataset.id, "chunk_iter"):
        return "this h5py/HDF5 cannot list chunks in one pass (chunk_iter needs HDF5 >= 1.12.3)"
    return None


def record_offsets(dataset: h5py.Dataset) -> np.ndarray:
    """[N, V] int64: the byte offset in the file of each record dataset[row, view], -1 where its
    chunk was never allocated. One pass over the chunk index (chunk_iter: ~0.65 s per 400,000 chunks
    here; looking chunks up one by one with get_chunk_info_by_coord took 22 ms each).
    Raises UnsupportedLayout when direct_read_problem names a problem."""
    problem = direct_read_problem(dataset)
    if problem:
        raise UnsupportedLayout(problem)
    rows, views = dataset.shape[:2]
    record_bytes = int(np.prod(dataset.shape[2:], dtype=np.int64)) * dataset.dtype.itemsize
    if dataset.id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS:
        start = dataset.id.get_offset()  # None until the data has space in the file
        if start is None:
            return np.full((rows, views), -1, dtype=np.int64)
        return start + np.arange(rows * views, dtype=np.int64).reshape(rows, views) * record_bytes
    offsets = np.full((rows, views), -1, dtype=np.int64)
    chunk_rows, chunk_views = dataset.chunks[:2]
    # a chunk is stored whole (edge chunks too), records in C order: (row, view) within it
    within = (np.arange(chunk_rows)[:, None] * chunk_views + np.arange(chunk_views)[None, :]) * record_bytes

    def place(info) -> None:
        row, view = info.chunk_offset[:2]
        block = offsets[row : row + chunk_rows, view : view + chunk_views]
        block[...] = info.byte_offset + within[: block.shape[0], : block.shape[1]]

    dataset.id.chunk_iter(place)
    return offsets


def pread_records(descriptor: int, offsets: np.ndarray, out: np.ndarray, path) -> None:
    """Read record i (out[i].nbytes bytes) at file offset offsets[i] into out[i], for every i.

    os.preadv releases the GIL and takes its own offset, so threads share `descriptor`. Raises
    OSError naming `path` when the file ends before a record does (a truncated store)."""
    flat = out.reshape(len(out), -1).view(np.uint8)
    for position, offset in enumerate(offsets):
        target, done = flat[position], 0
        while done < target.nbytes:
            got = os.preadv(descriptor, [target[done:]], int(offset) + done)
            if got == 0:
                raise OSError(f"{path}: the file ends inside a record at byte {int(offset) + done}; the store is truncated")
            done += got


class FeatureReader(_OpenFile):
    """Read a store: `ids`, `done`, contiguous slices, records one at a time, or records read in
    parallel around h5py (`read_pairs`)."""

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
        self._direct_lock = threading.Lock()
        self._offsets, self._descriptor, self._pools, self._warned = None, None, {}, False
        self.direct_problem = direct_read_problem(self.features)

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

    def read_pairs(self, rows, views, readers: int = DEFAULT_READERS) -> np.ndarray:
        """[len(rows), *feature_shape] in the store's dtype (float16): record (rows[i], views[i]) at i,
        the same bytes as features[rows[i], views[i]] through h5py.

        `readers` threads read the records with os.preadv at their byte offsets (record_offsets, found
        on the first call); 1 reads them in the calling thread. When the layout does not allow that
        (compressed or filtered, say: `direct_problem` says why) the records are read one at a time
        through h5py, with a warning naming the file, once. Raises UnwrittenRecord naming the file and
        the record when a record's chunk was never allocated, and IndexError for a row or view out of range."""
        rows, views = np.asarray(rows, dtype=np.int64).reshape(-1), np.asarray(views, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.features.shape[2:]), dtype=self.features.dtype)
        if not len(rows):
            return out
        if self.direct_problem:
            self._warn_once()
            for position, (row, view) in enumerate(zip(rows, views)):
                self.features.read_direct(out, np.s_[int(row), int(view)], np.s_[position])
            return out
        offsets = self._offsets_of(rows, views)
        readers = max(1, min(int(readers), len(rows)))
        if readers == 1:
            pread_records(self._descriptor, offsets, out, self.path)
            return out
        # contiguous groups, one per thread: each group's reads stay in flight together with the others'
        groups = np.array_split(np.arange(len(rows)), readers)
        pool = self._pool(readers)
        for result in [pool.submit(pread_records, self._descriptor, offsets[group], out[group[0] : group[-1] + 1], self.path) for group in groups]:
            result.result()
        return out

    def _offsets_of(self, rows: np.ndarray, views: np.ndarray) -> np.ndarray:
        """File offsets of the records (rows[i], views[i]); the table and the file descriptor are made on first use."""
        with self._direct_lock:
            if self._offsets is None:
                self._offsets = record_offsets(self.features)
                self._descriptor = os.open(self.path, os.O_RDONLY)
        n_rows, n_views = self._offsets.shape
        if len(rows) and (rows.min() < 0 or rows.max() >= n_rows or views.min() < 0 or views.max() >= n_views):
            raise IndexError(f"{self.path}: records asked beyond its {n_rows} images x {n_views} views")
        offsets = self._offsets[rows, views]
        missing = np.flatnonzero(offsets < 0)
        if len(missing):
            first = int(missing[0])
            raise UnwrittenRecord(f"{self.path}: {len(missing)} of the records asked were never written (no space in the file), first image {int(rows[first])} view {int(views[first])}; read only images whose status is written")
        return offsets

    def _pool(self, readers: int) -> ThreadPoolExecutor:
        with self._direct_lock:
            if readers not in self._pools:
                self._pools[readers] = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="mlsp-read")
            return self._pools[readers]

    def _warn_once(self) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"{self.path}: records are read one at a time through h5py, without parallel readers: {self.direct_problem}", stacklevel=3)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._pools = {}
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
        super().close()



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
