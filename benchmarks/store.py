"""The feature store's layout: creation cost and the chunk shape, measured side by side in one run.

    python benchmarks/store.py [--images 3000] [--channels 2048] [--dir /tmp]

1. Creation: the layout before issue 12 (every chunk zero-filled at creation) against the kit's
   (chunks allocated, never filled): seconds and bytes actually on disk (st_blocks * 512) for a store
   of --create-gb GB, projected to AVA's IRv2 wide store with 8 views; and creation time at AVA's
   chunk count (255,530 images x 8 views) for chunks of one image and of one view.
2. Reads of a store of --images images x 8 views x 5x5x--channels float16, chunked one image per
   chunk (1, 8, ...) and one view per chunk (1, 1, ...): the training pattern (one random view per
   image, images in random order, batches of 128, record by record as mlsp.train.FeatureBatches
   reads) and the prediction pattern (every view of consecutive images, as mlsp.train.predict reads),
   each with the page cache dropped first (when allowed) and again warm. Per record: seconds, bytes
   HDF5 asked the OS for (rchar) and bytes read from the disk (read_bytes), from /proc/self/io.
3. Bytes per record asked of the OS for the paper's shapes (IV3 / IRv2, narrow and wide).
4. Parallel readers (`--sections readers`): batches of 128 random (image, view) records read as
   today's FeatureBatches read them before parallel readers (h5py, one record per call) and with
   FeatureReader.read_pairs at 1, 2, 4, 8 and 16 reader threads, side by side, from a store evicted
   from the page cache before each measurement (evict_from_page_cache, checked by the bytes read from
   the disk in /proc/self/io) and from the page cache. Two record sizes: 5x5x2048 (102 kB, --images
   x 8 views) and IRv2 wide, 5x5x16928 (846 kB, --wide-images x 8 views). From the disk each
   measurement reads records no other one reads (a disk or its host may cache what it just served);
   from the page cache all read the same records, read once untimed first.

    python benchmarks/store.py --sections readers [--images 3000] [--wide-images 1500] [--dir /tmp]

Sections 1-3 print `ratio <what>: <value>` lines where a ratio above 1 favours one view per chunk;
section 4's ratios are images/s of N readers over h5py's one-record-per-call reads (and over 1 reader).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from ava_scale import evict_from_page_cache
from mlsp.store import WRITTEN, FeatureReader, FeatureWriter, record_chunk

VIEWS = 8
AVA_IMAGES = 255_530
PAPER_SHAPES = {"IV3 narrow": (10048,), "IV3 wide": (5, 5, 10048), "IRv2 narrow": (16928,), "IRv2 wide": (5, 5, 16928)}


def io_counters() -> dict[str, int]:
    with open("/proc/self/io") as handle:
        return {key: int(value) for key, value in (line.split(": ") for line in handle)}


def drop_page_cache() -> bool:
    """Drop the page cache (root only, and not in every container); False when not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return True
    except OSError:
        return False


def make_layout(path: Path, images: int, shape: tuple, chunk: tuple, zero_fill: bool) -> float:
    """A store file like mlsp.store's with a chosen chunk and fill (the pre-issue-12 layout is
    chunk (1, 8, ...) with zero_fill=True). Returns the seconds it took."""
    start = time.perf_counter()
    with h5py.File(path, "w") as handle:
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_chunk(chunk)
        plist.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        plist.set_fill_time(h5py.h5d.FILL_TIME_ALLOC if zero_fill else h5py.h5d.FILL_TIME_NEVER)
        h5py.h5d.create(handle.id, b"features", h5py.h5t.IEEE_F16LE, h5py.h5s.create_simple((images, VIEWS, *shape)), dcpl=plist)
        handle.create_dataset("done", shape=(images,), dtype=np.uint8, chunks=(max(1, min(images, 4096)),))
        handle.create_dataset("image_ids", data=np.array([str(i) for i in range(images)], dtype=object), dtype=h5py.string_dtype())
    os.sync()  # the zero-fill's bytes are counted until they are on the disk
    return time.perf_counter() - start


