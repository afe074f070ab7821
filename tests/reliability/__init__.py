"""The reliability campaign: hostile input, load and faults against the real servers.

``python -m tests.reliability`` (``make reliability``) runs all of it and writes
``run/reliability/results.json`` and ``results.md``; ``test_fast.py`` is the subset that runs
in ``make test``. See docs/reliability.md for what is tried and how a row is judged.
"""
