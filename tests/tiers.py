"""``make test``: the whole suite as four pytest processes, with one summary.

Why not one ``pytest``:

- The unit tier (``tests/unit``) runs on its own with ``tango`` unimportable -- the honest
  tier (tests/conftest.py) -- and beside the system tier, which spends much of its time waiting
  for device servers, scans and moves in real time: the suite takes minutes less. When it is
  done, the Qt tier takes its place; never more than two pytest processes run at once.
- The Qt and Taurus tests (marked ``qt``: they take pytest-qt's ``qtbot`` or ``qapp``) run in a
  process of their own. Taurus keeps attribute objects, polling timers and worker threads for
  the life of the process, and a Tango client process whose event-subscription lock gets stuck
  fails every later subscription in it ("not able to acquire serialization monitor
  'subscription monitor'"): in separate processes one such failure stays in its own tier
  instead of failing the rest of the suite.
- A small whole night (``tests/night/test_night.py``: ``make night`` itself with its chaos,
  7-11 min) runs last in the same lane, after the Qt tier: the unit and Qt tiers take about 9 of
  the system tier's 19 minutes, so the night fills time the lane had idle. (``tests/night`` is
  left out of the other tiers' collection, setup.cfg.)

Given paths (``make test PYTEST_ARGS="tests/system/test_gui.py -x"``), it runs one pytest with
exactly those arguments. Exit status: 0 only when every process passed (a tier that selects no
test, pytest's 5, counts as passed).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NO_TESTS_COLLECTED = 5


@dataclass(frozen=True)
class Tier:
    name: str
    args: tuple[str, ...]


UNIT_TIER = Tier("unit (no Tango)", ("tests/unit",))
SYSTEM_TIER = Tier("system", ("tests", "--ignore=tests/unit", "-m", "not qt", "--durations=15"))
QT_TIER = Tier("Qt and Taurus", ("tests", "--ignore=tests/unit", "-m", "qt", "--durations=5"))
NIGHT_TIER = Tier("night (small)", ("tests/night/test_night.py",))


def pytest_command(args: tuple[str, ...] | list[str], extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", *args, *extra]


def passed(code: int) -> bool:
    return code in (0, NO_TESTS_COLLECTED)


class Lane:
    """Tiers run one after the other in a background thread, each into its own log under
    ``run/test/``, printed when the suite ends (the foreground tier's output stays readable)."""

    def __init__(self, tiers: tuple[Tier, ...], extra: list[str], log_dir: Path) -> None:
        self.tiers, self.extra, self.log_dir = tiers, extra, log_dir
        self.results: list[tuple[Tier, int, float, Path]] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-lane", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for tier in self.tiers:
            if self._stopping.is_set():
                return
            log = self.log_dir / f"{tier.name.split()[0].lower()}.log"
            began = time.monotonic()
            with log.open("w") as out:
                self._process = subprocess.Popen(pytest_command(tier.args, self.extra), cwd=ROOT, stdout=out,
                                                 stderr=subprocess.STDOUT)
                code = self._process.wait()
            self.results.append((tier, code, time.monotonic() - began, log))

    def join(self) -> None:
        self._thread.join()

    def stop(self) -> None:
        """Interrupted: stop the running tier by its own PID, start no other."""
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._thread.join(60)


def run_tiers(extra: list[str]) -> int:
    """The system tier in the foreground; the unit tier, then the Qt tier, then the small
    night, beside it."""
    log_dir = ROOT / "run" / "test"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    lane = Lane((UNIT_TIER, QT_TIER, NIGHT_TIER), extra, log_dir)
    try:
        print(f"\n===== make test: {SYSTEM_TIER.name} tests (the unit and Qt tiers run alongside, "
              f"into {log_dir.relative_to(ROOT)}/) =====", flush=True)
        code = subprocess.call(pytest_command(SYSTEM_TIER.args, extra), cwd=ROOT)
        results = [(SYSTEM_TIER, code, time.monotonic() - started)]
        lane.join()
    finally:
        lane.stop()
    for tier, code, seconds, log in lane.results:
        print(f"\n===== make test: {tier.name} tests (ran alongside; {log.relative_to(ROOT)}) =====", flush=True)
        print(log.read_text(errors="replace"), flush=True)
        results.append((tier, code, seconds))
    print("===== make test: summary =====")
    for tier, code, seconds in results:
        print(f"  {tier.name:<16} {'passed' if passed(code) else f'FAILED (exit {code})':<18} "
              f"{seconds / 60:5.1f} min")
    print(f"  {'whole suite':<16} {'':<18} {(time.monotonic() - started) / 60:5.1f} min", flush=True)
    ran_all = len(results) == 1 + len(lane.tiers)
    return 0 if ran_all and all(passed(code) for _, code, _ in results) else 1


def names_tests(argv: list[str]) -> bool:
    """Whether the arguments name test files or directories (then they choose, not the tiers)."""
    return any(not arg.startswith("-") and (ROOT / arg.split("::")[0]).exists() for arg in argv)


def main(argv: list[str]) -> int:
    if names_tests(argv):
        return subprocess.call(pytest_command(argv, []), cwd=ROOT)
    return run_tiers(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
