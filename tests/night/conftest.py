"""The night tier (``make test-night``): a small whole night through the Door with its chaos, and
the several-regions workflow (overview and tiles with SEM scan errors) through a real stack.

Together 10-20 min on two loaded cores. The folder is left out of the other tiers' collection
(``norecursedirs`` in setup.cfg); ``make test`` runs the small night in a tier of its own, beside
the system tier (tests/tiers.py), ``make test-night`` both. Its tests need Tango and are marked
``system``.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.system)
