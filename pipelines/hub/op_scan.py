"""Reading a module's graphs for the ops the gate refuses (TensorFlow's protos and op registry)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import tensorflow_text  # noqa: F401  (registers the tokenizer ops modules use, so they count as known)
from google.protobuf.message import DecodeError
from tensorflow.core.framework import function_pb2, graph_pb2, node_def_pb2, op_def_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow.python.client import pywrap_tf_session as c_api

from pipelines.hub.op_verdict import OpGateError, RefusedOp

SAVED_MODEL_FILE = "saved_model.pb"
GRAPH = "<graph>"  # where a node of a MetaGraph's own graph (not of a function) is reported

# Families of ops a module never needs to embed or fine-tune. Everything else TensorFlow registers passes.
REFUSED_FAMILIES: dict[str, frozenset[str]] = {
    "reads files": frozenset(
        {
            "ReadFile",
            "MatchingFiles",
            "MatchingFilesDataset",
            "ExperimentalMatchingFilesDataset",
            "WholeFileReader",
            "WholeFileReaderV2",
            "TextLineReader",
            "TextLineReaderV2",
            "TFRecordReader",
            "TFRecordReaderV2",
            "FixedLengthRecordReader",
            "FixedLengthRecordReaderV2",
            "LMDBReader",
            "IdentityReader",
            "IdentityReaderV2",
            "TFRecordDataset",
            "TFRecordDatasetV2",
            "TextLineDataset",
            "FixedLengthRecordDataset",
            "FixedLengthRecordDatasetV2",
            "CSVDataset",
            "CSVDatasetV2",
            "ExperimentalCSVDataset",
            "LMDBDataset",
            "ExperimentalLMDBDataset",
            "SqlDataset",
            "ExperimentalSqlDataset",
            "LoadDataset",
            "SnapshotDatasetReader",
            "SnapshotNestedDatasetReader",
            "SnapshotChunkDataset",
            "ListSnapshotChunksDataset",
            "ImmutableConst",
            "LoadAndRemapMatrix",
            "RecordInput",
            "DTensorRestoreV2",
            "InitializeTableFromTextFile",
        }
    ),  # fmt: skip
    "writes files": frozenset(
        {
            "WriteFile",
            "DatasetToTFRecord",
            "ExperimentalDatasetToTFRecord",
            "SaveDataset",
            "SaveDatasetV2",
            "DistributedSave",
            "SnapshotDataset",
            "SnapshotDatasetV2",
            "CacheDataset",
            "CacheDatasetV2",
            "CreateSummaryFileWriter",
            "CreateSummaryDbWriter",
            "SummaryWriter",
            "WriteSummary",
            "WriteScalarSummary",
            "WriteHistogramSummary",
            "WriteImageSummary",
            "WriteAudioSummary",
            "WriteGraphSummary",
            "WriteRawProtoSummary",
            "FlushSummaryWriter",
            "CloseSummaryWriter",
            "StatsAggregatorSetSummaryWriter",
            "CalibrationStatisticsSaver",
            "FileSystemSetConfiguration",
            "DumpTensor",
            "DebugIdentity",
            "DebugIdentityV2",
            "DebugIdentityV3",
            "DebugNanCount",
            "DebugNumericSummary",
            "DebugNumericSummaryV2",
        }
    ),  # fmt: skip
    "runs Python": frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"}),
    "reaches the network": frozenset(
        {
            "RpcCall",
            "RpcCheckStatus",
            "RpcClient",
            "RpcGetValue",
            "RpcServer",
            "RpcServerRegister",
            "RpcServerStart",
            "DeleteRpcFutureResource",
            "RemoteCall",
            "DataServiceDataset",
            "DataServiceDatasetV2",
            "DataServiceDatasetV3",
            "DataServiceDatasetV4",
            "RegisterDataset",
            "RegisterDatasetV2",
            "Send",
            "Recv",
            "_Send",
            "_Recv",
            "_HostSend",
            "_HostRecv",
        }
    ),  # fmt: skip
}
# Checkpoint ops: allowed only where the module's own saver uses them (restoring its variables on load).
SAVER_OPS = frozenset({"Save", "SaveSlices", "SaveV2", "MergeV2Checkpoints", "Restore", "RestoreSlice", "RestoreV2"})
# Op name prefixes refused as a family (collectives and NCCL reach other processes).
REFUSED_PREFIXES = {"Collective": "reaches the network", "_Nccl": "reaches the network"}
# A table initialized from a text file is allowed when the file name is fed in (the module's asset), not a constant.
TEXT_FILE_TABLE_OPS = frozenset({"InitializeTableFromTextFileV2"})
PRINT_OPS = frozenset({"PrintV2"})


def registered_ops() -> frozenset[str]:
    """Every op TensorFlow (and tensorflow_text, which modules' tokenizers use) registers in this process."""
    ops = op_def_pb2.OpList()
    ops.ParseFromString(c_api.TF_GetBuffer(c_api.TF_GetAllOpList()))
    return frozenset(op.name for op in ops.op)


def _family(op: str) -> str | None:
    for reason, names in REFUSED_FAMILIES.items():
        if op in names:
            return reason
    for prefix, reason in REFUSED_PREFIXES.items():
        if op.startswith(prefix):
            return reason
    return None


def _called_functions(node: node_def_pb2.NodeDef, library: set[str]) -> Iterator[str]:
    """Functions a node calls: through function-valued attributes, or as its op."""
    if node.op in library:
        yield node.op
    for value in node.attr.values():
        if value.HasField("func"):
            yield value.func.name
        yield from (f.name for f in value.list.func)


def _closure(roots: Iterable[str], functions: dict[str, function_pb2.FunctionDef]) -> set[str]:
    seen: set[str] = set()
    todo = [r for r in roots if r in functions]
    library = set(functions)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in functions[name].node_def:
            todo.extend(f for f in _called_functions(node, library) if f not in seen)
    return seen


def _node_name(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]


def _ancestors(graph: graph_pb2.GraphDef, targets: Iterable[str]) -> set[str]:
    by_name = {node.name: node for node in graph.node}
    seen: set[str] = set()
    todo = [_node_name(t) for t in targets if t]
    while todo:
        name = todo.pop()
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        todo.extend(_node_name(i) for i in by_name[name].input)
    return seen


def _const_inputs(nodes: Iterable[node_def_pb2.NodeDef]) -> set[str]:
    return {node.name for node in nodes if node.op == "Const"}


def _check_node(
    node: node_def_pb2.NodeDef, where: str, saver_owned: bool, consts: set[str], known: frozenset[str]
) -> RefusedOp | None:
    op = node.op
    reason = _family(op)
    if reason:
        return RefusedOp(op, where, reason)
    if op in SAVER_OPS and not saver_owned:
        return RefusedOp(op, where, "reads or writes checkpoints outside the module's saver")
    if op in TEXT_FILE_TABLE_OPS and node.input and _node_name(node.input[0]) in consts:
        return RefusedOp(op, where, "reads a file named in the graph, not one of the module's assets")
    if op in PRINT_OPS and node.attr["output_stream"].s.decode(errors="replace").startswith("file://"):
        return RefusedOp(op, where, "writes files")
    if op not in known:
        return RefusedOp(op, where, "is not an op TensorFlow registers (a custom op library)")
    return None


def scan_meta_graph(meta_graph: meta_graph_pb2.MetaGraphDef, known: frozenset[str]) -> list[RefusedOp]:
    """Walks one MetaGraph: its graph's nodes and every function of its library."""
    graph = meta_graph.graph_def
    functions = {f.signature.name: f for f in graph.library.function}
    library = set(functions)
    saver = meta_graph.saver_def
    saver_nodes = _ancestors(graph, [saver.save_tensor_name, saver.restore_op_name, saver.filename_tensor_name])
    saver_roots = [f for node in graph.node if node.name in saver_nodes for f in _called_functions(node, library)]
    other_roots = [f for node in graph.node if node.name not in saver_nodes for f in _called_functions(node, library)]
    saver_functions = _closure(saver_roots, functions)
    # A function the saver calls is the saver's only if nothing else reaches it.
    other_functions = _closure(other_roots + [f for f in functions if f not in saver_functions], functions)
    saver_only = saver_functions - other_functions
    tags = ",".join(meta_graph.meta_info_def.tags) or "no tags"
    graph_where = f"{GRAPH} ({tags})"
    refused = []
    graph_consts = _const_inputs(graph.node)
    for node in graph.node:
        found = _check_node(node, graph_where, node.name in saver_nodes, graph_consts, known)
        refused += [found] if found else []
    for name, function in functions.items():
        consts = _const_inputs(function.node_def)
        for node in function.node_def:
            found = _check_node(node, name, name in saver_only, consts, known)
            refused += [found] if found else []
    return refused


def scan(module_dir: str, known: frozenset[str] | None = None) -> tuple[RefusedOp, ...]:
    """Every op of a module (TF2 SavedModel or TF1 Hub format) the gate refuses, with where it stands.

    Args:
        module_dir: a local module directory holding `saved_model.pb`.
        known: the registered op names; `registered_ops()` when None.

    Raises:
        OpGateError: the module's graphs cannot be read.
    """
    path = os.path.join(module_dir, SAVED_MODEL_FILE)
    saved_model = saved_model_pb2.SavedModel()
    try:
        with open(path, "rb") as f:
            saved_model.ParseFromString(f.read())
    except (OSError, DecodeError) as e:
        raise OpGateError(f"cannot read the graphs of the module at {module_dir}: {e}") from e
    known = registered_ops() if known is None else known
    refused = [r for meta_graph in saved_model.meta_graphs for r in scan_meta_graph(meta_graph, known)]
    unique = {(r.op, r.where): r for r in refused}
    return tuple(sorted(unique.values(), key=lambda r: (r.op, r.where)))
