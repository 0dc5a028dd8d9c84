"""File readers: every hostile file gives one DataError naming it, and random or mutated files either
load to arrays of the promised dtype, shape and range or raise DataError, nothing else."""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from augdistill.data import load_dataset
from augdistill.data import readers
from augdistill.data.readers import read_cifar_binary, read_cifar_python, read_digits_csv, read_idx
from augdistill.errors import DataError

from .files import IDX_FILES, cifar_batch, cifar_records, fake_cifar, fake_mnist, idx_bytes, write

FUZZ = settings(max_examples=75, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # each example rewrites its own file

Spoil = Callable[[Path], None]


def _bytes(content: bytes) -> Spoil:
    """Write ``content`` as is, even under a ``.gz`` name."""
    def spoil(path: Path) -> None:
        path.write_bytes(content)
    return spoil


def _file(content: bytes) -> Spoil:
    """Write ``content`` the way the layout stores it (gzipped under a ``.gz`` name)."""
    def spoil(path: Path) -> None:
        write(path, content)
    return spoil


def _pickled(obj: object) -> Spoil:
    return _bytes(pickle.dumps(obj, protocol=4))


def _with_label(n: int, index: int, label: int) -> np.ndarray:
    return np.where(np.arange(n) == index, label, np.arange(n) % 10)


def _records_with_label(index: int, label: int) -> bytes:
    records = bytearray(cifar_records(10))
    records[index * 3073] = label
    return bytes(records)


_IMAGES = idx_bytes(np.zeros((200, 28, 28)))
_GZ = gzip.compress(_IMAGES, mtime=0)
_U8 = np.zeros((10, 3072), dtype=np.uint8)
_LABELS = [i % 10 for i in range(10)]


@dataclass(frozen=True)
class Hostile:
    """One bad file: ``spoil`` replaces ``file`` of a valid ``layout`` (``mnist``, ``bin`` or ``py``); the error
    must name the file and contain every one of ``message``."""

    layout: str
    file: str
    spoil: Spoil
    message: tuple[str, ...]


HOSTILE = {
    "idx-corrupt-deflate": Hostile("mnist", "train-images", _bytes(_GZ[:12] + b"\xff" * 8 + _GZ[20:]),
                                   ("corrupt or truncated gzip",)),
    "idx-truncated-gzip": Hostile("mnist", "train-images", _bytes(_GZ[: len(_GZ) // 2]),
                                  ("corrupt or truncated gzip", "end-of-stream")),
    "idx-gz-name-raw-content": Hostile("mnist", "train-images", _bytes(_IMAGES), ("Not a gzipped file",)),
    "idx-bad-magic": Hostile("mnist", "train-images", _file(b"\x01\x00" + _IMAGES[2:]),
                             ("magic number starts with 0x0100", "expected 0x0000")),
    "idx-float-type": Hostile("mnist", "train-images", _file(b"\0\0\x0d" + _IMAGES[3:]),
                              ("type byte is 0x0d (float)", "expected 0x08 (unsigned byte)")),
    "idx-images-ndim-1": Hostile("mnist", "train-images", _file(idx_bytes(np.zeros(200))),
                                 ("'ndim' is 1", "expected 3 (images, rows, columns)")),
    "idx-labels-ndim-3": Hostile("mnist", "train-labels", _file(idx_bytes(np.zeros((200, 1, 1)))),
                                 ("'ndim' is 3", "expected 1 (labels)")),
    "idx-zero-images": Hostile("mnist", "train-images", _file(bytes([0, 0, 8, 3, 0, 0, 0, 0]) + _IMAGES[8:16]),
                               ("sizes are (0, 28, 28)", "images: 0", "expected every size >= 1")),
    "idx-absurd-sizes": Hostile("mnist", "test-images", _file(bytes([0, 0, 8, 3]) + b"\xff" * 12),
                                ("(4294967295, 4294967295, 4294967295)", "expected at most 1073741824")),
    "idx-truncated-data": Hostile("mnist", "test-images", _file(idx_bytes(np.zeros((20, 28, 28)))[:-5]),
                                  ("truncated", "need 15680 bytes", "holds 15675")),
    "idx-trailing-data": Hostile("mnist", "test-labels", _file(idx_bytes(np.arange(20) % 10) + b"\0"),
                                 ("continues past the 20 bytes",)),
    "idx-short-header": Hostile("mnist", "train-labels", _file(bytes([0, 0, 8, 1, 0, 0])),
                                ("6 bytes", "header of 8 bytes")),
    "idx-150-labels-200-images": Hostile("mnist", "train-labels", _file(idx_bytes(np.arange(150) % 10)),
                                         ("holds 150 labels", "holds 200 images", "one label per image")),
    "idx-label-200": Hostile("mnist", "train-labels", _file(idx_bytes(_with_label(200, 7, 200))),
                             ("labels[7] is 200", "[0, 10)")),
    "idx-test-image-size": Hostile("mnist", "test-images", _file(idx_bytes(np.zeros((20, 27, 27)))),
                                   ("27x27", "28x28", "expected one image size")),
    "idx-directory": Hostile("mnist", "train-images", lambda path: path.mkdir(), ("is a directory",)),
    "idx-fifo": Hostile("mnist", "test-labels", lambda path: os.mkfifo(path), ("is not a regular file",)),
    "idx-unreadable": Hostile("mnist", "train-labels", lambda path: path.symlink_to("/proc/self/mem"),
                              ("cannot be read (Input/output error)", "expected a readable IDX file")),
    "bin-truncated": Hostile("bin", "data_batch_1.bin", _bytes(cifar_records(10)[:-1]),
                             ("30729 bytes", "positive multiple of 3073")),
    "bin-empty": Hostile("bin", "test_batch.bin", _bytes(b""), ("0 bytes", "positive multiple of 3073")),
    "bin-label-10": Hostile("bin", "data_batch_2.bin", _bytes(_records_with_label(4, 10)),
                            ("labels[4] is 10", "[0, 10)")),
    "bin-directory": Hostile("bin", "data_batch_3.bin", lambda path: path.mkdir(), ("is a directory",)),
    "bin-missing": Hostile("bin", "data_batch_4.bin", lambda path: None, ("is missing",)),
    "py-not-a-dict": Hostile("py", "data_batch_1", _pickled([_U8, _LABELS]), ("holds a list", "expected a dict")),
    "py-data-str": Hostile("py", "data_batch_2", _pickled({b"data": "pixels", b"labels": _LABELS}),
                           ("b'data' is a str", "expected a numpy array or a list")),
    "py-labels-missing": Hostile("py", "test_batch", _pickled({b"data": _U8}),
                                 ("b'labels' is missing", "keys: [b'data']")),
    "py-rows-not-3072": Hostile("py", "data_batch_3", _pickled({b"data": _U8[:, 1:], b"labels": _LABELS}),
                                ("shape (10, 3071)", "expected (N, 3072)")),
    "py-float-data": Hostile("py", "data_batch_4", _pickled({b"data": _U8 / 255, b"labels": _LABELS}),
                             ("dtype float64", "expected integers")),
    "py-label-10": Hostile("py", "data_batch_5", _pickled({b"data": _U8, b"labels": _LABELS[:9] + [10]}),
                           ("b'labels'[9] is 10", "[0, 10)")),
    "py-150-labels-200-images": Hostile(
        "py", "test_batch", _pickled({b"data": np.zeros((200, 3072), np.uint8), b"labels": [0] * 150}),
        ("150 labels for 200 images",)),
    "py-pixel-300": Hostile("py", "data_batch_1", _pickled({b"data": [[i] * 3072 for i in range(9)] + [[0, 300] * 1536],
                                                           b"labels": _LABELS}),
                            ("b'data'[9, 1] is 300", "[0, 256)")),
    "py-bool-label": Hostile("py", "data_batch_2", _pickled({b"data": _U8, b"labels": [True] + _LABELS[1:]}),
                             ("b'labels'[0] is a bool", "expected an int")),
    "py-no-images": Hostile("py", "data_batch_3", _pickled({b"data": _U8[:0], b"labels": []}),
                            ("holds no images",)),
    "py-truncated": Hostile("py", "data_batch_4", _bytes(pickle.dumps(cifar_batch(10), protocol=4)[:-100]),
                            ("not a CIFAR-10 python batch",)),
    "py-protocol-5-buffer": Hostile("py", "test_batch", _bytes(pickle.dumps(cifar_batch(10), protocol=5)),
                                    ("refusing to load numpy._core.numeric._frombuffer",)),
}


def _spoiled(root: Path, case: Hostile) -> Path:
    """A valid dataset under ``root`` with ``case.file`` replaced by ``case.spoil``; returns that file."""
    if case.layout == "mnist":
        path = fake_mnist(root, n_train=200) / IDX_FILES[case.file]
    else:
        path = fake_cifar(root, case.layout) / case.file
    path.unlink()
    case.spoil(path)
    return path


_NEEDS_PROC = pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc/self/mem")


@pytest.mark.parametrize("case", [pytest.param(case, id=name, marks=[_NEEDS_PROC] if name == "idx-unreadable" else [])
                                  for name, case in HOSTILE.items()])
def test_hostile_file_gives_one_data_error_naming_it(tmp_path, case):
    path = _spoiled(tmp_path, case)
    with pytest.raises(DataError) as info:
        load_dataset("mnist" if case.layout == "mnist" else "cifar10", tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    for fragment in case.message:
        assert fragment in message


@pytest.mark.parametrize("layout", ["mnist", "bin", "py"])
def test_unspoiled_layouts_load(tmp_path, layout):
    """The hostile cases fail because of their spoiled file, not because the layout itself is off."""
    if layout == "mnist":
        fake_mnist(tmp_path, n_train=200)
    else:
        fake_cifar(tmp_path, layout)
    ds = load_dataset("mnist" if layout == "mnist" else "cifar10", tmp_path)
    assert len(ds.train) + len(ds.val) == (200 if layout == "mnist" else 50)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["top", "data", "labels"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = _Evil(marker)
    batch = {"top": evil, "data": {b"data": evil, b"labels": _LABELS}, "labels": {b"data": _U8, b"labels": evil}}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch[where]))
    with pytest.raises(DataError, match=r"refusing to load (posix|os)\.system"):
        read_cifar_python(path)
    assert not marker.exists()


def _peak_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(DataError):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_header_sizes_are_refused_or_read_without_allocating_them(tmp_path):
    absurd = write(tmp_path / "absurd-idx3-ubyte.gz", bytes([0, 0, 8, 3]) + b"\xff" * 12)
    assert _peak_bytes(lambda: read_idx(absurd, ("images", "rows", "columns"))) < 1 << 20
    # 10^9 bytes is under the cap, so the reader must find out the hard way that only 10 are there
    big = write(tmp_path / "big-idx3-ubyte", bytes([0, 0, 8, 3]) + (1000).to_bytes(4, "big") * 3 + b"\0" * 10)
    assert _peak_bytes(lambda: read_idx(big, ("images", "rows", "columns"))) < 4 << 20


def test_pickles_may_not_describe_more_values_than_their_file_holds(tmp_path):
    class HugeArray:
        def __reduce__(self) -> tuple:  # an empty 300 MB array: numpy allocates it lazily, the reader must not fill it
            return np.ndarray, ((100_000, 3072), np.dtype(np.uint8))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": HugeArray(), b"labels": [0]}, protocol=4))
    with pytest.raises(DataError, match="b'data' holds 307200000 values in a file of"):
        read_cifar_python(path)
    row = [0] * 3072  # the memo stores one row; 5000 references to it cost 2 bytes each
    path.write_bytes(pickle.dumps({b"data": [row] * 5000, b"labels": [0] * 5000}, protocol=4))
    with pytest.raises(DataError, match="b'data' holds 15360000 values in a file of"):
        read_cifar_python(path)
    long_row = [0] * 100_000
    path.write_bytes(pickle.dumps({b"data": [long_row] * 3, b"labels": [0] * 3}, protocol=4))
    with pytest.raises(DataError, match=r"b'data'\[0\] has 100000 values; expected 3072"):
        read_cifar_python(path)


def test_pickle_memo_indices_do_not_allocate(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x03}r" + (1 << 24).to_bytes(4, "little") + b".")  # {} stored in memo slot 2**24
    assert _peak_bytes(lambda: read_cifar_python(path)) < 4 << 20  # the C unpickler allocates 256 MB here


def test_files_over_the_size_cap_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_FILE_BYTES", 5000)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(cifar_records(2))
    with pytest.raises(DataError, match="holds more than 5000 bytes"):
        read_cifar_binary(path)


# ---- property-based: every input loads to what the format promises, or raises DataError ----------------------

def _idx_like(ndim: int) -> st.SearchStrategy[bytes]:
    """Bytes near a valid ``ndim``-dimensional IDX file: each header field right or wrong, the body about the right
    length."""
    def build(magic: bytes, kind: int, dims: list[int], extra: int, seed: int) -> bytes:
        size = math.prod(dims) if math.prod(dims) <= 256 else 16  # never write what an absurd header asks for
        body = np.random.default_rng(seed).integers(0, 256, max(0, size + extra), dtype=np.uint8)
        return magic + bytes([kind, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + body.tobytes()

    sizes = st.one_of(st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**32 - 1))
    return st.builds(build, st.sampled_from([b"\0\0"] * 4 + [b"\0\1", b"\x1f\x8b"]),
                     st.sampled_from([8] * 4 + [9, 13]),
                     st.one_of(st.lists(sizes, min_size=ndim, max_size=ndim), st.lists(sizes, max_size=4)),
                     st.sampled_from([0] * 4 + [-3, -1, 1]), st.integers(0, 2**16))


def _check_idx(content: bytes, axes: tuple[str, ...], path: Path) -> None:
    """``read_idx(path)`` either raises DataError or returns exactly the array ``content`` describes."""
    try:
        array = read_idx(path, axes)
    except DataError as e:
        assert str(path) in str(e)
        event("refused")
        return
    event("loaded")
    n = len(axes)
    assert array.dtype == np.uint8 and array.ndim == n and min(array.shape) >= 1
    assert content[:4] == bytes([0, 0, 8, n])
    assert array.shape == struct.unpack(f">{n}I", content[4:4 + 4 * n])
    assert array.tobytes() == content[4 + 4 * n:]


@FUZZ
@given(axes_and_content=st.sampled_from([("labels",), ("images", "rows", "columns")]).flatmap(
           lambda axes: st.tuples(st.just(axes), st.one_of(st.binary(max_size=64), _idx_like(len(axes))))),
       gz=st.booleans())
def test_read_idx_loads_or_refuses_any_bytes(tmp_path, axes_and_content, gz):
    axes, content = axes_and_content
    path = write(tmp_path / ("file.gz" if gz else "file"), content)
    _check_idx(content, axes, path)


_MUTATIONS = st.tuples(st.sampled_from(["flip", "cut", "insert"]), st.integers(0, 10**6), st.integers(0, 255))


def _mutate(content: bytes, mutation: tuple[str, int, int]) -> bytes:
    kind, at, value = mutation
    at %= len(content) + 1
    if kind == "cut":
        return content[:at]
    if kind == "insert":
        return content[:at] + bytes([value]) + content[at:]
    return content[:at] + bytes([content[at] ^ (value or 1)]) + content[at + 1:] if at < len(content) else content


@FUZZ
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 2**16), gz=st.booleans(),
       mutation=_MUTATIONS)
def test_read_idx_loads_or_refuses_mutated_files(tmp_path, shape, seed, gz, mutation):
    array = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    axes = tuple(f"axis{i}" for i in range(len(shape)))
    content = idx_bytes(array)
    if gz:  # the mutation hits the compressed stream; whatever gets through gzip's CRC must be the original
        path = tmp_path / "file.gz"
        path.write_bytes(_mutate(gzip.compress(content, mtime=0), mutation))
    else:
        path = write(tmp_path / "file", _mutate(content, mutation))
        content = path.read_bytes()
    _check_idx(content, axes, path)


@FUZZ
@given(labels=st.lists(st.one_of(st.integers(0, 9), st.integers(0, 255)), max_size=3), seed=st.integers(0, 2**16),
       mutation=st.one_of(st.none(), _MUTATIONS))
def test_read_cifar_binary_loads_or_refuses(tmp_path, labels, seed, mutation):
    pixels = np.random.default_rng(seed).integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    content = np.concatenate([np.array(labels, dtype=np.uint8)[:, None], pixels], axis=1).tobytes()
    if mutation is not None:
        content = _mutate(content, mutation)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(content)
    try:
        x, y = read_cifar_binary(path)
    except DataError as e:
        assert str(path) in str(e)
        event("refused")
        return
    event("loaded")
    records = np.frombuffer(content, dtype=np.uint8).reshape(-1, 3073)
    assert x.dtype == np.uint8 and x.shape == (len(records), 3, 32, 32) and len(records) >= 1
    assert y.dtype == np.int64 and 0 <= y.min() and y.max() < 10
    assert np.array_equal(x.reshape(len(x), -1), records[:, 1:]) and np.array_equal(y, records[:, 0])


def _batch_fields() -> st.SearchStrategy[object]:
    """Values a pickled batch field may hold: good and bad arrays, lists, scalars, strings."""
    arrays = st.builds(
        lambda shape, dtype, seed: np.random.default_rng(seed).integers(0, 300, shape).astype(dtype),
        st.sampled_from([(2, 3072), (1, 3072), (2, 3071), (2,), (0, 3072), (2, 3, 32, 32), ()]),
        st.sampled_from([np.uint8, np.int64, np.int8, np.float32, np.bool_, object]), st.integers(0, 2**16))
    ints = st.one_of(st.integers(-2, 12), st.integers(-2**70, 2**70), st.booleans(), st.floats(), st.none())
    rows = st.lists(st.one_of(st.just([1] * 3072), st.just([256] * 3072), st.lists(ints, max_size=4), arrays),
                    max_size=3)
    return st.one_of(arrays, rows, st.lists(ints, max_size=4), st.just([0, 1]), st.text(max_size=3), ints)


_BAD_LABELS = st.one_of(st.integers(-2, 12), st.integers(-2**70, 2**70), st.booleans(), st.floats(), st.none())


def _batches() -> st.SearchStrategy[object]:
    keys = st.sampled_from([b"data", b"labels", "data", "labels", b"batch_label", 1])
    return st.one_of(st.dictionaries(keys, _batch_fields(), max_size=4), _batch_fields())


def _check_cifar_python(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``read_cifar_python(path)``: ``None`` if it raised DataError, else its arrays, checked against the promise."""
    try:
        x, y = read_cifar_python(path)
    except DataError as e:
        assert str(path) in str(e)
        event("refused")
        return None
    event("loaded")
    assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == (3, 32, 32) and len(x) >= 1
    assert y.dtype == np.int64 and y.shape == (len(x),) and 0 <= y.min() and y.max() < 10
    return x, y


@FUZZ
@given(batch=_batches(), protocol=st.integers(2, 5))
def test_read_cifar_python_loads_or_refuses_any_batch(tmp_path, batch, protocol):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    _check_cifar_python(path)


@FUZZ
@given(n=st.integers(1, 3), seed=st.integers(0, 9), labels=st.lists(st.integers(0, 9), min_size=3, max_size=3),
       bad=st.one_of(st.none(), st.tuples(st.integers(0, 2), _BAD_LABELS)), data_as_list=st.booleans(),
       str_keys=st.booleans())
def test_read_cifar_python_loads_exactly_the_batches_with_int_labels_in_range(tmp_path, n, seed, labels, bad,
                                                                           data_as_list, str_keys):
    labels = labels[:n]
    if bad is not None:
        labels[bad[0] % n] = bad[1]
    pixels = cifar_batch(n, seed)[b"data"]
    data = pixels.tolist() if data_as_list else pixels
    batch = {"data": data, "labels": labels} if str_keys else {b"data": data, b"labels": labels}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=4))
    loaded = _check_cifar_python(path)
    assert (loaded is not None) == all(type(v) is int and 0 <= v < 10 for v in labels)
    if loaded is not None:
        assert np.array_equal(loaded[0].reshape(n, -1), pixels) and loaded[1].tolist() == labels


@FUZZ
@given(n=st.integers(1, 3), protocol=st.integers(3, 4), lists=st.booleans(),
       mutations=st.lists(_MUTATIONS, min_size=1, max_size=3))
def test_read_cifar_python_loads_or_refuses_mutated_pickles(tmp_path, n, protocol, lists, mutations):
    batch = cifar_batch(n)
    if lists:
        batch[b"data"] = batch[b"data"].tolist()
    content = pickle.dumps(batch, protocol=protocol)
    for mutation in mutations:
        content = _mutate(content, mutation)
    path = tmp_path / "data_batch_1"
    path.write_bytes(content)
    _check_cifar_python(path)


_DIGIT_ROWS = st.lists(st.builds(lambda pixels, label: [str(p) for p in pixels] + [str(label)],
                                 st.lists(st.integers(0, 16), min_size=64, max_size=64), st.integers(0, 9)),
                       max_size=3)
_CSV_DAMAGE = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6),
                                 st.sampled_from(["17", "-1", "1.5", "nan", "inf", "x", "", "10", "16", None])),
                       max_size=2)


@FUZZ
@given(rows=_DIGIT_ROWS, damage=_CSV_DAMAGE)
def test_read_digits_csv_loads_or_refuses(tmp_path, rows, damage):
    for row, column, token in damage:  # None drops the cell, anything else replaces it
        if rows:
            cells = rows[row % len(rows)]
            cells[column % len(cells):column % len(cells) + 1] = [] if token is None else [token]
    path = write(tmp_path / "digits.csv.gz", "\n".join(",".join(r) for r in rows).encode())
    try:
        x, y = read_digits_csv(path)
    except DataError as e:
        assert str(path) in str(e)
        event("refused")
        return
    event("loaded")
    table = np.array(rows, dtype=float)
    assert x.dtype == np.uint8 and np.array_equal(x.reshape(len(rows), 64), table[:, :64])
    assert y.dtype == np.int64 and np.array_equal(y, table[:, 64]) and 0 <= y.min() and y.max() < 10


_ROW = ["0"] * 64 + ["3"]


@pytest.mark.parametrize("rows, message", [
    ([], "holds no rows"),
    ([_ROW[1:]], "rows have 64 columns; expected 65"),
    ([_ROW, _ROW[:-1] + ["x"]], "not a csv of numbers"),
    ([_ROW, _ROW[:-1] + ["10"]], r"labels\[1\] is 10; expected an integer in \[0, 10\)"),
    ([["17"] + _ROW[1:]], r"pixels\[0, 0\] is 17; expected an integer in \[0, 17\)"),
    ([_ROW[:5] + ["inf"] + _ROW[6:]], "row 0, column 5 is inf; expected an integer"),
    ([_ROW[:5] + ["2.5"] + _ROW[6:]], "row 0, column 5 is 2.5; expected an integer"),
])
def test_bad_digits_csv_is_refused(tmp_path, rows, message):
    path = write(tmp_path / "digits.csv.gz", "\n".join(",".join(r) for r in rows).encode())
    with pytest.raises(DataError, match=f"^{path}: {message}"):
        read_digits_csv(path)


def test_read_digits_csv_reads_the_built_in_table(tmp_path):
    path = write(tmp_path / "digits.csv.gz", b"0,16," + b"3," * 62 + b"9\n" + b"1," * 64 + b"0\n")
    x, y = read_digits_csv(path)
    assert x.shape == (2, 8, 8) and x[0, 0, :3].tolist() == [0, 16, 3] and y.tolist() == [9, 0]
