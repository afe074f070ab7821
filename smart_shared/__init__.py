"""Tango-free logic that the servers, the macros and the clients all need.

The one package every other one may import (docs/architecture.md): ``servers/`` may not import
``macros`` and ``macros/`` may not import ``servers/``, so what both need -- reading a motor's
limits, say -- lives here, once. It imports nothing of this project's other packages, and no
Tango (checked by tests/unit/architecture/test_import_directions.py).
"""
