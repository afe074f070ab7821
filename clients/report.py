"""The morning report: one HTML file a scientist opens at breakfast to judge the night.

What was scanned, what failed and why, a thumbnail of every particle's map, the drift over
the night, the time budget (scanning, moving, aligning, waiting for beam) and where each
scan's data is. Built only from what the night left on disk, so it can be made at any time,
by anyone, after any crash: Sardana's HDF5 scan files (maps and SMART metadata,
``clients/scandata.py``), the visit log (``visits.csv``/``smart_visits.csv``: outcome, message,
scan and move times per particle) and the event log (``smart_events.jsonl``: fine alignment,
drift checks, beam waits). Figures are embedded as base64 PNG: the file travels alone.

``smart report [RUN_DIR] [-o report.html]``; ``make demo`` writes ``run/demo/report.html``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clients.scandata import ScanMap, offset_nm, read_scans

THUMB_PX = 128
"""Side of each particle's map thumbnail (px): every map, whatever its points, the same size."""
FIGURE_PX = (900, 360)
"""Width and height (px) of the drift and time-budget figures."""
NM_PER_UNIT = {"mm": 1e6, "um": 1e3, "nm": 1.0}
VISIT_LOG_NAMES = ("visits.csv", "smart_visits.csv")
EVENTS_NAME = "smart_events.jsonl"
OK_OUTCOMES = ("scanned",)
BUDGET = (("scanning", "#3070c0"), ("moving + bookkeeping", "#60a060"), ("aligning", "#d08020"),
          ("waiting for beam", "#c03030"), ("other", "#a0a0a0"))


