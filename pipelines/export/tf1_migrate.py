"""TF1 Hub-format modules rebuilt as reusable, trainable TF2 objects, for the export tool.

`migrate(path)` returns a `MigratedModule`: one `tf.Variable` per TF1 variable,
and the signatures of the `{}` and `{"train"}` graphs pruned out of those graphs
imported with `tf.compat.v1.wrap_function`; `MigratedModule.verify` compares
them with the TF1 module. The module's protos are read and rewritten by
`pipelines.export.tf1_graphs`. How it works, and what is refused and why:
docs/design/export.md.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

from pipelines.export import tf1_graphs
from pipelines.export.comparison import max_abs_diff
from pipelines.export.random_ops import STATEFUL_RANDOM_OPS
from pipelines.export.tf1_graphs import INFERENCE_TAGS, TRAIN_TAGS, MigrationError, check_module_def, is_tf1_hub_module
from pipelines.hub import fingerprints, loading

__all__ = [
    "INFERENCE_TAGS",
    "TRAIN_TAGS",
    "MigrationError",
    "SourceMismatchError",
    "check_module_def",
    "is_migrated",
    "is_tf1_hub_module",
    "migrate",
    "module_class",
]

_ANCHOR = "tf1_migrate_anchor"


class SourceMismatchError(MigrationError):
    """The migration does not reproduce the TF1 module on the probe inputs."""


def _tf():
    return loading.import_tf()


# --------------------------------------------------------------------------- the migrated module


def _tensor_spec(tf: Any, name: str, info: Any) -> Any:
    shape = None if info.tensor_shape.unknown_rank else [d.size if d.size >= 0 else None for d in info.tensor_shape.dim]
    return tf.TensorSpec(shape, tf.as_dtype(info.dtype), name=name)


@dataclasses.dataclass(frozen=True)
class _SignatureFn:
    """One pruned signature: a function of its inputs (in `input_names` order) returning its output dict."""

    fn: Any
    input_names: tuple[str, ...]
    inputs: dict[str, Any]
    outputs: dict[str, Any]


class _Graph:
    """One imported MetaGraph: its signatures as pruned functions (not tracked: the root saves what it calls)."""

    def __init__(self, tags: frozenset[str], signatures: dict[str, _SignatureFn], init_collection: str):
        self.tags = tags
        self.signatures = signatures
        self.init_collection = init_collection


def _make_initializer_class():
    """`TableInitializer`, defined once TensorFlow is imported (its base class is TensorFlow's)."""
    tf = _tf()

    class TableInitializer(tf.saved_model.experimental.TrackableResource):
        """Runs a migrated graph's table initialization with its asset files; saved, and rerun on load."""

        def __init__(self, init_fn: Callable[..., Any], assets: list[Any]):
            super().__init__()
            self._init_fn = init_fn
            self.assets = assets

        def _create_resource(self) -> Any:
            # Nothing to create: the tables live in the graph functions. A constant keeps the traced
            # `create_resource` valid when the module is saved (as TensorFlow's own v1 loader does).
            return tf.constant(1.0)

        def _initialize(self) -> Any:
            return self._init_fn(*[asset.asset_path for asset in self.assets])

    return TableInitializer


@functools.lru_cache(maxsize=1)
def _initializer_class():
    return _make_initializer_class()


def _import(
    path: str,
    tags: frozenset[str],
    meta_graph: Any,
    variables: dict[str, Any],
    var_defs: list[tf1_graphs.VariableDef],
) -> tuple[_Graph, Any | None]:
    """Imports one MetaGraph with its variables mapped to `variables`; returns it and its table initializer."""
    tf = _tf()
    where = f"MetaGraph {tf1_graphs.tags_name(tags)} of {path!r}"
    suffix = f"_tf1_migrate_{next(_IMPORT_COUNTER)}"
    prepared = tf1_graphs.prepare_for_import(path, tags, meta_graph, suffix)
    nodes = {node.name: node for node in prepared.graph_def.node}
    init_collection, init_ops = tf1_graphs.init_ops(prepared)
    variable_nodes = {v.name for v in var_defs}
    touched = sorted(tf1_graphs.closure(nodes, init_ops) & variable_nodes)
    if touched:
        raise MigrationError(
            f"{where}: its initializer ({init_collection}: {', '.join(init_ops)}) also uses variables "
            f"{', '.join(map(repr, touched))}; rerunning it on load would overwrite trained weights. Not migrated."
        )

    def load() -> None:
        graph = tf.compat.v1.get_default_graph()
        input_map = {v.tensor: graph.capture(variables[v.name].handle) for v in var_defs}
        tf.compat.v1.train.import_meta_graph(prepared, input_map=input_map, clear_devices=True)
        tf.constant(0.0, name=_ANCHOR)

    try:
        wrapped = tf.compat.v1.wrap_function(load, signature=[])
    except (ValueError, TypeError, KeyError) as e:
        raise MigrationError(f"{where} could not be imported: {type(e).__name__}: {e}") from e
    wrapped.graph.variables = [variables[v.name] for v in var_defs]
    signatures = {
        name: _prune_signature(wrapped, where, name, sig) for name, sig in sorted(meta_graph.signature_def.items())
    }
    initializer = None
    if init_ops:
        feeds = tf1_graphs.asset_feeds(path, tags, meta_graph)
        init_fn = wrapped.prune(
            feeds=[wrapped.graph.as_graph_element(tensor) for tensor, _ in feeds],
            fetches=[wrapped.graph.as_graph_element(f"{_ANCHOR}:0")]
            + [wrapped.graph.as_graph_element(op) for op in init_ops],
        )
        initializer = _initializer_class()(init_fn, [tf.saved_model.Asset(file) for _, file in feeds])
    return _Graph(tags, signatures, init_collection), initializer


def _prune_signature(wrapped: Any, where: str, name: str, signature_def: Any) -> _SignatureFn:
    tf = _tf()
    from tensorflow.python.eager import lift_to_graph

    for kind, infos in (("input", signature_def.inputs), ("output", signature_def.outputs)):
        for key, info in infos.items():
            if info.WhichOneof("encoding") != "name":
                raise MigrationError(
                    f"{where}: signature {name!r} {kind} {key!r} is a {info.WhichOneof('encoding')} (sparse or "
                    "composite) tensor; only dense inputs and outputs are migrated."
                )
    input_names = tuple(sorted(signature_def.inputs))
    feeds = [wrapped.graph.as_graph_element(signature_def.inputs[k].name) for k in input_names]
    # TensorInfo fetches: the pruned outputs get the signature's shapes (a graph's set_shape calls are not stored).
    fetches = dict(signature_def.outputs.items())
    try:
        fn = wrapped.prune(feeds=feeds, fetches=fetches)
    except lift_to_graph.UnliftableError as e:
        raise MigrationError(
            f"{where}: signature {name!r} uses a placeholder that is not one of its inputs: {e}"
        ) from e
    inputs = {k: _tensor_spec(tf, k, signature_def.inputs[k]) for k in input_names}
    outputs = {k: _tensor_spec(tf, k, info) for k, info in signature_def.outputs.items()}
    return _SignatureFn(fn, input_names, inputs, outputs)


def _counter():
    n = 0
    while True:
        n += 1
        yield n


_IMPORT_COUNTER = _counter()


def _describe_specs(specs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}: {v.dtype.name}{v.shape}" for k, v in sorted(specs.items()))


def _check_same_signatures(path: str, inference: _Graph, train: _Graph) -> None:
    a, b = inference.signatures, train.signatures
    if set(a) != set(b):
        raise MigrationError(
            f"TF1 Hub module {path!r}: MetaGraph {{}} has signatures {sorted(a)} but {{'train'}} has {sorted(b)}; "
            "a migrated module needs the same signatures in both."
        )
    for name in sorted(a):
        for kind in ("inputs", "outputs"):
            sa, sb = getattr(a[name], kind), getattr(b[name], kind)
            same = set(sa) == set(sb) and all(
                sa[k].dtype == sb[k].dtype and sa[k].shape.is_compatible_with(sb[k].shape) for k in sa
            )
            if not same:
                raise MigrationError(
                    f"TF1 Hub module {path!r}: signature {name!r} {kind} differ between MetaGraph {{}} "
                    f"({_describe_specs(sa)}) and {{'train'}} ({_describe_specs(sb)})."
                )


def _module_class():
    tf = _tf()

    class MigratedModule(tf.Module):
        """A TF1 Hub-format module rebuilt as tf.Variables plus pruned graph functions (see `migrate`).

        Attributes:
          path: the TF1 module directory.
          fingerprint: its content fingerprint.
          signature_names: its signatures, sorted.
          tag_sets: the MetaGraphs it has; `migrated_tag_sets` those used.
        """

        def __init__(
            self,
            path: str,
            fingerprint: str,
            graphs: dict[frozenset[str], _Graph],
            variables: list[Any],
            initializers: list[Any],
            tag_sets: list[frozenset[str]],
            attachments: list[str],
        ):
            super().__init__(name="tf1_hub_migration")
            self.path = path
            self.fingerprint = fingerprint
            self._graphs = _GraphHolder(graphs)
            self.migrated_variables = variables
            self.initializers = initializers
            self.assets = [asset for initializer in initializers for asset in initializer.assets]
            self.tag_sets = [sorted(t) for t in tag_sets]
            self.attachments = attachments

        @property
        def signature_names(self) -> list[str]:
            """The signatures of the `{}` graph, sorted."""
            return sorted(self._graphs.get(INFERENCE_TAGS).signatures)

        def input_specs(self, name: str) -> dict[str, Any]:
            """Input name -> tf.TensorSpec of signature `name`."""
            return dict(self._signature(name, False).inputs)

        def _signature(self, name: str, training: bool) -> _SignatureFn:
            graphs = self._graphs
            graph = graphs.get(TRAIN_TAGS) if training and graphs.has(TRAIN_TAGS) else graphs.get(INFERENCE_TAGS)
            if name not in graph.signatures:
                raise MigrationError(f"Signature {name!r} not found; valid signatures: {self.signature_names}.")
            return graph.signatures[name]

        def call(self, name: str, inputs: Mapping[str, Any], training: bool = False) -> dict[str, Any]:
            """Runs signature `name` on `{input name: tensor}`: the train graph when `training`, if any."""
            signature = self._signature(name, bool(training))
            missing = sorted(set(signature.input_names) - set(inputs))
            if missing:
                raise MigrationError(f"Signature {name!r} needs inputs {missing}; got {sorted(inputs)}.")
            args = [tf.convert_to_tensor(inputs[k], dtype=signature.inputs[k].dtype) for k in signature.input_names]
            return dict(signature.fn(*args))

        def signature_fn(self, name: str) -> Callable[..., dict[str, Any]]:
            """`fn(inputs, training=False)`: `inputs` a tensor (one input) or a dict by input name."""
            names = self._signature(name, False).input_names

            def fn(inputs: Any, training: bool = False) -> dict[str, Any]:
                by_name = inputs if isinstance(inputs, Mapping) else {names[0]: inputs}
                return self.call(name, by_name, training)

            return fn

        def source_record(self) -> dict[str, Any]:
            """What module.json records about the TF1 source."""
            return {
                "format": "tf1_hub",
                "fingerprint": self.fingerprint,
                "tag_sets": [list(tags) for tags in self.tag_sets],
                "training_graph": sorted(TRAIN_TAGS) if self._graphs.has(TRAIN_TAGS) else [],
                "initializers": {
                    tf1_graphs.tags_name(tags): graph.init_collection or None for tags, graph in self._graphs.items()
                },
                "attachments": list(self.attachments),
            }

        def verify(self, probes: Mapping[str, Mapping[str, Any]], atol: float) -> dict[str, Any]:
            """Compares every migrated signature with the TF1 module's, graph by graph, on `probes`.

            The `{}` graph's signatures are compared with the TF1 module as
            `loading.load` (i.e. `hub.load`) runs it; the `{"train"}` graph's
            with that graph loaded the same way, except signatures with
            stateful random ops (dropout), whose outputs are random.

            Returns:
              {"max_abs_diff": {signature (train graph: "train/<signature>"): diff},
               "train_not_compared": {signature: [its random ops]}}.

            Raises:
              SourceMismatchError: a difference above `atol` or different output keys.
            """
            diffs: dict[str, float] = {}
            not_compared: dict[str, list[str]] = {}
            graphs = [(INFERENCE_TAGS, "", loading.load(self.path))]
            if self._graphs.has(TRAIN_TAGS):
                graphs.append((TRAIN_TAGS, "train/", tf.compat.v1.saved_model.load_v2(self.path, tags=["train"])))
            for tags, prefix, source in graphs:
                training = tags == TRAIN_TAGS
                for name in self.signature_names:
                    random_ops = _random_ops(self._signature(name, training).fn)
                    if training and random_ops:
                        not_compared[name] = random_ops
                        continue
                    probe = {k: tf.constant(v) for k, v in probes[name].items()}
                    expected = source.signatures[name](**probe)
                    actual = self.call(name, probe, training)
                    if set(expected) != set(actual):
                        raise SourceMismatchError(
                            f"Signature {name!r} of MetaGraph {tf1_graphs.tags_name(tags)}: migrated outputs {sorted(actual)} "
                            f"differ from the TF1 module's {sorted(expected)}."
                        )
                    diffs[prefix + name] = max(
                        (max_abs_diff(expected[k].numpy(), actual[k].numpy()) for k in expected), default=0.0
                    )
            failed = {k: v for k, v in diffs.items() if not v <= atol}
            if failed:
                raise SourceMismatchError(
                    f"The migration of {self.path!r} does not reproduce the TF1 module (max abs diff must be "
                    f"<= {atol:g}): " + ", ".join(f"{k}: {v:.3g}" for k, v in sorted(failed.items()))
                )
            return {"max_abs_diff": dict(sorted(diffs.items())), "train_not_compared": not_compared}

    return MigratedModule


class _GraphHolder:
    """Holds the imported graphs outside tf.Module's attribute tracking."""

    def __init__(self, graphs: dict[frozenset[str], _Graph]):
        self._graphs = graphs

    def get(self, tags: frozenset[str]) -> _Graph:
        return self._graphs[tags]

    def has(self, tags: frozenset[str]) -> bool:
        return tags in self._graphs

    def items(self) -> list[tuple[frozenset[str], _Graph]]:
        return sorted(self._graphs.items(), key=lambda item: sorted(item[0]))


def _random_ops(fn: Any) -> list[str]:
    """Names of the stateful random ops in a pruned signature function."""
    return sorted(op.name for op in fn.graph.get_operations() if op.type in STATEFUL_RANDOM_OPS)


@functools.lru_cache(maxsize=1)
def module_class() -> type:
    """The `MigratedModule` class (a `tf.Module`; defined once TensorFlow is imported)."""
    return _module_class()


def is_migrated(obj: Any) -> bool:
    """True for an object `migrate` returned (without importing TensorFlow for other objects)."""
    return module_class.cache_info().currsize > 0 and isinstance(obj, module_class())


def migrate(path: str) -> Any:
    """Rebuilds a TF1 Hub-format module directory as a `MigratedModule`.

    Args:
      path: a local TF1 Hub-format module directory (`tfhub_module.pb`, `saved_model.pb`, `variables/`).

    Returns:
      The migrated module: trainable `tf.Variable`s (`variables`,
      `trainable_variables`), its table initializers and assets, and its
      signatures through `call` / `signature_fn`.

    Raises:
      MigrationError: naming the part of the module that cannot be migrated.
    """
    tf = _tf()
    check_module_def(path)
    saved_model = tf1_graphs.read_saved_model(path)
    meta_graphs = tf1_graphs.meta_graphs(path, saved_model)
    chosen = [t for t in (INFERENCE_TAGS, TRAIN_TAGS) if t in meta_graphs]
    var_defs: dict[frozenset[str], list[tf1_graphs.VariableDef]] = {}
    for tags in chosen:
        meta_graphs[tags] = tf1_graphs.with_resource_variables(path, tags, meta_graphs[tags])
        tf1_graphs.check_collections(path, tags, meta_graphs[tags])
        var_defs[tags] = tf1_graphs.variable_defs(path, tags, meta_graphs[tags])
    variables = _make_variables(path, tf, var_defs)
    graphs, initializers = {}, []
    for tags in chosen:
        graphs[tags], initializer = _import(path, tags, meta_graphs[tags], variables, var_defs[tags])
        if initializer is not None:
            initializers.append(initializer)
    if TRAIN_TAGS in graphs:
        _check_same_signatures(path, graphs[INFERENCE_TAGS], graphs[TRAIN_TAGS])
    for initializer in initializers:
        initializer._initialize()  # pylint: disable=protected-access  (what loading does for a saved one)
    attachments = sorted({key for tags in chosen for key in tf1_graphs.attachment_keys(meta_graphs[tags])})
    fingerprint = fingerprints.fingerprint_dir(path)
    ordered = [variables[name] for name in sorted(variables)]
    return module_class()(
        path, fingerprint, graphs, ordered, initializers, sorted(meta_graphs, key=sorted), attachments
    )


def _make_variables(path: str, tf: Any, var_defs: dict[frozenset[str], list[tf1_graphs.VariableDef]]) -> dict[str, Any]:
    """One tf.Variable per variable name, shared by the graphs, valued from the checkpoint."""
    reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
    by_name: dict[str, tf1_graphs.VariableDef] = {}
    for tags, defs in var_defs.items():
        for var in defs:
            first = by_name.setdefault(var.name, var)
            if (first.dtype, first.shape, first.trainable) != (var.dtype, var.shape, var.trainable):
                raise MigrationError(
                    f"Variable {var.name!r} of {path!r} differs between MetaGraphs: {first.dtype.name}"
                    f"{list(first.shape)} trainable={first.trainable} vs {var.dtype.name}{list(var.shape)} "
                    f"trainable={var.trainable} in {tf1_graphs.tags_name(tags)}."
                )
    return {
        name: tf.Variable(
            tf1_graphs.checkpoint_value(path, reader, var), name=name, trainable=var.trainable, dtype=var.dtype
        )
        for name, var in sorted(by_name.items())
    }
