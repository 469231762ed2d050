"""QueryEncoder: embeds search queries with the collection's own module, exactly as its rows were embedded.

The module is the one the table's manifest or the collection's catalogue names (or one given in its
place, e.g. a local copy of a remote module), and its fingerprint must be the recorded one: a query
embedded by another module would be compared with vectors of another space. Texts are checked as
the pipeline checks them, images decoded as it decodes them, and both go through the pipeline's
own `HubModelHandler`: the same signature, inputs and output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.embedding.config import ConfigError, EmbedConfig, ModelConfig, PreprocessConfig, SourceConfig
from pipelines.embedding.model_handler import HubModelHandler
from pipelines.embedding.model_spec import for_module
from pipelines.embedding.preprocess import check_text, decode_pixels
from pipelines.embedding.records import ContentGroup
from pipelines.hub import registry
from pipelines.hub.description import describe_resolved
from pipelines.hub.errors import HandleError, ModuleError
from pipelines.hub.redaction import redact
from pipelines.publish.vector_space import VectorSpace
from pipelines.search.errors import SearchError

# What the pipeline's limits default to, for a space that does not record its own.
_DEFAULTS = PreprocessConfig()


class QueryEncoder:
    """Embeds queries into a vector space (see the module docstring)."""

    def __init__(self, space: VectorSpace, module: str | None = None):
        """Resolves the module and checks its fingerprint.

        Args:
          space: the collection's or table's vector space.
          module: a handle to use instead of the recorded one (same fingerprint required).

        Raises:
          SearchError: the module cannot be resolved or loaded, is not the recorded one, or does not suit.
        """
        self.space = space
        handle = module or space.module
        if not handle:
            raise SearchError("no module is recorded for this collection; name it with --module.")
        try:
            resolved = registry.resolve(handle)
        except HandleError as e:
            raise SearchError(
                f"the module {redact(handle)!r} cannot be resolved: {e} (name a copy with --module)"
            ) from None
        if resolved.fingerprint != space.fingerprint:
            raise SearchError(
                f"module {redact(handle)!r} has fingerprint {resolved.fingerprint}; the vectors were made with "
                f"{space.fingerprint}: queries must be embedded by the same module (name it with --module)."
            )
        input_format = "image" if space.kind == "image" else "txt"
        cfg = EmbedConfig(
            source=SourceConfig(input="query", input_format=input_format),
            preprocess=PreprocessConfig(image_size=space.image_size),
            model=ModelConfig(module=handle, signature=space.signature, output_key=space.output_key),
        )
        try:
            spec = for_module(cfg, describe_resolved(resolved))
        except (ConfigError, ModuleError) as e:
            raise SearchError(f"the module cannot embed queries: {e}") from None
        if spec.sequence or spec.dim != space.dimension:
            raise SearchError(f"output {space.output_key!r} does not give one {space.dimension}-dimensional vector.")
        self._spec = spec
        self._handler = HubModelHandler(handle, space.signature, space.fingerprint, spec)
        self._model: Any = None

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """The `[N, D]` vectors of query texts.

        Raises:
          SearchError: a text is empty or too long, the module rejects it, or the collection embeds images.
        """
        if self.space.kind != "text":
            raise SearchError("this collection holds image vectors: search it with --query-image.")
        limit = self.space.max_text_bytes or _DEFAULTS.max_text_bytes
        for text in texts:
            problem = check_text(text, limit)
            if problem:
                raise SearchError(f"query {text!r}: {problem}.")
        return self._embed(list(texts), [repr(t) for t in texts])

    def images(self, paths: Sequence[str]) -> np.ndarray:
        """The `[N, D]` vectors of query images (files).

        Raises:
          SearchError: an image cannot be read or decoded, or the collection embeds texts.
        """
        if self.space.kind != "image" or self._spec.image_size is None:
            raise SearchError("this collection holds text vectors: search it with --query.")
        limit = self.space.max_image_pixels or _DEFAULTS.max_image_pixels
        pixels = []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    pixels.append(decode_pixels(f.read(), self._spec.image_size, limit))
            except Exception as e:  # unreadable, not an image, too large: this query's error
                raise SearchError(f"query image {path!r} cannot be used: {type(e).__name__}: {e}") from None
        return self._embed(pixels, list(paths))

    def _embed(self, payloads: list[Any], names: list[str]) -> np.ndarray:
        if self._model is None:
            self._model = self._handler.load_model()
        groups = [ContentGroup(str(i), payload, ()) for i, payload in enumerate(payloads)]
        results = self._handler.run_inference(groups, self._model)
        vectors = []
        for name, result in zip(names, results):
            if not isinstance(result.inference, np.ndarray):  # an EmbedFailure: the module rejected it
                error = getattr(result.inference, "error", result.inference)
                raise SearchError(f"query {name}: the module could not embed it: {error}")
            vectors.append(result.inference)
        return np.asarray(vectors, np.float32).reshape(len(vectors), self.space.dimension)
