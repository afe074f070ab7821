"""Fixtures shared by all tests: where test runs may write."""

from __future__ import annotations

import os

# Qt widgets in tests render offscreen; set before any Qt import.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
