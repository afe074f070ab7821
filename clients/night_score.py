"""Scoring a night against the simulation's truth, never against the workflow's own estimates.

Every visit (a row of ``visits.csv``, written by ``smart_run_queue``) names a point of one SEM
region (``region``, ``sem_x_px``, ``sem_y_px``) and where the beam was put (``target_x``,
``target_y``, stage units) when its scan started (``started_sim_s``, simulated seconds since the
night's start). The truth (``truth.json``) says where that point is on the sample
(``regions[region].pixel_to_sample``), which true particle it was meant for (the nearest), and
where that particle truly was on the stage at that moment: ``sample_to_stage(p) +
stage_offset(t)`` with ``stage_offset`` interpolated in ``drift`` (zero when the beamline does
not drift). The hit error is the distance from the beam to that position.

Besides the hits: overhead per particle, the fraction of the queue's wall time spent exposing,
particles per hour, scans taken while the beam was lost (must be none: the loop waits for beam),
and "done exactly once" (no target left pending or running, no target with two rows, no true
particle scanned by two targets). Plain Python: unit-tested without Tango
(tests/unit/clients/test_night_score.py).
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HIT_LIMIT_NM = 100.0
"""A visit hits when the beam was within this distance of its particle's true position."""
UM_PER_UNIT = {"mm": 1000.0, "um": 1.0, "nm": 0.001}
DONE_OUTCOMES = ("scanned",)
EXPOSED_OUTCOMES = ("scanned", "scanned_no_signal", "scanned_no_data")
"""Rows whose scan exposed the sample with beam (a scan found without beam, ``beam_lost``, did not)."""


@dataclass
class Truth:
    """What the scorer needs of ``truth.json`` and ``sample.json``."""

    sample_to_stage: np.ndarray
    regions: dict[str, np.ndarray]
    """Region name -> 3x3 pixel -> sample (µm) matrix of that SEM image."""
    particles: np.ndarray
    """True particle centres on the sample (µm), N x 2."""
    drift_t_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    drift_offset: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    stage_unit: str = "mm"
    beam_off_s: list[tuple[float, float]] = field(default_factory=list)
    """Simulated (start, end) s without X-rays (losses, refills) when the beamline has a clock."""
    clock_epoch_unix: float | None = None
    clock_acceleration: float = 1.0
    offset_function: Callable[[float], Sequence[float]] | None = None
    """The simulation's own stage_offset(t) (stage units), exact at any time; without it the
    truth's ``drift`` table is interpolated (and held beyond its last sample)."""

    def beam_off_unix(self) -> list[tuple[float, float]]:
        """``beam_off_s`` as wall-clock (Unix) periods, through the night's clock; [] without one."""
        if self.clock_epoch_unix is None:
            return []
        epoch, rate = self.clock_epoch_unix, self.clock_acceleration
        return [(epoch + s / rate, epoch + e / rate) for s, e in self.beam_off_s]

    @classmethod
    def load(cls, truth_path: Path, sample_path: Path) -> Truth:
        truth = json.loads(Path(truth_path).read_text())
        sample = json.loads(Path(sample_path).read_text())
        regions = {name: np.asarray(entry["pixel_to_sample"], float)
                   for name, entry in (truth.get("regions") or {}).items()}
        if not regions and "sem" in truth:  # one SEM image: the region is its frame, ``sem``
            regions = {"sem": np.asarray(truth["sem"]["pixel_to_sample"], float)}
        drift = truth.get("drift") or {}
        t_s = np.asarray(drift.get("t_s", []), float)
        offsets = np.asarray(drift.get("stage_offset", []), float).reshape(-1, 2)
        if len(t_s) != len(offsets):
            raise ValueError(f"truth drift: {len(t_s)} times but {len(offsets)} offsets")
        clock = truth.get("clock") or {}
        return cls(np.asarray(truth["sample_to_stage"], float), regions,
                   np.array([[p["x"], p["y"]] for p in sample["particles"]], float).reshape(-1, 2),
                   t_s, offsets, str((truth.get("units") or {}).get("stage", "mm")),
                   [(float(s), float(e)) for s, e in truth.get("beam_off") or []],
                   None if clock.get("epoch_unix") is None else float(clock["epoch_unix"]),
                   float(clock.get("acceleration") or 1.0))

    @property
    def drifts(self) -> bool:
        return bool(len(self.drift_t_s)) and bool(np.any(self.drift_offset != 0.0))

    def stage_offset(self, t_s: float) -> np.ndarray:
        """The stage-unit offset sample and beam drift add at simulated time ``t_s``: the
        simulation's function when given, else linear between the truth's samples (held at the
        ends); NaN when the beamline drifts and the time is unknown."""
        if self.offset_function is not None and math.isfinite(t_s):
            return np.asarray(self.offset_function(t_s), float)[:2]
        if not len(self.drift_t_s):
            return np.zeros(2)
        if not math.isfinite(t_s):
            return np.zeros(2) if not self.drifts else np.full(2, math.nan)
        return np.array([np.interp(t_s, self.drift_t_s, self.drift_offset[:, k]) for k in range(2)])

    def to_sample(self, region: str, point_px: Sequence[float]) -> np.ndarray:
        if region not in self.regions:
            raise KeyError(f"the truth has no region {region!r} (it has {', '.join(sorted(self.regions))})")
        return (self.regions[region] @ np.array([point_px[0], point_px[1], 1.0]))[:2]

    def to_stage(self, sample_um: np.ndarray) -> np.ndarray:
        return (self.sample_to_stage @ np.array([sample_um[0], sample_um[1], 1.0]))[:2]


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_visits(path: Path) -> list[dict[str, str]]:
    try:
        with Path(path).open(newline="") as stream:
            return list(csv.DictReader(stream))
    except OSError:
        return []


