"""Where a night's hit error comes from: each visit's error split into its parts, against the truth.

A visit's beam position (``target``) is the fine-aligned mapping of its SEM point (``mapped``)
plus the drift the loop applied (``target - mapped``). The fine alignment of a frame was made at
some simulated time ``t_a`` (the ``align`` event of that frame in the event log), so it can only
know where the particle was then: ``S(p) + o(t_a)`` (``S`` the truth's sample -> stage, ``o`` the
drift's stage offset). The hit error vector at the scan's time ``t`` then splits exactly into

- **fine alignment** (``fine_error_at_align``): ``mapped - (S(p) + o(t_a))``, what the mapping got
  wrong at its own time (the X-ray maps' noise, the model, drift *during* the alignment);
- **drift estimate** (``drift_estimate_error``): ``(target - mapped) - (o(t) - o(t_a))``, the drift
  the loop applied minus the drift that truly happened since the alignment;

and, for comparison, the coarse chain (tile -> overview -> camera -> stage) at that time
(``coarse_error_at_align``), the Ce-map centre against the truth (``ce_centre_error``: how well a
scan locates its particle, the stage's repeatability included) and the beam-pixel calibration's
error (a constant of the night, in the coarse chain only).

Plain Python; ``python -m clients.night_decompose run/night`` decomposes a finished night again.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from clients.night_score import UM_PER_UNIT, Truth, _float, final_rows, read_visits

PARTS = ("coarse_error_at_align_nm", "fine_error_at_align_nm", "true_drift_since_align_nm",
         "drift_applied_nm", "drift_estimate_error_nm", "mapped_error_nm", "ce_centre_error_nm", "hit_error_nm")
"""The per-visit columns the decomposition adds (``hit_error_nm`` and ``ce_centre_error_nm`` are
the scorer's), in the order they are printed."""


def alignment_times(events: Iterable[Mapping[str, Any]], truth: Truth) -> dict[str, float]:
    """Frame -> simulated s its latest fine alignment's mapping stands for, from the event log: the
    clock time the drift estimate anchored the frame at (``drift_reset`` of ``smart_fine_align``
    with its ``frame``: the mean time of its maps), else the middle of its ``align`` event;
    events without a ``frame`` are left out."""
    times: dict[str, float] = {}
    anchored: dict[str, float] = {}
    for event in events:
        frame = event.get("frame")
        if not frame:
            continue
        if event.get("kind") == "drift_reset" and event.get("why") == "smart_fine_align" \
                and event.get("clock_s") is not None:
            anchored[str(frame)] = float(event["clock_s"])
        elif event.get("kind") == "align" and event.get("step") == "smart_fine_align" \
                and truth.clock_epoch_unix is not None:
            middle = float(event["started"]) + float(event.get("duration_s") or 0.0) / 2.0
            times[str(frame)] = max(0.0, (middle - truth.clock_epoch_unix) * truth.clock_acceleration)
    return {**times, **anchored}


def read_events(path: Path) -> list[dict[str, Any]]:
    """The event log's records (complete lines only); [] without one."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def decompose_visit(row: Mapping[str, str], scored: Mapping[str, Any], truth: Truth,
                    align_s: float | None) -> dict[str, float]:
    """The parts of one visit's error (nm; module docstring), from its visit-log ``row``, what the
    scorer made of it (``scored``: its true particle) and its frame's alignment time (None: unknown,
    the parts that need it are NaN)."""
    per_nm = UM_PER_UNIT.get(truth.stage_unit, math.nan) * 1000.0
    t = float(scored["started_sim_s"])
    home = truth.to_stage(truth.particles[int(scored["truth_particle"])])
    now = home + truth.stage_offset(t)

    def point(x_key: str, y_key: str) -> np.ndarray:
        return np.array([_float(row.get(x_key)), _float(row.get(y_key))])

    mapped, target, coarse = point("mapped_x", "mapped_y"), point("target_x", "target_y"), point("coarse_x", "coarse_y")
    applied = target - mapped
    nan = math.nan
    out = {"align_sim_s": nan if align_s is None else float(align_s),
           "mapped_error_nm": float(np.linalg.norm(mapped - now) * per_nm),
           "drift_applied_nm": float(np.linalg.norm(applied) * per_nm),
           "coarse_error_at_align_nm": nan, "fine_error_at_align_nm": nan,
           "true_drift_since_align_nm": nan, "drift_estimate_error_nm": nan}
    if align_s is not None and math.isfinite(align_s):
        then = home + truth.stage_offset(align_s)
        true_drift = truth.stage_offset(t) - truth.stage_offset(align_s)
        fine = mapped - then
        drift_error = applied - true_drift
        out.update(coarse_error_at_align_nm=float(np.linalg.norm(coarse - then) * per_nm),
                   fine_error_at_align_nm=float(np.linalg.norm(fine) * per_nm),
                   true_drift_since_align_nm=float(np.linalg.norm(true_drift) * per_nm),
                   drift_estimate_error_nm=float(np.linalg.norm(drift_error) * per_nm),
                   fine_dx_nm=float(fine[0] * per_nm), fine_dy_nm=float(fine[1] * per_nm),
                   drift_error_dx_nm=float(drift_error[0] * per_nm), drift_error_dy_nm=float(drift_error[1] * per_nm))
    return out


def beam_calibration_error_nm(truth_path: Path) -> dict[str, float]:
    """Zoom -> stage nm the beam's calibrated camera pixel is off from the true one (what the coarse
    chain inherits; the X-ray fine alignment sees through it)."""
    facts = json.loads(Path(truth_path).read_text())
    camera = facts.get("camera") or {}
    if "beam_px" not in camera or "beam_px_calibrated" not in camera:
        return {}
    delta = np.subtract(camera["beam_px_calibrated"], camera["beam_px"])
    per_nm = UM_PER_UNIT.get((facts.get("units") or {}).get("stage", "mm"), math.nan) * 1000.0
    return {zoom: float(np.linalg.norm(np.asarray(a, float)[:2, :2] @ delta) * per_nm)
            for zoom, a in (camera.get("A_mm_per_px") or {}).items()}


def decompose(summary: dict[str, Any], visits_path: Path, truth: Truth, align_times: Mapping[str, float],
              truth_path: Path | None = None) -> dict[str, Any]:
    """Adds the parts (module docstring) to every scored visit of ``summary`` (``score_night``'s)
    and their medians to ``summary["decomposition"]``, with the part that dominates; returns it."""
    finals = {str(r.get("target_id")): r for r in final_rows(read_visits(visits_path))}
    for scored in summary["scored"]:
        row = finals.get(str(scored["target_id"]))
        if row is None:
            continue
        frame = row.get("frame") or scored["region"]
        scored.update(decompose_visit(row, scored, truth, align_times.get(frame)))
    medians = {}
    for key in PARTS:
        values = [s[key] for s in summary["scored"] if math.isfinite(s.get(key, math.nan))]
        medians[key] = float(np.median(values)) if values else math.nan
    candidates = {k: medians[k] for k in ("fine_error_at_align_nm", "drift_estimate_error_nm")
                  if math.isfinite(medians[k])}
    result = {"median_nm": medians, "alignment_sim_s": dict(align_times),
              "dominant": max(candidates, key=candidates.get) if candidates else None}
    if truth_path is not None:
        result["beam_calibration_error_nm"] = beam_calibration_error_nm(truth_path)
    summary["decomposition"] = result
    return result


def decomposition_lines(summary: dict[str, Any]) -> list[str]:
    """The decomposition as a table: one line per visit, the medians and the dominant part."""
    result = summary.get("decomposition")
    if not result:
        return []
    heads = ["coarse@a", "fine@a", "drift", "applied", "drift err", "mapped", "Ce", "hit"]
    lines = ["error parts (nm; @a: at the frame's fine alignment, against where the particle was then):",
             f"  {'target':>6} {'region':>8} {'sim s':>7} " + " ".join(f"{h:>9}" for h in heads)]
    for s in sorted(summary["scored"], key=lambda s: s.get("started_sim_s", math.nan)):
        lines.append(f"  {s['target_id']:>6} {s['region']:>8} {s['started_sim_s']:7.0f} "
                     + " ".join(f"{s.get(k, math.nan):9.0f}" for k in PARTS))
    lines.append(f"  {'median':>6} {'':>8} {'':>7} " + " ".join(f"{result['median_nm'][k]:9.0f}" for k in PARTS))
    if result.get("beam_calibration_error_nm"):
        lines.append("beam-pixel calibration error (coarse chain only): "
                     + ", ".join(f"{z}: {v:.0f} nm" for z, v in result["beam_calibration_error_nm"].items()))
    lines.append(f"dominant part: {result['dominant']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Decompose a finished night again: ``python -m clients.night_decompose run/night``."""
    from clients.night_score import score_night

    args = sys.argv[1:] if argv is None else argv
    run = Path(args[0] if args else "run/night")
    truth = Truth.load(run / "truth.json", run / "sample.json")
    try:
        from simulation.config import load_beamline
        from simulation.drift import Timelines

        timelines = Timelines(load_beamline(run / "beamline.json"))
        truth.offset_function = lambda t_s: timelines.stage_offset_mm(float(t_s))
    except (OSError, ValueError):
        pass
    summary = score_night(run / "visits.csv", truth)
    decompose(summary, run / "visits.csv", truth, alignment_times(read_events(run / "smart_events.jsonl"), truth),
              run / "truth.json")
    print("\n".join(decomposition_lines(summary)))
    print(f"within 100 nm: {summary['within_100nm']:.1%}, median {summary['hit_error_nm_median']:.0f} nm")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
