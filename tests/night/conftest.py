"""The night tier (``make test-night``): a small whole night through the Door with its chaos, and
the several-regions workflow (overview and tiles with SEM scan errors) through a real stack.

Together 10-20 min on two loaded cores, which `make test` cannot afford within its 20 minutes;
like ``tests/facility`` it is left out of ``make test`` (``norecursedirs`` in setup.cfg) and has
its own target. Its tests need Tango and are marked ``system``.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.system)
