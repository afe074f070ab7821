"""Imports flow one way (docs/architecture.md): a test, not a convention.

Read with ``ast`` (not grep, and without importing anything, so it runs where Tango is not
installed): an import inside a function counts, a word in a docstring does not. The rules:

* nothing under ``servers/`` imports ``simulation``, ``clients`` or ``macros`` (the simulated
  camera is plugged in by name, :data:`servers.CameraDS.simbuild.SIM_RENDERER`);
* no server imports another server; ``servers/common`` imports no server;
* the cores import no ``tango`` (nor Sardana or Taurus): only the device shells and the Tango
  glue modules named in :data:`TANGO_MODULES` do;
* ``macros`` and ``clients`` import nothing from ``servers`` (they meet through Tango);
* the modules of ``simulation`` import each other without a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

SHELLS = {f"servers/{name}/device.py" for name in ("CameraDS", "CoordMapperDS", "ParticleDS", "QueueDS",
                                                   "RegistrationDS")}
"""The device shells: each declares its server's Tango interface and nothing else."""
TANGO_GLUE = {
    # the one device shape, and how a server talks to other devices
    "servers/common/device_base.py", "servers/common/tango_client.py", "servers/common/tango_glue.py",
    # Tango I/O that is not a device's own interface
    "servers/CameraDS/tango_io.py", "servers/CoordMapperDS/motors.py", "servers/ParticleDS/remote_image.py",
}
TANGO_MODULES = SHELLS | TANGO_GLUE
"""The only modules under servers/ that may import tango; every other one is a core."""
TANGO_PACKAGES = ("tango", "PyTango", "sardana", "taurus")


def _parse(path: Path) -> ast.Module:
    """``ast.parse``, tried again on CPython 3.11's "AST constructor recursion depth mismatch":
    seen once in a whole-suite run while other threads of the test process were busy (the
    interpreter's AST recursion counter is not per thread); the same file parses on the next call."""
    text = path.read_text(encoding="utf-8")
    for attempt in range(3):
        try:
            return ast.parse(text, str(path))
        except SystemError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def imported_names(path: Path) -> set[str]:
    """Dotted names of everything ``path`` imports, wherever the import statement sits."""
    names: set[str] = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def server_modules() -> list[Path]:
    return sorted((ROOT / "servers").rglob("*.py"))


def top(name: str) -> str:
    return name.split(".")[0]


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", server_modules(), ids=relative)
def test_servers_import_no_simulation_clients_or_macros(path: Path) -> None:
    wrong = {name for name in imported_names(path) if top(name) in ("simulation", "clients", "macros")}
    assert not wrong, f"{relative(path)} imports {sorted(wrong)}; servers depend on none of them"


@pytest.mark.parametrize("path", server_modules(), ids=relative)
def test_no_server_imports_another(path: Path) -> None:
    parts = path.relative_to(ROOT).parts
    own = parts[1] if len(parts) > 2 else ""
    others = {name for name in imported_names(path)
              if name.startswith("servers.") and name.split(".")[1] not in (own, "common")}
    assert not others, f"{relative(path)} imports another server: {sorted(others)}; servers meet through Tango"


@pytest.mark.parametrize("path", server_modules(), ids=relative)
def test_cores_import_no_tango(path: Path) -> None:
    if relative(path) in TANGO_MODULES:
        return
    tango = {name for name in imported_names(path) if top(name) in TANGO_PACKAGES}
    assert not tango, (f"{relative(path)} is a core and imports {sorted(tango)}; Tango I/O goes into the "
                       "device shell or a named Tango glue module (TANGO_GLUE here, docs/architecture.md)")


def test_every_shell_and_glue_module_exists_and_uses_tango() -> None:
    """The allow-list stays true: no name of a deleted file, no module allowed Tango that does not need it."""
    for name in sorted(TANGO_MODULES):
        path = ROOT / name
        assert path.is_file(), f"TANGO_MODULES names {name}, which does not exist"
        assert any(top(n) in TANGO_PACKAGES for n in imported_names(path)), \
            f"{name} imports no tango: it is a core, take it off TANGO_MODULES"


def test_the_walk_sees_nested_imports_and_not_docstrings(tmp_path: Path) -> None:
    """The walk finds imports inside functions (the old simbuild hid its import there)."""
    module = tmp_path / "m.py"
    module.write_text('"""import tango in a docstring is no import."""\n\n'
                      'def f():\n    from simulation.camera import X\n    import numpy\n')
    assert imported_names(module) == {"simulation.camera", "simulation.camera.X", "numpy"}


def test_the_rules_catch_a_core_that_imports_tango(tmp_path: Path) -> None:
    module = tmp_path / "core.py"
    module.write_text("from tango import DevState\n")
    assert any(top(n) in TANGO_PACKAGES for n in imported_names(module))


@pytest.mark.parametrize("path", sorted([*(ROOT / "macros").rglob("*.py"), *(ROOT / "clients").rglob("*.py")]),
                         ids=relative)
def test_macros_and_clients_import_nothing_from_servers(path: Path) -> None:
    wrong = {name for name in imported_names(path) if top(name) == "servers"}
    assert not wrong, (f"{relative(path)} imports {sorted(wrong)}; macros and clients meet the servers through "
                       "Tango only (docs/architecture.md)")


def module_graph(package: Path) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports}`` (imports inside functions count)."""
    name = package.name
    graph: dict[str, set[str]] = {}
    for path in sorted(package.glob("*.py")):
        imported = {n.split(".")[1] for n in imported_names(path) if n.startswith(f"{name}.") and n.count(".") >= 1}
        graph[path.stem] = {m for m in imported if (package / f"{m}.py").is_file()} - {path.stem}
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (``[a, b, ..., a]``), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt, path + [node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_the_simulation_modules_import_each_other_without_a_circle() -> None:
    """The settings (``config``) import no renderer, and the truth, computed by the renderers,
    sits above them (``simulation/truth.py``): no circle held apart by imports inside functions."""
    cycle = import_cycle(module_graph(ROOT / "simulation"))
    assert cycle is None, f"simulation imports in a circle: {' -> '.join(cycle)}"


def test_the_circle_check_finds_a_circle_through_a_function_level_import(tmp_path: Path) -> None:
    package = tmp_path / "simulation"
    package.mkdir()
    (package / "config.py").write_text("def truth():\n    from simulation.camera import render\n")
    (package / "camera.py").write_text("from simulation.config import Settings\n")
    (package / "sem.py").write_text("from simulation.config import Settings\n")
    assert import_cycle(module_graph(package)) == ["camera", "config", "camera"]
