"""The unit tier needs no Tango: every module under tests/unit imports with ``tango`` unimportable.

``make unit`` already runs with tango blocked (tests/conftest.py); this test makes the same
check part of every run, including ``make test``, where the system tier has loaded tango long
before: it imports each unit test module in a fresh interpreter that cannot import tango.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import TESTS, UNIT

ROOT = TESTS.parent


def unit_modules() -> list[str]:
    return sorted(".".join(path.relative_to(ROOT).with_suffix("").parts)
                  for path in UNIT.rglob("*.py") if path.name != "__init__.py")


def test_every_unit_module_imports_without_tango() -> None:
    modules = unit_modules()
    assert "tests.unit.test_tiers" in modules and len(modules) > 30, modules
    script = textwrap.dedent(f"""
        import importlib, sys
        from tests.conftest import block_tango
        block_tango()
        failed = []
        for name in {modules!r}:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                failed.append(f"{{name}}: {{exc}}")
        print("\\n".join(failed))
        sys.exit(1 if failed else 0)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, ("unit test modules that need tango (move them to tests/system):\n"
                                  + done.stdout + done.stderr[-2000:])


def test_make_test_splits_into_tiers_unless_given_tests() -> None:
    from tests.tiers import NIGHT_TIER, names_tests, passed

    assert all((ROOT / arg).exists() for arg in NIGHT_TIER.args if not arg.startswith("-"))  # the small night

    assert not names_tests([]) and not names_tests(["-x", "-k", "registration"])
    assert names_tests(["tests/unit"]) and names_tests(["tests/system/test_gui.py::test_every_tab_title_is_on_screen"])
    assert passed(0) and passed(5) and not passed(1) and not passed(2)
