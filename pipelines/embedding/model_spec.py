"""ModelSpec: how to call the module's selected signature, checked against the job's config."""

from __future__ import annotations

import dataclasses

from pipelines.embedding import token_trim
from pipelines.embedding.config import DEFAULT_BATCH_SIZE, ConfigError, EmbedConfig
from pipelines.hub.binding import select
from pipelines.hub.errors import ModuleError
from pipelines.hub.module_info import ModuleInfo, SignatureInfo
from pipelines.hub.redaction import redact


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to call the selected signature, derived from the config and the module.

    Attributes:
      kind: "text" or "image".
      inputs: the signature's input names: `(text,)` for a 1-D string input,
        `(tokens, sequence_len)` for ELMo-style pre-tokenized input, `(images,)`.
      input_dtypes: their dtypes ("string", "int32", "float32", ...).
      output_key: the stored output.
      dim: embedding dimension (last axis of the output).
      sequence: the output is per token (`[N, T, D]`) rather than pooled.
      trim: how a per-token output is cut to each row's own tokens
        (`token_trim.TokenTrim`); None for pooled outputs.
      image_size: (height, width) images are resized to.
      batch_size: rows per module call: the config's, else the module's
        recommendation, else `DEFAULT_BATCH_SIZE` for the input kind.
    """

    kind: str
    inputs: tuple[str, ...]
    input_dtypes: tuple[str, ...]
    output_key: str
    dim: int | None
    sequence: bool
    trim: token_trim.TokenTrim | None
    image_size: tuple[int, int] | None
    batch_size: int

    @property
    def tokenized(self) -> bool:
        """True for ELMo-style signatures fed whitespace tokens and their counts."""
        return len(self.inputs) == 2

    @property
    def resize_to(self) -> tuple[int, int]:
        """`image_size` of an image spec, which always has one; ValueError for a text spec."""
        if self.image_size is None:
            raise ValueError(f"a {self.kind} spec resizes no images")
        return self.image_size


def _describe_inputs(sig: SignatureInfo) -> str:
    return ", ".join(f"{t.name}: {t.dtype}{list(t.shape)}" for t in sig.inputs) or "none"


def for_module(cfg: EmbedConfig, info: ModuleInfo) -> ModelSpec:
    """Checks that the module's signature and output suit the input, and says how to call it.

    Text formats need a signature taking one 1-D string input, or an ELMo-style
    pair (a 2-D string `tokens` input and a 1-D int `sequence_len` input).
    Images need one float32 `[N, H, W, 3]` input; open H/W need `image_size`.
    The output must be `[N, D]` (pooled) or `[N, T, D]` (per token).

    Raises:
      ConfigError: naming the mismatch, the signature's inputs/outputs, and the
        valid signatures or output keys.
    """
    try:
        sig = select(info, cfg.model.signature, cfg.model.output_key)
    except ModuleError as e:
        raise ConfigError(str(e)) from None
    kind = cfg.source.kind
    inputs = sorted(sig.inputs, key=lambda t: (len(t.shape), t.name))
    where = f"Signature {sig.name!r} of module {redact(info.handle)!r} takes {_describe_inputs(sig)}"
    image_size: tuple[int, int] | None = None
    if kind == "text":
        strings = [t for t in inputs if t.dtype == "string"]
        ints = [t for t in inputs if t.dtype.startswith("int")]
        if len(inputs) == 1 and strings and len(strings[0].shape) == 1:
            chosen = strings
        elif (
            len(inputs) == 2
            and len(strings) == 1
            and len(strings[0].shape) == 2
            and len(ints) == 1
            and len(ints[0].shape) == 1
        ):
            chosen = [strings[0], ints[0]]
        else:
            raise ConfigError(
                f"{where}; {cfg.source.input_format} input needs one 1-D string input "
                f"(or a 2-D string tokens input with a 1-D int sequence_len input)."
            )
    else:
        shape = inputs[0].shape if len(inputs) == 1 else ()
        if len(inputs) != 1 or inputs[0].dtype != "float32" or len(shape) != 4 or shape[3] not in (3, None):
            raise ConfigError(f"{where}; image input needs one float32 [N, height, width, 3] input.")
        chosen = inputs
        height, width = shape[1:3]
        module_size = (height, width) if height is not None and width is not None else None
        image_size = cfg.preprocess.image_size or module_size
        if image_size is None:
            raise ConfigError(f"{where}: its input size is open; set image_size (e.g. --image-size 224,224).")
        if module_size is not None and module_size != tuple(image_size):
            raise ConfigError(f"{where}; image_size {list(image_size)} does not match it.")
    out = sig.output(cfg.model.output_key)
    if len(out.shape) not in (2, 3) or not out.dtype.startswith("float"):
        raise ConfigError(
            f"Output {out.name!r} of signature {sig.name!r} is {out.dtype}{list(out.shape)}; an embedding output is "
            f"float [N, D] or [N, T, D]. Outputs: {', '.join(f'{t.name}: {t.dtype}{list(t.shape)}' for t in sig.outputs)}."
        )
    sequence = len(out.shape) == 3
    trim = None
    if sequence:
        try:
            trim = token_trim.find(sig, out.name, kind == "image", cfg.model.output_length_key)
        except token_trim.TrimError as e:
            raise ConfigError(str(e)) from None
        if trim is None:
            raise ConfigError(token_trim.missing_message(sig, out.name))
    elif cfg.model.output_length_key is not None:
        raise ConfigError(
            f"output_length_key {cfg.model.output_length_key!r} trims per-token outputs; output {out.name!r} of "
            f"signature {sig.name!r} is {out.dtype}{list(out.shape)} (one vector per row)."
        )
    return ModelSpec(
        kind=kind,
        inputs=tuple(t.name for t in chosen),
        input_dtypes=tuple(t.dtype for t in chosen),
        output_key=out.name,
        dim=out.shape[-1],
        sequence=sequence,
        trim=trim,
        image_size=image_size,
        batch_size=cfg.model.batch_size or info.recommended_batch_size or DEFAULT_BATCH_SIZE[kind],
    )
