"""Read PyTorch's legacy (pre-1.6, non-zip) checkpoint format with pickle and numpy alone.

A .pth file is a pickle, and unpickling runs whatever callables the file names. This reader
refuses every global except the tensor storage types, the tensor-rebuild function and
OrderedDict, so a hostile file raises `UnsafePickleError` before anything runs.

Legacy layout: pickled magic number, protocol version, system info, then the object pickle
(tensors refer to storages through persistent ids), then the pickled list of storage keys, then
each storage's bytes, each preceded by its element count as a little-endian int64.

Refusing globals is not enough: every size in the file is a claim, and pickle opcodes can call,
set attributes and build structures. So the reader
- runs only the opcodes a state dict uses, through the pure-Python unpickler's handlers (the C
  unpickler allocates a counted bytes object before reading it, calls whatever a REDUCE names
  and sets attributes on whatever a BUILD names), and checks each counted string against the
  bytes left in the file before reading it;
- hands out fresh per-load stand-ins for the allowed globals, never the module function or the
  OrderedDict class, calls only those, and allows BUILD only on an OrderedDict the file made
  (torch sets its `_metadata` that way; it is dropped): nothing of the process can change;
- allows only strings and ints as dict keys (hashing a deeply nested tuple overflows the C stack);
- checks each tensor's shape, stride and offset against its storage, each storage's element
  count against the bytes left in the file, and bounds the bytes it copies out, all before it
  allocates anything; a storage's bytes are read straight into the array of the one tensor
  that covers it, when there is one (the usual case), so the file is held in memory once.
Every refusal is a `CheckpointError` (a ValueError and a pickle.UnpicklingError) whose message
starts with the file's path.
"""
from __future__ import annotations

import collections
import io
import math
import os
import pickle
import pickletools
import reprlib
import struct
import sys
from pathlib import Path

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
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
# Tied weights put one storage under several names, and each name gets its own copy. This bounds
# the bytes copied out per byte stored, so a small file cannot make the reader allocate without limit.
MAX_COPIES_PER_STORED_BYTE = 4
MAX_DIMENSIONS = 32  # numpy 1.x's limit; no network's weights come near it


class CheckpointError(pickle.UnpicklingError, ValueError):
    """A file that is not a well-formed legacy checkpoint; the message starts with the file's path."""


class UnsafePickleError(CheckpointError):
    """A file that asks for more than a state dict needs: a global, an opcode, a call, a BUILD."""


_REPR = reprlib.Repr()  # bounded depth and length: a file's values can be nested a million deep
_REPR.maxstring = _REPR.maxother = 80


def _show(value) -> str:
    return _REPR.repr(value)


class _StorageType:
    """A per-load stand-in for torch.<Type>Storage: only its name and dtype are used."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """A storage named by a persistent id: `size` elements of `dtype` (little-endian in the file)."""

    __slots__ = ("dtype", "size")

    def __init__(self, dtype: np.dtype, size: int):
        self.dtype, self.size = dtype, size


class _AllowedCallable:
    """A per-load stand-in for an allowed global callable; REDUCE calls nothing else."""

    __slots__ = ("name", "function")

    def __init__(self, name: str, function):
        self.name, self.function = name, function


class _PickledOrderedDict(collections.OrderedDict):
    """An OrderedDict the file made: the state dict itself, or a tensor's (empty) backward hooks."""

    def __repr__(self) -> str:
        return f"OrderedDict(<{len(self)} items>)"  # shallow: its values may be nested a million deep


class _TensorArguments:
    """What torch._utils._rebuild_tensor_v2 was given; checked once the tensor's name is known."""

    __slots__ = ("arguments",)

    def __init__(self, arguments: tuple):
        self.arguments = arguments


def _rebuild_tensor_v2(*arguments) -> _TensorArguments:
    return _TensorArguments(arguments)


def _is_key(value) -> bool:
    return type(value) in (str, int)


def _new_ordered_dict(*arguments) -> _PickledOrderedDict:
    # Python 3 pickles OrderedDict() and sets the items afterwards; Python 2 passed a list of pairs.
    if not arguments:
        return _PickledOrderedDict()
    if len(arguments) == 1 and type(arguments[0]) is list:
        pairs = arguments[0]
        if all(type(pair) in (list, tuple) and len(pair) == 2 and _is_key(pair[0]) for pair in pairs):
            return _PickledOrderedDict(pairs)
    raise UnsafePickleError("OrderedDict called with arguments other than a list of (string, value) pairs")


