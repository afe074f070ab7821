"""`smart queue ...`: read and steer the night queue (QueueDS) from a shell.

Every subcommand is one QueueDS call (docs/queue.md), so it works while `smart_run_queue`
keeps the Door busy: this is the "second client" that pauses, resumes, skips and retries.
"""

from __future__ import annotations

import argparse
from typing import Any

from clients.commands import CommandError, SmartClient, _absolute
from clients.display import format_table

ACTIONS = ("show", "add", "remove", "order", "pause", "resume", "skip", "retry", "policy", "clear")
QUEUE_COLUMNS = (("id", "d"), ("state", ""), ("particle", ""), ("frame", ""), ("x", ".2f"), ("y", ".2f"),
                 ("region", ""), ("scan", ""), ("tries", "d"), ("reason", ""))


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    cmd = sub.add_parser("queue", parents=[common], help="show and steer the night queue (QueueDS)",
                         description="show | add isolated|all|I,J,K|FILE.csv | remove ID... | order [auto|ID...] | "
                                     "pause [REASON] | resume | skip ID... | retry [ID...] | "
                                     "policy [KIND=retry|skip|stop ...] | clear (docs/queue.md)")
    cmd.add_argument("action", nargs="?", default="show", choices=ACTIONS)
    cmd.add_argument("values", nargs="*", help="ids, what to add, a reason, or KIND=ACTION pairs")
    cmd.add_argument("--half-um", type=float, default=0.3, help="add: half width of each mesh (um)")
    cmd.add_argument("--step-um", type=float, default=0.05, help="add: mesh step (um)")
    cmd.add_argument("--exposure", type=float, default=0.01, help="add: integration time per point (s)")
    cmd.add_argument("--frame", default="sem", help="add: frame of the particles or CSV points (default sem)")
    cmd.add_argument("--region", default=None, help="add: a label for the new targets")
    cmd.add_argument("--skip-duplicates", action="store_true", help="add: leave out targets already queued")
    cmd.add_argument("--reason", default="", help="skip: why")


def _ids(values: list[str]) -> list[int]:
    try:
        return [int(v) for text in values for v in text.split(",") if v]
    except ValueError:
        raise CommandError("SMART_BadArgument", f"target ids must be integers, got {' '.join(values)}") from None


def run(client: SmartClient, args: argparse.Namespace) -> dict[str, Any]:
    """One QueueDS call for ``args.action``; the reply plus the queue as it is afterwards."""
    action, values = args.action, list(args.values)
    reply: Any = None
    if action == "add":
        if len(values) != 1:
            raise CommandError("SMART_BadArgument", "queue add takes one of: isolated, all, I,J,K, FILE.csv")
        scan = {"macro": "mesh", "half_width_um": args.half_um, "step_um": args.step_um, "exposure": args.exposure}
        what = values[0]
        common = {"scan": scan, "skip_duplicates": args.skip_duplicates}
        if what.lower().endswith(".csv"):
            reply = client.call_json("queue", "AddCsv", {"path": _absolute(what), "frame": args.frame, **common})
        else:
            particles: Any = what if what in ("isolated", "all") else _ids([what])
            argument = {"particles": particles, "frame": args.frame, **common}
            if args.region:
                argument["region"] = args.region
            reply = client.call_json("queue", "AddParticles", argument)
    elif action == "remove":
        reply = client.call_json("queue", "Remove", {"ids": _ids(values)})
    elif action == "order":
        argument = {"auto": "shortest"} if not values or values == ["auto"] else {"ids": _ids(values)}
        reply = client.call_json("queue", "Reorder", argument)
    elif action == "pause":
        client.proxy("queue").Pause(" ".join(values) or "paused from the smart CLI")
    elif action == "resume":
        client.proxy("queue").Resume()
    elif action == "skip":
        reply = client.call_json("queue", "Skip", {"ids": _ids(values), "reason": args.reason or "skipped from the "
                                                                                                  "smart CLI"})
    elif action == "retry":
        reply = client.call_json("queue", "Retry", {"ids": _ids(values)} if values else {"failed": True})
    elif action == "policy" and values:
        pairs = dict(v.partition("=")[::2] for v in values)
        reply = client.call_json("queue", "SetPolicy", pairs)
    elif action == "clear":
        reply = client.call_json("queue", "Clear", {"states": ["done", "failed", "skipped"]})
    return {"action": action, "reply": reply, "targets": client.read_json("queue", "Targets") or [],
            "counts": client.read_json("queue", "Counts"), "paused": client.read("queue", "PauseReason"),
            "time_left_s": client.read("queue", "TimeLeft"), "policy": client.read_json("queue", "Policy"),
            "activity": client.read_json("queue", "Activity")}


def summary(result: dict[str, Any]) -> str:
    """The queue as a table, then the counts, the pause, the time left and what the loop does."""
    if result["action"] == "policy":
        return "\n".join(f"{kind}: {action}" for kind, action in result["policy"].items())
    rows = [(t["id"], t["state"] + ("*" if t.get("skip_requested") else ""), t.get("particle"), t["frame"], t["x"],
             t["y"], t["region"], f"{t['scan']['macro']} +-{t['scan']['half_width_um']:g} um "
             f"/{t['scan']['step_um']:g} {t['scan']['exposure']:g} s", t["attempts"], t.get("reason") or "")
            for t in result["targets"]]
    counts = result["counts"]
    lines = [format_table(QUEUE_COLUMNS, rows) if rows else "the queue is empty"]
    lines.append(", ".join(f"{counts[s]} {s}" for s in ("pending", "running", "done", "failed", "skipped"))
                 + f"; about {result['time_left_s'] / 60:.1f} min left")
    if result["paused"]:
        lines.append(f"PAUSED: {result['paused']}")
    activity = result.get("activity") or {}
    if activity.get("activity") not in (None, "idle"):
        lines.append(f"loop: {activity['activity']} (target {activity.get('target')}) {activity.get('message', '')}")
    return "\n".join(lines)
