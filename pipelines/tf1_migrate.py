"""TF1 Hub-format modules as reusable, trainable TF2 objects, for the export tool.

Under TF2, `hub.load` gives a TF1 Hub-format module's signatures as functions
whose variables cannot be trained, and `hub.KerasLayer(trainable=True)`
refuses it. `migrate(path)` rebuilds such a module from its own files:

* one `tf.Variable` per TF1 variable (by name), valued from the module's
  checkpoint, trainable when the TF1 graph lists it in `trainable_variables`
  (what `hub.Module(..., trainable=True)` trained). The variables are shared
  by every MetaGraph, so training through one updates the other;
* each MetaGraph that is migrated (tag set `{}`, and `{"train"}` when the
  module has one) is imported inside `tf.compat.v1.wrap_function` with its
  variable handles mapped to those `tf.Variable`s, and each signature is
  pruned out of it as a function of its inputs returning its dict of outputs;
* its lookup tables are initialized as the TF1 module did (its main op, else
  its `table_initializer` collection) with its `assets/` files, by a
  `TrackableResource` that `tf.saved_model.save` saves and that runs again
  when the saved module is loaded.

`MigratedModule.signature_fn(name)` calls the `{}` graph with `training=False`
and the `{"train"}` graph (dropout etc.) with `training=True`.
`MigratedModule.verify(probes, atol)` compares it with the TF1 module as
`pipelines.modules.load` runs it. `pipelines.export` does both for a TF1
module directory and writes the result as a verified TF2 module.

Refused, with a `MigrationError` naming the part: a directory without
`tfhub_module.pb` or with an unknown `ModuleDef` format or required feature;
no MetaGraph for `{}`; collections the migration does not carry over
(`update_ops`, `regularization_losses`, `local_variables`, TF1 control-flow
contexts, and any collection tensorflow_hub did not support); a TF1 reference
variable (`VariableV2`) used by anything but reads and initial assignments
(those are rewritten for a resource variable) or a variable the checkpoint
lacks; an initializer that writes variables; sparse signature inputs or
outputs; signatures, inputs or outputs that differ between the two graphs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping

import numpy as np

from pipelines import handles, modules

MODULE_DEF_FILENAME = "tfhub_module.pb"
FORMAT_V3 = 3
INFERENCE_TAGS: frozenset[str] = frozenset()
TRAIN_TAGS = frozenset({"train"})
# Collections that only describe variables: the migration makes its own tf.Variables.
_VARIABLE_COLLECTIONS = frozenset({"variables", "trainable_variables", "model_variables"})
# Collections imported as they are (tables, assets, init ops, module attachments).
_IMPORTED_COLLECTIONS = frozenset({
    "table_initializer", "asset_filepaths", "saved_model_assets", "saved_model_main_op", "legacy_init_op",
    "hub_module_attachments",
})
# Collections the migration cannot carry over: why, when they are not empty.
_REFUSED_COLLECTIONS = {
    "update_ops": "ops TF1 training ran beside each step (e.g. batch-norm moving averages); a TF2 module has no "
                  "place for them",
    "regularization_losses": "regularization losses; the exported module's regularization_losses are empty",
    "local_variables": "local variables (e.g. metric accumulators), which the checkpoint does not hold",
    "cond_context": "TF1 control flow (tf.cond); gradients through an imported TF1 cond cannot be built in TF2, "
                    "so the migration would not train (the module still embeds as it is)",
    "while_context": "TF1 control flow (tf.while_loop, e.g. dynamic_rnn); gradients through an imported TF1 loop "
                     "cannot be built in TF2, so the migration would not train (the module still embeds as it is)",
}
_TABLE_OPS = frozenset({
    "HashTable", "HashTableV2", "MutableHashTable", "MutableHashTableV2", "MutableHashTableOfTensors",
    "MutableHashTableOfTensorsV2", "MutableDenseHashTable", "MutableDenseHashTableV2",
})
_REF_VARIABLE_OPS = frozenset({"Variable", "VariableV2"})
# Stateful random ops (dropout): a graph with them gives other outputs on every call.
_RANDOM_OPS = frozenset({
    "Multinomial", "ParameterizedTruncatedNormal", "RandomGamma", "RandomPoisson", "RandomPoissonV2",
    "RandomShuffle", "RandomStandardNormal", "RandomUniform", "RandomUniformInt", "TruncatedNormal",
})
_ANCHOR = "tf1_migrate_anchor"


class MigrationError(ValueError):
    """A TF1 Hub-format module that cannot be migrated; the message names the part."""


class SourceMismatchError(MigrationError):
    """The migration does not reproduce the TF1 module on the probe inputs."""


def _tf():
    return modules.import_tf()


def is_tf1_hub_module(path: str) -> bool:
    """True for a directory holding `tfhub_module.pb` (TF1 Hub format)."""
    return os.path.isfile(os.path.join(path, MODULE_DEF_FILENAME))


def _varints(data: bytes) -> dict[int, list[Any]]:
    """Fields of a tiny proto: field number -> values (varints as ints, length-delimited as bytes)."""
    fields: dict[int, list[Any]] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.setdefault(number, []).append(varint())
        elif wire == 2:
            size = varint()
            fields.setdefault(number, []).append(data[i:i + size])
            i += size
        else:
            raise MigrationError(f"{MODULE_DEF_FILENAME} is not a ModuleDef proto (wire type {wire}).")
    return fields


def check_module_def(path: str) -> None:
    """Checks `tfhub_module.pb`: `ModuleDef{format: FORMAT_V3}` without required features.

    Raises:
      MigrationError: no such file, another format, or required features.
    """
    file = os.path.join(path, MODULE_DEF_FILENAME)
    try:
        with open(file, "rb") as f:
            fields = _varints(f.read())
    except OSError as e:
        raise MigrationError(f"{path!r} is not a TF1 Hub-format module: {e}.") from e
    except IndexError as e:
        raise MigrationError(f"{file!r} is truncated.") from e
    formats = fields.get(1, [0])
    if formats[-1] != FORMAT_V3:
        raise MigrationError(f"{file!r} has ModuleDef format {formats[-1]}; only FORMAT_V3 (3) is known.")
    features = [f.decode(errors="replace") for f in fields.get(2, [])]
    if features:
        raise MigrationError(f"{file!r} requires features {features}, which no TF1 Hub loader supported.")


# --------------------------------------------------------------------------- reading the module


@dataclasses.dataclass(frozen=True)
class _VariableDef:
    name: str
    tensor: str
    dtype: Any
    shape: tuple[int, ...]
    trainable: bool
    checkpoint_key: str
    offset: tuple[int, ...] | None


def _tags_name(tags: frozenset[str]) -> str:
    return "{" + ", ".join(repr(t) for t in sorted(tags)) + "}"


def _read_saved_model(path: str) -> Any:
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    try:
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            saved_model.ParseFromString(f.read())
    except OSError as e:
        raise MigrationError(f"TF1 Hub module {path!r} has no readable saved_model.pb: {e}.") from e
    except Exception as e:  # protobuf's DecodeError
        raise MigrationError(f"{os.path.join(path, 'saved_model.pb')!r} is not a SavedModel proto: {e}.") from e
    return saved_model


def _meta_graphs(path: str, saved_model: Any) -> dict[frozenset[str], Any]:
    graphs: dict[frozenset[str], Any] = {}
    for meta_graph in saved_model.meta_graphs:
        tags = frozenset(meta_graph.meta_info_def.tags)
        if tags in graphs:
            raise MigrationError(f"TF1 Hub module {path!r} has two MetaGraphs for tag set {_tags_name(tags)}.")
        graphs[tags] = meta_graph
    if INFERENCE_TAGS not in graphs:
        found = ", ".join(_tags_name(t) for t in graphs) or "none"
        raise MigrationError(f"TF1 Hub module {path!r} has no MetaGraph for the empty tag set {{}}; tag sets: {found}.")
    return graphs


def _check_collections(path: str, tags: frozenset[str], meta_graph: Any) -> None:
    where = f"MetaGraph {_tags_name(tags)} of {path!r}"
    for key, collection in sorted(meta_graph.collection_def.items()):
        if key in _VARIABLE_COLLECTIONS or key in _IMPORTED_COLLECTIONS:
            continue
        kind = collection.WhichOneof("kind")
        size = len(getattr(collection, kind).value) if kind else 0
        if key in _REFUSED_COLLECTIONS:
            if size:
                raise MigrationError(
                    f"{where}: collection {key!r} holds {size} entries: {_REFUSED_COLLECTIONS[key]}. Not migrated."
                )
            continue
        supported = sorted(_VARIABLE_COLLECTIONS | _IMPORTED_COLLECTIONS | set(_REFUSED_COLLECTIONS))
        raise MigrationError(
            f"{where}: unsupported collection {key!r} ({size} entries); collections a TF1 Hub module may have: "
            f"{', '.join(supported)}."
        )


def _variable_defs(path: str, tags: frozenset[str], meta_graph: Any) -> list[_VariableDef]:
    from tensorflow.core.framework import variable_pb2

    tf = _tf()
    nodes = {node.name: node for node in meta_graph.graph_def.node}
    trainable = set()
    for raw in meta_graph.collection_def["trainable_variables"].bytes_list.value:
        proto = variable_pb2.VariableDef()
        proto.ParseFromString(raw)
        trainable.add(proto.variable_name)
    result = []
    for raw in meta_graph.collection_def["variables"].bytes_list.value:
        proto = variable_pb2.VariableDef()
        proto.ParseFromString(raw)
        name = proto.variable_name.split(":")[0]
        node = nodes.get(name)
        where = f"Variable {name!r} of MetaGraph {_tags_name(tags)} of {path!r}"
        if node is None:
            raise MigrationError(f"{where} has no node in the graph.")
        if node.op != "VarHandleOp":
            raise MigrationError(f"{where} is made by op {node.op}; only VarHandleOp resource variables are migrated.")
        shape = tuple(d.size for d in node.attr["shape"].shape.dim)
        if any(d < 0 for d in shape):
            raise MigrationError(f"{where} has a partly unknown shape {list(shape)}; a tf.Variable needs a full shape.")
        slice_info = proto.save_slice_info_def if proto.HasField("save_slice_info_def") else None
        result.append(_VariableDef(
            name=name,
            tensor=proto.variable_name,
            dtype=tf.as_dtype(node.attr["dtype"].type),
            shape=shape,
            trainable=proto.variable_name in trainable,
            checkpoint_key=slice_info.full_name if slice_info else name,
            offset=tuple(slice_info.var_offset) if slice_info else None,
        ))
    return result


def _consumers(graph_def: Any) -> dict[str, list[tuple[Any, int]]]:
    """Node name -> (consuming node, input index) of its data outputs (control inputs left out)."""
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in graph_def.node:
        for index, name in enumerate(node.input):
            if not name.startswith("^"):
                consumers.setdefault(name.split(":")[0], []).append((node, index))
    return consumers


def _retype(node: Any, op: str, drop: tuple[str, ...] = ()) -> None:
    """Turns a ref-variable op into its resource-variable op: `T` becomes `dtype`, `drop` attrs go."""
    dtype = node.attr["T"].type
    for key in ("T", "_output_shapes", *drop):
        if key in node.attr:
            del node.attr[key]
    node.op = op
    node.attr["dtype"].type = dtype


def _with_resource_variables(path: str, tags: frozenset[str], meta_graph: Any) -> Any:
    """The MetaGraph with its TF1 reference variables (`VariableV2`) rewritten as resource variables.

    A reference variable has no resource handle that a tf.Variable could stand
    in for. Its node becomes a `VarHandleOp`, its reads (`Identity`) become
    `ReadVariableOp`s, its assignments (`Assign`, only run by initializers)
    `AssignVariableOp`s and `IsVariableInitialized` `VarIsInitializedOp`. A
    saver's own subgraph is dropped (the migration reads the checkpoint
    itself). Any other use (e.g. `AssignAdd`, `ScatterUpdate` in a signature)
    is refused, naming the op.
    """
    from tensorflow.core.protobuf import meta_graph_pb2

    refs = {node.name for node in meta_graph.graph_def.node if node.op in _REF_VARIABLE_OPS}
    if not refs:
        return meta_graph
    where = f"MetaGraph {_tags_name(tags)} of {path!r}"
    copy = meta_graph_pb2.MetaGraphDef()
    copy.CopyFrom(meta_graph)
    if copy.HasField("saver_def"):
        scope = copy.saver_def.filename_tensor_name.split("/")[0]
        kept = [n for n in copy.graph_def.node if n.name != scope and not n.name.startswith(scope + "/")]
        del copy.graph_def.node[:]
        copy.graph_def.node.extend(kept)
        copy.ClearField("saver_def")
    consumers = _consumers(copy.graph_def)
    for node in list(copy.graph_def.node):
        if node.name in refs:
            node.op = "VarHandleOp"
            if "_output_shapes" in node.attr:  # a ref output of the variable's shape; a handle is a scalar
                del node.attr["_output_shapes"]
            node.attr["shared_name"].s = node.attr["shared_name"].s or node.name.encode()
            continue
        uses = [i for i, name in enumerate(node.input) if not name.startswith("^") and name.split(":")[0] in refs]
        if not uses:
            continue
        variable = node.input[uses[0]].split(":")[0]
        if node.op == "Identity":
            _retype(node, "ReadVariableOp")
        elif node.op == "IsVariableInitialized":
            del node.attr["dtype"]
            node.op = "VarIsInitializedOp"  # same output: a scalar bool
        elif node.op == "Assign" and uses == [0] and not consumers.get(node.name):
            _retype(node, "AssignVariableOp", ("use_locking", "validate_shape"))
        else:
            raise MigrationError(
                f"{where}: TF1 reference variable {variable!r} is used by op {node.name!r} ({node.op}), which needs "
                "the reference itself; only its reads (Identity), initial assignments (Assign) and "
                "IsVariableInitialized can be rewritten for a resource variable. Not migrated."
            )
    return copy


def _checkpoint_value(path: str, reader: Any, var: _VariableDef) -> np.ndarray:
    if not reader.has_tensor(var.checkpoint_key):
        keys = sorted(reader.get_variable_to_shape_map())
        raise MigrationError(
            f"Variable {var.name!r} of {path!r} is not in its checkpoint variables/variables (key "
            f"{var.checkpoint_key!r}); checkpoint keys: {', '.join(map(repr, keys[:20])) or 'none'}."
        )
    value = reader.get_tensor(var.checkpoint_key)
    if var.offset is not None:
        value = value[tuple(slice(o, o + s) for o, s in zip(var.offset, var.shape))]
    if tuple(value.shape) != var.shape:
        raise MigrationError(
            f"Variable {var.name!r} of {path!r} has shape {list(var.shape)} but its checkpoint value "
            f"{var.checkpoint_key!r} has shape {list(value.shape)}."
        )
    return value


def _asset_feeds(path: str, tags: frozenset[str], meta_graph: Any) -> list[tuple[str, str]]:
    """(tensor name, file) of each asset the graph names (its `saved_model_assets` collection)."""
    from tensorflow.core.protobuf import meta_graph_pb2

    feeds = []
    for packed in meta_graph.collection_def["saved_model_assets"].any_list.value:
        asset = meta_graph_pb2.AssetFileDef()
        packed.Unpack(asset)
        file = os.path.join(path, "assets", asset.filename)
        if not os.path.isfile(file):
            raise MigrationError(
                f"MetaGraph {_tags_name(tags)} of {path!r} names asset {asset.filename!r} "
                f"(tensor {asset.tensor_info.name!r}), which is not in its assets/ directory."
            )
        feeds.append((asset.tensor_info.name, file))
    return feeds


def _init_ops(meta_graph: Any) -> tuple[str, list[str]]:
    """The graph's initialization: (collection, op names): main op, legacy init op, else its table initializers."""
    for key in ("saved_model_main_op", "legacy_init_op", "table_initializer"):
        names = list(meta_graph.collection_def[key].node_list.value) if key in meta_graph.collection_def else []
        if names:
            return key, [n.split(":")[0].lstrip("^") for n in names]
    return "", []


