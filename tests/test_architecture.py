"""The house rules of docs/architecture.md, checked on the source tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "tltk"
SHARED = ("core", "data", "export", "runtime", "tensorrt", "deepstream", "metrics", "viz", "spec", "backbones",
          "modelfile", "boxes")
MODEL_PACKAGES = ("detectnet_v2", "mask_rcnn")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("tltk")}


def test_shared_packages_never_import_a_model_package() -> None:
    offenders = []
    for name, path in _modules().items():
        parts = name.split(".")
        if len(parts) > 1 and parts[1] in SHARED:
            text = path.read_text(encoding="utf-8")
            for imported in _imports(path, top_level_only=False):
                if imported.split(".")[1:2] and imported.split(".")[1] in MODEL_PACKAGES + ("models",):
                    offenders.append(f"{name} imports {imported}")
            for string in re.findall(r"import_module\(\s*[\"']([\w.]+)", text):
                if string.split(".")[1:2] and string.split(".")[1] in MODEL_PACKAGES:
                    offenders.append(f"{name} imports {string} through importlib")
    assert offenders == []


def test_no_import_cycle_at_module_level() -> None:
    modules = _modules()
    graph = {name: {m for m in _imports(path, top_level_only=True) if m in modules and m != name}
             for name, path in modules.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # A package importing its own submodule from __init__ is not a cycle worth reporting.
    real = [c for c in cycles if not all(part.startswith(c[0]) or c[0].startswith(part) for part in c)]
    assert real == []


def test_tao_input_name_is_spelled_once() -> None:
    hits = []
    for name, path in _modules().items():
        if "_proto" in name:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        hits += [name for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value == "input_1"]
    assert hits == ["tltk.detectnet_v2.model"]


def test_one_backend_opener_and_one_atomic_writer() -> None:
    defs: dict[str, list[str]] = {"open_backend": [], "atomic_write_bytes": []}
    replaces = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in defs:
                defs[node.name].append(name)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "replace"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "os"):
                replaces.append(name)
    assert defs == {"open_backend": ["tltk.runtime.backends"], "atomic_write_bytes": ["tltk.fileio"]}
    # Renames that publish a file happen in the atomic-write home (and the shard-set writer, which
    # renames a whole set of finished temporary shards at once).
    assert sorted(set(replaces)) <= ["tltk.data.tensorfile", "tltk.data.tfrecord", "tltk.fileio"]
