"""Readers of the dataset file formats: IDX, CIFAR-10 binary and python batches, the built-in digits csv.

Each reader takes one file, checks everything its format promises (header, dtype, shape, counts,
value ranges) and returns plain numpy arrays. Anything else raises one :class:`DataError` naming
the file, the field, the value found and what was expected; no decoder error escapes raw.

Nothing is allocated on a header's word alone: files are read in chunks and never past
:data:`MAX_FILE_BYTES`, so an absurd IDX header or a decompression bomb is refused before it costs
memory, and a pickled batch may not describe more values than its file holds bytes.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import reprlib
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from augdistill.errors import DataError

__all__ = ["MAX_FILE_BYTES", "CIFAR_IMAGE_SHAPE", "read_idx", "read_idx_split", "read_cifar_binary",
           "read_cifar_python", "read_digits_csv"]

MAX_FILE_BYTES = 1 << 30
"""Largest file content (after decompression) a reader accepts: 1 GiB, 20x Fashion-MNIST's training images."""

CIFAR_IMAGE_SHAPE = (3, 32, 32)
_CIFAR_PIXELS = math.prod(CIFAR_IMAGE_SHAPE)
_CHUNK = 1 << 20
_IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float",
              0x0E: "double"}


@contextmanager
def _stream(path: Path, what: str) -> Iterator[BinaryIO]:
    """Open the regular file ``path`` (through gzip if its name ends in ``.gz``) for reading.

    Every failure while it is open (permissions, I/O, a corrupt or truncated gzip stream) becomes a
    :class:`DataError`. Directories and special files (a FIFO would block forever) are refused first.
    """
    try:
        if path.is_dir():
            raise DataError(f"{path}: is a directory; expected a file ({what})")
        if not path.is_file():
            state = "is not a regular file" if path.exists() else "is missing"
            raise DataError(f"{path}: {state}; expected a file ({what})")
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            yield f  # type: ignore[misc]
    except (zlib.error, gzip.BadGzipFile, EOFError) as e:
        raise DataError(f"{path}: corrupt or truncated gzip stream ({e}); expected an intact {what} "
                        "(fetch it again)") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e}); expected a readable {what}") from None


