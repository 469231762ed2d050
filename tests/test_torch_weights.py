"""Reading torch.save files without PyTorch: both formats, every layout, and files that must be refused."""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipelines.models import efficientnet
from pipelines.models.torch_weights import LEGACY_MAGIC, LEGACY_PROTOCOL, TorchFileError, read_state_dict

DATA = Path(__file__).parent / "data"
# What tests/data/make_efficientnet_reference.py's tiny_state_dict() holds (written by PyTorch 2.13).
BASE = np.arange(24, dtype=np.float32).reshape(4, 6) / 8
EXPECTED = {
    "float": BASE,
    "transposed": BASE.T,
    "slice": BASE[1:3, 2:5],
    "scalar": np.array(7, dtype=np.int64),
    "half": np.array([0.5, -2.0, 65504.0], dtype=np.float16),
    "int": np.array([[1, -2], [3, 2**40]], dtype=np.int64),
    "bool": np.array([True, False, True]),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "param": np.ones((2, 2), dtype=np.float32),
}


@pytest.mark.parametrize("name", ["torch_tiny_legacy.pt", "torch_tiny_zip.pt"])
def test_reads_both_formats_exactly(name):
    state = read_state_dict(str(DATA / name))
    assert list(state) == list(EXPECTED)
    for key, expected in EXPECTED.items():
        assert state[key].dtype == expected.dtype, key
        assert state[key].shape == expected.shape, key
        np.testing.assert_array_equal(state[key], expected, err_msg=key)
        assert state[key].flags.c_contiguous


def test_reads_the_efficientnet_weights_package():
    state = read_state_dict(efficientnet.default_weights_path())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].shape == ()
    assert np.isfinite(state["_blocks.15._project_conv.weight"]).all()


def _legacy_file(path: Path, obj_pickle: bytes) -> str:
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(header, f)
        f.write(obj_pickle)
        pickle.dump([], f)
    return str(path)


def test_refuses_any_other_global(tmp_path):
    path = _legacy_file(tmp_path / "evil.pt", pickle.dumps(collections.Counter(a=1), protocol=2))
    with pytest.raises(
        TorchFileError,
        match=r"evil\.pt: refusing to unpickle collections\.Counter: only state dicts "
        r"of tensors are read \(allowed: OrderedDict, tensors, BoolStorage",
    ):
        read_state_dict(path)


class _RunsCode:
    """Pickles as a call of os.system: unpickling it with `pickle.load` would run the command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("slot", ["magic number", "protocol", "system info", "storage keys"])
def test_a_header_that_would_run_code_is_refused_without_running_it(tmp_path, slot):
    """Every pickle of a legacy file, the header values too, is read with no globals allowed."""
    marker = tmp_path / "ran"
    values = {
        "magic number": LEGACY_MAGIC,
        "protocol": LEGACY_PROTOCOL,
        "system info": {"little_endian": True},
        "storage keys": [],
    }
    values[slot] = _RunsCode(marker)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        for name in ("magic number", "protocol", "system info"):
            pickle.dump(values[name], f)
        f.write(pickle.dumps(collections.OrderedDict(), protocol=2))
        pickle.dump(values["storage keys"], f)
    with pytest.raises(
        TorchFileError, match=r"evil\.pt: refusing to unpickle (posix|os)\.system in a torch file's header"
    ):
        read_state_dict(str(path))
    assert not marker.exists()


def test_refuses_a_pickle_without_tensors(tmp_path):
    path = _legacy_file(tmp_path / "list.pt", pickle.dumps(collections.OrderedDict(a=[1, 2]), protocol=2))
    with pytest.raises(TorchFileError, match=r"list\.pt: holds a OrderedDict, not a state dict of tensors"):
        read_state_dict(path)


def test_truncated_legacy_file(tmp_path):
    data = (DATA / "torch_tiny_legacy.pt").read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[:-10])
    with pytest.raises(TorchFileError, match=r"cut\.pt: file ends inside storage \S+ \(\d+ of \d+ bytes\)"):
        read_state_dict(str(path))


def test_zip_with_a_missing_storage(tmp_path):
    path = tmp_path / "partial.pt"
    with zipfile.ZipFile(DATA / "torch_tiny_zip.pt") as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith("/data/0"):
                dst.writestr(item, src.read(item))
    with pytest.raises(TorchFileError, match=r"partial\.pt: storage 0 is missing from the archive"):
        read_state_dict(str(path))


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "photo.pt"
    path.write_bytes((Path(efficientnet.__file__).parents[1] / "data" / "images" / "coffee.jpg").read_bytes())
    with pytest.raises(TorchFileError, match=r"photo\.pt: not a torch file"):
        read_state_dict(str(path))
    pickled = tmp_path / "plain.pkl"
    pickled.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(TorchFileError, match=r"plain\.pkl: not a torch file \(no torch magic number\)"):
        read_state_dict(str(pickled))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_state_dict(str(tmp_path / "nope.pt"))