def _describe(value) -> str:
    if isinstance(value, _AllowedCallable):
        return value.name
    if isinstance(value, _StorageType):
        return f"torch.{value.name}"
    if isinstance(value, _PickledOrderedDict):
        return "an OrderedDict"
    if isinstance(value, _TensorArguments):
        return "a tensor"
    if isinstance(value, _Storage):
        return "a storage"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


_OPCODE_NAMES = {ord(opcode.code): opcode.name for opcode in pickletools.opcodes}
# What torch.save's legacy format writes with pickle protocols 2-4 (Python 2's short strings
# included). Left out: object construction (INST, OBJ, NEWOBJ, NEWOBJ_EX), the extension registry
# (EXT1/2/4), the text protocol, bytes, sets, out-of-band buffers and stack tricks (DUP, POP).
_ALLOWED_OPCODES = (
    "PROTO FRAME STOP MARK GLOBAL STACK_GLOBAL BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET "
    "NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 BINFLOAT BINUNICODE SHORT_BINUNICODE "
    "SHORT_BINSTRING EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST APPEND APPENDS "
    "EMPTY_DICT SETITEM SETITEMS REDUCE BUILD BINPERSID"
).split()


class _OpcodeTable(dict):
    def __missing__(self, code: int):
        raise UnsafePickleError(f"pickle opcode {_OPCODE_NAMES.get(code, hex(code))} is not one a state dict uses")


class _PlainUnpickler(pickle._Unpickler):
    """Plain data only: no globals, no persistent ids, no calls, no BUILD.

    Built on the standard library's pure-Python unpickler (a private class) because its opcode
    table can be restricted. Of the allowed opcodes only BINUNICODE and FRAME state a length
    over 255 that read(n) would allocate at once; both are checked against the bytes left in
    the file.
    """

    def __init__(self, file: io.BufferedReader, file_size: int):
        super().__init__(file, encoding="utf-8")  # Python 2 strings, as torch.load decodes them
        self.file, self.file_size = file, file_size

    def load(self):
        # pickle._Unpickler.load without its _Unframer, which adds a Python call to every read:
        # frames are read through (load_frame), so every read goes to the file anyway.
        self.read, self.readline = self._file_read, self._file_readline
        self.metastack, self.stack = [], []
        self.append = self.stack.append
        read, dispatch = self.read, self.dispatch
        try:
            while True:
                opcode = read(1)
                if not opcode:
                    raise EOFError("the file ends inside a pickle")
                dispatch[opcode[0]](self)
        except pickle._Stop as stop:
            return stop.value

    def _check_length(self, length: int, what: str) -> None:
        remaining = self.file_size - self.file.tell()
        if length > remaining:
            raise CheckpointError(f"{what} of {length:,} bytes, but the file has {remaining:,} left (truncated)")

    def load_binunicode(self):
        (length,) = struct.unpack("<I", self.read(4))
        self._check_length(length, "a string")
        self.append(str(self.read(length), "utf-8", "surrogatepass"))

    def load_frame(self):
        # A frame only groups the opcodes that follow it for buffered reading; they are read
        # straight from the file instead, so the frame's stated length is never allocated.
        (length,) = struct.unpack("<Q", self.read(8))
        self._check_length(length, "a pickle frame")

    def find_class(self, module, name):
        raise UnsafePickleError(f"refusing to load global {module}.{name}: not a tensor storage, tensor rebuild or OrderedDict")

    def persistent_load(self, pid):
        raise UnsafePickleError("a persistent id outside the tensor pickle")

    def call(self, function, arguments: tuple):
        raise UnsafePickleError(f"refusing to call {_describe(function)}")

    def load_reduce(self):
        arguments = self.stack.pop()
        if type(arguments) is not tuple:
            raise UnsafePickleError(f"REDUCE with {_describe(arguments)} for arguments")
        self.stack[-1] = self.call(self.stack[-1], arguments)

    def load_build(self):
        state = self.stack.pop()
        target = self.stack[-1]
        if isinstance(target, _PickledOrderedDict) and type(state) is dict and set(state) <= {"_metadata"}:
            return  # torch's module metadata (per-module versions); nothing here reads it
        raise UnsafePickleError(f"BUILD on {_describe(target)} refused: a state dict sets no attribute but an OrderedDict's _metadata")

    def _set_items(self, pairs):
        target = self.stack[-1]
        if type(target) not in (dict, _PickledOrderedDict):
            raise UnsafePickleError(f"SETITEM on {_describe(target)} refused")
        for key, value in pairs:
            if not _is_key(key):
                raise UnsafePickleError(f"a dict key that is {_describe(key)}; a state dict's keys are strings")
            target[key] = value

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._set_items([(key, value)])

    def load_setitems(self):
        items = self.pop_mark()
        if len(items) % 2:
            raise CheckpointError(f"SETITEMS with {len(items)} items, not key-value pairs")
        self._set_items(zip(items[::2], items[1::2]))

    def _append(self, items):
        target = self.stack[-1]
        if type(target) is not list:
            raise UnsafePickleError(f"APPEND on {_describe(target)} refused")
        target.extend(items)

    def load_append(self):
        self._append([self.stack.pop()])

    def load_appends(self):
        self._append(self.pop_mark())


