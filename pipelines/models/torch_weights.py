"""Reads a PyTorch state dict (`torch.save` file) into NumPy arrays, without PyTorch.

`read_state_dict(path)` understands both formats `torch.save` writes:

* the **legacy** format (before PyTorch 1.6, and `_use_new_zipfile_serialization=False`):
  pickled magic number, protocol version and system info, then the pickled
  object, whose storages are persistent ids, then the list of storage keys and
  each storage's bytes (an int64 element count followed by the raw elements);
* the **zip** format (PyTorch 1.6+): `<archive>/data.pkl` plus one file per
  storage in `<archive>/data/<key>`.

Only what a state dict of tensors needs is unpickled (`OrderedDict`, tensors
rebuilt by `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter`, typed
storages); any other global in the pickle is refused, and the legacy format's
header values are read with no globals at all, so a weights file cannot run
code: every pickle goes through an `Unpickler` whose `find_class` allows only
those names (never `pickle.load`). Tensors come back as C-contiguous NumPy arrays in their own dtype.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# torch.<Name>Storage -> element dtype (little-endian, as every torch.save file on x86/ARM).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class TorchFileError(ValueError):
    """A file that is not a readable PyTorch state dict."""


class _StorageType:
    """Stands in for `torch.<Name>Storage` in the pickle: it only carries the dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """A storage named in the pickle; its elements (`data`) may be read after the pickle (legacy format)."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.data: np.ndarray | None = None


class _Tensor:
    """A tensor as the pickle describes it: a strided view of a storage, built once the storage is read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

    def array(self) -> np.ndarray:
        data, size, stride, offset = self.storage.data, self.size, self.stride, self.offset
        if data is None:
            raise TorchFileError(f"storage {self.storage.key} has no data in the file")
        if 0 in size:
            return np.zeros(size, data.dtype)
        extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
        if extent > data.size:
            raise TorchFileError(
                f"a tensor of size {list(size)} and stride {list(stride)} at offset {offset} runs "
                f"past its storage {self.storage.key} of {data.size} elements"
            )
        if not size:  # a 0-d tensor (as_strided would read an empty shape as "keep the shape")
            return np.array(data[offset])
        item = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(data[offset:], shape=size, strides=[s * item for s in stride])
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _Tensor:
    """`torch._utils._rebuild_tensor_v2` (requires_grad and hooks are dropped)."""
    if not isinstance(storage, _Storage):
        raise TorchFileError(f"a tensor built from {type(storage).__name__}, not a storage")
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data: _Tensor, *_: Any) -> _Tensor:
    """`torch._utils._rebuild_parameter`: a parameter is its data here."""
    return data


_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    """Unpickles a state dict, collecting the storages it names in `storages` (key -> `_Storage`)."""

    def __init__(self, file: BinaryIO):
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise TorchFileError(
                f"refusing to unpickle {module}.{name}: only state dicts of tensors are read "
                f"(allowed: OrderedDict, tensors, {', '.join(sorted(STORAGE_DTYPES))})"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchFileError(f"unexpected persistent id {pid!r} (expected a storage)")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"storage {key} has type {storage_type!r}, not a torch storage")
        if len(pid) > 5 and pid[5] is not None:
            raise TorchFileError(f"storage {key} is a view of another storage (not supported)")
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, numel)
        return self.storages[key]


class _PlainUnpickler(_Unpickler):
    """For the legacy format's plain values (magic number, protocol, system info, storage keys): no globals at all."""

    def find_class(self, module: str, name: str) -> Any:
        raise TorchFileError(f"refusing to unpickle {module}.{name} in a torch file's header")

    def persistent_load(self, pid: Any) -> Any:
        raise TorchFileError(f"unexpected persistent id {pid!r} in a torch file's header")


def _load_plain(f: BinaryIO) -> Any:
    """One pickled plain value (numbers, strings, lists, dicts); anything that names code is refused."""
    return _PlainUnpickler(f).load()


def _read_legacy(f: BinaryIO) -> tuple[Any, dict[str, _Storage]]:
    """The legacy format, from just after the magic number's pickle."""
    protocol = _load_plain(f)
    if protocol != LEGACY_PROTOCOL:
        raise TorchFileError(f"legacy protocol version {protocol!r}, expected {LEGACY_PROTOCOL}")
    sys_info = _load_plain(f)
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise TorchFileError("big-endian torch files are not supported")
    unpickler = _Unpickler(f)
    result = unpickler.load()
    for key in _load_plain(f):  # the storages' bytes follow the object, in this order
        storage = unpickler.storages.get(str(key))
        if storage is None:
            raise TorchFileError(f"storage {key} is not named in the pickle")
        (numel,) = struct.unpack("<q", _read_exactly(f, 8, storage.key))
        storage.data = np.frombuffer(_read_exactly(f, numel * storage.dtype.itemsize, storage.key), storage.dtype)
    return result, unpickler.storages


def _read_exactly(f: BinaryIO, size: int, key: str) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise TorchFileError(f"file ends inside storage {key} ({len(data)} of {size} bytes)")
    return data


def _read_zip(path: str) -> tuple[Any, dict[str, _Storage]]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise TorchFileError(f"a zip file without one <archive>/data.pkl (found {len(pickles)})")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() != b"little":
            raise TorchFileError("big-endian torch files are not supported")
        unpickler = _Unpickler(io.BytesIO(archive.read(pickles[0])))
        result = unpickler.load()
        for key, storage in unpickler.storages.items():
            try:
                data = archive.read(f"{prefix}data/{key}")
            except KeyError:
                raise TorchFileError(f"storage {key} is missing from the archive") from None
            if len(data) < storage.numel * storage.dtype.itemsize:
                raise TorchFileError(f"storage {key} holds {len(data)} bytes, fewer than {storage.numel} elements")
            storage.data = np.frombuffer(data, storage.dtype, count=storage.numel)
        return result, unpickler.storages


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a `torch.save`d state dict as `{name: array}`.

    Args:
      path: a `.pth`/`.pt` file in the legacy or the zip format.

    Returns:
      Parameter and buffer names mapped to NumPy arrays, in file order.

    Raises:
      FileNotFoundError: no such file.
      TorchFileError: not a torch file, a pickle with anything but tensors, or truncated.
    """
    try:
        if zipfile.is_zipfile(path):
            result, _ = _read_zip(path)
        else:
            with open(path, "rb") as f:
                try:
                    magic = _load_plain(f)
                except TorchFileError:
                    raise
                except Exception as e:  # pickle raises many types on garbage
                    raise TorchFileError(f"{path}: not a torch file ({type(e).__name__}: {e})") from None
                if magic != LEGACY_MAGIC:
                    raise TorchFileError(f"{path}: not a torch file (no torch magic number)")
                result, _ = _read_legacy(f)
    except TorchFileError as e:
        raise TorchFileError(str(e) if str(e).startswith(path) else f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile) as e:
        raise TorchFileError(f"{path}: truncated or corrupt torch file ({type(e).__name__}: {e})") from None
    if not isinstance(result, dict) or not all(isinstance(v, _Tensor) for v in result.values()):
        raise TorchFileError(f"{path}: holds a {type(result).__name__}, not a state dict of tensors")
    try:
        return {str(name): tensor.array() for name, tensor in result.items()}
    except TorchFileError as e:
        raise TorchFileError(f"{path}: {e}") from None
