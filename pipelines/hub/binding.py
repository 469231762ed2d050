"""Choosing a module's signature and outputs, and turning them into functions that return NumPy arrays."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipelines.hub.description import signature_info
from pipelines.hub.errors import ModuleError
from pipelines.hub.module_info import DEFAULT_OUTPUT_KEY, DEFAULT_SIGNATURE, ModuleInfo, SignatureInfo


def select(info: ModuleInfo, signature: str = DEFAULT_SIGNATURE, output_key: str = DEFAULT_OUTPUT_KEY) -> SignatureInfo:
    """Validates a signature and output key against a module's description.

    Returns:
      The selected signature.

    Raises:
      ModuleError: naming the bad signature or output key and listing the valid ones.
    """
    sig = info.signature(signature)
    sig.output(output_key)
    return sig


def _signature_fn(loaded: Any, signature: str) -> Any:
    if signature not in loaded.signatures:
        valid = ", ".join(repr(s) for s in sorted(loaded.signatures)) or "none"
        raise ModuleError(f"Signature {signature!r} not found; valid signatures: {valid}.")
    return loaded.signatures[signature]


def as_output_dict(outputs: Any) -> Mapping[str, Any]:
    """Treats a single-tensor result as `{"default": tensor}`; dicts pass through."""
    return outputs if isinstance(outputs, Mapping) else {DEFAULT_OUTPUT_KEY: outputs}


def bind_outputs(loaded: Any, signature: str, output_keys: tuple[str, ...]) -> Callable[..., dict[str, Any]]:
    """Returns `fn(inputs) -> {key: np.ndarray}` calling one signature once for several outputs.

    Args:
      loaded: a module returned by `loading.load`.
      signature: signature name.
      output_keys: keys of the outputs to return. A signature that returns a
        single tensor is treated as returning `{"default": tensor}`.

    Raises:
      ModuleError: the signature or an output key does not exist (listing the valid ones).
    """
    fn = _signature_fn(loaded, signature)
    info = signature_info(signature, fn)
    for key in output_keys:
        info.output(key)

    def call(inputs: Mapping[str, Any]) -> dict[str, Any]:
        outputs = as_output_dict(fn(**inputs))
        return {key: outputs[key].numpy() for key in output_keys}

    return call


def bind(loaded: Any, signature: str = DEFAULT_SIGNATURE, output_key: str = DEFAULT_OUTPUT_KEY) -> Callable[..., Any]:
    """Returns `fn(inputs) -> np.ndarray` calling one signature and picking one output."""
    call_outputs = bind_outputs(loaded, signature, (output_key,))
    return lambda inputs: call_outputs(inputs)[output_key]


def call_default(loaded: Any, *args: Any, **kwargs: Any) -> Any:
    """Calls a reusable module object; a dict result yields its `default` output."""
    outputs = loaded(*args, **kwargs)
    if isinstance(outputs, Mapping):
        if DEFAULT_OUTPUT_KEY not in outputs:
            raise ModuleError(
                f"Module call returned outputs {sorted(outputs)} without a {DEFAULT_OUTPUT_KEY!r} key; "
                "pick one with an output key."
            )
        return outputs[DEFAULT_OUTPUT_KEY]
    return outputs