class LossPeriods:
    """The periods the beam was certainly off, from reads of the ring that each took some time.

    A read that answers "no beam" says the beam was off at some instant between its request and
    its reply. For one loss, seen by a first read ``(asked_1, replied_1)`` and a last read
    ``(asked_n, replied_n)``, the beam was off throughout ``[replied_1, asked_n]``: the scorer
    counts a scan kept during that time as taken without beam, and a scan that ended just before
    the loss (which the loop rightly kept) is not counted for a read that came later."""

    def __init__(self) -> None:
        self.periods: list[tuple[float, float]] = []
        self._since: float | None = None
        self._last_lost = 0.0

    def saw(self, lost: bool, asked: float, replied: float) -> None:
        """One read of the ring: ``lost`` between ``asked`` and ``replied`` (epoch s)."""
        if lost:
            if self._since is None:
                self._since = replied
            self._last_lost = asked
        else:
            self.close()

    def close(self) -> None:
        """The current loss, if any, ends at its last read that saw it."""
        if self._since is not None:
            self.periods.append((self._since, max(self._since, self._last_lost)))
            self._since = None


def overlaps(start: float, end: float, periods: Iterable[tuple[float, float]]) -> bool:
    """Whether [start, end] shares time with any (start, end) period."""
    return any(start < e and s < end for s, e in periods)


def mesh_points(scan: dict[str, Any], half_width_um: float | None = None) -> int:
    """Points of a queue target's mesh (``half_width_um``, or the one the loop sized, and
    ``step_um``), as the macros lay it out (``mesh_around``: intervals rounded up)."""
    half = half_width_um if half_width_um is not None and math.isfinite(half_width_um) else scan["half_width_um"]
    intervals = max(1, int(math.ceil(2.0 * float(half) / float(scan["step_um"]) - 1e-9)))
    return (intervals + 1) ** 2


def score_visit(row: dict[str, str], truth: Truth) -> dict[str, Any]:
    """One visit against the truth: which particle, where it truly was when the scan started,
    how far the beam was from it (nm), before (coarse) and after (target) the fine alignment."""
    region = row.get("region") or row.get("frame") or "sem"
    point = (_float(row.get("sem_x_px")), _float(row.get("sem_y_px")))
    in_sample = truth.to_sample(region, point)
    nearest = int(np.argmin(np.linalg.norm(truth.particles - in_sample, axis=1)))
    t_s = _float(row.get("started_sim_s"))
    true_stage = truth.to_stage(truth.particles[nearest]) + truth.stage_offset(t_s)
    per_nm = UM_PER_UNIT.get(truth.stage_unit, math.nan) * 1000.0

    def error_nm(x_key: str, y_key: str) -> float:
        position = np.array([_float(row.get(x_key)), _float(row.get(y_key))])
        return float(np.linalg.norm(position - true_stage) * per_nm)

    target = np.array([_float(row.get("target_x")), _float(row.get("target_y"))])
    return {"target_id": row.get("target_id", ""), "region": region, "index": row.get("index", ""),
            "outcome": row.get("outcome", ""), "truth_particle": nearest,
            "detection_error_nm": float(np.linalg.norm(truth.particles[nearest] - in_sample) * 1000.0),
            "started_sim_s": t_s, "true_x": float(true_stage[0]), "true_y": float(true_stage[1]),
            "true_drift_x": float(truth.stage_offset(t_s)[0]), "true_drift_y": float(truth.stage_offset(t_s)[1]),
            "target_x": float(target[0]), "target_y": float(target[1]),
            "ce_x": _float(row.get("ce_center_x")), "ce_y": _float(row.get("ce_center_y")),
            "hit_error_nm": error_nm("target_x", "target_y"), "coarse_error_nm": error_nm("coarse_x", "coarse_y"),
            "ce_centre_error_nm": error_nm("ce_center_x", "ce_center_y"),
            "scan_s": _float(row.get("scan_s")), "overhead_s": _float(row.get("overhead_s")),
            "started_at": _float(row.get("started_at"))}