def _read_upto(f: BinaryIO, n: int) -> bytearray:
    """Up to ``n`` bytes of ``f`` (fewer only at its end); memory grows with what is read, not with ``n``."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _read_file(path: Path, what: str) -> bytearray:
    """The whole content of ``path``, refused past :data:`MAX_FILE_BYTES`."""
    with _stream(path, what) as f:
        data = _read_upto(f, MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise DataError(f"{path}: holds more than {MAX_FILE_BYTES} bytes; expected at most that much ({what})")
    return data


def _check_range(path: Path, field: str, values: np.ndarray, low: int, stop: int) -> None:
    """Refuse any of the integer ``values`` outside ``[low, stop)``, naming the first and its index."""
    bad = np.flatnonzero((values < low) | (values >= stop))
    if bad.size:
        index = ", ".join(str(int(i)) for i in np.unravel_index(bad[0], values.shape))
        raise DataError(f"{path}: {field}[{index}] is {values.flat[bad[0]]}; expected an integer in "
                        f"[{low}, {stop}) ({bad.size} of {values.size} values are outside)")


def read_idx(path: Path, axes: tuple[str, ...]) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped if its name ends in ``.gz``), validating every field.

    Args:
        path: the file.
        axes: the names of the dimensions the file must have, e.g. ``("images", "rows", "columns")``
            or ``("labels",)``; only their number is checked, the names go into error messages.

    Returns:
        A ``uint8`` array of the header's shape, ``len(axes)`` dimensions, each of size >= 1.

    Raises:
        DataError: unreadable file, bad magic number, a type other than unsigned byte, the wrong
            number of dimensions, an empty or absurd (> :data:`MAX_FILE_BYTES`) size, or data
            shorter or longer than the header says.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 1, 2]))
        >>> read_idx(path, ("labels",))
        array([7, 1, 2], dtype=uint8)
    """
    ndim = len(axes)
    with _stream(path, "IDX file") as f:
        head = _read_upto(f, 4 + 4 * ndim)
        if len(head) >= 2 and head[:2] != b"\0\0":
            hint = "; the file is gzip-compressed, so its name should end in .gz" if head[:2] == b"\x1f\x8b" else ""
            raise DataError(f"{path}: IDX magic number starts with 0x{head[0]:02x}{head[1]:02x}; "
                            f"expected 0x0000{hint}")
        if len(head) >= 3 and head[2] != 0x08:
            raise DataError(f"{path}: IDX type byte is 0x{head[2]:02x} ({_IDX_TYPES.get(head[2], 'unknown')}); "
                            "expected 0x08 (unsigned byte)")
        if len(head) >= 4 and head[3] != ndim:
            raise DataError(f"{path}: IDX field 'ndim' is {head[3]}; expected {ndim} ({', '.join(axes)})")
        if len(head) < 4 + 4 * ndim:
            raise DataError(f"{path}: only {len(head)} bytes; expected an IDX header of {4 + 4 * ndim} bytes "
                            f"(magic number and the sizes of {', '.join(axes)})")
        dims = struct.unpack(f">{ndim}I", head[4:])
        if 0 in dims:
            raise DataError(f"{path}: IDX sizes are {dims} ({axes[dims.index(0)]}: 0); expected every size >= 1")
        size = math.prod(dims)
        if size > MAX_FILE_BYTES:
            raise DataError(f"{path}: IDX sizes {dims} describe {size} bytes; expected at most {MAX_FILE_BYTES} "
                            "(is the header corrupt?)")
        body = _read_upto(f, size)
        if len(body) < size:
            raise DataError(f"{path}: truncated: IDX sizes {dims} need {size} bytes of data; the file holds "
                            f"{len(body)}")
        if f.read(1):
            raise DataError(f"{path}: data continues past the {size} bytes its IDX sizes {dims} describe; "
                            "expected the file to end there")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def read_idx_split(images: Path, labels: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one split stored as an IDX image file and an IDX label file.

    Args:
        images: IDX file of shape ``(N, H, W)``.
        labels: IDX file of shape ``(N,)``.
        num_classes: labels must lie in ``[0, num_classes)``.

    Returns:
        ``(x, y)``: ``uint8`` images ``(N, H, W)`` and ``int64`` labels ``(N,)``.

    Raises:
        DataError: either file is malformed, the counts disagree, or a label is out of range.
    """
    x = read_idx(images, ("images", "rows", "columns"))
    y = read_idx(labels, ("labels",))
    if len(y) != len(x):
        raise DataError(f"{labels}: holds {len(y)} labels but {images} holds {len(x)} images; "
                        "expected one label per image")
    _check_range(labels, "labels", y, 0, num_classes)
    return x, y.astype(np.int64)


def read_cifar_binary(path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR-10 binary batch: records of one label byte followed by 3072 pixel bytes.

    Returns:
        ``(x, y)``: ``uint8`` images ``(N, 3, 32, 32)`` and ``int64`` labels ``(N,)`` in ``[0, num_classes)``.

    Raises:
        DataError: unreadable file, a size that is not a positive multiple of 3073, or a label out of range.
    """
    raw = _read_file(path, "CIFAR-10 binary batch")
    record = 1 + _CIFAR_PIXELS
    if not raw or len(raw) % record:
        raise DataError(f"{path}: size is {len(raw)} bytes; expected a positive multiple of {record} "
                        f"(records of 1 label byte and {_CIFAR_PIXELS} pixel bytes)")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    _check_range(path, "labels", records[:, 0], 0, num_classes)
    return records[:, 1:].reshape(-1, *CIFAR_IMAGE_SHAPE), records[:, 0].astype(np.int64)


class _ArrayOnlyUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Unpickler that rebuilds plain containers and numpy arrays and refuses every other class or function.

    It is the pure-Python unpickler on purpose: the C one sizes its memo table from the index in a
    memo opcode, so five hostile bytes make it allocate and clear gigabytes. Speed is the same for
    CIFAR batches, whose pixels are one array.
    """

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _field(path: Path, batch: dict, name: str) -> Any:
    """``batch[b"name"]`` (Python 2 pickles) or ``batch["name"]`` (re-pickled in Python 3)."""
    for key in (name.encode(), name):
        if key in batch:
            return batch[key]
    raise DataError(f"{path}: field b'{name}' is missing (keys: {reprlib.repr(list(batch))}); "
                    "expected a dict with keys b'data' and b'labels'")


def _too_many(path: Path, field: str, values: int, budget: int) -> DataError:
    return DataError(f"{path}: field {field} holds {values} values in a file of {budget} bytes; expected at most "
                     "one value per byte (rows shared through the pickle memo, or preallocated, are refused)")


def _int_array(path: Path, field: str, value: Any, shape: tuple[int | None, ...], budget: int) -> np.ndarray:
    """``value`` as an integer array of ``shape`` (``None`` marks the free leading size), at most ``budget`` values.

    A numpy array must have an integer dtype; a list must hold Python ints, or for 2-D shapes lists
    or arrays of them. A list's length is checked before its items are, so a pickle whose memo
    repeats one list many times cannot make this walk or allocate more than its file could hold.
    """
    expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + (",)" if len(shape) == 1 else ")")
    if isinstance(value, np.ndarray):
        if value.size > budget:
            raise _too_many(path, field, value.size, budget)
        if value.dtype.kind not in "ui":
            raise DataError(f"{path}: field {field} has dtype {value.dtype}; expected integers")
        if value.ndim != len(shape) or any(s not in (None, d) for s, d in zip(shape, value.shape)):
            raise DataError(f"{path}: field {field} has shape {value.shape}; expected {expected}")
        return value
    if not isinstance(value, list):
        raise DataError(f"{path}: field {field} is a {type(value).__name__}; expected a numpy array or a list")
    if shape[0] not in (None, len(value)):
        raise DataError(f"{path}: field {field} has {len(value)} values; expected {shape[0]}")
    values = len(value) * math.prod(s or 1 for s in shape[1:])
    if values > budget:
        raise _too_many(path, field, values, budget)
    if len(shape) > 1:
        rows = [_int_array(path, f"{field}[{i}]", r, shape[1:], budget) for i, r in enumerate(value)]
        return np.stack(rows) if rows else np.zeros((0, *shape[1:]), dtype=np.int64)
    for i, v in enumerate(value):
        if type(v) is not int:
            raise DataError(f"{path}: field {field}[{i}] is a {type(v).__name__}; expected an int")
    try:
        return np.array(value, dtype=np.int64)
    except OverflowError:
        raise DataError(f"{path}: field {field} holds an integer beyond 64 bits; expected small integers") from None


def read_cifar_python(path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR-10 python batch: a pickled dict with ``b"data"`` ``(N, 3072)`` and ``b"labels"`` ``(N,)``.

    Only plain containers and numpy arrays are unpickled: any other class or function a pickle
    names is refused before it can run.

    Returns:
        ``(x, y)``: ``uint8`` images ``(N, 3, 32, 32)`` and ``int64`` labels ``(N,)`` in ``[0, num_classes)``.

    Raises:
        DataError: an unreadable or malicious pickle, something other than such a dict, pixels
            outside ``[0, 255]``, labels out of range, counts that disagree, or no images.
    """
    raw = _read_file(path, "CIFAR-10 python batch")
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - a decoder fed untrusted bytes fails in many ways; all mean "bad file"
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: holds a {type(batch).__name__}; expected a dict with keys b'data' and b'labels'")
    data = _int_array(path, "b'data'", _field(path, batch, "data"), (None, _CIFAR_PIXELS), len(raw))
    labels = _int_array(path, "b'labels'", _field(path, batch, "labels"), (None,), len(raw))
    if len(data) == 0:
        raise DataError(f"{path}: field b'data' holds no images; expected at least one")
    if len(labels) != len(data):
        raise DataError(f"{path}: field b'labels' holds {len(labels)} labels for {len(data)} images in b'data'; "
                        "expected one label per image")
    _check_range(path, "b'data'", data, 0, 256)
    _check_range(path, "b'labels'", labels, 0, num_classes)
    return data.astype(np.uint8).reshape(-1, *CIFAR_IMAGE_SHAPE), labels.astype(np.int64)


def read_digits_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read scikit-learn's 8x8 digits as csv: 64 pixel columns in ``[0, 16]``, then the label in ``[0, 10)``.

    Returns:
        ``(x, y)``: ``uint8`` images ``(N, 8, 8)`` with values in ``[0, 16]`` and ``int64`` labels ``(N,)``.

    Raises:
        DataError: unreadable file, no rows, a row without 65 integer columns, or a value out of range.
    """
    raw = _read_file(path, "digits csv")
    if not raw.strip():
        raise DataError(f"{path}: holds no rows; expected rows of 64 pixels and a label")
    try:
        table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise DataError(f"{path}: not a csv of numbers ({e})") from None
    if table.shape[1] != 65:
        raise DataError(f"{path}: rows have {table.shape[1]} columns; expected 65 (64 pixels and a label)")
    not_int = np.flatnonzero(~np.isfinite(table) | (table != np.round(table)))
    if not_int.size:
        r, c = np.unravel_index(not_int[0], table.shape)
        raise DataError(f"{path}: row {r}, column {c} is {table[r, c]}; expected an integer")
    values = table.astype(np.int64)
    _check_range(path, "pixels", values[:, :64], 0, 17)
    _check_range(path, "labels", values[:, 64], 0, 10)
    return values[:, :64].astype(np.uint8).reshape(-1, 8, 8), values[:, 64]