_OVERRIDES = {
    "BINUNICODE": _PlainUnpickler.load_binunicode, "FRAME": _PlainUnpickler.load_frame,
    "REDUCE": _PlainUnpickler.load_reduce, "BUILD": _PlainUnpickler.load_build,
    "SETITEM": _PlainUnpickler.load_setitem, "SETITEMS": _PlainUnpickler.load_setitems,
    "APPEND": _PlainUnpickler.load_append, "APPENDS": _PlainUnpickler.load_appends,
}
_PlainUnpickler.dispatch = _OpcodeTable(
    (getattr(pickle, name)[0], _OVERRIDES.get(name) or pickle._Unpickler.dispatch[getattr(pickle, name)[0]]) for name in _ALLOWED_OPCODES
)


def _is_count(value) -> bool:
    """A non-negative int that numpy can index with (bools and floats are not counts)."""
    return type(value) is int and 0 <= value <= sys.maxsize


class _StateDictUnpickler(_PlainUnpickler):
    """The object pickle: the storage types, the tensor rebuild and OrderedDict, as per-load stand-ins."""

    def __init__(self, file: io.BufferedReader, file_size: int):
        super().__init__(file, file_size)
        self.storages: dict[str, _Storage] = {}
        self.rebuild_tensor = _AllowedCallable("torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2)
        self.ordered_dict = _AllowedCallable("collections.OrderedDict", _new_ordered_dict)

    def find_class(self, module, name):
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self.rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            return self.ordered_dict
        return super().find_class(module, name)

    def call(self, function, arguments: tuple):
        if function is self.rebuild_tensor or function is self.ordered_dict:
            return function.function(*arguments)
        return super().call(function, arguments)

    def persistent_load(self, pid):
        if type(pid) is not tuple or len(pid) != 6 or pid[0] != "storage" or not isinstance(pid[1], _StorageType):
            raise UnsafePickleError(f"persistent id {_show(pid)} is not ('storage', storage type, key, location, size, view)")
        _, storage_type, key, location, size, view_metadata = pid
        if type(key) is not str or type(location) is not str:
            raise CheckpointError(f"storage key {_show(key)} and location {_show(location)} are not both strings")
        if view_metadata is not None:
            raise UnsafePickleError(f"storage {key!r} is a view of another storage; storage views are not supported")
        if not _is_count(size):
            raise CheckpointError(f"storage {key!r} has size {_show(size)}, not a non-negative integer")
        if size * storage_type.dtype.itemsize > self.file_size:
            raise CheckpointError(f"storage {key!r} claims {size:,} elements, more than the file's {self.file_size:,} bytes hold")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(storage_type.dtype, size)
        elif storage.dtype != storage_type.dtype or storage.size != size:
            raise CheckpointError(f"storage {key!r} is declared twice, as {storage.size:,} {storage.dtype} and as {size:,} {storage_type.dtype}")
        return storage


class _TensorView:
    """A checked tensor: `shape` and `stride` in elements, `offset` an element index into `storage`."""

    __slots__ = ("storage", "offset", "shape", "stride", "size")

    def __init__(self, name: str, tensor: _TensorArguments):
        arguments = tensor.arguments
        if len(arguments) != 6:
            raise CheckpointError(f"tensor {name!r} is rebuilt from {len(arguments)} arguments, not (storage, offset, shape, stride, requires_grad, hooks)")
        storage, offset, shape, stride, requires_grad, hooks = arguments
        if not isinstance(storage, _Storage):
            raise CheckpointError(f"tensor {name!r} has {_describe(storage)} for its storage")
        if not _is_count(offset):
            raise CheckpointError(f"tensor {name!r} has offset {_show(offset)}, not a non-negative integer")
        for label, sizes in (("shape", shape), ("stride", stride)):
            if type(sizes) is not tuple or not all(_is_count(size) for size in sizes):
                raise CheckpointError(f"tensor {name!r} has {label} {_show(sizes)}, not a tuple of non-negative integers")
        if len(shape) != len(stride) or len(shape) > MAX_DIMENSIONS:
            raise CheckpointError(f"tensor {name!r} has shape {_show(shape)} and stride {_show(stride)}: not one length, at most {MAX_DIMENSIONS}")
        if type(requires_grad) is not bool or not isinstance(hooks, _PickledOrderedDict) or hooks:
            raise CheckpointError(f"tensor {name!r} has requires_grad {_show(requires_grad)} and backward hooks {_describe(hooks)}; expected a bool and none")
        self.size = math.prod(shape)
        if self.size == 0:
            if offset > storage.size:
                raise CheckpointError(f"tensor {name!r} starts at element {offset:,} of a storage of {storage.size:,} elements")
            if math.prod(n for n in shape if n) * storage.dtype.itemsize > sys.maxsize:
                raise CheckpointError(f"tensor {name!r} has shape {shape}, too large for an array")
        else:
            last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
            if last >= storage.size:
                raise CheckpointError(f"tensor {name!r} reaches element {last:,} of a storage of {storage.size:,} elements")
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def covers_storage(self) -> bool:
        """Whether the tensor is its whole storage in C order (a size-1 dimension's stride addresses nothing)."""
        expected = 1
        for n, s in zip(reversed(self.shape), reversed(self.stride)):
            if n != 1 and s != expected:
                return False
            expected *= n
        return self.offset == 0 and self.size == self.storage.size

    def copy_from(self, storage_array: np.ndarray) -> np.ndarray:
        """The tensor's elements of `storage_array` (its storage's data), as a C-contiguous array of their own."""
        array = np.empty(self.shape, dtype=_native(storage_array.dtype))
        if self.size:
            strides = tuple(s * storage_array.itemsize if n > 1 else 0 for n, s in zip(self.shape, self.stride))
            view = np.lib.stride_tricks.as_strided(storage_array[self.offset :], shape=self.shape, strides=strides, writeable=False)
            np.copyto(array, view)
        return array


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=")


def _check_state_dict(result, storages: dict[str, _Storage]) -> dict[str, _TensorView]:
    """Name -> checked tensor; the bytes to copy out are bounded by the bytes the storages claim."""
    if not isinstance(result, dict):
        raise CheckpointError(f"expected a state dict (a dict of tensors), found {_describe(result)}")
    stored_bytes = sum(storage.size * storage.dtype.itemsize for storage in storages.values())
    tensors: dict[str, _TensorView] = {}
    copied_bytes = 0
    for name, value in result.items():
        if type(name) is not str:
            raise CheckpointError(f"state dict key {_show(name)} is not a string")
        if not isinstance(value, _TensorArguments):
            raise CheckpointError(f"state dict entry {name!r} is {_describe(value)}, not a tensor")
        tensor = tensors[name] = _TensorView(name, value)
        copied_bytes += tensor.size * tensor.storage.dtype.itemsize
        if copied_bytes > MAX_COPIES_PER_STORED_BYTE * stored_bytes:
            raise CheckpointError(
                f"tensor {name!r} brings the bytes to copy out to {copied_bytes:,}, more than {MAX_COPIES_PER_STORED_BYTE} times the {stored_bytes:,} bytes stored"
            )
    return tensors


def _check_storage_keys(keys, storages: dict[str, _Storage]) -> None:
    """The storage list names each storage a tensor uses, once, and nothing else."""
    if type(keys) is not list or not all(type(key) is str for key in keys):
        raise CheckpointError(f"the storage list is {_describe(keys)}, not a list of strings")
    repeated = [key for key, count in collections.Counter(keys).items() if count > 1]
    if repeated:
        raise CheckpointError(f"the storage list names {repeated[0]!r} more than once")
    unlisted = storages.keys() - set(keys)
    if unlisted:
        raise CheckpointError(f"storage {min(unlisted)!r} is used by a tensor but missing from the storage list")
    unused = [key for key in keys if key not in storages]
    if unused:
        raise CheckpointError(f"the storage list names {unused[0]!r}, which no tensor uses")


def _read_tensors(file: io.BufferedReader, file_size: int, keys: list[str], storages: dict[str, _Storage], tensors: dict[str, _TensorView]) -> "collections.OrderedDict[str, np.ndarray]":
    """Read the storages in the order of `keys`, each count checked against its persistent id and the bytes left."""
    users = collections.defaultdict(list)
    for name, tensor in tensors.items():
        users[id(tensor.storage)].append(name)
    arrays: dict[str, np.ndarray] = {}
    for key in keys:
        storage = storages[key]
        header = file.read(8)
        if len(header) < 8:
            raise CheckpointError(f"the file ends before storage {key!r} (truncated)")
        (count,) = struct.unpack("<q", header)
        if count != storage.size:
            raise CheckpointError(f"storage {key!r} holds {count:,} elements, but its persistent id says {storage.size:,}")
        nbytes = count * storage.dtype.itemsize
        remaining = file_size - file.tell()
        if nbytes > remaining:
            raise CheckpointError(f"storage {key!r} needs {nbytes:,} bytes, but the file has {remaining:,} left (truncated)")
        names = users[id(storage)]
        whole = len(names) == 1 and tensors[names[0]].covers_storage()
        # The one tensor that is the whole storage gets the storage's bytes directly: no second copy.
        data = np.empty(tensors[names[0]].shape if whole else count, dtype=storage.dtype.newbyteorder("<"))
        if file.readinto(data.reshape(-1).view(np.uint8)) != nbytes:
            raise CheckpointError(f"storage {key!r}: the file ended while it was read (truncated)")
        if whole:
            arrays[names[0]] = data if data.dtype.isnative else data.astype(_native(data.dtype))
        else:
            arrays.update((name, tensors[name].copy_from(data)) for name in names)
    extra = file_size - file.tell()
    if extra:
        raise CheckpointError(f"{extra:,} unexpected bytes after the last storage")
    return collections.OrderedDict((name, arrays[name]) for name in tensors)


def _read_header(file: io.BufferedReader, file_size: int) -> None:
    if file.read(4) == b"PK\x03\x04":
        raise CheckpointError("not a legacy PyTorch checkpoint (zip-format files are not supported)")
    file.seek(0)
    try:
        magic = _PlainUnpickler(file, file_size).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, struct.error) as error:
        raise CheckpointError(f"not a legacy PyTorch checkpoint (its first pickle does not read: {error})") from None
    if type(magic) is not int or magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointError("not a legacy PyTorch checkpoint (wrong magic number)")
    protocol_version = _PlainUnpickler(file, file_size).load()
    if type(protocol_version) is not int or protocol_version != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"legacy protocol version {_show(protocol_version)}, expected {LEGACY_PROTOCOL_VERSION}")
    system_info = _PlainUnpickler(file, file_size).load()
    if type(system_info) is not dict or system_info.get("little_endian", True) is not True:
        raise CheckpointError(f"system info {_show(system_info)}: only little-endian checkpoints are supported")


