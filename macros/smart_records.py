"""What a night leaves on disk besides Sardana's scans: the particle metadata written into each
scan's own HDF5 entry, and the event log the morning report reads the time budget from.

Scans are recorded by Sardana itself: with ``ScanFile`` ending in ``.h5`` its NXscan HDF5
recorder (``NXscanH5_FileRecorder``) writes one ``/entry<ScanID>`` per scan, with every
measured column under ``measurement/``. What Sardana cannot know (which particle a mesh was
for, where it sits on the reference image, where the mapper put it on the stage) is added to
the same entry with Sardana's own custom-data API, ``DataRecorder.addCustomData`` with an
``nxpath`` (the route of Sardana's ``ascanct_midtrigger`` example macro), under
``/entry<N>/smart`` (``NX_class`` ``NXcollection``). It is called after the scan has closed,
when the recorder knows the entry's name; the recorder reopens the file for it. Only the file
recorders are given the metadata: Sardana's OutputRecorder would print one "Custom data" line
per value into every Spock session.

Plain Python (no Sardana import), so the layout is unit-tested without a MacroServer.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

SMART_NXPATH = "smart:NXcollection"
"""Where the SMART metadata of a scan goes, relative to the scan's NXentry."""
EVENTS_FILE = "smart_events.jsonl"
"""The event log's name, next to the visit log (SmartScanLog)."""

ROLE_PARTICLE = "particle_scan"
ROLE_FINE_SEARCH = "fine_alignment_search"
ROLE_FINE_CENTRE = "fine_alignment_centre"
ROLE_BEAM_SEARCH = "beam_calibration_search"
ROLE_BEAM_CENTRE = "beam_calibration_centre"
ROLE_DRIFT_SEARCH = "drift_search"
ROLE_DRIFT_CENTRE = "drift_centre"

EVENT_KINDS = ("scan", "move", "align", "wait_beam", "drift_check", "failure", "drift", "drift_reset", "realign")
"""Kinds the report's time budget knows: ``align`` (fine alignment, beam calibration) and
``drift_check`` count as aligning, ``wait_beam`` as waiting for beam. ``scan`` (one per
particle scan: points, exposure, exposing fraction, how the mesh was sized), ``drift`` (every
update of the drift estimate), ``drift_reset`` (a new mapping) and ``realign`` (what a jump
or a missed particle made the loop do) describe the night (docs/workflow.md)."""


def file_recorders(scan_macro: Any) -> list[Any]:
    """The file recorders of a finished scan macro (Sardana's ``mesh``, ``ascan``, ...): those
    with a file name (NXscan HDF5, SPEC). Empty when ScanDir/ScanFile are not set."""
    gscan = getattr(scan_macro, "_gScan", None)
    handler = getattr(gscan, "data_handler", None) or getattr(gscan, "_data_handler", None)
    recorders = list(getattr(handler, "recorders", None) or [])
    return [r for r in recorders if getattr(r, "filename", None)]


def scan_file_entry(scan_macro: Any) -> tuple[str, str] | None:
    """(file, entry) of the scan in its HDF5 file, e.g. ``('/data/scans.h5', 'entry12')``;
    None when the scan was not recorded to HDF5 (ScanFile not ``*.h5``)."""
    for recorder in file_recorders(scan_macro):
        if str(recorder.filename).endswith((".h5", ".hdf5", ".nxs")) and getattr(recorder, "entryname", None):
            return str(recorder.filename), str(recorder.entryname)
    return None


def _value(value: Any) -> Any:
    """A value the NXscan recorder stores: strings, ints, floats, float arrays; None is skipped
    by the caller. Booleans become 0/1 (HDF5 has no bool), dicts JSON text."""
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, str | int | float | np.integer | np.floating):
        return value
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    array = np.asarray(value)
    if array.dtype.kind in "iuf":
        return array.astype(float)
    return json.dumps(list(value) if isinstance(value, Sequence) else str(value))


class ScanRecord(NamedTuple):
    """Where a scan's data went: its HDF5 file and entry (None when not recorded to HDF5), and
    what of the metadata could not be written (the caller warns: a night is not stopped for it)."""

    file: str | None
    entry: str | None
    problems: list[str]


def annotate_scan(scan_macro: Any, metadata: Mapping[str, Any]) -> ScanRecord:
    """Write ``metadata`` into the finished scan's own entry (``/entry<N>/smart/<key>``) with
    Sardana's custom-data API; returns where it went and what failed.

    Call it after the scan macro returned (``scan = self.execMacro([...])``). A key already
    written to this entry is left as it was (the recorder refuses to overwrite: stored results
    are never replaced)."""
    where = scan_file_entry(scan_macro)
    problems: list[str] = []
    for recorder in file_recorders(scan_macro):
        for key, value in metadata.items():
            if value is None:
                continue
            try:
                recorder.addCustomData(_value(value), key, nxpath=SMART_NXPATH)
            except Exception as exc:  # noqa: BLE001 - Sardana wraps every recorder failure in RuntimeError
                problems.append(f"{key} not written to {recorder.filename}: {exc}")
    return ScanRecord(where[0] if where else None, where[1] if where else None, problems)


def scan_metadata(role: str, *, particle_index: int | None, frame: str | None, reference_xy: Sequence[float] | None,
                  target: Sequence[float] | None, stage_unit: str, motors: Sequence[str], channel: str,
                  region: str | None = None, reference_image: str | None = None,
                  coarse_target: Sequence[float] | None = None, **extra: Any) -> dict[str, Any]:
    """The SMART metadata of one scan, as written by ``annotate_scan``.

    ``role`` says what the map was for (``particle_scan``, ``fine_alignment_search``, ...);
    ``reference_xy`` is the particle's position on the reference image (px of ``frame``);
    ``target`` and ``coarse_target`` are stage positions (``stage_unit``, in ``motors`` order);
    ``region`` names the part of the reference a queue target came from (default the frame).
    ``extra`` (measured centre, significance, outcome, ...) is stored as given."""
    data: dict[str, Any] = {
        "role": role, "particle_index": None if particle_index is None else int(particle_index),
        "frame": frame, "region": region if region is not None else frame, "reference_image": reference_image,
        "reference_position_px": None if reference_xy is None else [float(v) for v in reference_xy],
        "target_position": None if target is None else [float(v) for v in target],
        "coarse_target_position": None if coarse_target is None else [float(v) for v in coarse_target],
        "stage_unit": stage_unit, "motors": ",".join(motors), "channel": channel,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    data.update(extra)
    return data


class EventLog:
    """One JSON object per line for what the loop spent its time on (``kind``, ``started``
    epoch s, ``duration_s``, and whatever says why), appended, flushed and fsynced: a killed
    run leaves complete lines only. The morning report sums it into the time budget."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(self, kind: str, started: float, duration_s: float, **info: Any) -> None:
        if kind not in EVENT_KINDS:
            raise ValueError(f"event kind '{kind}' is not one of {', '.join(EVENT_KINDS)}")
        record = {"kind": kind, "started": float(started), "duration_s": float(duration_s),
                  "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))}
        for key, value in info.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            record[key] = value
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, default=_json_default) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def events_path(visit_log_path: str) -> str:
    """The event log that goes with a visit log: same folder, ``smart_events.jsonl``."""
    return os.path.join(os.path.dirname(os.path.abspath(visit_log_path)), EVENTS_FILE)
