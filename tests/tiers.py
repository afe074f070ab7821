"""``make test``: the whole suite as three pytest processes, with one summary.

Why not one ``pytest``:

- The unit tier (``tests/unit``) runs on its own with ``tango`` unimportable -- the honest
  tier (tests/conftest.py) -- and beside the rest: it keeps the CPU busy while the system tier
  mostly waits for device servers, so the suite takes minutes less.
- The Qt and Taurus tests (marked ``qt``: they take pytest-qt's ``qtbot`` or ``qapp``) run in a
  process of their own. Taurus keeps attribute objects, polling timers and worker threads for
  the life of the process, and a Tango client process whose event-subscription lock gets stuck
  fails every later subscription in it ("not able to acquire serialization monitor
  'subscription monitor'"): in separate processes one such failure stays in its own tier
  instead of failing the rest of the suite.

Given paths (``make test PYTEST_ARGS="tests/system/test_gui.py -x"``), it runs one pytest with
exactly those arguments. Exit status: 0 only when every process passed (a tier that selects no
test, pytest's 5, counts as passed).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NO_TESTS_COLLECTED = 5


@dataclass(frozen=True)
class Tier:
    name: str
    args: tuple[str, ...]


TIERS = (
    Tier("unit (no Tango)", ("tests/unit",)),
    Tier("system", ("tests", "--ignore=tests/unit", "-m", "not qt", "--durations=15")),
    Tier("Qt and Taurus", ("tests", "--ignore=tests/unit", "-m", "qt", "--durations=5")),
)


def pytest_command(args: tuple[str, ...] | list[str], extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", *args, *extra]


def passed(code: int) -> bool:
    return code in (0, NO_TESTS_COLLECTED)


def pytest_seconds(output: str, otherwise_s: float) -> float:
    """A pytest run's own duration, from its last line ("... in 539.51s (0:08:59) ..."): the unit
    tier ends long before the others, which is when it is waited for."""
    lines = output.strip().splitlines()
    match = re.search(r" in ([0-9.]+)s", lines[-1]) if lines else None
    return float(match.group(1)) if match else otherwise_s


def run_tiers(extra: list[str]) -> int:
    """The unit tier in the background (its output kept for the end), the other two in turn."""
    log_dir = ROOT / "run" / "test"
    log_dir.mkdir(parents=True, exist_ok=True)
    unit_log = log_dir / "unit.log"
    results: list[tuple[Tier, int, float]] = []
    started = time.monotonic()
    with unit_log.open("w") as log:
        unit = subprocess.Popen(pytest_command(TIERS[0].args, extra), cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            for tier in TIERS[1:]:
                print(f"\n===== make test: {tier.name} tests =====", flush=True)
                began = time.monotonic()
                code = subprocess.call(pytest_command(tier.args, extra), cwd=ROOT)
                results.append((tier, code, time.monotonic() - began))
            code = unit.wait()
            unit_ended = time.monotonic()
        finally:
            if unit.poll() is None:  # interrupted: stop the background tier by its own PID
                unit.terminate()
                try:
                    unit.wait(30)
                except subprocess.TimeoutExpired:
                    unit.kill()
                    unit.wait()
    results.insert(0, (TIERS[0], code, pytest_seconds(unit_log.read_text(errors="replace"), unit_ended - started)))
    print(f"\n===== make test: {TIERS[0].name} tests (ran alongside; {unit_log.relative_to(ROOT)}) =====",
          flush=True)
    print(unit_log.read_text(errors="replace"), flush=True)
    print("===== make test: summary =====")
    for tier, code, seconds in results:
        print(f"  {tier.name:<16} {'passed' if passed(code) else f'FAILED (exit {code})':<18} "
              f"{seconds / 60:5.1f} min")
    print(f"  {'whole suite':<16} {'':<18} {(time.monotonic() - started) / 60:5.1f} min", flush=True)
    return 0 if all(passed(code) for _, code, _ in results) else 1


def names_tests(argv: list[str]) -> bool:
    """Whether the arguments name test files or directories (then they choose, not the tiers)."""
    return any(not arg.startswith("-") and (ROOT / arg.split("::")[0]).exists() for arg in argv)


def main(argv: list[str]) -> int:
    if names_tests(argv):
        return subprocess.call(pytest_command(argv, []), cwd=ROOT)
    return run_tiers(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
