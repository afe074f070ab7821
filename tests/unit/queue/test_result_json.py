"""QueueCore's replies are frozen dataclasses; their JSON is what the shell published when they
were dicts. ``recorded/*.json`` is ``dumps`` of the dict each command returned for
:func:`scenario`, recorded before the change; :func:`tests.helpers.assert_same_json` holds
today's ``to_json()`` to it. Times and claim tokens differ from run to run: only their type is
held (``VOLATILE``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from servers.QueueDS import args as a
from servers.QueueDS.queue import Detection, QueueCore
from servers.QueueDS.store import QueueStore
from tests.helpers import assert_same_json

RECORDED = Path(__file__).with_name("recorded")
VOLATILE = ("token", "added_at", "started_at", "finished_at")
SCAN = {"macro": "mesh", "half_width_um": 0.2, "step_um": 0.05, "exposure": 0.01}
DETECTION = Detection(x=[10.0, 200.0, 30.0, 400.0], y=[10.0, 20.0, 300.0, 40.0],
                      isolated=[True, False, True, True], source="/data/sem.tif")
NAMES = ["add_particles", "add_points_with_duplicate", "add_csv", "edit", "reorder_ids", "reorder_auto", "remove",
         "claim", "report", "skip", "finish", "finish_again", "claim_rerun", "set_policy", "retry", "clear",
         "claim_empty", "claim_paused"]


def _token(claim: Any) -> tuple[int, str]:
    """Target id and token of a ClaimNext reply (a dict when the replies were recorded)."""
    reply = claim.as_dict() if hasattr(claim, "as_dict") else claim
    return reply["target"]["id"], reply["token"]


def scenario(folder: Path) -> dict[str, Any]:
    """Every command's reply once, on a fresh queue file."""
    core = QueueCore(QueueStore(str(folder / "q.sqlite")), max_attempts=2)
    frames = {"sem"}
    r: dict[str, Any] = {}
    r["add_particles"] = core.add_particles(a.AddParticlesArgs.model_validate(
        {"particles": "isolated", "scan": SCAN, "region": "A"}), DETECTION, frames)
    r["add_points_with_duplicate"] = core.add_points(a.AddPointsArgs.model_validate(
        {"points": [{"frame": "stage", "x": 0.1, "y": 0.2}, {"frame": "sem", "x": 10.0, "y": 10.0}],
         "scan": SCAN, "skip_duplicates": True}), frames)
    r["add_csv"] = core.add_csv(a.AddCsvArgs(path="p.csv", scan=SCAN), "x,y,frame\n1.5,2.5,sem\n", None, frames)
    ids = [t["id"] for t in core.targets()]
    r["edit"] = core.edit(a.EditArgs(id=ids[1], region="B"))
    r["reorder_ids"] = core.reorder(a.ReorderArgs(ids=[ids[2], ids[0]]), None)
    r["reorder_auto"] = core.reorder(a.ReorderArgs(auto="shortest"), lambda targets: (
        __import__("numpy").array([[t["x"], t["y"]] for t in targets], float), "mm"))
    r["remove"] = core.remove(a.IdsArgs(ids=[ids[4]]))
    first = core.claim_next(a.ClaimArgs(worker="door"))
    r["claim"] = first
    target_id, token = _token(first)
    r["report"] = core.report(a.ReportArgs(id=target_id, token=token, activity="scanning", message="point 3"))
    r["skip"] = core.skip(a.SkipArgs(ids=[ids[1], target_id], reason="dirty"))
    finish = a.FinishArgs.model_validate({"id": target_id, "token": token, "outcome": "done", "data": {"scan_id": 4},
                                          "duration_s": 12.5})
    r["finish"] = core.finish(finish)
    r["finish_again"] = core.finish(finish)
    second = core.claim_next(a.ClaimArgs(worker="door"))
    r["claim_rerun"] = core.claim_next(a.ClaimArgs(worker="door"))  # the same loop again: a re-run
    r["set_policy"] = core.set_policy({"no_signal": "retry"})
    second_id, second_token = _token(r["claim_rerun"])
    core.finish(a.FinishArgs.model_validate({"id": second_id, "token": second_token, "outcome": "failed",
                                             "kind": "drift"}))
    del second
    r["retry"] = core.retry(a.RetryArgs(failed=True, skipped=True))
    r["clear"] = core.clear(a.ClearArgs(states=["done"]))
    for target in core.targets():
        core.remove(a.IdsArgs(ids=[target["id"]]))
    r["claim_empty"] = core.claim_next(a.ClaimArgs(worker="door"))
    core.pause("night break")
    r["claim_paused"] = core.claim_next(a.ClaimArgs(worker="door"))
    core.store.close()
    return r


@pytest.fixture(scope="module")
def replies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return scenario(tmp_path_factory.mktemp("queue"))


@pytest.mark.parametrize("name", NAMES)
def test_the_json_is_what_the_shell_published(replies: dict[str, Any], name: str) -> None:
    assert_same_json(replies[name].to_json(), (RECORDED / f"{name}.json").read_text(), volatile=VOLATILE)


def test_a_retried_finish_answers_the_stored_reply(replies: dict[str, Any]) -> None:
    assert replies["finish_again"] == replies["finish"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        replies["finish"].stop = True