def final_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The last row of every queue target (a target tried again after a lost beam has several)."""
    last: dict[str, dict[str, str]] = {}
    for number, row in enumerate(rows):
        last[row.get("target_id") or f"row{number}"] = row
    return list(last.values())


def exactly_once(rows: list[dict[str, str]], targets: list[dict[str, Any]] | None,
                 scored: list[dict[str, Any]]) -> dict[str, Any]:
    """"Done exactly once" from the queue's final states, the visit log and the truth: no target
    left pending or running (lost), no target finished twice, no true particle scanned by two
    done targets, every done target in the visit log."""
    done_rows = Counter(r.get("target_id") for r in rows if r.get("outcome") in DONE_OUTCOMES)
    twice = sorted(t for t, n in done_rows.items() if n > 1)
    particles = Counter(s["truth_particle"] for s in scored if s["outcome"] in DONE_OUTCOMES)
    report: dict[str, Any] = {"targets_done_twice": twice,
                              "particles_scanned_twice": sorted(p for p, n in particles.items() if n > 1)}
    if targets is not None:
        states = Counter(t["state"] for t in targets)
        done_ids = {str(t["id"]) for t in targets if t["state"] == "done"}
        report.update(queue_states=dict(states),
                      targets_lost=sorted(t["id"] for t in targets if t["state"] in ("pending", "running")),
                      done_without_row=sorted(int(i) for i in done_ids - set(done_rows)),
                      attempts_over_one=sorted(t["id"] for t in targets if t.get("attempts", 1) > 1))
    report["ok"] = not (report["targets_done_twice"] or report["particles_scanned_twice"]
                        or report.get("targets_lost") or report.get("done_without_row"))
    return report


def _stats(values: Iterable[float]) -> tuple[float, float, float]:
    array = np.array([v for v in values if math.isfinite(v)])
    if not len(array):
        return math.nan, math.nan, math.nan
    return float(np.median(array)), float(np.percentile(array, 95)), float(np.max(array))


def score_night(visits_path: Path, truth: Truth, targets: list[dict[str, Any]] | None = None,
                beam_losses: Sequence[tuple[float, float]] = (), queue_wall_s: float | None = None) -> dict[str, Any]:
    """The night's figures of merit. ``targets``: QueueDS ``Targets`` at the end (for done exactly
    once and the scans' exposure); ``beam_losses``: (start, end) epoch s of every period the ring
    had no beam; ``queue_wall_s``: wall time the queue ran (first claim to last finish)."""
    rows = read_visits(visits_path)
    finals = final_rows(rows)
    beam_losses = sorted([*beam_losses, *truth.beam_off_unix()])
    scored = [score_visit(row, truth) for row in finals
              if math.isfinite(_float(row.get("target_x"))) and row.get("outcome") != "outside_limits"]
    hits = [s["hit_error_nm"] for s in scored]
    within = [e <= HIT_LIMIT_NM for e in hits if math.isfinite(e)]
    median, p95, worst = _stats(hits)
    coarse_median, coarse_p95, _ = _stats(s["coarse_error_nm"] for s in scored)
    overhead_median, overhead_p95, overhead_max = _stats(_float(r.get("overhead_s")) for r in rows)
    by_id = {str(t["id"]): t for t in targets or []}
    exposing_s = 0.0
    for row in rows:
        target = by_id.get(str(row.get("target_id")))
        if target is not None and row.get("outcome") in EXPOSED_OUTCOMES:
            points = mesh_points(target["scan"], _float(row.get("half_width_um")))
            exposing_s += points * float(target["scan"]["exposure"])
    scan_s = float(np.nansum([_float(r.get("scan_s")) for r in rows])) if rows else 0.0
    done = sum(r.get("outcome") in DONE_OUTCOMES for r in finals)
    during_loss = []
    for row in rows:
        start = _float(row.get("started_at"))
        end = start + _float(row.get("scan_s"))
        if math.isfinite(end) and row.get("outcome") in ("scanned", "scanned_no_signal") \
                and overlaps(start, end, beam_losses):
            during_loss.append(row.get("target_id"))
    times = [s["started_sim_s"] for s in scored if math.isfinite(s["started_sim_s"])]
    regions: dict[str, dict[str, Any]] = {}
    for name in sorted({s["region"] for s in scored}):
        errors = [s["hit_error_nm"] for s in scored if s["region"] == name]
        regions[name] = {"visits": len(errors), "within_100nm": float(np.mean([e <= HIT_LIMIT_NM for e in errors])),
                         "median_error_nm": _stats(errors)[0]}
    summary = {
        "visits": len(scored), "rows": len(rows), "done": done,
        "outcomes": dict(Counter(r.get("outcome", "") for r in finals)),
        "regions": regions,
        "within_100nm": float(np.mean(within)) if within else math.nan,
        "hit_error_nm_median": median, "hit_error_nm_p95": p95, "hit_error_nm_max": worst,
        "coarse_error_nm_median": coarse_median, "coarse_error_nm_p95": coarse_p95,
        "overhead_s_median": overhead_median, "overhead_s_p95": overhead_p95, "overhead_s_max": overhead_max,
        "exposing_s": exposing_s, "scanning_s": scan_s, "queue_wall_s": queue_wall_s,
        "exposing_fraction": exposing_s / queue_wall_s if queue_wall_s else math.nan,
        "exposing_fraction_of_scan_time": exposing_s / scan_s if scan_s else math.nan,
        "particles_per_hour": done / (queue_wall_s / 3600.0) if queue_wall_s else math.nan,
        "beam_losses": [list(p) for p in beam_losses],
        "scans_during_beam_loss": during_loss,
        "scans_retried_after_beam_loss": sum(r.get("outcome") == "beam_lost" for r in rows),
        "drift_in_truth": truth.drifts,
        "drift_scored_with": "the simulation's stage_offset function" if truth.offset_function is not None
        else "the truth's drift table",
        "simulated_h_scanned": [min(times) / 3600.0, max(times) / 3600.0] if times else None,
        "exactly_once": exactly_once(rows, targets, scored),
        "scored": scored,
    }
    return summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The night's figures of merit as people read them, every number with its unit."""
    once = summary["exactly_once"]
    lines = [f"visits scored against the truth: {summary['visits']} ({summary['done']} done with a Ce signal; "
             + ", ".join(f"{n} {k}" for k, n in sorted(summary["outcomes"].items())) + ")",
             f"hits: {summary['within_100nm']:.1%} within {HIT_LIMIT_NM:.0f} nm of the particle's true position at "
             f"the scan's start (median {summary['hit_error_nm_median']:.0f} nm, 95th percentile "
             f"{summary['hit_error_nm_p95']:.0f} nm, worst {summary['hit_error_nm_max']:.0f} nm)",
             f"camera registration alone would have been: median {summary['coarse_error_nm_median']:.0f} nm, "
             f"95th percentile {summary['coarse_error_nm_p95']:.0f} nm"]
    for name, region in summary["regions"].items():
        lines.append(f"  region {name}: {region['visits']} visits, {region['within_100nm']:.0%} within 100 nm, "
                     f"median {region['median_error_nm']:.0f} nm")
    for name in summary.get("regions_refused") or {}:
        lines.append(f"  region {name}: not registered into the overview (in doubt, nothing stored): no visits")
    lines.append(f"overhead per particle (move + bookkeeping): median {summary['overhead_s_median']:.2f} s, "
                 f"95th percentile {summary['overhead_s_p95']:.2f} s, max {summary['overhead_s_max']:.2f} s")
    if summary["queue_wall_s"]:
        lines.append(f"exposing: {summary['exposing_fraction']:.1%} of the queue's wall time "
                     f"({summary['exposing_s'] / 60:.1f} of {summary['queue_wall_s'] / 60:.1f} min; "
                     f"{summary['exposing_fraction_of_scan_time']:.0%} of the scans' own time); "
                     f"{summary['particles_per_hour']:.0f} particles per hour")
    if summary.get("simulated_h_scanned"):
        first, last = summary["simulated_h_scanned"]
        lines.append(f"scans from {first:.2f} to {last:.2f} simulated h after the night's start; drift scored with "
                     f"{summary['drift_scored_with']}")
    lines.append(f"beam: {len(summary['beam_losses'])} loss period(s); scans taken during a loss and kept: "
                 f"{len(summary['scans_during_beam_loss'])}; scans found without beam and taken again: "
                 f"{summary['scans_retried_after_beam_loss']}")
    lost = once.get("targets_lost", [])
    lines.append("done exactly once: " + ("yes" if once["ok"] else "NO") +
                 f" (targets lost {len(lost)}, finished twice {len(once['targets_done_twice'])}, particles "
                 f"scanned twice {len(once['particles_scanned_twice'])}, done without a visit row "
                 f"{len(once.get('done_without_row', []))}; queue {once.get('queue_states', {})})")
    return lines