def _closure(nodes: Mapping[str, Any], roots: list[str]) -> set[str]:
    """Names of the nodes `roots` depend on (data and control inputs), roots included."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        stack.extend(i.lstrip("^").split(":")[0] for i in nodes[name].input)
    return seen


def _prepare_graph_def(path: str, tags: frozenset[str], meta_graph: Any, suffix: str) -> Any:
    """A copy of the MetaGraph ready to import: variable collections dropped, table names made unique.

    Lookup tables keep one name per node (as in a TF1 session, where each node
    has one kernel), made unique to this import so that the pruned
    initializer and signatures share their table and two imports do not.
    """
    from tensorflow.core.protobuf import meta_graph_pb2

    copy = meta_graph_pb2.MetaGraphDef()
    copy.CopyFrom(meta_graph)
    for key in list(copy.collection_def):
        if key in _VARIABLE_COLLECTIONS or key == "hub_module_attachments":
            del copy.collection_def[key]
    for node in copy.graph_def.node:
        if node.op in _TABLE_OPS:
            shared = node.attr["shared_name"].s or node.name.encode()
            node.attr["shared_name"].s = shared + suffix.encode()
            # True: TensorFlow's loader gives a HashTableV2 without it a name of its own in every function.
            node.attr["use_node_name_sharing"].b = True
    if copy.graph_def.library.function:
        names = ", ".join(f.signature.name for f in copy.graph_def.library.function[:5])
        raise MigrationError(
            f"MetaGraph {_tags_name(tags)} of {path!r} has a function library ({names}, ...); TF1 Hub modules "
            "with graph functions are not migrated."
        )
    return copy


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
    path: str, tags: frozenset[str], meta_graph: Any, variables: dict[str, Any], var_defs: list[_VariableDef],
) -> tuple[_Graph, Any | None]:
    """Imports one MetaGraph with its variables mapped to `variables`; returns it and its table initializer."""
    tf = _tf()
    where = f"MetaGraph {_tags_name(tags)} of {path!r}"
    suffix = f"_tf1_migrate_{next(_IMPORT_COUNTER)}"
    prepared = _prepare_graph_def(path, tags, meta_graph, suffix)
    nodes = {node.name: node for node in prepared.graph_def.node}
    init_collection, init_ops = _init_ops(prepared)
    variable_nodes = {v.name for v in var_defs}
    touched = sorted(_closure(nodes, init_ops) & variable_nodes)
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
    signatures = {name: _prune_signature(wrapped, where, name, sig) for name, sig in sorted(meta_graph.signature_def.items())}
    initializer = None
    if init_ops:
        feeds = _asset_feeds(path, tags, meta_graph)
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

        def __init__(self, path: str, fingerprint: str, graphs: dict[frozenset[str], _Graph], variables: list[Any],
                     initializers: list[Any], tag_sets: list[frozenset[str]], attachments: list[str]):
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
                    _tags_name(tags): graph.init_collection or None for tags, graph in self._graphs.items()
                },
                "attachments": list(self.attachments),
            }

        def verify(self, probes: Mapping[str, Mapping[str, Any]], atol: float) -> dict[str, Any]:
            """Compares every migrated signature with the TF1 module's, graph by graph, on `probes`.

            The `{}` graph's signatures are compared with the TF1 module as
            `modules.load` (i.e. `hub.load`) runs it; the `{"train"}` graph's
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
            graphs = [(INFERENCE_TAGS, "", modules.load(self.path))]
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
                            f"Signature {name!r} of MetaGraph {_tags_name(tags)}: migrated outputs {sorted(actual)} "
                            f"differ from the TF1 module's {sorted(expected)}."
                        )
                    diffs[prefix + name] = max(
                        (_max_abs_diff(expected[k].numpy(), actual[k].numpy()) for k in expected), default=0.0
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
    return sorted(op.name for op in fn.graph.get_operations() if op.type in _RANDOM_OPS)


def _max_abs_diff(expected: np.ndarray, actual: np.ndarray) -> float:
    if expected.shape != actual.shape:
        return float("inf")
    if not (np.issubdtype(expected.dtype, np.floating) and np.issubdtype(actual.dtype, np.floating)):
        return 0.0 if np.array_equal(expected, actual) else float("inf")
    if expected.size == 0:
        return 0.0
    return float(np.max(np.abs(expected.astype(np.float64) - actual.astype(np.float64))))


@functools.lru_cache(maxsize=1)
def module_class() -> type:
    """The `MigratedModule` class (a `tf.Module`; defined once TensorFlow is imported)."""
    return _module_class()


def is_migrated(obj: Any) -> bool:
    """True for an object `migrate` returned (without importing TensorFlow for other objects)."""
    return module_class.cache_info().currsize > 0 and isinstance(obj, module_class())


def migrate(path: str) -> Any:
    """Rebuilds a TF1 Hub-format module directory as a `MigratedModule` (see the module docstring).

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
    saved_model = _read_saved_model(path)
    meta_graphs = _meta_graphs(path, saved_model)
    chosen = [t for t in (INFERENCE_TAGS, TRAIN_TAGS) if t in meta_graphs]
    var_defs: dict[frozenset[str], list[_VariableDef]] = {}
    for tags in chosen:
        meta_graphs[tags] = _with_resource_variables(path, tags, meta_graphs[tags])
        _check_collections(path, tags, meta_graphs[tags])
        var_defs[tags] = _variable_defs(path, tags, meta_graphs[tags])
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
    attachments = sorted({
        key for tags in chosen for key in _attachment_keys(meta_graphs[tags])
    })
    fingerprint = handles.fingerprint_dir(path)
    ordered = [variables[name] for name in sorted(variables)]
    return module_class()(path, fingerprint, graphs, ordered, initializers, sorted(meta_graphs, key=sorted), attachments)


def _make_variables(path: str, tf: Any, var_defs: dict[frozenset[str], list[_VariableDef]]) -> dict[str, Any]:
    """One tf.Variable per variable name, shared by the graphs, valued from the checkpoint."""
    reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
    by_name: dict[str, _VariableDef] = {}
    for tags, defs in var_defs.items():
        for var in defs:
            first = by_name.setdefault(var.name, var)
            if (first.dtype, first.shape, first.trainable) != (var.dtype, var.shape, var.trainable):
                raise MigrationError(
                    f"Variable {var.name!r} of {path!r} differs between MetaGraphs: {first.dtype.name}"
                    f"{list(first.shape)} trainable={first.trainable} vs {var.dtype.name}{list(var.shape)} "
                    f"trainable={var.trainable} in {_tags_name(tags)}."
                )
    return {
        name: tf.Variable(_checkpoint_value(path, reader, var), name=name, trainable=var.trainable, dtype=var.dtype)
        for name, var in sorted(by_name.items())
    }


def _attachment_keys(meta_graph: Any) -> list[str]:
    """Keys of the `hub.attach_message` attachments (ModuleAttachment.key, field 1)."""
    keys = []
    collection = meta_graph.collection_def.get("hub_module_attachments")
    for raw in collection.bytes_list.value if collection is not None else []:
        for key in _varints(raw).get(1, []):
            keys.append(key.decode(errors="replace"))
    return keys