def on_disk(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def creation(directory: Path, create_gb: float) -> None:
    shape = (5, 5, 2048)
    images = max(1, int(create_gb * 1e9 / (VIEWS * np.prod(shape) * 2)))
    apparent = images * VIEWS * int(np.prod(shape)) * 2
    print(f"\n== creation: {images} images x {VIEWS} x {shape} float16 = {apparent / 1e9:.2f} GB apparent")
    seconds = {}
    for name, chunk, zero_fill in (("zero-filled (before)", (1, VIEWS, *shape), True), ("kit (not filled)", record_chunk(shape), False)):
        path = directory / f"create_{zero_fill}.h5"
        seconds[name] = make_layout(path, images, shape, chunk, zero_fill)
        written = on_disk(path)
        print(f"{name:22s} {seconds[name]:7.2f} s  on disk {written / 1e6:9.1f} MB of {os.stat(path).st_size / 1e6:9.1f} MB")
        path.unlink()
    ava_bytes = AVA_IMAGES * VIEWS * 25 * 16928 * 2
    rate = apparent / seconds["zero-filled (before)"]
    print(f"zero-fill rate {rate / 1e9:.2f} GB/s -> AVA IRv2 wide, 8 views ({ava_bytes / 1e12:.2f} TB): {ava_bytes / rate / 60:.0f} min before the first feature")
    print(f"ratio creation time zero-filled / kit: {seconds['zero-filled (before)'] / seconds['kit (not filled)']:.1f}")

    tiny = (5, 5, 8)  # the chunk count, not the bytes, sets the cost of an unfilled creation
    print(f"\n== creation at AVA's chunk count ({AVA_IMAGES} images x {VIEWS} views, tiny records, not filled)")
    for chunk_name, chunk in (("(1, 8, ...)", (1, VIEWS, *tiny)), ("(1, 1, ...)", (1, 1, *tiny))):
        path = directory / "ava_count.h5"
        took = make_layout(path, AVA_IMAGES, tiny, chunk, False)
        print(f"chunk {chunk_name}: {took:6.2f} s, file {os.stat(path).st_size / 1e6:.1f} MB")
        with FeatureReader(path) as reader:  # lookups in a B-tree of 255,530 or 2 million chunks
            rows = np.random.default_rng(0).integers(0, AVA_IMAGES, 5000)
            start = time.perf_counter()
            for row in rows:
                reader.features[int(row), 3]
            print(f"  random one-view reads of tiny records: {(time.perf_counter() - start) / len(rows) * 1e6:.0f} us per record (page cache warm)")
        path.unlink()


def fill(path: Path, images: int, shape: tuple) -> float:
    """Write every record one image per call through FeatureWriter; returns seconds per image."""
    record = np.random.default_rng(0).standard_normal((VIEWS, *shape)).astype(np.float16)
    with FeatureWriter(path, [str(i) for i in range(images)], VIEWS, shape) as writer:
        start = time.perf_counter()
        for index in range(images):
            record.reshape(-1)[0] = index % 2048  # exact in float16; reads are checked against it
            writer.write(index, record)
        return (time.perf_counter() - start) / images


def training_reads(features, images: int, batch: int = 128):
    rng = np.random.default_rng(1)
    order, views = rng.permutation(images), rng.integers(0, VIEWS, images)
    for start in range(0, images, batch):
        rows = order[start : start + batch]
        out = np.stack([features[int(row), int(view)] for row, view in zip(rows, views[rows])])
        assert all(out[i].reshape(-1)[0] == row % 2048 for i, row in enumerate(rows) if views[row] == 0)
    return images


def prediction_reads(features, images: int):
    for row in range(images):
        out = np.stack([features[row, view] for view in range(VIEWS)])
        assert out.reshape(-1)[0] == row % 2048
    return images * VIEWS


def measure(path: Path, pattern, images: int, cold: bool) -> dict[str, float]:
    dropped = drop_page_cache() if cold else None
    with FeatureReader(path) as reader:
        before, start = io_counters(), time.perf_counter()
        records = pattern(reader.features, images)
        seconds = time.perf_counter() - start
        after = io_counters()
    return {"s": seconds / records, "rchar": (after["rchar"] - before["rchar"]) / records, "disk": (after["read_bytes"] - before["read_bytes"]) / records, "dropped": dropped}


def reads(directory: Path, images: int, channels: int, rounds: int) -> None:
    shape = (5, 5, channels)
    record_bytes = int(np.prod(shape)) * 2
    print(f"\n== reads: {images} images x {VIEWS} x {shape} float16 ({record_bytes / 1e3:.0f} kB per view, {images * VIEWS * record_bytes / 1e9:.2f} GB per store)")
    paths = {}
    for name, chunk in (("(1,8)", (1, VIEWS, *shape)), ("(1,1)", (1, 1, *shape))):
        paths[name] = directory / f"reads_{chunk[1]}.h5"
        make_layout(paths[name], images, shape, chunk, False)
        print(f"chunk {name}: write {fill(paths[name], images, shape) * 1e3:.2f} ms per image")
    results = {}
    for pattern_name, pattern in (("training", training_reads), ("prediction", prediction_reads)):
        for cold in (True, False):
            for name, path in paths.items():
                if not cold:
                    measure(path, pattern, images, False)  # load the page cache
                runs = [measure(path, pattern, images, cold) for _ in range(rounds)]
                result = {key: statistics.median(run[key] for run in runs) for key in ("s", "rchar", "disk")}
                results[pattern_name, cold, name] = result
                dropped = runs[0]["dropped"]
                state = "cold" if cold and dropped else ("cold NOT DROPPED (not allowed here)" if cold else "warm")
                print(f"{pattern_name:10s} {state:5s} chunk {name}: {result['s'] * 1e6:8.0f} us/record  asked {result['rchar'] / 1e3:7.0f} kB/record  disk {result['disk'] / 1e3:7.0f} kB/record")
    for pattern_name in ("training", "prediction"):
        for cold in (True, False):
            old, new = results[pattern_name, cold, "(1,8)"], results[pattern_name, cold, "(1,1)"]
            temperature = "cold" if cold else "warm"
            print(f"ratio {pattern_name} {temperature} time per record (1,8)/(1,1): {old['s'] / new['s']:.2f}")
            print(f"ratio {pattern_name} {temperature} bytes asked per record (1,8)/(1,1): {old['rchar'] / new['rchar']:.2f}")
            if cold and new["disk"] > 0:
                print(f"ratio {pattern_name} cold disk bytes per record (1,8)/(1,1): {old['disk'] / new['disk']:.2f}")
    for path in paths.values():
        path.unlink()


def paper_shapes(directory: Path, images: int) -> None:
    print(f"\n== the paper's shapes: bytes HDF5 asks of the OS per record, training pattern ({images} images, page cache warm)")
    for label, shape in PAPER_SHAPES.items():
        record_bytes = int(np.prod(shape)) * 2
        asked = {}
        for name, chunk in (("(1,8)", (1, VIEWS, *shape)), ("(1,1)", (1, 1, *shape))):
            path = directory / "paper.h5"
            make_layout(path, images, shape, chunk, False)
            fill(path, images, shape)
            asked[name] = measure(path, training_reads, images, False)["rchar"]
            path.unlink()
        print(f"{label:12s} {record_bytes / 1e3:6.0f} kB per view: chunk (1,8) asks {asked['(1,8)'] / 1e3:7.0f} kB, (1,1) asks {asked['(1,1)'] / 1e3:6.0f} kB")
        print(f"ratio {label} bytes asked per training record (1,8)/(1,1): {asked['(1,8)'] / asked['(1,1)']:.2f}")


# ------------------------------------------------------------------------------ 4 parallel readers

READER_COUNTS = (1, 2, 4, 8, 16)
AVA_TRAINABLE = 235_530  # AVA's train + validation images: one record each per epoch
FILL_SLICE = 64e6  # bytes per write while filling: a disk-bound fill, not one call per image


def marker(rows: np.ndarray, views: np.ndarray) -> np.ndarray:
    """The value written as the first feature of record (row, view): exact in float16."""
    return ((rows * VIEWS + views) % 2048).astype(np.float16)


def fill_in_slices(path: Path, images: int, shape: tuple) -> float:
    """A kit store (FeatureWriter's layout) with every record written, in slices of ~FILL_SLICE bytes,
    then fsync'd; each record's first feature is marker(row, view). Returns seconds."""
    record_bytes = VIEWS * int(np.prod(shape)) * 2
    per_write = max(1, int(FILL_SLICE // record_bytes))
    base = np.random.default_rng(0).standard_normal((per_write, VIEWS, *shape), dtype=np.float32).astype(np.float16)
    start = time.perf_counter()
    with FeatureWriter(path, [str(i) for i in range(images)], VIEWS, shape) as writer:
        for first in range(0, images, per_write):
            block = base[: min(per_write, images - first)]
            rows = np.arange(first, first + len(block))
            block.reshape(len(block), VIEWS, -1)[:, :, 0] = marker(rows[:, None], np.arange(VIEWS)[None, :])
            writer.features[first : first + len(block)] = block
        writer.done_flags[:] = WRITTEN
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    return time.perf_counter() - start


def read_batches(reader: FeatureReader, batches: list, readers: int | None) -> np.ndarray:
    """Read every batch (rows, views); readers None: h5py one record per call, as FeatureBatches
    read before read_pairs. Returns the last batch (checked by the caller)."""
    for rows, views in batches:
        if readers is None:
            out = np.stack([reader.features[int(row), int(view)] for row, view in zip(rows, views)])
        else:
            out = reader.read_pairs(rows, views, readers)
    return out


def timed_read(reader: FeatureReader, batches: list, readers: int | None, cold: bool) -> dict:
    """images/s and the share of the bytes that came from the disk, for one read of `batches`."""
    if cold:
        evict_from_page_cache(reader.path)
    else:
        read_batches(reader, batches, readers)  # into the page cache
    before, start = io_counters(), time.perf_counter()
    last = read_batches(reader, batches, readers)
    seconds = time.perf_counter() - start
    disk = io_counters()["read_bytes"] - before["read_bytes"]
    rows, views = batches[-1]
    assert np.array_equal(last.reshape(len(rows), -1)[:, 0], marker(rows, views)), "a record read back wrong"
    images = sum(len(rows) for rows, _ in batches)
    return {"images_per_s": images / seconds, "disk_share": disk / (images * last[0].nbytes)}


def draw_batches(images: int, count: int, batch: int, seed: int) -> list[list]:
    """`count` disjoint lists of batches of `batch` random (row, view) records, none repeated."""
    records = np.random.default_rng(seed).permutation(images * VIEWS)
    per_list = len(records) // count
    batches = max(1, per_list // batch)
    return [[(chosen // VIEWS, chosen % VIEWS) for chosen in np.split(records[index * per_list : index * per_list + batches * batch], batches)] for index in range(count)]


def parallel_readers(directory: Path, images: int, shape: tuple, rounds: int, max_batches: int, batch: int = 128) -> None:
    record_bytes = int(np.prod(shape)) * 2
    path = directory / "readers.h5"
    seconds = fill_in_slices(path, images, shape)
    size = images * VIEWS * record_bytes
    print(f"\n== parallel readers: {images} images x {VIEWS} x {shape} float16 ({record_bytes / 1e3:.0f} kB per view, {size / 1e9:.2f} GB), written in {seconds:.1f} s")
    methods = [None, *READER_COUNTS]
    name = {None: "h5py, 1 per call", **{count: f"{count:2d} reader{'s' if count > 1 else ''}" for count in READER_COUNTS}}
    results = {(method, cold): [] for method in methods for cold in (True, False)}
    # from the disk, every measurement reads records of its own; from the page cache, all read the same
    cold_lists = draw_batches(images, rounds * len(methods), batch, seed=7)
    warm_list = draw_batches(images, 1, batch, seed=8)[0][:max_batches]
    with FeatureReader(path) as reader:
        reader.read_pairs([0], [0])  # the offset table, made once per opened store
        for round_index in range(rounds):
            # alternate the order, so drift in the machine's load does not favour one end
            order = methods if round_index % 2 == 0 else methods[::-1]
            for position, method in enumerate(order):
                chosen = cold_lists[round_index * len(methods) + position][:max_batches]
                results[method, True].append(timed_read(reader, chosen, method, cold=True))
            for method in order:
                results[method, False].append(timed_read(reader, warm_list, method, cold=False))
    counted = min(max_batches, len(cold_lists[0]))
    print(f"records per measurement: {counted * batch} from the disk ({counted} batches of {batch}), {len(warm_list) * batch} from the page cache; "
          f"median of {rounds} rounds; disk share = bytes read from the disk / bytes of the records")
    median = {key: {field: statistics.median(run[field] for run in runs) for field in ("images_per_s", "disk_share")} for key, runs in results.items()}
    for cold in (True, False):
        for method in methods:
            result = median[method, cold]
            state = "disk" if cold else "page cache"
            epoch = AVA_TRAINABLE / result["images_per_s"] / 60
            print(f"{state:10s} {name[method]:16s} {result['images_per_s']:9.0f} images/s  {result['images_per_s'] * record_bytes / 1e6:7.0f} MB/s  "
                  f"from disk {result['disk_share'] * 100:4.0f} %  (an AVA epoch, {AVA_TRAINABLE:,} such records: {epoch:5.1f} min)")
    for cold in (True, False):
        state = "disk" if cold else "page cache"
        for count in READER_COUNTS:
            print(f"ratio {state} {shape[-1]} channels images/s {count} reader{'s' if count > 1 else ''} / h5py: {median[count, cold]['images_per_s'] / median[None, cold]['images_per_s']:.2f}")
        for count in READER_COUNTS[1:]:
            print(f"ratio {state} {shape[-1]} channels images/s {count} readers / 1 reader: {median[count, cold]['images_per_s'] / median[1, cold]['images_per_s']:.2f}")
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="creation,reads,paper,readers", help="comma-separated: creation, reads, paper, readers")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--channels", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--create-gb", type=float, default=3.0)
    parser.add_argument("--paper-images", type=int, default=48)
    parser.add_argument("--wide-images", type=int, default=1500, help="images of the IRv2 wide store of the readers section")
    parser.add_argument("--reader-batches", type=int, default=10, help="batches of 128 per measurement in the readers section (fewer when the store runs out of unread records)")
    parser.add_argument("--dir", default=None, help="where the temporary stores go (default: the system's temporary folder)")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    # dropping the whole page cache is for section 2 only (the readers section evicts its own file)
    droppable = drop_page_cache() if "reads" in sections else "not tried"
    print(f"h5py {h5py.version.version}, HDF5 {h5py.version.hdf5_version}; page cache can be dropped: {droppable}; "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        directory = Path(folder)
        if "creation" in sections:
            creation(directory, args.create_gb)
        if "reads" in sections:
            reads(directory, args.images, args.channels, args.rounds)
        if "paper" in sections:
            paper_shapes(directory, args.paper_images)
        if "readers" in sections:
            parallel_readers(directory, args.images, (5, 5, args.channels), args.rounds, args.reader_batches)
            parallel_readers(directory, args.wide_images, (5, 5, PAPER_SHAPES["IRv2 wide"][-1]), args.rounds, args.reader_batches)
    print(f"load average at the end: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
