"""Data never runs code: YAML job files cannot build Python objects, and the product code holds no unsafe call.

A job file with `!!python/...` tags is refused through the real command line
(exit 2, its canary never written); the product code of pipelines/ and dags/ is
read with `ast` for pickle and its kin, eval/exec, unsafe YAML loads, os.system,
`extractall` outside the archive module and `shell=True`.
"""

from __future__ import annotations

import ast
import os
import pathlib

from tests.fixtures import reliability as rel
from tests.fixtures.reliability import run


def test_yaml_tags_that_build_python_objects_are_refused(tmp_path, capsys):
    canary = tmp_path / "canary"
    job = tmp_path / "job.yaml"
    for text in (
        f"input: !!python/object/apply:builtins.open [{str(canary)!r}, 'w']\n",
        "output: !!python/name:os.system\n",
        f"!!python/object/new:pathlib.Path [{str(canary)!r}]\n",
    ):
        job.write_text(text)
        result = run(tmp_path / "out", "--config", job, capsys=capsys)
        assert result.rc == 2
        assert "is not valid YAML" in result.err and "python/" in result.err
        assert not canary.exists()


_UNSAFE_CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("cloudpickle", "load"),
    ("cloudpickle", "loads"),
    ("dill", "load"),
    ("dill", "loads"),
    ("marshal", "load"),
    ("marshal", "loads"),
    ("shelve", "open"),
    ("yaml", "unsafe_load"),
    ("yaml", "full_load"),
    ("yaml", "load_all"),
    ("jsonpickle", "decode"),
    ("os", "system"),
    ("os", "popen"),
}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                yield node, None, func.id
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                yield node, func.value.id, func.attr


# The one module allowed to import pickle: it reads torch.save files through Unpickler subclasses
# whose find_class admits only a state dict's own names (checked below, and by tests/test_torch_weights.py).
_RESTRICTED_UNPICKLING = os.path.join("pipelines", "models", "torch_weights.py")


def _unpicklers_without_find_class(tree: ast.AST) -> list[str]:
    """Classes derived (directly or through each other) from pickle.Unpickler that do not define find_class."""
    classes = {node.name: node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}

    def derives(node: ast.ClassDef) -> bool:
        for base in node.bases:
            if isinstance(base, ast.Attribute) and (getattr(base.value, "id", None), base.attr) == (
                "pickle",
                "Unpickler",
            ):
                return True
            if isinstance(base, ast.Name) and base.id in classes and derives(classes[base.id]):
                return True
        return False

    def defines_find_class(node: ast.ClassDef) -> bool:
        return any(isinstance(item, ast.FunctionDef) and item.name == "find_class" for item in node.body)

    return [name for name, node in classes.items() if derives(node) and not defines_find_class(node)]


def test_no_pickle_eval_or_unsafe_yaml_in_the_product_code():
    """Reads every module of pipelines/ and dags/: nothing deserializes or evaluates data with code in it."""
    roots = [os.path.join(rel.REPO, "pipelines"), os.path.join(rel.REPO, "dags")]
    files = [os.path.join(d, f) for root in roots for d, _, names in os.walk(root) for f in names if f.endswith(".py")]
    assert len(files) > 20
    found = []
    for path in files:
        tree = ast.parse(pathlib.Path(path).read_text(), path)
        restricted = os.path.relpath(path, rel.REPO) == _RESTRICTED_UNPICKLING
        if restricted:
            found += [
                f"{path}: {name} unpickles without its own find_class" for name in _unpicklers_without_find_class(tree)
            ]
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not restricted:
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                found += [
                    f"{path}:{node.lineno}: imports {n}"
                    for n in names
                    if n and n.split(".")[0] in ("pickle", "cloudpickle", "dill", "marshal", "shelve", "jsonpickle")
                ]
        for node, owner, name in _calls(tree):
            where = f"{path}:{node.lineno}"
            if owner is None and name in ("eval", "exec", "compile", "__import__"):
                found.append(f"{where}: {name}()")
            if (owner, name) in _UNSAFE_CALLS or (owner, name) == ("pickle", "Unpickler"):
                found.append(f"{where}: {owner}.{name}()")
            if (owner, name) == ("yaml", "load"):
                loader = [k.value for k in node.keywords if k.arg == "Loader"] + node.args[1:2]
                if not (
                    loader and isinstance(loader[0], ast.Attribute) and loader[0].attr in ("SafeLoader", "CSafeLoader")
                ):
                    found.append(f"{where}: yaml.load without SafeLoader")
            if name == "extractall" and os.path.basename(path) != "archives.py":
                found.append(f"{where}: extractall outside archives.safe_extract")
            if (
                name in ("run", "Popen", "call", "check_call", "check_output")
                and owner == "subprocess"
                and any(
                    k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords
                )
            ):
                found.append(f"{where}: subprocess with shell=True")
    assert found == []
    # And the one YAML reader is the safe one.
    config_src = pathlib.Path(rel.REPO, "pipelines", "embedding", "job_yaml.py").read_text()
    assert "yaml.safe_load(" in config_src
