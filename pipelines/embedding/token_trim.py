"""How a per-token output `[N, T, D]` is cut to each row's own tokens, so that a row's vectors do not depend on its batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

MASK = "mask"
LENGTH = "length"
FED = "fed"
ALL = "all"


class TrimError(ValueError):
    """An output named as the length key that cannot trim the output (message lists the ones that can)."""


@dataclasses.dataclass(frozen=True)
class TokenTrim:
    """How to cut a per-token output to each row's tokens.

    Attributes:
      kind: `mask` ([N, T] output), `length` ([N] output), `fed` (the [N] token
        counts the job feeds as input `key`) or `all` (every position kept).
      key: the output (or, for `fed`, the input) holding the masks or lengths;
        None for `all`.
    """

    kind: str
    key: str | None = None

    @property
    def output(self) -> str | None:
        """The signature output the job must fetch besides the embedding, if any."""
        return self.key if self.kind in (MASK, LENGTH) else None

    def describe(self) -> str:
        """What a reader needs: e.g. `cut by length output 'sequence_len'`."""
        return {
            MASK: f"cut by mask output {self.key!r}",
            LENGTH: f"cut by length output {self.key!r}",
            FED: f"cut by the token counts fed to input {self.key!r}",
            ALL: "all positions kept (images: same size for every row)",
        }[self.kind]

    def label(self) -> str:
        """A stable one-word form for table metadata: `mask:token_mask`, `length:sequence_len`, `fed:...`, `all`."""
        return self.kind if self.key is None else f"{self.kind}:{self.key}"


def _is_int(dtype: str) -> bool:
    return dtype.startswith("int") or dtype.startswith("uint")


def _is_mask(tensor: Any) -> bool:
    return len(tensor.shape) == 2 and (tensor.dtype == "bool" or _is_int(tensor.dtype))


def _is_length(tensor: Any) -> bool:
    return len(tensor.shape) == 1 and _is_int(tensor.dtype)


def candidates(sig: Any, output_key: str) -> list[str]:
    """The outputs of `sig` that could trim `output_key`: int/bool `[N, T]` masks and int `[N]` lengths."""
    return [t.name for t in sig.outputs if t.name != output_key and (_is_mask(t) or _is_length(t))]


def find(sig: Any, output_key: str, image: bool, length_key: str | None = None) -> TokenTrim | None:
    """Chooses how to trim the per-token output `output_key` of signature `sig` (a `module_info.SignatureInfo`).

    The first of these that the signature offers: the output named by
    `length_key`; a mask output, int/bool `[N, T]` (names with "mask" first);
    a length output, int `[N]` (of several, the one whose name alone has
    "len"); the token counts fed to an ELMo-style `tokens`/`sequence_len`
    signature. An image signature's output keeps every position (`ALL`).

    Args:
      sig: the signature's description.
      output_key: a rank-3 output of it.
      image: the signature takes images (then all positions are kept).
      length_key: the output named with `--output-length-key`, if any.

    Returns:
      The trim, or None when a text output has no mask, length or fed counts.

    Raises:
      TrimError: `length_key` is not an int `[N]` or int/bool `[N, T]` output of `sig`.
    """
    outputs = {t.name: t for t in sig.outputs}
    usable = candidates(sig, output_key)
    if length_key is not None:
        chosen = outputs.get(length_key)
        if length_key not in usable:
            valid = ", ".join(repr(name) for name in usable) or "none"
            what = "not an output of it" if chosen is None else f"{chosen.dtype}{list(chosen.shape)}"
            raise TrimError(
                f"output_length_key {length_key!r} cannot trim output {output_key!r} of signature {sig.name!r} "
                f"({what}); it must be an int [N] length or int/bool [N, T] mask output. Valid: {valid}."
            )
        return TokenTrim(MASK if _is_mask(chosen) else LENGTH, length_key)
    if image:
        return TokenTrim(ALL)
    masks = sorted((n for n in usable if _is_mask(outputs[n])), key=lambda n: (MASK not in n, n))
    if masks:
        return TokenTrim(MASK, masks[0])
    lengths = [n for n in usable if _is_length(outputs[n])]
    if len(lengths) > 1:
        lengths = [n for n in lengths if "len" in n.lower()]
    if len(lengths) == 1:
        return TokenTrim(LENGTH, lengths[0])
    fed = [t.name for t in sig.inputs if _is_length(t)]
    if len(fed) == 1 and any(t.dtype == "string" and len(t.shape) == 2 for t in sig.inputs):
        return TokenTrim(FED, fed[0])
    return None


def missing_message(sig: Any, output_key: str) -> str:
    """Why a per-token text output is refused, and what would make it usable."""
    outputs = {t.name: t for t in sig.outputs}
    lengths = [n for n in candidates(sig, output_key) if _is_length(outputs[n])]
    length = "no length output (int [N])"
    if len(lengths) > 1:
        length = f"several int [N] outputs ({', '.join(map(repr, lengths))}) and none of them alone named *len*"
    return (
        f"Output {output_key!r} of signature {sig.name!r} is per token ([N, T, D]) but the signature has no mask "
        f"output (int/bool [N, T]), {length}, and is not fed token counts, so each row would get as many "
        f"vectors as the longest row of its module call. Name the output that holds each "
        f"row's length or mask with --output-length-key (YAML output_length_key), or choose a pooled output. "
        f"Outputs: {', '.join(f'{t.name}: {t.dtype}{list(t.shape)}' for t in sig.outputs)}."
    )


def cut(
    trim: TokenTrim | None, embeddings: np.ndarray, outputs: dict[str, Any], fed_lengths: Sequence[int] | None
) -> list[np.ndarray]:
    """Cuts each row of a per-token `embeddings` `[N, T, D]` to its own tokens.

    Args:
      trim: how (None or `all`: keep every position).
      embeddings: the call's per-token output.
      outputs: the call's outputs (holding the mask or length output).
      fed_lengths: the token counts fed to the call (for `fed`).

    Returns:
      N arrays `[T_i, D]`.

    Raises:
      ValueError: the mask or lengths do not fit the output (a module that
        contradicts itself), naming both shapes.
    """
    rows, width = embeddings.shape[:2]
    if trim is None or trim.kind == ALL:
        return list(embeddings)
    if trim.kind == MASK:
        assert trim.key is not None  # a mask is a named output
        masks = np.asarray(outputs[trim.key]).astype(bool)
        if masks.shape != (rows, width):
            raise ValueError(f"mask output {trim.key!r} has shape {list(masks.shape)}, expected {[rows, width]}")
        return [embeddings[i][masks[i]] for i in range(rows)]
    lengths = np.asarray(outputs[trim.output] if trim.output is not None else fed_lengths)
    if lengths.shape != (rows,) or (lengths < 0).any() or (lengths > width).any():
        raise ValueError(
            f"lengths {trim.label()!r} {lengths.tolist()[:8]} (shape {list(lengths.shape)}) do not fit "
            f"the per-token output's {rows} rows of {width} positions"
        )
    return [embeddings[i][: int(lengths[i])] for i in range(rows)]
