"""The queue's rules without Tango: persistence, exactly-once claims, policies, refusals."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from servers.common.errors import BadArgument, NotFound, NotReady, SmartError
from servers.common.jsonargs import dumps
from servers.QueueDS import args as a
from servers.QueueDS.queue import Detection, QueueCore
from servers.QueueDS.results import Added, Claim, Finished
from servers.QueueDS.store import QueueStore

SCAN = {"macro": "mesh", "half_width_um": 0.2, "step_um": 0.05, "exposure": 0.01}
DETECTION = Detection(x=[10.0, 200.0, 30.0, 400.0], y=[10.0, 20.0, 300.0, 40.0],
                      isolated=[True, False, True, True], source="/data/sem.tif")
FRAMES = {"sem"}


def core_at(path: Path, **kwargs) -> QueueCore:
    return QueueCore(QueueStore(str(path / "q.sqlite")), **kwargs)


@pytest.fixture
def core(tmp_path: Path) -> QueueCore:
    return core_at(tmp_path)


def add_isolated(core: QueueCore, **extra) -> Added:
    return core.add_particles(a.AddParticlesArgs.model_validate({"particles": "isolated", "scan": SCAN, **extra}),
                              DETECTION, FRAMES)


def claim(core: QueueCore, worker: str = "door") -> Claim:
    return core.claim_next(a.ClaimArgs(worker=worker))


def finish(core: QueueCore, claimed: Claim, outcome: str = "done", **extra) -> Finished:
    return core.finish(a.FinishArgs.model_validate({"id": claimed.target["id"], "token": claimed.token,
                                                    "outcome": outcome, **extra}))


def snapshot(core: QueueCore) -> tuple:
    return json.dumps(core.targets()), core.paused, json.dumps(core.policy())


def test_isolated_particles_are_added_in_order_with_their_source(core: QueueCore) -> None:
    reply = add_isolated(core, region="A")
    assert reply.count == 3
    targets = core.targets()
    assert [t["particle"] for t in targets] == [0, 2, 3]
    assert all(t["state"] == "pending" and t["region"] == "A" and t["source"] == "/data/sem.tif" for t in targets)
    assert core.counts() == {"pending": 3, "running": 0, "done": 0, "failed": 0, "skipped": 0, "total": 3}


def test_within_keeps_only_particles_in_the_box(core: QueueCore) -> None:
    assert add_isolated(core, within=[0, 0, 100, 400]).count == 2


def test_the_queue_survives_reopening(tmp_path: Path) -> None:
    first = core_at(tmp_path)
    add_isolated(first)
    first.pause("night break")
    first.store.close()
    again = core_at(tmp_path)
    assert len(again.targets()) == 3 and again.paused and again.pause_reason == "night break"


@pytest.mark.parametrize("argument, error", [
    ({"particles": [9], "scan": SCAN}, NotFound),                                          # unknown particle
    ({"particles": "isolated", "scan": SCAN, "frame": "afm"}, NotFound),                   # unknown frame
    ({"particles": "isolated", "scan": {**SCAN, "macro": "ascan"}}, BadArgument),          # unknown macro
    ({"particles": "isolated", "scan": {**SCAN, "speed": 3}}, BadArgument),                # unknown parameter
    ({"particles": "isolated", "scan": {**SCAN, "exposure": -1}}, BadArgument),            # bad value
    ({"particles": "isolated", "scan": {**SCAN, "step_um": 0.0001}}, BadArgument),         # too many points
    ({"particles": [0, 0], "scan": SCAN}, BadArgument),                                    # duplicate in request
])
def test_bad_additions_change_nothing(core: QueueCore, argument: dict, error: type) -> None:
    add_isolated(core)
    before = snapshot(core)
    with pytest.raises(error):
        core.add_particles(a.AddParticlesArgs.model_validate(argument), DETECTION, FRAMES)
    assert snapshot(core) == before


def test_a_duplicate_is_refused_whole_unless_skipped(core: QueueCore) -> None:
    add_isolated(core)
    before = snapshot(core)
    with pytest.raises(BadArgument, match="already in the queue"):
        core.add_particles(a.AddParticlesArgs.model_validate({"particles": "all", "scan": SCAN}), DETECTION, FRAMES)
    assert snapshot(core) == before
    reply = core.add_particles(a.AddParticlesArgs.model_validate(
        {"particles": "all", "scan": SCAN, "skip_duplicates": True}), DETECTION, FRAMES)
    assert reply.added and reply.duplicates == (0, 2, 3)
    # the same point with another scan is another target
    assert add_isolated(core, scan={**SCAN, "exposure": 0.02}).count == 3


def test_no_detection_is_not_ready(core: QueueCore) -> None:
    with pytest.raises(NotReady):
        core.add_particles(a.AddParticlesArgs.model_validate({"particles": "all", "scan": SCAN}),
                           Detection([], [], [], None), FRAMES)


def test_points_and_csv(core: QueueCore, tmp_path: Path) -> None:
    core.add_points(a.AddPointsArgs.model_validate({"points": [{"frame": "stage", "x": 0.1, "y": 0.2}],
                                                    "scan": SCAN}), FRAMES)
    text = "particle,region\n0,A\n3,B\n"
    reply = core.add_csv(a.AddCsvArgs(path="p.csv", scan=SCAN), text, DETECTION, FRAMES)
    assert reply.count == 2
    text = "x,y,frame\n1.5,2.5,sem\n"
    assert core.add_csv(a.AddCsvArgs(path="p.csv", scan=SCAN), text, None, FRAMES).count == 1
    before = snapshot(core)
    for bad, error in (("particle\n0\n77\n", NotFound), ("x,y\n1,nope\n", BadArgument),
                       ("x,z\n1,2\n", BadArgument), ("x,y,frame\n1,2,afm\n", NotFound), ("", BadArgument)):
        with pytest.raises(error) as info:
            core.add_csv(a.AddCsvArgs(path="p.csv", scan=SCAN), bad, DETECTION, FRAMES)
        assert "p.csv" in info.value.desc
        assert snapshot(core) == before


def test_claim_finish_exactly_once(core: QueueCore) -> None:
    add_isolated(core)
    first = claim(core)
    assert first.target["state"] == "running" and first.target["attempts"] == 1
    assert core.current()["id"] == first.target["id"]
    reply = finish(core, first, data={"scan_id": 4}, duration_s=3.0)
    assert reply.target["state"] == "done" and reply.target["data"] == {"scan_id": 4}
    # a retried Finish (lost reply) answers the same and changes nothing
    assert finish(core, first, data={"scan_id": 5}) == reply
    # a done target is never handed out again
    handed = [first.target["id"]]
    while (c := claim(core)).target is not None:
        handed.append(c.target["id"])
        finish(core, c)
    assert sorted(handed) == sorted(t["id"] for t in core.targets())
    assert claim(core).why == "empty"


def test_an_interrupted_target_is_rerun_and_a_stale_token_changes_nothing(tmp_path: Path) -> None:
    core = core_at(tmp_path)
    add_isolated(core)
    first = claim(core)
    core.store.close()  # the server dies (SIGKILL: the claim is on disk)
    core = core_at(tmp_path)
    again = claim(core)  # the loop's MacroServer restarted: same worker
    assert again.rerun and again.target["id"] == first.target["id"]
    assert again.target["attempts"] == 2
    before = snapshot(core)
    with pytest.raises(NotReady, match="no longer valid"):
        finish(core, first)
    assert snapshot(core) == before
    assert finish(core, again).target["state"] == "done"


def test_another_worker_cannot_take_a_fresh_claim(core: QueueCore) -> None:
    add_isolated(core)
    claim(core, "door1")
    with pytest.raises(NotReady, match="one loop at a time"):
        claim(core, "door2")
    core.claim_timeout_s = 0.0
    assert claim(core, "door2").rerun


def test_a_target_interrupted_too_often_fails(tmp_path: Path) -> None:
    core = core_at(tmp_path, max_attempts=2)
    add_isolated(core)
    first = claim(core)
    claim(core)  # re-run (attempt 2)
    third = claim(core)  # interrupted twice: failed, the next target is handed out
    failed = [t for t in core.targets() if t["id"] == first.target["id"]][0]
    assert failed["state"] == "failed" and "interrupted" in failed["reason"]
    assert third.target["id"] != first.target["id"]


def test_pause_after_current_and_resume(core: QueueCore) -> None:
    add_isolated(core)
    current = claim(core)
    core.pause("coffee")
    assert claim(core).why == "paused"  # nothing new ...
    assert finish(core, current).target["state"] == "done"  # ... but the current one finishes
    core.resume()
    assert claim(core).target is not None


def test_skip_pending_and_running(core: QueueCore) -> None:
    add_isolated(core)
    running = claim(core)
    ids = [t["id"] for t in core.targets()]
    reply = core.skip(a.SkipArgs(ids=[ids[1], running.target["id"]], reason="dirty"))
    assert reply.as_dict() == {"skipped": [ids[1]], "skip_requested": [running.target["id"]]}
    report = core.report(a.ReportArgs(id=running.target["id"], token=running.token, activity="moving"))
    assert report.skip
    assert finish(core, running, "skipped").target["reason"] == "dirty"
    before = snapshot(core)
    with pytest.raises(NotReady):
        core.skip(a.SkipArgs(ids=[ids[1]]))  # already skipped
    assert snapshot(core) == before


def test_policies(core: QueueCore) -> None:
    add_isolated(core)
    core.set_policy({"no_signal": "retry"})
    first = claim(core)
    reply = finish(core, first, "failed", kind="no_signal", reason="no peak")
    assert reply.target["state"] == "pending" and not reply.stop
    # retried first (it keeps its place), up to MaxAttempts
    for _ in range(2):
        again = claim(core)
        assert again.target["id"] == first.target["id"]
        reply = finish(core, again, "failed", kind="no_signal")
    assert reply.target["state"] == "failed" and "gave up after 3" in reply.target["reason"]
    second = claim(core)
    reply = finish(core, second, "failed", kind="outside_limits")
    assert reply.target["state"] == "failed" and not reply.stop
    third = claim(core)
    reply = finish(core, third, "failed", kind="drift", reason="registration in doubt")
    assert reply.stop and core.paused and "stopped: drift" in core.pause_reason
    retried = core.retry(a.RetryArgs(failed=True)).retried
    assert len(retried) == 3 and all(t["state"] == "pending" and t["attempts"] == 0 for t in core.targets())
    with pytest.raises(BadArgument):
        core.set_policy({"no_signal": "ignore"})
    with pytest.raises(BadArgument):
        core.set_policy({"sunspots": "retry"})


def test_editing_a_running_or_done_target_is_refused(core: QueueCore) -> None:
    add_isolated(core)
    running = claim(core)
    target_id = running.target["id"]
    before = snapshot(core)
    for call in (lambda: core.remove(a.IdsArgs(ids=[target_id])),
                 lambda: core.edit(a.EditArgs(id=target_id, scan=SCAN)),
                 lambda: core.reorder(a.ReorderArgs(ids=[target_id]), None),
                 lambda: core.retry(a.RetryArgs(ids=[target_id]))):
        with pytest.raises(NotReady):
            call()
        assert snapshot(core) == before
    finish(core, running)
    with pytest.raises(NotReady, match="done"):
        core.remove(a.IdsArgs(ids=[target_id]))
    with pytest.raises(NotFound):
        core.remove(a.IdsArgs(ids=[999]))


def test_reorder_by_ids_and_automatic(core: QueueCore) -> None:
    add_isolated(core)
    ids = [t["id"] for t in core.targets()]
    reply = core.reorder(a.ReorderArgs(ids=[ids[2]]), None)
    assert reply.order == (ids[2], ids[0], ids[1])
    assert [t["id"] for t in core.targets()] == [ids[2], ids[0], ids[1]]
    reply = core.reorder(a.ReorderArgs(auto="shortest"), None)
    assert reply.travel_after <= reply.travel_before
    with pytest.raises(BadArgument):
        core.reorder(a.ReorderArgs(ids=[ids[0], ids[0]]), None)


def test_time_left_uses_measured_durations(core: QueueCore) -> None:
    add_isolated(core)
    points = a.MeshScan.model_validate(SCAN).points()
    assert core.time_left() == pytest.approx(3 * points * (0.01 + 0.05))
    finish(core, claim(core), duration_s=points * 0.2)
    assert core.time_left() == pytest.approx(2 * points * 0.2)


def test_a_damaged_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SmartError):
        QueueStore(str(path))
    assert path.read_bytes() == b"this is not a database" * 100


def test_file_is_wal_with_full_sync(tmp_path: Path) -> None:
    core = core_at(tmp_path)
    add_isolated(core)
    db = sqlite3.connect(str(tmp_path / "q.sqlite"))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert core.store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_targets_json_is_targets_encoded_after_every_kind_of_change(core: QueueCore) -> None:
    """``Targets`` goes out as ``targets_json``: it must equal encoding ``targets()`` whatever
    changed in between (a claim, a finish with data holding NaN, a reorder, an edit, a removal)."""
    def same() -> None:
        assert core.targets_json() == dumps(core.targets())
        assert json.loads(core.targets_json()) == json.loads(dumps(core.targets()))

    add_isolated(core)
    same()
    first = claim(core)
    same()
    finish(core, first, data={"ce_centre": [1.5, float("nan")], "times": {"scan_s": 2.0}}, duration_s=2.0)
    same()
    ids = [t["id"] for t in core.targets() if t["state"] == "pending"]
    core.reorder(a.ReorderArgs.model_validate({"ids": list(reversed(ids))}), None)
    same()
    core.edit(a.EditArgs.model_validate({"id": ids[0], "region": "B"}))
    same()
    core.remove(a.IdsArgs.model_validate({"ids": [ids[1]]}))
    same()
    assert [t["id"] for t in json.loads(core.targets_json())] == [t["id"] for t in core.targets()]


def test_counts_current_and_time_left_read_only_what_they_need(core: QueueCore) -> None:
    """The reads that follow every command give what a full scan of the targets gives."""
    add_isolated(core)
    first = claim(core)
    assert core.counts() == {"pending": 2, "running": 1, "done": 0, "failed": 0, "skipped": 0, "total": 3}
    assert core.current()["id"] == first.target["id"]
    finish(core, first, duration_s=3.0)
    second = claim(core)
    finish(core, second, outcome="failed", kind="no_signal", reason="none")
    everything = core.targets()
    for state in a.STATES:
        assert core.counts()[state] == sum(t["state"] == state for t in everything)
    assert core.current() == {}
    left = sum(t["state"] in ("pending", "running") for t in everything)
    assert core.time_left() == pytest.approx(left * 3.0)
