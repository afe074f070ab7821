"""Settings shared by all tests, and the rule that keeps the two tiers honest.

``tests/unit`` needs no Tango: run alone (``make unit``, or pytest given only paths under
``tests/unit``), it runs with ``tango`` made unimportable, so a unit test that reaches Tango --
directly or through the module it tests -- fails at once instead of quietly needing a control
system. ``tests/unit/test_tiers.py`` checks the same in a fresh interpreter when both tiers run
together. Everything under ``tests/system`` is marked ``system``: ``-m system`` selects that
tier, ``-m "not system"`` leaves it out.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Qt widgets in tests render offscreen; set before any Qt import.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TESTS = Path(__file__).resolve().parent
UNIT = TESTS / "unit"
SYSTEM = TESTS / "system"
TANGO_MODULES = ("tango", "PyTango")
"""The names under which PyTango can be imported; the unit tier may import neither."""


def only_unit_tests(args: list[str], invocation_dir: Path) -> bool:
    """True when every path pytest was given lies under tests/unit (no path: the whole suite)."""
    paths = [(invocation_dir / arg.split("::")[0]).resolve() for arg in args if not arg.startswith("-")]
    return bool(paths) and all(path == UNIT or UNIT in path.parents for path in paths)


def block_tango() -> None:
    """Make ``import tango`` (and ``import PyTango``) raise ImportError in this process."""
    for name in TANGO_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]  # a None entry makes the import fail


def pytest_configure(config: pytest.Config) -> None:
    if not only_unit_tests(list(config.args), Path(config.invocation_params.dir)):
        return
    loaded = [name for name in TANGO_MODULES if sys.modules.get(name) is not None]
    if loaded:
        raise pytest.UsageError(f"{', '.join(loaded)} was imported before the unit tests started (by a pytest "
                                "plugin?); the unit tier runs without Tango: disable that plugin in setup.cfg")
    block_tango()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SYSTEM in item.path.parents:
            item.add_marker(pytest.mark.system)
