"""Where a mesh's wall time goes: Sardana's per-scan and per-point cost of a step ``mesh`` at 10 ms.

The night's exposing fraction (points x exposure / scan wall time) is set by this cost, not by
the exposure. On a fresh stack of its own (the product's Sardana configuration,
simulation/launch/sardana.yaml) the bench runs 7 x 7 and 13 x 13 meshes through the Door,
alternately, and reads Sardana's own account of each scan (the "taking ... Dead time ...
(setup time ..., motion dead time ...)" line every scan prints): the per-point slope between
the two sizes, the fixed cost per scan, and per point the motion (Sardana's motion dead
time), the exposure and the rest (measurement-group start/wait/read and the recorders). The
same meshes without ``ScanFile``, alternating with them (no NXscan HDF5 recorder: never how the
product runs, the workflow reads that file) say what the file recorder costs; a ``meshct``
(Sardana's continuous mesh, software synchronisation) of the same 7 x 7 grid says whether
continuous scans would pay on these simulated controllers. Takes ~3 minutes on two cores.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.harness import Report

if TYPE_CHECKING:  # the Door client needs tango; the parsing below does not (unit-tested without it)
    from clients.door import DoorClient

EXPOSURE_S = 0.01
HALF_MM = 0.0003
"""+-0.3 um: 7 x 7 at 0.1 um, 13 x 13 at 0.05 um (the fixed mesh before sizing)."""
REPEATS = 3

TAKING = re.compile(r"taking (\d+):(\d+):([\d.]+)\.\s*Dead time ([\d.]+)% "
                    r"\(setup time ([\d.]+)%, motion dead time ([\d.]+)%\)")


def scan_account(text: str) -> dict[str, float]:
    """Sardana's account of one scan: total, setup and motion time (s) from its closing line;
    from its table (``dt``: time of each point since the scan began) the time per point within
    the scan and the points without a value (``nan``: a trigger the counter missed)."""
    match = TAKING.search(text)
    if match is None:
        raise RuntimeError(f"no 'taking ... Dead time' line in the scan's output:\n{text[-800:]}")
    hours, minutes, seconds, _, setup, motion = match.groups()
    total = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    rows = [line.split() for line in text.splitlines() if line.split() and line.split()[0].isdigit()]
    dt = [float(row[-1]) for row in rows]
    per_point = (dt[-1] - dt[0]) / (len(dt) - 1) if len(dt) > 1 else float("nan")
    return {"total": total, "setup": total * float(setup) / 100, "motion": total * float(motion) / 100,
            "points": len(rows), "per_point": per_point, "fixed": total - len(rows) * per_point,
            "missed": sum("nan" in row for row in rows)}


def mesh_command(macro: str, side: int, x0: float, y0: float) -> str:
    return (f"{macro} samx {x0 - HALF_MM!r} {x0 + HALF_MM!r} {side - 1} "
            f"samy {y0 - HALF_MM!r} {y0 + HALF_MM!r} {side - 1} {EXPOSURE_S}")


def timed_meshes(door: DoorClient, x0: float, y0: float) -> tuple[dict[int, list[dict[str, float]]], ...]:
    """Three rounds of 7 x 7 and 13 x 13, each round with the HDF5 file and then without it:
    alternating, so that the machine's load drifting during the bench weighs on both alike."""
    with_file: dict[int, list[dict[str, float]]] = {7: [], 13: []}
    without_file: dict[int, list[dict[str, float]]] = {7: [], 13: []}
    for _ in range(REPEATS):
        rounds = ((with_file, None, None), (without_file, "usenv ScanFile", "senv ScanFile smart_scans.h5"))
        for runs, before, after in rounds:
            if before:
                door.run(before)
            for side in runs:
                runs[side].append(scan_account(door.run(mesh_command("mesh", side, x0, y0), timeout_s=600).text()))
            if after:
                door.run(after)
    return with_file, without_file


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def run(report: Report) -> None:
    import tango

    from clients.door import DoorClient
    from clients.launcher import Stack
    from tests.system.stacks import running_stack

    with tempfile.TemporaryDirectory(prefix="smart-bench-scan-") as tmp, \
            running_stack(Stack(run_dir=Path(tmp), seed=1, echo=False)) as stack, \
            DoorClient(f"tango://{stack.tango_host}/smart/door/01") as door:
        x0, y0 = (float(tango.DeviceProxy(name).position) for name in ("samx", "samy"))
        door.run(mesh_command("mesh", 7, x0, y0))  # warm-up: first scan opens the file, loads modules
        with_file, without_file = timed_meshes(door, x0, y0)
        started = time.monotonic()
        continuous = scan_account(door.run(mesh_command("meshct", 7, x0, y0), timeout_s=600).text())
        continuous_wall = time.monotonic() - started
        step = scan_account(door.run(mesh_command("mesh", 7, x0, y0), timeout_s=600).text())
    load = os.getloadavg()[0]
    note = f"10 ms per point, median of {REPEATS}; 1-min load {load:.1f} on {os.cpu_count()} cores"
    t7, t13 = median(with_file[7], "total"), median(with_file[13], "total")
    slope = median(with_file[7] + with_file[13], "per_point")
    fixed = median(with_file[7] + with_file[13], "fixed")
    report.add("scan_mesh7_s", t7, "s", baseline=49 * EXPOSURE_S, ratio=49 * EXPOSURE_S / t7,
               note=f"7x7 mesh, Sardana's scan time; baseline: its exposure; ratio = exposing fraction; {note}")
    report.add("scan_mesh13_s", t13, "s", baseline=169 * EXPOSURE_S, ratio=169 * EXPOSURE_S / t13,
               note=f"13x13 mesh; ratio = exposing fraction; {note}")
    report.add("scan_per_point_s", slope, "s", baseline=EXPOSURE_S, ratio=EXPOSURE_S / slope,
               note="within a scan (its dt column, 7x7 and 13x13); baseline: the exposure; "
                    "ratio = exposing fraction of a point")
    report.add("scan_fixed_s", fixed, "s", note="per scan, beyond its points (scan time - points x time per point)")
    motion = statistics.median(run["motion"] / run["points"] for run in with_file[7] + with_file[13])
    report.add("scan_motion_per_point_s", motion, "s", baseline=slope, ratio=motion / slope,
               note="Sardana's motion dead time per point; ratio = share of a point")
    rest = slope - motion - EXPOSURE_S
    report.add("scan_acq_and_records_per_point_s", rest, "s", baseline=slope, ratio=rest / slope,
               note="per point beyond motion and exposure: measurement-group start/wait/read, recorders, Door")
    no_file = median(without_file[7] + without_file[13], "per_point")
    report.add("scan_file_recorder_per_point_s", slope - no_file, "s", baseline=slope,
               ratio=(slope - no_file) / slope,
               note="time per point with ScanFile minus without (NXscan HDF5 recorder); ratio = share of a point")
    report.add("scan_meshct7_s", continuous["total"], "s", baseline=step["total"],
               ratio=step["total"] / continuous["total"],
               note=f"meshct (continuous rows, software synchronisation) vs mesh, 7x7; ratio > 1: meshct faster; "
                    f"{continuous['missed']} of {continuous['points']} points without a value; "
                    f"Door wall {continuous_wall:.1f} s")
