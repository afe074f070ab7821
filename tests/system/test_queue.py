"""The night queue through a real Door: a queue runs; a second client pauses, resumes, skips
and retries while it runs; SIGKILL of the MacroServer and of QueueDS mid-scan leaves every
target done exactly once; a beam loss makes the loop wait and go on; bad input answers
SMART_* and changes nothing (docs/queue.md).

The targets are particles detected by ParticleDS on the sample's SEM image. The SEM -> stage
alignment is given from the simulation's truth (what smart_fine_align measures;
test_workflow.py covers measuring it), so these tests spend their time on the queue.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tango

from clients.door import DoorClient, MacroFailed
from clients.launcher import Stack
from macros.smart_calls import TangoThread
from tests.system.stacks import detect_with_true_sem_mapping, running_stack
from tests.tango_helpers import stack_proxy as proxy

pytestmark = pytest.mark.timeout(900)

SCAN = {"macro": "mesh", "half_width_um": 0.15, "step_um": 0.05, "exposure": 0.01}
DONE_LINE = re.compile(r"^target (\d+)(?: \(particle \d+\))?: done$")


class Loop:
    """smart_run_queue on the Door in a thread, with every line the Door says."""

    def __init__(self, stack: Stack, macro: str = "smart_run_queue") -> None:
        self.lines: list[str] = []
        self.error: BaseException | None = None
        self._door = DoorClient(f"tango://{stack.tango_host}/smart/door/01",
                                echo=lambda stream, line: self.lines.append(line))
        self._thread = TangoThread(target=self._run, args=(macro,), daemon=True)
        self._thread.start()

    def _run(self, macro: str) -> None:
        self.lines.clear()  # subscribing delivered the Door's last lines (an earlier macro's)
        try:
            self._door.run(macro, timeout_s=600)
        except BaseException as exc:  # noqa: BLE001 - a killed MacroServer ends it, as some tests intend
            self.error = exc

    def join(self, timeout_s: float = 600) -> None:
        self._thread.join(timeout_s)
        self._door.close()
        assert not self._thread.is_alive(), "the loop did not end"

    def alive(self) -> bool:
        return self._thread.is_alive()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, period_s: float = 0.1,
             loop: Loop | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(period_s)
    said = "\n".join(loop.lines[-20:]) if loop is not None else ""
    pytest.fail(f"not within {timeout_s:.0f} s: {what}" + (f"; the loop said:\n{said}" if said else ""))


@pytest.fixture(scope="module")
def queue_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, list[int]]]:
    """The stack with particles detected on the SEM image and sem -> stage known."""
    stack = Stack(tmp_path_factory.mktemp("queue") / "stack", echo=False, sem_image=True)
    with running_stack(stack):
        particles = detect_with_true_sem_mapping(stack, stack._ensure_sem_image())
        isolated = [i for i, flag in enumerate(particles.read_attribute("Isolated").value) if flag]
        assert len(isolated) >= 8, f"the sample has only {len(isolated)} isolated particles"
        yield stack, isolated


def empty_queue(queue: tango.DeviceProxy, stack: Stack) -> None:
    """No loop running, nothing in the queue: an earlier test that failed mid-run leaves neither."""
    with DoorClient(f"tango://{stack.tango_host}/smart/door/01") as door:
        if door.is_busy():
            door.proxy.AbortMacro()
        wait_for(lambda: not door.is_busy(), 60, "the Door is free")
    queue.Resume()
    for target in json.loads(queue.Targets):
        if target["state"] == "running":  # left by an aborted loop: take the claim over and end it
            claim = json.loads(queue.ClaimNext(json.dumps({"worker": target["worker"]})))
            queue.Finish(json.dumps({"id": claim["target"]["id"], "token": claim["token"], "outcome": "skipped"}))
    queue.Clear(json.dumps({"states": ["done", "failed", "skipped"]}))
    pending = [t["id"] for t in json.loads(queue.Targets) if t["state"] == "pending"]
    if pending:
        queue.Remove(json.dumps({"ids": pending}))
    assert json.loads(queue.Targets) == []


def add(queue: tango.DeviceProxy, particles: list[int]) -> list[int]:
    return json.loads(queue.AddParticles(json.dumps({"particles": particles, "scan": SCAN})))["added"]


def targets(queue: tango.DeviceProxy) -> dict[int, dict]:
    return {t["id"]: t for t in json.loads(queue.Targets)}


def activity(queue: tango.DeviceProxy) -> dict:
    return json.loads(queue.Activity)


def done_lines(lines: list[str]) -> Counter:
    return Counter(int(m.group(1)) for line in lines if (m := DONE_LINE.match(line.strip())))


def door_free(stack: Stack) -> None:
    with DoorClient(f"tango://{stack.tango_host}/smart/door/01") as door:
        wait_for(lambda: not door.is_busy(), 60, "the Door is free")


def refused(call: Callable[[], object], reason: str) -> str:
    with pytest.raises(tango.DevFailed) as info:
        call()
    assert info.value.args[0].reason == reason, info.value.args[0].desc
    return info.value.args[0].desc


def test_bad_input_answers_smart_and_changes_nothing(queue_stack, tmp_path: Path) -> None:
    stack, isolated = queue_stack
    queue = proxy(stack, "smart/queue/1")
    empty_queue(queue, stack)
    ids = add(queue, isolated[:2])
    csv_file = tmp_path / "targets.csv"
    csv_file.write_text("particle,colour\n1,red\n")
    before = (queue.Targets, queue.Revision)
    bad = [
        ("AddParticles", {"particles": [99_999], "scan": SCAN}, "SMART_NotFound"),                 # particle
        ("AddParticles", {"particles": "isolated", "scan": SCAN, "frame": "afm"}, "SMART_NotFound"),  # frame
        ("AddParticles", {"particles": "isolated", "scan": {**SCAN, "macro": "ascan"}}, "SMART_BadArgument"),
        ("AddParticles", {"particles": "isolated", "scan": {**SCAN, "dwell": 1}}, "SMART_BadArgument"),
        ("AddParticles", {"particles": isolated[:3], "scan": SCAN}, "SMART_BadArgument"),          # duplicate
        ("AddPoints", {"points": [{"frame": "afm", "x": 1, "y": 2}], "scan": SCAN}, "SMART_NotFound"),
        ("AddCsv", {"path": str(csv_file), "scan": SCAN}, "SMART_BadArgument"),                    # column
        ("Remove", {"ids": [12345]}, "SMART_NotFound"),
        ("Reorder", {"ids": [ids[0], ids[0]]}, "SMART_BadArgument"),
        ("SetPolicy", {"no_signal": "ignore"}, "SMART_BadArgument"),
    ]
    for command, argument, reason in bad:
        refused(lambda c=command, a=argument: queue.command_inout(c, json.dumps(a)), reason)
        assert (queue.Targets, queue.Revision) == before, command
    # editing the running target
    claim = json.loads(queue.ClaimNext(json.dumps({"worker": "tests"})))
    running = claim["target"]["id"]
    before = (queue.Targets, queue.Revision)
    for command, argument in (("Remove", {"ids": [running]}), ("Edit", {"id": running, "scan": SCAN}),
                              ("Reorder", {"ids": [running]}), ("Retry", {"ids": [running]}),
                              ("Finish", {"id": running, "token": "0" * 32, "outcome": "done"})):
        refused(lambda c=command, a=argument: queue.command_inout(c, json.dumps(a)), "SMART_NotReady")
        assert (queue.Targets, queue.Revision) == before, command
    queue.Finish(json.dumps({"id": running, "token": claim["token"], "outcome": "skipped", "reason": "test"}))
    # the same refusals through a macro and through the CLI
    before = (queue.Targets, queue.Revision)
    with DoorClient(f"tango://{stack.tango_host}/smart/door/01") as door, \
            pytest.raises(MacroFailed, match="SMART_NotFound"):
        door.run("smart_queue_add 99999", timeout_s=60)
    from clients.cli import main

    assert main(["queue", "add", "99999", "--tango-host", stack.tango_host]) == 1
    assert (queue.Targets, queue.Revision) == before


def test_a_queue_runs_and_is_steered_from_a_second_client(queue_stack) -> None:
    stack, isolated = queue_stack
    queue = proxy(stack, "smart/queue/1")
    empty_queue(queue, stack)
    first, second = add(queue, isolated[2:4])
    # 1.2 um beside an isolated particle (isolation radius 2 um): nothing there, no Ce signal
    particles = proxy(stack, "smart/particles/1")
    x, y = particles.X[isolated[4]], particles.Y[isolated[4]]
    empty, = json.loads(queue.AddPoints(json.dumps({"points": [{"frame": "sem", "x": x + 60.0, "y": y}],
                                                    "scan": SCAN})))["added"]
    third, fourth = add(queue, isolated[5:7])
    seen: list[int] = []
    event = queue.subscribe_event("Done", tango.EventType.CHANGE_EVENT,
                                  lambda e: seen.append(int(e.attr_value.value)) if not e.err else None)
    # Targets goes out only when the queue changed, Activity after every report too (QueueDS._changed)
    pushed_targets: list[str] = []
    activities: list[str] = []
    more = [queue.subscribe_event("Targets", tango.EventType.CHANGE_EVENT,
                                  lambda e: pushed_targets.append(e.attr_value.value) if not e.err else None),
            queue.subscribe_event("Activity", tango.EventType.CHANGE_EVENT,
                                  lambda e: activities.append(json.loads(e.attr_value.value)["activity"])
                                  if not e.err else None)]
    try:
        loop = Loop(stack)
        wait_for(lambda: activity(queue)["activity"] == "scanning" and activity(queue)["target"] == first, 120,
                 "the loop scans the first target", loop=loop)
        queue.Pause("second client: pause after the current target")                      # pause
        wait_for(lambda: targets(queue)[first]["state"] == "done", 120, "the current target finishes", loop=loop)
        time.sleep(3.0)
        assert queue.Running == 0 and queue.Done == 1 and queue.Pending == 4
        assert queue.state() == tango.DevState.STANDBY and loop.alive()
        assert json.loads(queue.Skip(json.dumps({"ids": [third], "reason": "dirty"})))["skipped"] == [third]  # skip
        queue.Resume()                                                                    # resume
        wait_for(lambda: targets(queue)[empty]["state"] == "failed", 180, "the empty spot fails (no signal)", loop=loop)
        assert loop.alive(), "the loop ended before the retry"
        assert json.loads(queue.Retry(json.dumps({"ids": [empty]})))["retried"] == [empty]  # retry
        loop.join()
        wait_for(lambda: bool(pushed_targets) and json.loads(pushed_targets[-1]) == json.loads(queue.Targets), 10,
                 "the last Targets event is the queue as it ended")
    finally:
        for subscription in (event, *more):
            queue.unsubscribe_event(subscription)
    assert loop.error is None, loop.error
    assert {"claimed", "moving", "scanning", "finishing"} <= set(activities), activities
    final = targets(queue)
    assert [final[i]["state"] for i in (first, second, empty, third, fourth)] == \
        ["done", "done", "failed", "skipped", "done"]
    assert final[third]["reason"] == "dirty"
    assert final[empty]["failure_kind"] == "no_signal" and final[empty]["attempts"] == 1
    assert sum("no Ce peak" in line for line in loop.lines) == 2, loop.lines  # tried again after the retry
    assert done_lines(loop.lines) == Counter({first: 1, second: 1, fourth: 1})
    assert any("queue paused (second client" in line for line in loop.lines)
    assert seen and seen[-1] == 3 and seen == sorted(seen), seen  # change events, no polling


def test_sigkill_of_the_macroserver_and_of_queueds_mid_scan_every_target_done_once(queue_stack) -> None:
    stack, isolated = queue_stack
    queue = proxy(stack, "smart/queue/1")
    empty_queue(queue, stack)
    ids = add(queue, isolated[7:11] if len(isolated) >= 11 else isolated[:4])
    door_free(stack)
    loop = Loop(stack)
    wait_for(lambda: activity(queue)["activity"] == "scanning" and activity(queue)["target"] == ids[0], 120,
             "the loop scans the first target", loop=loop)
    stack.restart("MacroServer/smart", kill=True)                     # SIGKILL mid-scan
    loop.join(120)
    assert loop.error is not None
    assert targets(queue)[ids[0]]["state"] == "running"               # claimed, not done
    door_free(stack)
    again = Loop(stack)
    wait_for(lambda: activity(queue)["activity"] == "scanning" and activity(queue)["target"] == ids[1], 180,
             "the new loop scans the second target", loop=again)
    stack.restart("QueueDS/smart", kill=True)                         # SIGKILL of the queue mid-scan
    queue = proxy(stack, "smart/queue/1")
    again.join()
    assert again.error is None, again.error
    final = targets(queue)
    assert all(final[i]["state"] == "done" for i in ids), final
    assert final[ids[0]]["attempts"] == 2                             # its interrupted scan was redone
    assert all(final[i]["attempts"] == 1 for i in ids[1:])
    assert done_lines(loop.lines + again.lines) == Counter({i: 1 for i in ids})
    scan_ids = [final[i]["data"]["scan_id"] for i in ids]
    assert len(set(scan_ids)) == len(ids)
    assert any("scanning it again" in line for line in again.lines)


def test_a_beam_loss_makes_the_loop_wait_and_go_on(queue_stack) -> None:
    stack, isolated = queue_stack
    queue, ring = proxy(stack, "smart/queue/1"), proxy(stack, "smart/ring/1")
    empty_queue(queue, stack)
    first, second = add(queue, isolated[:2])
    door_free(stack)
    ring.BeamLoss(3600.0)
    loop = Loop(stack)
    wait_for(lambda: activity(queue)["activity"] == "waiting_for_beam", 60, "the loop waits for beam", loop=loop)
    time.sleep(3.0)
    assert queue.Done == 0 and targets(queue)[first]["state"] == "running"    # no scan without beam
    assert activity(queue)["activity"] == "waiting_for_beam" and loop.alive()
    ring.BeamRestore()
    # a loss during the second scan: that scan is not trusted and is taken again
    wait_for(lambda: activity(queue)["activity"] == "scanning" and activity(queue)["target"] == second, 180,
             "the loop scans the second target", loop=loop)
    ring.BeamLoss(3600.0)
    wait_for(lambda: targets(queue)[second]["failure_kind"] == "beam_lost", 120, "the scan is found without beam",
             loop=loop)
    wait_for(lambda: activity(queue)["activity"] == "waiting_for_beam", 60, "the loop waits for beam again", loop=loop)
    assert targets(queue)[second]["state"] == "running" and targets(queue)[second]["attempts"] == 2
    ring.BeamRestore()
    loop.join()
    assert loop.error is None, loop.error
    final = targets(queue)
    assert final[first]["state"] == "done" and final[second]["state"] == "done"
    assert final[first]["data"]["times"]["beam_wait_s"] >= 3.0
    assert any("waiting for beam" in line and "below 10" in line for line in loop.lines), loop.lines
    assert any("beam is back" in line for line in loop.lines)
    assert any("beam was lost during the scan" in line for line in loop.lines)


def test_automatic_order_shortens_stage_travel(queue_stack) -> None:
    stack, isolated = queue_stack
    queue = proxy(stack, "smart/queue/1")
    empty_queue(queue, stack)
    ids = add(queue, isolated[:12])
    reply = json.loads(queue.Reorder(json.dumps({"auto": "shortest"})))
    assert reply["unit"] == "mm"                                       # on the stage, through the mapper
    assert sorted(reply["order"]) == sorted(ids)
    assert reply["travel_after"] <= reply["travel_before"]
    assert [t["id"] for t in json.loads(queue.Targets)] == reply["order"]
