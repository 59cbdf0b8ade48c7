"""Read PyTorch's legacy (pre-1.6, non-zip) checkpoint format with pickle and numpy alone.

A .pth file is a pickle, and unpickling runs whatever callables the file names. This reader
refuses every global except the tensor storage types, the tensor-rebuild function and
OrderedDict, so a hostile file raises `UnsafePickleError` before anything runs.

Legacy layout: pickled magic number, protocol version, system info, then the object pickle
(tensors refer to storages through persistent ids), then the pickled list of storage keys, then
each storage's bytes, each preceded by its element count as a little-endian int64.
"""
from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafePickleError(pickle.UnpicklingError):
    pass


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """A storage placeholder; its data is filled in once the raw bytes are read."""

    def __init__(self, dtype, size: int):
        self.dtype = dtype
        self.size = size
        self.array: np.ndarray | None = None


class _TensorRef:
    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        base = self.storage.array
        item = base.itemsize
        if not self.shape:
            return base[self.offset].copy()
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :], shape=self.shape, strides=tuple(s * item for s in self.stride), writeable=False
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *args):
    return _TensorRef(storage, storage_offset, size, stride)


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise UnsafePickleError(f"refusing to load global {module}.{name}: not a tensor storage, tensor rebuild or OrderedDict")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, size, view_metadata = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        if view_metadata is not None:
            raise UnsafePickleError("storage views are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, size)
        return self.storages[key]


class _HeaderUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise UnsafePickleError(f"refusing to load global {module}.{name} in the file header")


def load_legacy_state_dict(path: str | Path) -> "collections.OrderedDict[str, np.ndarray]":
    """Parameter name -> numpy array, from a legacy PyTorch .pth file."""
    with open(path, "rb") as handle:
        data = handle.read()
    stream = io.BytesIO(data)
    magic = _HeaderUnpickler(stream).load()
    if magic != LEGACY_MAGIC_NUMBER:
        raise ValueError(f"{path}: not a legacy PyTorch checkpoint (zip-format files are not supported)")
    _HeaderUnpickler(stream).load()  # protocol version
    _HeaderUnpickler(stream).load()  # system info
    storages: dict = {}
    result = RestrictedUnpickler(stream, storages).load()
    keys = _HeaderUnpickler(stream).load()
    for key in keys:
        storage = storages[key]
        count = int(np.frombuffer(stream.read(8), dtype="<i8")[0])
        buffer = stream.read(count * np.dtype(storage.dtype).itemsize)
        storage.array = np.frombuffer(buffer, dtype=np.dtype(storage.dtype).newbyteorder("<"))
    if not isinstance(result, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(result).__name__}")
    return collections.OrderedDict((name, value.to_numpy() if isinstance(value, _TensorRef) else value) for name, value in result.items())