@dataclass
class NightRecords:
    """Everything the report is made of, read from files."""

    run_dir: Path
    visits: list[dict[str, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    scans: list[ScanMap] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)


def _skip(path: Path) -> bool:
    """The stack's own folders (logs, databases) hold no results."""
    return any(part in ("stack", "logs", "__pycache__") for part in path.parts)


def find_records(run_dir: Path) -> NightRecords:
    """Read the night under ``run_dir``: every HDF5 scan file, visit log and event log in it."""
    run_dir = run_dir.resolve()
    records = NightRecords(run_dir)
    files = sorted(p for p in run_dir.rglob("*") if p.is_file() and not _skip(p.relative_to(run_dir)))
    h5 = [p for p in files if p.suffix in (".h5", ".hdf5", ".nxs")]
    records.scans = read_scans(h5)
    for path in files:
        if path.name in VISIT_LOG_NAMES:
            with path.open(newline="") as stream:
                records.visits.extend(csv.DictReader(stream))
            records.sources.append(path)
        elif path.name == EVENTS_NAME:
            for line in path.read_text().splitlines():
                try:
                    records.events.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by a crash: the log's complete lines still count
            records.sources.append(path)
    records.sources.extend(h5)
    return records


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def thumbnail_png(scan: ScanMap, size: int = THUMB_PX) -> bytes:
    """The map as a ``size`` x ``size`` PNG (nearest neighbour, magma, y up as on the stage)."""
    from matplotlib import cm
    from matplotlib import image as mimage

    _, _, image = scan.grid()
    if image.size == 0:
        image = np.full((1, 1), np.nan)
    finite = image[np.isfinite(image)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    rows = (np.arange(size) * image.shape[0] // size)[::-1]  # row 0 of the PNG is the top: highest y
    cols = np.arange(size) * image.shape[1] // size
    rgba = cm.magma(np.nan_to_num(scaled[np.ix_(rows, cols)], nan=0.0))
    rgba[~np.isfinite(image[np.ix_(rows, cols)])] = (0.2, 0.2, 0.2, 1.0)  # not measured (an aborted scan)
    out = io.BytesIO()
    mimage.imsave(out, rgba, format="png")
    return out.getvalue()


def _figure_png(fig: Any) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    return out.getvalue()


def _new_figure() -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(FIGURE_PX[0] / 100, FIGURE_PX[1] / 100), dpi=100)


def _epoch(text: str) -> float:
    """An ISO time (Sardana's ``start_time``/``end_time``, the loop's ``finished_at``) in s."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return math.nan


def drift_series(records: NightRecords) -> dict[str, list[tuple[float, float, float]]]:
    """(time s, dx nm, dy nm) over the night: X-ray map centre minus target of every particle
    scan with a signal, and the drift the camera re-registrations measured."""
    series: dict[str, list[tuple[float, float, float]]] = {"X-ray map centre - target": [],
                                                           "camera re-registration": []}
    for scan in records.scans:
        if scan.role != "particle_scan" or scan.metadata.get("outcome") not in OK_OUTCOMES:
            continue
        per = NM_PER_UNIT.get(str(scan.metadata.get("stage_unit", "mm")), math.nan)
        dx, dy = offset_nm(scan, per)
        if math.isfinite(dx):
            series["X-ray map centre - target"].append((_epoch(scan.end_time or scan.start_time), dx, dy))
    unit = next((str(s.metadata.get("stage_unit")) for s in records.scans if s.metadata.get("stage_unit")), "mm")
    for event in records.events:
        drift = event.get("drift_position")
        if event.get("kind") == "drift_check" and drift and len(drift) == 2:
            per = NM_PER_UNIT.get(unit, math.nan)
            series["camera re-registration"].append((float(event["started"]), drift[0] * per, drift[1] * per))
    return series


def drift_png(records: NightRecords) -> bytes:
    fig = _new_figure()
    ax = fig.add_axes((0.08, 0.15, 0.62, 0.75))
    series = drift_series(records)
    times = [t for points in series.values() for t, _, _ in points if math.isfinite(t)]
    start = min(times) if times else 0.0
    styles = {"X-ray map centre - target": "o", "camera re-registration": "s"}
    for name, points in series.items():
        points = sorted(p for p in points if math.isfinite(p[0]))
        if not points:
            continue
        t = (np.array([p[0] for p in points]) - start) / 60.0
        for axis, colour in ((1, "#3070c0"), (2, "#c03030")):
            ax.plot(t, [p[axis] for p in points], styles[name] + "-", color=colour, markersize=4, linewidth=0.8,
                    label=f"{'x' if axis == 1 else 'y'}: {name}")
    if not times:
        ax.text(0.5, 0.5, "no particle map with a signal and no drift check yet", ha="center", va="center",
                transform=ax.transAxes)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("time since the first map (min)")
    ax.set_ylabel("offset (nm)")
    ax.set_title("drift over the night")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _figure_png(fig)


def time_budget(records: NightRecords) -> dict[str, float]:
    """Seconds spent per activity: scanning and moving from the visit log (smart_scan_particles,
    smart_run_queue) or, for scans it does not list (an older smart_run_queue), the scan time in
    the HDF5 entry and the ``move`` events; aligning (fine alignment, beam calibration, drift
    checks) and beam waits from the event log; "other" is the rest of the span between the first and the last record."""
    budget = dict.fromkeys((name for name, _ in BUDGET), 0.0)
    visited = set()
    logged_targets = {row["target_id"] for row in records.visits if row.get("target_id")}
    for row in records.visits:
        budget["scanning"] += np.nan_to_num(_float(row.get("scan_s")))
        budget["moving + bookkeeping"] += np.nan_to_num(_float(row.get("overhead_s")))
        visited.add((row.get("scan_file", ""), row.get("scan_entry", "")))
    for scan in records.scans:
        if scan.role == "particle_scan" and (str(scan.file), scan.entry) not in visited \
                and not any(r.get("index") == str(scan.index) for r in records.visits if not r.get("scan_entry")):
            budget["scanning"] += np.nan_to_num(_float(scan.metadata.get("scan_s")))
    for event in records.events:
        kind, duration = event.get("kind"), np.nan_to_num(_float(event.get("duration_s")))
        if kind in ("align", "drift_check", "realign"):
            budget["aligning"] += duration
        elif kind == "wait_beam":
            budget["waiting for beam"] += duration
        elif kind == "move" and str(event.get("target_id")) not in logged_targets:
            budget["moving + bookkeeping"] += duration  # smart_run_queue's visit rows hold their moves
    stamps = [_epoch(s.start_time) for s in records.scans] + [_epoch(s.end_time or "") for s in records.scans]
    stamps += [float(e["started"]) + _float(e.get("duration_s")) for e in records.events if "started" in e]
    stamps += [float(e["started"]) for e in records.events if "started" in e]
    stamps = [t for t in stamps if math.isfinite(t)]
    span = (max(stamps) - min(stamps)) if stamps else 0.0
    budget["other"] = max(span - sum(v for k, v in budget.items() if k != "other"), 0.0)
    return budget


def budget_png(budget: dict[str, float]) -> bytes:
    fig = _new_figure()
    ax = fig.add_axes((0.2, 0.2, 0.75, 0.65))
    names = [name for name, _ in BUDGET]
    minutes = [budget.get(name, 0.0) / 60.0 for name in names]
    ax.barh(names, minutes, color=[colour for _, colour in BUDGET])
    total = sum(minutes)
    for y, value in enumerate(minutes):
        share = f" ({value / total:.0%})" if total > 0 else ""
        ax.text(value, y, f" {value:.1f} min{share}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("minutes")
    ax.set_xlim(0, max(max(minutes, default=0.0) * 1.3, 1.0))
    ax.set_title(f"time budget: {total:.1f} min from the first to the last record")
    return _figure_png(fig)


@dataclass
class ParticleLine:
    """One target of the night (a particle, or a queue target that is a plain point): the loop's
    verdict and where its map is."""

    label: str
    outcome: str
    message: str
    scan: ScanMap | None
    offset_nm: tuple[float, float]
    scan_s: float
    finished_at: str


def particle_label(index: Any, region: Any = None) -> str:
    """``particle 12``; ``tile2 particle 12`` on a night of several regions, whose particle
    indices each start at 0 (one detection per region)."""
    return f"{region} particle {index}" if region else f"particle {index}"


def scan_label(scan: ScanMap, with_region: bool = False) -> str | None:
    """``particle 12`` (``tile2 particle 12`` ``with_region``) or, for a queue target that is not
    a detected particle, ``target 7``."""
    if scan.index is not None:
        return particle_label(scan.index, scan.metadata.get("region") if with_region else None)
    target = scan.metadata.get("queue_target_id")
    return None if target is None else f"target {int(target)}"


def night_regions(records: NightRecords) -> set[str]:
    """The regions the night's particle scans and visits name."""
    regions = {str(s.metadata["region"]) for s in records.scans
               if s.role == "particle_scan" and s.metadata.get("region")}
    return regions | {row["region"] for row in records.visits if row.get("region")}


def target_maps(scans: Iterable[ScanMap], with_region: bool = False) -> dict[str, ScanMap]:
    """The newest complete particle_scan entry of each particle or queue target."""
    maps: dict[str, ScanMap] = {}
    for scan in scans:
        label = scan_label(scan, with_region) if scan.role == "particle_scan" and scan.complete else None
        if label is not None:
            maps[label] = scan
    return maps


def _sort_key(label: str) -> tuple[str, int]:
    kind, _, number = label.rpartition(" ")
    return kind, int(number) if number.isdigit() else 0


def particle_lines(records: NightRecords) -> list[ParticleLine]:
    """Every target the night finished, joined with its map. Sources: the visit log of
    smart_scan_particles (last line per particle), the ``failure`` events of smart_run_queue
    (targets that failed or were skipped, with their reason), and the particle_scan entries of
    the HDF5 files (the verdict the loop wrote there)."""
    with_region = len(night_regions(records)) > 1
    maps = target_maps(records.scans, with_region)
    by_location = {(str(s.file), s.entry): s for s in records.scans}
    verdicts: dict[str, dict[str, str]] = {}
    for row in records.visits:
        try:
            verdicts[particle_label(int(row["index"]), row.get("region") if with_region else None)] = row
        except (KeyError, TypeError, ValueError):
            if row.get("target_id"):  # a queue target that is a plain point
                verdicts[f"target {row['target_id']}"] = row
            continue
    for event in records.events:
        if event.get("kind") != "failure":
            continue
        label = (particle_label(event["particle"], event.get("region") if with_region else None)
                 if event.get("particle") is not None else f"target {event.get('target_id')}")
        kind = f" ({event['failure_kind']})" if event.get("failure_kind") else ""
        verdicts[label] = {"outcome": f"{event.get('outcome', 'failed')}{kind}", "message": event.get("reason") or "",
                           "finished_at": event.get("at", ""), "scan_file": event.get("scan_file") or "",
                           "scan_entry": event.get("scan_entry") or ""}
    lines = []
    for label in sorted(set(verdicts) | set(maps), key=_sort_key):
        row = verdicts.get(label, {})
        scan = by_location.get((row.get("scan_file", ""), row.get("scan_entry", ""))) or maps.get(label)
        outcome = row.get("outcome") or (str(scan.metadata.get("outcome", "")) if scan else "") or "unknown"
        per = NM_PER_UNIT.get(str(scan.metadata.get("stage_unit", "mm")), math.nan) if scan else math.nan
        scan_s = _float(row.get("scan_s")) if row.get("scan_s") not in (None, "") else \
            (_float(scan.metadata.get("scan_s")) if scan else math.nan)
        lines.append(ParticleLine(label, outcome, row.get("message", "") or "", scan,
                                  offset_nm(scan, per) if scan else (math.nan, math.nan), scan_s,
                                  row.get("finished_at", "") or (scan.end_time or "" if scan else "")))
    return lines


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _nm(value: float) -> str:
    return f"{value:+.0f}" if math.isfinite(value) else "-"


CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
th { background: #eee; }
.thumbs { display: flex; flex-wrap: wrap; gap: 10px; }
.thumb { width: 150px; font-size: 0.75em; word-break: break-all; }
.thumb img { width: 128px; height: 128px; image-rendering: pixelated; display: block; }
.failed { color: #b00000; }
.path { font-family: monospace; font-size: 0.85em; }
"""


def build_report(run_dir: Path, title: str | None = None) -> str:
    """The report's HTML for the night under ``run_dir``."""
    records = find_records(run_dir)
    lines = particle_lines(records)
    outcomes = Counter(line.outcome for line in lines)
    failed = [line for line in lines if line.outcome not in OK_OUTCOMES]
    budget = time_budget(records)
    starts = sorted(s.start_time for s in records.scans if s.start_time)
    ends = sorted(s.end_time for s in records.scans if s.end_time)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_esc(title or 'SMART night report')}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>{_esc(title or 'SMART night report')}</h1>",
             f"<p>Run folder <span class='path'>{_esc(records.run_dir)}</span>; report made "
             f"{_esc(time.strftime('%Y-%m-%d %H:%M:%S'))}. Scans from {_esc(starts[0] if starts else '-')} to "
             f"{_esc(ends[-1] if ends else '-')}.</p>",
             "<h2>What was scanned</h2>",
             f"<p id='counts'>{len(lines)} targets visited: "
             + (", ".join(f"{n} {_esc(k)}" for k, n in sorted(outcomes.items())) or "none")
             + f"; {len(records.scans)} scans in the data files "
             f"({sum(s.role.startswith('fine_alignment') for s in records.scans)} for the fine alignment).</p>",
             "<h2>What failed and why</h2>"]
    if failed:
        parts.append(_table(("target", "outcome", "why", "finished"),
                            ((f.label, f.outcome, f.message or "-", f.finished_at or "-") for f in failed)))
    else:
        parts.append("<p>Nothing failed: every visited particle was scanned with a signal.</p>")
    failed_checks = [e for e in records.events if e.get("kind") == "drift_check" and not e.get("success", True)]
    if failed_checks:
        parts.append(_table(("drift check at", "confidence", "what happened"),
                            ((e.get("at", "-"), e.get("confidence", "-"), "registration in doubt: the loop stopped")
                             for e in failed_checks)))
    parts.append("<h2>Every particle's map</h2><div class='thumbs' id='thumbnails'>")
    for line in lines:
        if line.scan is None or line.scan.counts.size == 0:
            continue
        css = "" if line.outcome in OK_OUTCOMES else " failed"
        parts.append(f"<div class='thumb{css}' data-label='{_esc(line.label)}'>"
                     f"<img alt='{_esc(line.label)}' src='{_png(thumbnail_png(line.scan))}'>"
                     f"{_esc(line.label)}: {_esc(line.outcome)}<br>offset {_nm(line.offset_nm[0])}, "
                     f"{_nm(line.offset_nm[1])} nm<br><span class='path'>{_esc(line.scan.location)}</span></div>")
    parts.append("</div>")
    parts.append("<h2>Drift over the night</h2>"
                 f"<img id='drift' alt='drift over the night' src='{_png(drift_png(records))}'>"
                 "<p>X-ray map centre minus the target the mapper gave (what the beam missed by, per particle) "
                 "and the drift the camera re-registrations measured (the reference point's stage position now "
                 "minus at smart_register).</p>")
    parts.append("<h2>Time budget</h2>"
                 f"<img id='budget' alt='time budget' src='{_png(budget_png(budget))}'>"
                 + _table(("activity", "minutes"), ((k, f"{v / 60:.1f}") for k, v in budget.items())))
    parts.append("<h2>Where the data is</h2>")
    parts.append(_table(("target", "outcome", "data (file::entry)", "scan (s)"),
                        ((line.label, line.outcome, line.scan.location if line.scan else "not recorded",
                          f"{line.scan_s:.1f}" if math.isfinite(line.scan_s) else "-") for line in lines)))
    parts.append("<p>Read from: " + ", ".join(f"<span class='path'>{_esc(p)}</span>" for p in records.sources)
                 + ". Each entry's map is in <code>measurement/</code>, the particle's index, region, reference "
                 "position and stage target in <code>smart/</code>.</p></body></html>")
    return "\n".join(parts)


def write_report(run_dir: Path, output: Path | None = None, title: str | None = None) -> Path:
    """Write the report (default ``<run_dir>/report.html``) and return its path."""
    output = output or run_dir / "report.html"
    text = build_report(run_dir, title)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_suffix(output.suffix + ".part")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(output)  # a reader never sees half a report
    return output
