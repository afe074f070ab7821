"""The night's set-up, without a stack: a tile whose registration into the overview is in doubt
costs that tile, not the night (``Night.register_regions``), no tile at all stops the night with
what to do; a new night does not inherit an earlier night's queue (``forget_earlier_queue``).

The Door is a stand-in that answers each ``smart_register_region`` as the macro would; the rest
of the night is tested on a real stack in tests/night."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clients.demo import Console
from clients.door import MacroFailed
from clients.night import Night, NightInputs, Region

REFUSAL = ("SMART_Unsafe: the registration of tile2.tif into overview is in doubt (confidence 0.2): "
           "nothing was stored")


class _Door:
    """Refuses the regions named in ``refuse`` with the macro's SMART_Unsafe, accepts the others."""

    def __init__(self, refuse: set[str], error: str = REFUSAL) -> None:
        self.refuse, self.error, self.ran = refuse, error, []

    def run(self, macro: str, timeout_s: float) -> None:
        self.ran.append(macro)
        if macro.split()[2] in self.refuse:
            raise MacroFailed(self.error, [("error", self.error)])


class _Registration:
    LastResult = json.dumps({"rotation_deg": 0.5, "scale": 0.1, "confidence": 1.0, "success": True})


def _night(tmp_path: Path, names: list[str]) -> Night:
    night = Night.__new__(Night)  # no stack: only the region step is exercised
    night.inputs = NightInputs(tmp_path / "beamline.json", tmp_path / "sample.json", tmp_path / "truth.json",
                               [Region(name, tmp_path / f"{name}.tif") for name in names], tmp_path / "overview.tif")
    night.console, night.registration = Console(quiet=True), _Registration()
    night.timings, night.refused = {}, {}
    return night


def test_a_refused_tile_is_left_out_and_named(tmp_path: Path) -> None:
    night = _night(tmp_path, ["tile1", "tile2", "tile3"])
    door = _Door({"tile2"})
    kept = night.register_regions(door)
    assert [r.name for r in kept] == ["tile1", "tile3"]
    assert list(night.refused) == ["tile2"] and "SMART_Unsafe" in night.refused["tile2"]
    assert len(door.ran) == 3  # the tiles after the refused one were still tried


def test_no_registered_tile_stops_the_night_saying_what_to_do(tmp_path: Path) -> None:
    night = _night(tmp_path, ["tile1", "tile2"])
    with pytest.raises(MacroFailed, match="no region registered into the overview .*Larger tiles"):
        night.register_regions(_Door({"tile1", "tile2"}))
    assert set(night.refused) == {"tile1", "tile2"}


def test_any_other_failure_is_not_taken_for_a_refusal(tmp_path: Path) -> None:
    night = _night(tmp_path, ["tile1", "tile2"])
    with pytest.raises(MacroFailed, match="TRANSIENT"):
        night.register_regions(_Door({"tile1"}, error="API_CorbaException: TRANSIENT"))
    assert night.refused == {}


def test_a_new_night_forgets_an_earlier_nights_queue_but_not_a_running_ones(tmp_path: Path) -> None:
    from clients.launcher import Stack
    from clients.night import forget_earlier_queue

    stack = Stack(tmp_path / "stack", echo=False)
    queue_file = stack.run_dir / "queue" / "smart_queue_1.sqlite"
    queue_file.parent.mkdir(parents=True)
    queue_file.write_text("an earlier night's targets")
    stack.running = lambda: [object()]  # type: ignore[method-assign]  # a stack still up in that directory
    forget_earlier_queue(stack)
    assert queue_file.exists()
    stack.running = lambda: []  # type: ignore[method-assign]
    forget_earlier_queue(stack)
    assert not queue_file.exists()


class _PausedQueue:
    """A queue the loop paused itself (a drift check in doubt), two targets left."""

    Pending, Running, Paused = 2, 0, True

    def read_attribute(self, name: str):
        assert name == "PauseReason"
        return type("Value", (), {"value": "drift check failed: confidence 0.500"})()


class _LoopThatPaused:
    """``smart_run_queue`` that ended with the drift check's refusal."""

    started = 0

    def __init__(self, tango_host: str, echo) -> None:  # noqa: ANN001
        _LoopThatPaused.started += 1
        self.error = MacroFailed("SMART_Unsafe: drift check failed", [])

    def alive(self) -> bool:
        return False

    def join(self, timeout_s: float) -> None:
        pass


def test_a_queue_the_loop_paused_ends_the_night_with_its_reason(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """No restart of a loop that stopped itself for safety: the night ends saying why."""
    import clients.night as night_module

    monkeypatch.setattr(night_module, "QueueLoop", _LoopThatPaused)
    night = _night(tmp_path, ["tile1"])
    night.stack = type("Stack", (), {"tango_host": "127.0.0.1:1"})()
    night.options = night_module.NightOptions(chaos=False)
    night.visits = tmp_path / "visits.csv"
    night.queue = lambda: _PausedQueue()  # type: ignore[method-assign]
    with pytest.raises(MacroFailed, match="paused the queue with 2 targets left: drift check failed"):
        night.run_queue()
    assert _LoopThatPaused.started == 1


@pytest.mark.parametrize(("available", "total", "expected"), [
    ([112, 100, 89], 300, [111, 100, 89]),   # the short tile's rest goes to the others
    ([75, 80, 90, 100], 300, [75, 75, 75, 75]),  # enough everywhere: equal shares
    ([10, 0, 5], 300, [10, 0, 5]),           # not enough in all: every isolated particle
    ([40, 40], 3, [2, 1]),                   # fewer than regions: none beyond the total
    ([], 300, []),
])
def test_shares_fill_up_from_the_regions_that_have_more(available: list[int], total: int,
                                                         expected: list[int]) -> None:
    from clients.night import fair_shares

    shares = fair_shares(available, total)
    assert shares == expected and sum(shares) == min(total, sum(available))
    assert all(0 <= share <= count for share, count in zip(shares, available, strict=True))
