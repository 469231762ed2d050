"""`benchmarks.probes.op_profile` on a real tiny module: the profiler trace is read back into time per op type."""

from __future__ import annotations

from benchmarks.probes import op_profile
from tests.fixtures import tiny_modules as tm


def test_profile_sums_op_times_from_the_trace_and_renders_a_table(tmp_path):
    module = tm.build_text_module(str(tmp_path / "text"))
    result = op_profile.profile(module, ["the quick fox", "brown dog"] * 50)
    assert result["rows"] == 100 and result["precision"] == "float32"  # no module.json: float32
    ops = result["op_ms"]
    assert ops and all(ms >= 0 for ms in ops.values())
    assert not [op for op in ops if op.startswith(op_profile._WRAPPERS)]
    assert {"StringLower", "StringSplitV2", "ResourceGather", "UnsortedSegmentSum"} <= set(ops), sorted(ops)
    table = op_profile.render([result, result])
    assert table.splitlines()[0].split() == ["op", "float32", "ms", "(share)", "float32", "ms", "(share)"]
    assert "wall, rows/s" in table and "all ops" in table
