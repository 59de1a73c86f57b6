"""The import graph flows one way: a module imports only from its own package or from packages BELOW it.

The order (bottom to top) is written out in :data:`LAYERS` and explained in docs/design.md. Function-local imports
and importlib-style module strings count as imports, so a lazy import cannot hide a cycle.

To see the test fail, add a forbidden import and rerun it, for example::

    echo 'import crossdistill.train.trainer' >> src/crossdistill/losses/uld.py
    python -m pytest tests/test_layering.py -q      # "losses.uld imports train.trainer (a higher layer)"
    git checkout src/crossdistill/losses/uld.py
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "crossdistill"

LAYERS: list[set[str]] = [
    {"errors", "io", "version"},  # standard library only
    {"positions", "tasks", "scaling", "typed", "manifest"},
    {"assets"},
    {"data"},
    {"align"},
    {"losses"},
    {"methods"},
    {"config"},
    {"models", "testing"},
    {"metrics", "transfer"},
    {"teacher"},
    {"train"},
    {"generation", "evaluation", "alignment_report"},
    {"demo"},
    {"api"},
    {"cli", "__init__"},
    {"__main__"},
]
"""Top-level units of ``crossdistill`` (a subpackage or a module), lowest first; one set per layer."""


def unit_of(module: str) -> str:
    """``crossdistill.losses.uld`` -> ``losses``; ``crossdistill`` itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    name = ".".join(rel.parts)
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Every crossdistill module ``path`` imports: top-level, function-local, relative, and module strings."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # ``from pkg import name``: ``name`` may be a submodule; ``from crossdistill import models`` imports the
            # submodule, not the package's __init__
            found |= {f"{base}.{a.name}" for a in node.names} | ({base} if base != "crossdistill" else set())
    found |= set(re.findall(r"""["'](crossdistill(?:\.\w+)+)["']""", source))
    return {m for m in found if m == "crossdistill" or m.startswith("crossdistill.")}


def layer_index() -> dict[str, int]:
    return {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def violations(root: Path = ROOT) -> list[str]:
    index = layer_index()
    out = []
    for path in sorted(root.rglob("*.py")):
        me = module_name(path, root)
        mine = unit_of(me)
        if mine not in index:
            out.append(f"{me} belongs to no layer: add {mine!r} to LAYERS in tests/test_layering.py")
            continue
        targets = imports_of(path, root)
        for target in sorted(targets):
            if target.rsplit(".", 1)[0] in targets:  # ``from a.b import c``: reported once, as a.b
                continue
            theirs = unit_of(target)
            if theirs == mine or (mine == "__init__" and target == "crossdistill"):
                continue
            if theirs not in index:
                out.append(f"{me} imports {target}, which belongs to no layer")
            elif index[theirs] > index[mine] or (index[theirs] == index[mine]):
                out.append(f"{me.removeprefix('crossdistill.')} imports {target.removeprefix('crossdistill.')} "
                           f"(a {'higher' if index[theirs] > index[mine] else 'same-layer'} unit)")
    return out


def test_every_import_points_down():
    assert violations() == []


def test_a_function_local_upward_import_fails(tmp_path):
    """The check itself can fail: a lazy import of the trainer inside a loss module is reported."""
    fake = tmp_path / "crossdistill" / "losses"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from crossdistill.train.trainer import DistillTrainer\n"
                                 "    return importlib.import_module('crossdistill.demo')\n")
    found = violations(tmp_path / "crossdistill")
    assert found == ["losses.bad imports demo (a higher unit)", "losses.bad imports train.trainer (a higher unit)"]


@pytest.mark.parametrize("unit", sorted(u for layer in LAYERS for u in layer if u not in {"__main__", "__init__"}))
def test_every_layer_unit_exists(unit):
    assert (ROOT / unit).is_dir() or (ROOT / f"{unit}.py").is_file(), f"{unit} is listed in LAYERS but absent"


def module_cycles(root: Path = ROOT) -> list[list[str]]:
    """Groups of modules that import each other (function-local imports included), inside packages too."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name or None

    graph = {m: set() for m in modules}
    for m, path in modules.items():
        for target in imports_of(path, root):
            r = resolve(target)
            # a package's __init__ re-exporting its children is not a cycle
            if r and r != m and not r.startswith(m + "."):
                graph[m].add(r)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_in_a_cycle():
    """Within a package too: e.g. ``train.run`` and a module it imports lazily must not import each other."""
    assert module_cycles() == []


def test_a_module_cycle_is_found(tmp_path):
    pkg = tmp_path / "crossdistill" / "train"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("def f():\n    from crossdistill.train.b import g\n")
    (pkg / "b.py").write_text("from crossdistill.train import a\n")
    assert module_cycles(tmp_path / "crossdistill") == [["crossdistill.train.a", "crossdistill.train.b"]]
