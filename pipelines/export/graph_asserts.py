"""Assertions traced as bare `Assert` ops, without AssertGuard conds, so exported modules load faster.

Why, and what the guard would have saved: docs/design/export.md.
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
