"""Reading, checking and rewriting a TF1 Hub-format module's files, for `pipelines.export.tf1_migrate`.

Protos only, nothing imported into a graph: `tfhub_module.pb` (`ModuleDef`),
the MetaGraphs of `saved_model.pb` by tag set, their collections (which ones a
migration can carry over), their variables (`VariableDef`s and checkpoint
values), assets and initializers, and two rewrites done on a copy before a
MetaGraph is imported: TF1 reference variables become resource variables
(`with_resource_variables`), and lookup tables get names unique to one import
(`prepare_for_import`). Every refusal is a `MigrationError` naming the
MetaGraph, collection, variable or op.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipelines.hub import loading


def _tf():
    return loading.import_tf()


MODULE_DEF_FILENAME = "tfhub_module.pb"
FORMAT_V3 = 3
INFERENCE_TAGS: frozenset[str] = frozenset()
TRAIN_TAGS = frozenset({"train"})
# Collections that only describe variables: the migration makes its own tf.Variables.
_VARIABLE_COLLECTIONS = frozenset({"variables", "trainable_variables", "model_variables"})
# Collections imported as they are (tables, assets, init ops, module attachments).
_IMPORTED_COLLECTIONS = frozenset(
    {
        "table_initializer",
        "asset_filepaths",
        "saved_model_assets",
        "saved_model_main_op",
        "legacy_init_op",
        "hub_module_attachments",
    }
)
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
_TABLE_OPS = frozenset(
    {
        "HashTable",
        "HashTableV2",
        "MutableHashTable",
        "MutableHashTableV2",
        "MutableHashTableOfTensors",
        "MutableHashTableOfTensorsV2",
        "MutableDenseHashTable",
        "MutableDenseHashTableV2",
    }
)
_REF_VARIABLE_OPS = frozenset({"Variable", "VariableV2"})


class MigrationError(ValueError):
    """A TF1 Hub-format module that cannot be migrated; the message names the part."""


def is_tf1_hub_module(path: str) -> bool:
    """True for a directory holding `tfhub_module.pb` (TF1 Hub format)."""
    return os.path.isfile(os.path.join(path, MODULE_DEF_FILENAME))


def proto_fields(data: bytes) -> dict[int, list[Any]]:
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
            fields.setdefault(number, []).append(data[i : i + size])
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
            fields = proto_fields(f.read())
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


@dataclasses.dataclass(frozen=True)
class VariableDef:
    """One TF1 variable: its node, handle tensor, dtype, shape, trainability and checkpoint slice."""

    name: str
    tensor: str
    dtype: Any
    shape: tuple[int, ...]
    trainable: bool
    checkpoint_key: str
    offset: tuple[int, ...] | None


def tags_name(tags: frozenset[str]) -> str:
    """A tag set as messages show it: `{}`, `{'train'}`."""
    return "{" + ", ".join(repr(t) for t in sorted(tags)) + "}"


def read_saved_model(path: str) -> Any:
    """The module's `saved_model.pb` as a SavedModel proto; MigrationError if unreadable."""
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


def meta_graphs(path: str, saved_model: Any) -> dict[frozenset[str], Any]:
    """MetaGraph by tag set; MigrationError for duplicate tag sets or no `{}` graph."""
    graphs: dict[frozenset[str], Any] = {}
    for meta_graph in saved_model.meta_graphs:
        tags = frozenset(meta_graph.meta_info_def.tags)
        if tags in graphs:
            raise MigrationError(f"TF1 Hub module {path!r} has two MetaGraphs for tag set {tags_name(tags)}.")
        graphs[tags] = meta_graph
    if INFERENCE_TAGS not in graphs:
        found = ", ".join(tags_name(t) for t in graphs) or "none"
        raise MigrationError(f"TF1 Hub module {path!r} has no MetaGraph for the empty tag set {{}}; tag sets: {found}.")
    return graphs


