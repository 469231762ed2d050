"""Assertions traced as plain `Assert` ops, so exported modules load faster.

In a graph, `tf.debugging.Assert` wraps its `Assert` op in a `tf.cond`
("AssertGuard") whenever one of the tensors it would print is not a string or
int32, so that those tensors are only copied to the host when the check
fails. Ragged-tensor construction validates its row partitions this way
(int64 row splits), once per ragged op: the default module's tokenizer traced
232 such conds, two branch functions each, 232 of the SavedModel's 263
functions. Loading a SavedModel turns every function into a Python graph, so
they cost ≈0.6 s per load and ≈0.3 s in the first call's graph set-up.

`unguarded_asserts()` traces the same checks as bare `Assert` ops: a failed
check raises the same `InvalidArgumentError` with the same message; a passing
one only evaluates tensors the graph computes anyway. The guard saves a
device-to-host copy of those tensors on accelerators; the checks guarded here
print row splits and shapes, a few numbers per batch.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_LOCK = threading.Lock()


@contextlib.contextmanager
def unguarded_asserts() -> Iterator[None]:
    """Within this context, graph-mode `tf.debugging.Assert` emits a bare `Assert` op (no AssertGuard cond).

    Eager execution is unchanged. TensorFlow's own `check_ops` and ragged
    validations call `control_flow_assert.Assert` through its module, so
    replacing the module's attribute for the duration of a trace covers them.
    If this TensorFlow version has no such function, the context does nothing.

    Yields:
      Nothing; trace and save the functions inside the `with` block.
    """
    from tensorflow.python.eager import context
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import control_flow_assert, gen_logging_ops

    guarded = getattr(control_flow_assert, "Assert", None)
    if guarded is None:
        yield
        return

    def bare_assert(condition: Any, data: Any, summarize: int | None = None, name: str | None = None) -> Any:
        if context.executing_eagerly():
            return guarded(condition, data, summarize=summarize, name=name)
        with ops.name_scope(name, "Assert", [condition, data]):
            return gen_logging_ops._assert(condition, data, summarize, name="Assert")  # noqa: SLF001

    with _LOCK:
        control_flow_assert.Assert = bare_assert
        try:
            yield
        finally:
            control_flow_assert.Assert = guarded