def _read(file: io.BufferedReader) -> "collections.OrderedDict[str, np.ndarray]":
    file_size = os.fstat(file.fileno()).st_size
    _read_header(file, file_size)
    unpickler = _StateDictUnpickler(file, file_size)
    tensors = _check_state_dict(unpickler.load(), unpickler.storages)
    keys = _PlainUnpickler(file, file_size).load()
    _check_storage_keys(keys, unpickler.storages)
    return _read_tensors(file, file_size, keys, unpickler.storages, tensors)


def load_legacy_state_dict(path: str | Path) -> "collections.OrderedDict[str, np.ndarray]":
    """Parameter name -> numpy array (C-contiguous, native byte order, owning its memory), from a legacy .pth file.

    Scalars come back as 0-d arrays. Raises CheckpointError (a ValueError and a
    pickle.UnpicklingError) for a file that is not a well-formed legacy checkpoint, and its
    subclass UnsafePickleError for one that asks for more than a state dict needs; either message
    starts with the file's path. OSError if the file cannot be read.
    """
    with open(path, "rb") as file:
        try:
            return _read(file)
        except CheckpointError as error:
            raise type(error)(f"{path}: {error}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, struct.error) as error:
            # The pure-Python unpickler's own complaints about a malformed stream: stack underflow, a bad memo index, ...
            raise CheckpointError(f"{path}: not a well-formed legacy checkpoint pickle ({type(error).__name__}: {error})") from None
