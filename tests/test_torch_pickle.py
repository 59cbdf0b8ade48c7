"""The restricted reader of PyTorch legacy checkpoints, on small checkpoints the tests write.

torch is not installed, so the files are written by a pure-Python pickler that emits the globals
torch would (`torch.FloatStorage`, `torch._utils._rebuild_tensor_v2`) by name, plus raw opcodes
for what no well-formed object pickles to.
"""
import collections
import io
import pickle
import re
import struct
import tracemalloc

import numpy as np
import pytest

from mlsp import torch_pickle
from mlsp.torch_pickle import CheckpointError, UnsafePickleError

SYSTEM_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


class Global:
    """A global written by name (GLOBAL opcode); the real ones live in torch, which is not here."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # the pickler only pickles callables as REDUCE functions
        raise AssertionError("never called")


REBUILD = Global("torch._utils", "_rebuild_tensor_v2")


class Storage:
    """A storage of `values`; `declared` (persistent id) and `count` (before the data) default to its length."""

    def __init__(self, key, values, type_name="FloatStorage", declared=None, count=None, data=None):
        self.key, self.type_name = key, type_name
        values = np.asarray(values, dtype=torch_pickle.STORAGE_DTYPES[type_name])
        self.declared = len(values) if declared is None else declared
        self.count = len(values) if count is None else count
        self.data = values.astype(values.dtype.newbyteorder("<")).tobytes() if data is None else data


class Tensor:
    def __init__(self, storage, offset, shape, stride, requires_grad=False, hooks=None, extra=()):
        self.storage, self.arguments = storage, (offset, shape, stride, requires_grad, collections.OrderedDict() if hooks is None else hooks) + extra

    def __reduce__(self):
        return REBUILD, (self.storage,) + self.arguments


class Call:
    """REDUCE: `function(*arguments)`, then BUILD with `state` if it is given."""

    def __init__(self, function, arguments, state=None):
        self.function, self.arguments, self.state = function, arguments, state

    def __reduce__(self):
        return (self.function, self.arguments) if self.state is None else (self.function, self.arguments, self.state)


class Built:
    """BUILD with `state` on `target`, whatever the target is."""

    def __init__(self, target, state):
        self.target, self.state = target, state


class Raw:
    """Opcodes written as they are."""

    def __init__(self, opcodes: bytes):
        self.opcodes = opcodes


class LegacyPickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def save_global_by_name(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    def save_built(self, obj):
        self.save(obj.target)
        self.save(obj.state)
        self.write(pickle.BUILD)

    def save_raw(self, obj):
        self.write(obj.opcodes)

    dispatch[Global] = save_global_by_name
    dispatch[Built] = save_built
    dispatch[Raw] = save_raw

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", Global("torch", obj.type_name), obj.key, "cpu", obj.declared, None)
        return None


def storages_in(value) -> list:
    """The storages of the tensors in a (possibly nested) value, first use first."""
    found = {}

    def visit(item):
        if isinstance(item, Tensor):
            found.setdefault(id(item.storage), item.storage)
        elif isinstance(item, dict):
            for child in item.values():
                visit(child)
        elif isinstance(item, (list, tuple)):
            for child in item:
                visit(child)

    visit(value)
    return list(found.values())


def write_checkpoint(path, state, storages=None, keys=None, header=(torch_pickle.LEGACY_MAGIC_NUMBER, 1001, SYSTEM_INFO), after=b"", protocol=2):
    """A legacy checkpoint of `state`; `storages` (their data, in this order) and `keys` default to what torch writes."""
    storages = storages_in(state) if storages is None else storages
    stream = io.BytesIO()
    for value in header:
        pickle.dump(value, stream, protocol=protocol)
    LegacyPickler(stream, protocol=protocol).dump(state)
    pickle.dump([storage.key for storage in storages] if keys is None else keys, stream, protocol=protocol)
    for storage in storages:
        stream.write(struct.pack("<q", storage.count) + storage.data)
    path.write_bytes(stream.getvalue() + after)
    return path


def refusal(path, error=CheckpointError) -> str:
    """Load `path`, expecting `error`; return its message after the file's path, which it must start with."""
    with pytest.raises(error) as caught:
        torch_pickle.load_legacy_state_dict(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    return message[len(f"{path}: ") :]


@pytest.fixture
def checkpoint(tmp_path):
    return lambda state, **options: write_checkpoint(tmp_path / "model.pth", state, **options)


def weights(key="w", size=100):
    return Storage(key, np.arange(size, dtype=np.float32))


# --- what a well-formed checkpoint gives -------------------------------------------------------


def test_well_formed_checkpoint_loads_exact_arrays(checkpoint):
    shared = Storage("0", np.arange(24, dtype=np.float32) * 0.5)
    counter = Storage("1", [7], "LongStorage")
    half = Storage("2", [1.5, -2.0, 65504.0], "HalfStorage")
    flags = Storage("3", [True, False], "BoolStorage")
    permuted, own = Storage("4", np.arange(6)), Storage("5", np.arange(6))
    state = collections.OrderedDict(
        [
            ("conv.weight", Tensor(shared, 0, (2, 3, 4), (12, 4, 1))),
            ("transposed", Tensor(shared, 0, (4, 3), (1, 4))),  # a non-contiguous view of the same storage
            ("tail", Tensor(shared, 20, (2, 2), (2, 1))),  # an offset view into it
            ("column", Tensor(shared, 1, (3, 1), (4, 12345))),  # a size-1 dimension's stride addresses nothing
            ("num_batches_tracked", Tensor(counter, 0, (), ())),
            ("half", Tensor(half, 0, (3,), (1,))),
            ("flags", Tensor(flags, 0, (2,), (1,), requires_grad=True)),
            ("empty", Tensor(shared, 24, (0, 5), (5, 1))),
            ("permuted", Tensor(permuted, 0, (3, 2), (1, 3))),  # all of its storage, not in C order (as conv weights ported from TF)
            ("own", Tensor(own, 0, (2, 1, 3), (3, 7, 1))),  # all of its storage in C order: read straight into its array
        ]
    )
    state._metadata = collections.OrderedDict([("", {"version": 1}), ("conv", {"version": 2})])  # torch sets this; BUILD on the OrderedDict
    loaded = torch_pickle.load_legacy_state_dict(checkpoint(state))

    base = np.arange(24, dtype=np.float32) * 0.5
    expected = {
        "conv.weight": base.reshape(2, 3, 4),
        "transposed": base[:12].reshape(3, 4).T,
        "tail": base[20:24].reshape(2, 2),
        "column": base[[1, 5, 9]].reshape(3, 1),
        "num_batches_tracked": np.array(7, dtype=np.int64),
        "half": np.array([1.5, -2.0, 65504.0], dtype=np.float16),
        "flags": np.array([True, False]),
        "empty": np.empty((0, 5), dtype=np.float32),
        "permuted": np.arange(6, dtype=np.float32).reshape(2, 3).T,
        "own": np.arange(6, dtype=np.float32).reshape(2, 1, 3),
    }
    assert list(loaded) == list(expected)
    for name, array in loaded.items():
        assert type(array) is np.ndarray and array.dtype == expected[name].dtype and array.shape == expected[name].shape, name
        np.testing.assert_array_equal(array, expected[name])
        assert array.flags.owndata and array.flags.c_contiguous and array.flags.writeable, name
    assert type(loaded) is collections.OrderedDict and not hasattr(loaded, "_metadata")


def test_plain_dict_protocol_4_and_python2_checkpoints_load(checkpoint, tmp_path):
    storage = Storage("0", [1.0, 2.0])
    assert torch_pickle.load_legacy_state_dict(checkpoint({"b": Tensor(storage, 0, (2,), (1,))}))["b"].tolist() == [1.0, 2.0]
    # torch.save(..., pickle_protocol=4): frames, MEMOIZE, short strings
    framed = write_checkpoint(tmp_path / "framed.pth", {"b": Tensor(storage, 0, (2,), (1,))}, protocol=4)
    assert pickle.FRAME in framed.read_bytes()
    assert torch_pickle.load_legacy_state_dict(framed)["b"].tolist() == [1.0, 2.0]
    # Python 2: OrderedDict got its items as a list of pairs; str was a byte string (SHORT_BINSTRING)
    key = Raw(pickle.SHORT_BINSTRING + bytes([1]) + b"a")
    python2 = Call(Global("collections", "OrderedDict"), ([[key, Tensor(storage, 1, (1,), (1,))]],))
    path = write_checkpoint(tmp_path / "python2.pth", python2, storages=[storage])
    assert [(name, array.tolist()) for name, array in torch_pickle.load_legacy_state_dict(path).items()] == [("a", [2.0])]


def test_largest_in_bounds_view_loads(checkpoint):
    """The bound is exact: the last element of the storage is reachable, one past it is not."""
    loaded = torch_pickle.load_legacy_state_dict(checkpoint({"ends": Tensor(weights(), 0, (2,), (99,))}))
    assert loaded["ends"].tolist() == [0.0, 99.0]


# --- tensors against their storages ------------------------------------------------------------


@pytest.mark.parametrize(
    "offset, shape, stride, reason",
    [
        (0, (101,), (1,), "reaches element 100 of a storage of 100 elements"),
        (1, (10, 10), (10, 1), "reaches element 100 of a storage of 100 elements"),
        (0, (2,), (100,), "reaches element 100 of a storage of 100 elements"),
        (0, (10, 10), (1, 11), "reaches element 108 of a storage of 100 elements"),
        (100, (), (), "reaches element 100 of a storage of 100 elements"),
        (2**40, (1,), (1,), "reaches element 1,099,511,627,776 of a storage of 100 elements"),
        (0, (1_000_000, 1_000_000), (1, 1_000_000), "reaches element 999,999,999,999 of a storage of 100 elements"),
        (101, (0,), (1,), "starts at element 101 of a storage of 100 elements"),
    ],
)
def test_tensor_beyond_its_storage_is_refused(checkpoint, offset, shape, stride, reason):
    message = refusal(checkpoint({"features.0.weight": Tensor(weights(), offset, shape, stride)}))
    assert message == f"tensor 'features.0.weight' {reason}"


@pytest.mark.parametrize(
    "offset, shape, stride, words",
    [
        (-1, (1,), (1,), "offset -1, not a non-negative integer"),
        (True, (1,), (1,), "offset True, not a non-negative integer"),
        (0.0, (1,), (1,), "offset 0.0, not a non-negative integer"),
        (0, (-1,), (1,), "shape (-1,), not a tuple of non-negative integers"),
        (0, (2.0,), (1,), "shape (2.0,), not a tuple of non-negative integers"),
        (0, [2], (1,), "shape [2], not a tuple of non-negative integers"),
        (0, (2,), (-1,), "stride (-1,), not a tuple of non-negative integers"),
        (0, (2,), (True,), "stride (True,), not a tuple of non-negative integers"),
        (0, (2, 2), (1,), "not one length"),
        (0, (1,) * 33, (1,) * 33, "not one length, at most 32"),
        (0, (2**64,), (1,), "not a tuple of non-negative integers"),
    ],
)
def test_tensor_sizes_that_are_not_counts_are_refused(checkpoint, offset, shape, stride, words):
    message = refusal(checkpoint({"w": Tensor(weights(), offset, shape, stride)}))
    assert message.startswith("tensor 'w' has") and words in message


@pytest.mark.parametrize(
    "tensor, words",
    [
        (lambda s: Tensor(s, 0, (1,), (1,), requires_grad=1), "requires_grad 1"),
        (lambda s: Tensor(s, 0, (1,), (1,), hooks=collections.OrderedDict(hook=1)), "backward hooks"),
        (lambda s: Tensor(s, 0, (1,), (1,), hooks={}), "backward hooks"),
        (lambda s: Tensor(s, 0, (1,), (1,), extra=(None,)), "rebuilt from 7 arguments"),
        (lambda s: Call(REBUILD, ("not a storage", 0, (1,), (1,), False, collections.OrderedDict())), "has a str for its storage"),
    ],
)
def test_malformed_rebuild_arguments_are_refused(checkpoint, tensor, words):
    storage = weights()
    assert words in refusal(checkpoint({"w": tensor(storage)}, storages=[storage]))


def test_an_empty_tensor_too_large_for_an_array_is_refused(checkpoint):
    assert "too large for an array" in refusal(checkpoint({"w": Tensor(weights(), 0, (0, 2**62), (1, 1))}))


# --- sizes the file claims: refused before anything of that size is allocated ----------------


OVERSIZED = Storage("0", [], declared=2**31, count=2**31)  # 8 GiB of floats claimed, none there


def many_views(count):
    storage = weights(size=1000)
    return {f"v{index}": Tensor(storage, 0, (1000,), (1,)) for index in range(count)}


@pytest.mark.parametrize(
    "state, storages, words",
    [
        # a storage whose persistent id and count both claim 2**31 floats (8 GiB), with no data
        ({"w": Tensor(OVERSIZED, 0, (1,), (1,))}, [OVERSIZED], "claims 2,147,483,648 elements, more than the file's"),
        # one stored float broadcast to a million million elements by zero strides
        ({"w": Tensor(Storage("0", [1.0]), 0, (2**20, 2**20), (0, 0))}, None, "more than 4 times the 4 bytes stored"),
        # one storage copied out under many names
        (many_views(5), None, "tensor 'v4' brings the bytes to copy out to 20,000, more than 4 times the 4,000 bytes stored"),
        # a 4 GiB string, or a 1 TiB pickle frame, in a few bytes: a length and no data
        ({"w": Raw(pickle.BINUNICODE + struct.pack("<I", 2**32 - 1))}, [], "a string of 4,294,967,295 bytes, but the file has"),
        ({"w": Raw(pickle.FRAME + struct.pack("<Q", 2**40))}, [], "a pickle frame of 1,099,511,627,776 bytes, but the file has"),
        # bytes, which the C unpickler allocates at their claimed size before reading (BINBYTES8)
        ({"w": Raw(pickle.BINBYTES8 + struct.pack("<Q", 2**40))}, [], "pickle opcode BINBYTES8 is not one a state dict uses"),
        ({"w": Raw(pickle.BINBYTES + struct.pack("<I", 2**32 - 1))}, [], "pickle opcode BINBYTES is not one a state dict uses"),
    ],
    ids=["storage", "zero-strides", "many-views", "unicode", "frame", "bytes8", "bytes"],
)
def test_claimed_sizes_are_refused_without_allocating(checkpoint, state, storages, words):
    path = checkpoint(state, storages=storages)
    tracemalloc.start()
    try:
        message = refusal(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert words in message
    assert peak < 1_000_000, f"peak {peak:,} bytes while refusing a {path.stat().st_size:,}-byte file"


def test_four_copies_of_a_storage_are_allowed(checkpoint):
    """Tied weights: several names on one storage load, up to the bound."""
    loaded = torch_pickle.load_legacy_state_dict(checkpoint(many_views(4)))
    assert len(loaded) == 4 and all(array.tolist() == list(range(1000)) for array in loaded.values())


@pytest.mark.parametrize(
    "declared, count, data_elements, words",
    [
        (4, 3, 3, "storage '0' holds 3 elements, but its persistent id says 4"),
        (3, 4, 4, "storage '0' holds 4 elements, but its persistent id says 3"),
        (3, -1, 0, "storage '0' holds -1 elements, but its persistent id says 3"),
        (-1, -1, 0, "storage '0' has size -1, not a non-negative integer"),
        (True, 1, 1, "storage '0' has size True, not a non-negative integer"),
        (1.0, 1, 1, "storage '0' has size 1.0, not a non-negative integer"),
    ],
)
def test_storage_counts_must_agree(checkpoint, declared, count, data_elements, words):
    storage = Storage("0", [1.0] * data_elements, declared=declared, count=count)
    assert refusal(checkpoint({"w": Tensor(storage, 0, (), ())})) == words


def test_a_storage_declared_twice_with_different_sizes_is_refused(checkpoint):
    first, second = Storage("0", [1.0, 2.0]), Storage("0", [1.0, 2.0], declared=1)
    message = refusal(checkpoint({"a": Tensor(first, 0, (), ()), "b": Tensor(second, 0, (), ())}, storages=[first]))
    assert message.startswith("storage '0' is declared twice")


def test_truncated_storage_bytes_are_refused(checkpoint):
    storage = Storage("0", [1.0, 2.0, 3.0, 4.0])
    storage.data = storage.data[:-1]
    assert refusal(checkpoint({"w": Tensor(storage, 0, (4,), (1,))})) == "storage '0' needs 16 bytes, but the file has 15 left (truncated)"


def test_a_truncated_checkpoint_is_a_named_refusal_wherever_it_is_cut(tmp_path):
    whole = write_checkpoint(tmp_path / "whole.pth", {"a": Tensor(Storage("0", [1.0, 2.0]), 0, (2,), (1,)), "b": Tensor(Storage("1", [3], "LongStorage"), 0, (), ())})
    data = whole.read_bytes()
    assert list(torch_pickle.load_legacy_state_dict(whole)) == ["a", "b"]
    cut = tmp_path / "cut.pth"
    # every ninth cut through the pickles, every cut through the storage list and the storages
    for length in sorted(set(range(0, len(data), 9)) | set(range(len(data) - 64, len(data)))):
        cut.write_bytes(data[:length])
        refusal(cut)


def test_a_corrupted_checkpoint_loads_or_is_a_named_refusal(tmp_path):
    """Seeded random corruption: each file loads to arrays or raises CheckpointError, nothing else."""
    shared = Storage("0", np.arange(24, dtype=np.float32))
    state = {"a": Tensor(shared, 0, (2, 3, 4), (12, 4, 1)), "t": Tensor(shared, 0, (4, 3), (1, 4)), "n": Tensor(Storage("1", [7], "LongStorage"), 0, (), ())}
    whole = write_checkpoint(tmp_path / "whole.pth", state).read_bytes()
    generator = np.random.default_rng(0)
    path = tmp_path / "corrupt.pth"
    refused = 0
    for _ in range(120):
        data = bytearray(whole)
        for position in generator.integers(0, len(data), size=3):
            data[position] = generator.integers(0, 256)
        path.write_bytes(bytes(data))
        try:
            loaded = torch_pickle.load_legacy_state_dict(path)
        except CheckpointError as error:
            assert str(error).startswith(f"{path}: ")
            refused += 1
        else:
            assert all(type(array) is np.ndarray and array.flags.owndata for array in loaded.values())
    assert refused > 60  # most corruptions hit the pickles or the counts


def test_bytes_after_the_last_storage_are_refused(checkpoint):
    assert refusal(checkpoint({"w": Tensor(Storage("0", [1.0]), 0, (), ())}, after=b"\0")) == "1 unexpected bytes after the last storage"


# --- the storage key list ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "keys, words",
    [
        (["0"], "storage '1' is used by a tensor but missing from the storage list"),
        (["0", "1", "2"], "the storage list names '2', which no tensor uses"),
        (["0", "1", "0"], "the storage list names '0' more than once"),
        (["0", 1], "the storage list is a list, not a list of strings"),
        ({"0": 0, "1": 1}, "the storage list is a dict, not a list of strings"),
    ],
)
def test_storage_keys_must_match_the_storages_used(checkpoint, keys, words):
    state = {"a": Tensor(Storage("0", [1.0]), 0, (), ()), "b": Tensor(Storage("1", [2.0]), 0, (), ())}
    assert refusal(checkpoint(state, keys=keys)) == words


# --- what the object pickle may contain ----------------------------------------------------------


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    class Boom:
        def __reduce__(self):
            return (eval, ("__import__('pathlib').Path(__import__('os').environ['MLSP_PWNED']).write_text('pwned')",))

    marker = tmp_path / "executed"
    monkeypatch.setenv("MLSP_PWNED", str(marker))
    path = write_checkpoint(tmp_path / "evil.pth", {"weight": Boom()}, storages=[])
    assert re.match(r"refusing to load global (__builtin__|builtins)\.eval", refusal(path, UnsafePickleError))
    assert not marker.exists()


def process_state():
    """What a BUILD on an allowed global could change for the rest of the process."""
    function = torch_pickle._rebuild_tensor_v2
    return (
        dict(vars(torch_pickle)),
        function.__code__, function.__defaults__, function.__kwdefaults__, dict(function.__dict__),
        dict(vars(collections.OrderedDict)), collections.OrderedDict,
        dict(torch_pickle.STORAGE_DTYPES), dict(vars(torch_pickle._StorageType)),
    )


ATTRIBUTES = {"dtype": "object", "name": "x", "__defaults__": (1, 2), "move_to_end": None}
BUILD_TARGETS = {
    "rebuild-function": REBUILD,
    "storage-type": Global("torch", "FloatStorage"),
    "ordered-dict-class": Global("collections", "OrderedDict"),
    "tensor": Tensor(Storage("0", [1.0]), 0, (1,), (1,)),
    "storage": Storage("0", [1.0]),
    "ordered-dict-other-attribute": Call(Global("collections", "OrderedDict"), ()),
    "dict": {},
}


@pytest.mark.parametrize("target", BUILD_TARGETS.values(), ids=BUILD_TARGETS.keys())
@pytest.mark.parametrize("state", [ATTRIBUTES, (None, ATTRIBUTES), None], ids=["dict-state", "slot-state", "no-state"])
def test_build_on_anything_but_a_state_dict_is_refused_and_changes_nothing(checkpoint, target, state):
    before = process_state()
    path = checkpoint({"w": Built(target, state)}, storages=[])
    assert refusal(path, UnsafePickleError).startswith("BUILD on ")
    assert process_state() == before


def test_build_on_a_state_dict_sets_only_metadata(checkpoint):
    state = Call(Global("collections", "OrderedDict"), (), {"_metadata": {}, "__class__": None})
    assert refusal(checkpoint(state, storages=[]), UnsafePickleError).startswith("BUILD on an OrderedDict refused")


@pytest.mark.parametrize(
    "opcodes, words",
    [
        (Raw(pickle.GLOBAL + b"torch\nFloatStorage\n" + pickle.EMPTY_TUPLE + pickle.REDUCE), "refusing to call torch.FloatStorage"),
        (Raw(pickle.GLOBAL + b"torch._utils\n_rebuild_tensor_v2\n" + pickle.NONE + pickle.REDUCE), "REDUCE with a NoneType for arguments"),
        (Raw(pickle.GLOBAL + b"collections\nOrderedDict\n" + pickle.EMPTY_TUPLE + pickle.NEWOBJ), "pickle opcode NEWOBJ is not one a state dict uses"),
        (Raw(pickle.MARK + pickle.INST + b"collections\nOrderedDict\n"), "pickle opcode INST is not one a state dict uses"),
        (Raw(pickle.EXT1 + b"\x01"), "pickle opcode EXT1 is not one a state dict uses"),
        (Raw(pickle.GLOBAL + b"torch\nFloatStorage\n" + pickle.NONE + pickle.NONE + pickle.SETITEM), "SETITEM on torch.FloatStorage refused"),
        (Raw(pickle.GLOBAL + b"collections\nOrderedDict\n" + pickle.NONE + pickle.APPEND), "APPEND on collections.OrderedDict refused"),
        (Raw(pickle.GLOBAL + b"collections\nOrderedDict\n" + pickle.NONE + pickle.TUPLE1 + pickle.REDUCE), "OrderedDict called with arguments other than"),
        (Raw(pickle.GLOBAL + b"torch\nTensor\n"), "refusing to load global torch.Tensor"),
        (Raw(pickle.BINUNICODE + struct.pack("<I", 4) + b"1234" + pickle.BINPERSID), "persistent id '1234' is not ('storage'"),
        # hashing a tuple nested some 150,000 deep overflows the C stack: keys are strings or ints
        (Raw(pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.TUPLE1 + pickle.NONE + pickle.SETITEM), "a dict key that is a tuple"),
    ],
    ids=["call-storage-type", "reduce-without-tuple", "newobj", "inst", "ext1", "setitem-global", "append-global", "ordered-dict-arguments", "other-global", "persistent-id", "tuple-key"],
)
def test_opcodes_a_state_dict_never_uses_are_refused(checkpoint, opcodes, words):
    assert words in refusal(checkpoint({"w": opcodes}, storages=[]), UnsafePickleError)


@pytest.mark.parametrize(
    "opcodes, words",
    [
        (pickle.APPENDS, "not a well-formed legacy checkpoint pickle (IndexError"),  # no MARK to pop
        (pickle.BINGET + b"\xff", "not a well-formed legacy checkpoint pickle (UnpicklingError: Memo value not found at index 255)"),
        (pickle.EMPTY_DICT + pickle.MARK + pickle.NONE + pickle.SETITEMS, "SETITEMS with 1 items, not key-value pairs"),
        (b"\xff", "pickle opcode 0xff is not one a state dict uses"),
        (pickle.STOP, "expected a state dict (a dict of tensors), found a str"),
    ],
    ids=["stack-underflow", "memo", "odd-setitems", "unknown-opcode", "early-stop"],
)
def test_malformed_pickles_are_named_refusals(checkpoint, opcodes, words):
    assert refusal(checkpoint({"w": Raw(opcodes)}, storages=[])).startswith(words)


def test_a_deeply_nested_value_is_named_without_recursing_into_it(checkpoint):
    """repr() of a value nested deeper than the recursion limit raises RecursionError."""
    path = checkpoint({"w": Raw(pickle.EMPTY_LIST + pickle.MARK + pickle.EMPTY_TUPLE + pickle.TUPLE1 * 5_000 + pickle.APPENDS)}, storages=[])
    assert refusal(path) == "state dict entry 'w' is a list, not a tensor"


@pytest.mark.parametrize(
    "state, words",
    [
        ([Tensor(weights(), 0, (1,), (1,))], "expected a state dict (a dict of tensors), found a list"),
        (Tensor(weights(), 0, (1,), (1,)), "expected a state dict (a dict of tensors), found a tensor"),
        (Call(Global("collections", "OrderedDict"), ()), None),
        ({"step": 1}, "state dict entry 'step' is an int, not a tensor"),
        ({"name": "text"}, "state dict entry 'name' is a str, not a tensor"),
        ({"model": {"w": Tensor(weights(), 0, (1,), (1,))}}, "state dict entry 'model' is a dict, not a tensor"),
        ({"hooks": collections.OrderedDict()}, "state dict entry 'hooks' is an OrderedDict, not a tensor"),
        ({1: Tensor(weights(), 0, (1,), (1,))}, "state dict key 1 is not a string"),
    ],
)
def test_a_state_dict_holds_only_named_tensors(checkpoint, state, words):
    if words is None:  # an empty OrderedDict is a (useless but) well-formed state dict
        assert torch_pickle.load_legacy_state_dict(checkpoint(state, storages=[])) == {}
        return
    assert refusal(checkpoint(state)) == words


# --- the header --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "not a legacy PyTorch checkpoint"),
        (b"PK\x03\x04" + bytes(60), "not a legacy PyTorch checkpoint (zip-format files are not supported)"),
        (b"\x80\x02K\x01.", "not a legacy PyTorch checkpoint (wrong magic number)"),
        (b"\x80\x02cos\nsystem\n.", "not a legacy PyTorch checkpoint"),
        (bytes(range(256)), "not a legacy PyTorch checkpoint"),
    ],
)
def test_files_that_are_not_legacy_checkpoints_are_refused(tmp_path, content, words):
    path = tmp_path / "other.pth"
    path.write_bytes(content)
    assert refusal(path).startswith(words)


@pytest.mark.parametrize(
    "header, words",
    [
        ((torch_pickle.LEGACY_MAGIC_NUMBER, 1000, SYSTEM_INFO), "legacy protocol version 1000, expected 1001"),
        ((torch_pickle.LEGACY_MAGIC_NUMBER, 1001, {**SYSTEM_INFO, "little_endian": False}), "only little-endian checkpoints are supported"),
        ((torch_pickle.LEGACY_MAGIC_NUMBER, 1001, [1]), "only little-endian checkpoints are supported"),
    ],
)
def test_header_fields_are_checked(checkpoint, header, words):
    assert words in refusal(checkpoint({"w": Tensor(weights(), 0, (1,), (1,))}, header=header))


def test_a_global_in_the_header_is_refused(checkpoint):
    header = (torch_pickle.LEGACY_MAGIC_NUMBER, 1001, collections.OrderedDict(SYSTEM_INFO))
    assert "refusing to load global collections.OrderedDict" in refusal(checkpoint({}, header=header), UnsafePickleError)


def test_errors_are_value_errors_and_unpickling_errors():
    assert issubclass(UnsafePickleError, CheckpointError)
    assert issubclass(CheckpointError, ValueError) and issubclass(CheckpointError, pickle.UnpicklingError)