def check_collections(path: str, tags: frozenset[str], meta_graph: Any) -> None:
    """Refuses collections a migration cannot carry over (`_REFUSED_COLLECTIONS` says why), naming them."""
    where = f"MetaGraph {tags_name(tags)} of {path!r}"
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


def variable_defs(path: str, tags: frozenset[str], meta_graph: Any) -> list[VariableDef]:
    """The graph's variables (after `with_resource_variables`), trainable as its `trainable_variables` says."""
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
        where = f"Variable {name!r} of MetaGraph {tags_name(tags)} of {path!r}"
        if node is None:
            raise MigrationError(f"{where} has no node in the graph.")
        if node.op != "VarHandleOp":
            raise MigrationError(f"{where} is made by op {node.op}; only VarHandleOp resource variables are migrated.")
        shape = tuple(d.size for d in node.attr["shape"].shape.dim)
        if any(d < 0 for d in shape):
            raise MigrationError(f"{where} has a partly unknown shape {list(shape)}; a tf.Variable needs a full shape.")
        slice_info = proto.save_slice_info_def if proto.HasField("save_slice_info_def") else None
        result.append(
            VariableDef(
                name=name,
                tensor=proto.variable_name,
                dtype=tf.as_dtype(node.attr["dtype"].type),
                shape=shape,
                trainable=proto.variable_name in trainable,
                checkpoint_key=slice_info.full_name if slice_info else name,
                offset=tuple(slice_info.var_offset) if slice_info else None,
            )
        )
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


def with_resource_variables(path: str, tags: frozenset[str], meta_graph: Any) -> Any:
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
    where = f"MetaGraph {tags_name(tags)} of {path!r}"
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


def checkpoint_value(path: str, reader: Any, var: VariableDef) -> np.ndarray:
    """A variable's value (its slice, if partitioned) from the checkpoint; MigrationError naming it if absent."""
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


def asset_feeds(path: str, tags: frozenset[str], meta_graph: Any) -> list[tuple[str, str]]:
    """(tensor name, file) of each asset the graph names (its `saved_model_assets` collection)."""
    from tensorflow.core.protobuf import meta_graph_pb2

    feeds = []
    for packed in meta_graph.collection_def["saved_model_assets"].any_list.value:
        asset = meta_graph_pb2.AssetFileDef()
        packed.Unpack(asset)
        file = os.path.join(path, "assets", asset.filename)
        if not os.path.isfile(file):
            raise MigrationError(
                f"MetaGraph {tags_name(tags)} of {path!r} names asset {asset.filename!r} "
                f"(tensor {asset.tensor_info.name!r}), which is not in its assets/ directory."
            )
        feeds.append((asset.tensor_info.name, file))
    return feeds


def init_ops(meta_graph: Any) -> tuple[str, list[str]]:
    """The graph's initialization: (collection, op names): main op, legacy init op, else its table initializers."""
    for key in ("saved_model_main_op", "legacy_init_op", "table_initializer"):
        names = list(meta_graph.collection_def[key].node_list.value) if key in meta_graph.collection_def else []
        if names:
            return key, [n.split(":")[0].lstrip("^") for n in names]
    return "", []


def closure(nodes: Mapping[str, Any], roots: list[str]) -> set[str]:
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


def prepare_for_import(path: str, tags: frozenset[str], meta_graph: Any, suffix: str) -> Any:
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
            f"MetaGraph {tags_name(tags)} of {path!r} has a function library ({names}, ...); TF1 Hub modules "
            "with graph functions are not migrated."
        )
    return copy


def attachment_keys(meta_graph: Any) -> list[str]:
    """Keys of the `hub.attach_message` attachments (ModuleAttachment.key, field 1)."""
    keys = []
    collection = meta_graph.collection_def.get("hub_module_attachments")
    for raw in collection.bytes_list.value if collection is not None else []:
        for key in proto_fields(raw).get(1, []):
            keys.append(key.decode(errors="replace"))
    return keys
