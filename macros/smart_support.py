"""Plain helpers for the SMART macros: unit handling, texts, motor limits, scan maths, logs.

Kept apart from the macro classes, and free of Tango, so the maths is unit-tested without a
MacroServer or a control system. How the macros (and the clients) call the devices is in
``macros/smart_calls.py``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

UNIT_PER_UM = {"mm": 1e-3, "um": 1.0, "nm": 1e3}
"""Stage units per micrometre, for the units a CoordMapperDS stage frame may carry."""
POSITION_DECIMALS = {"mm": 6, "um": 3, "nm": 0}
"""Decimals that print a stage position to 1 nm: finer than any beam, coarser than the noise."""
NOT_SPECIFIED = ("", "Not specified", "nan", "inf", "-inf")

VISIT_COLUMNS = ["index", "sem_x_px", "sem_y_px", "coarse_x", "coarse_y", "target_x", "target_y",
                 "ce_center_x", "ce_center_y", "outcome", "scan_s", "overhead_s", "finished_at", "message",
                 "scan_file", "scan_entry", "mapped_x", "mapped_y", "half_width_um", "exposing_fraction",
                 "region", "frame", "target_id", "started_at", "started_sim_s"]
"""``mapped_x``/``mapped_y``: where the mapper put the particle before the drift correction
(``target`` = mapped + the drift estimate); ``half_width_um``: the sized mesh's half width;
``exposing_fraction``: points x exposure / scan wall time.
``scan_file``/``scan_entry``: the particle's map in Sardana's HDF5 file (``/<entry>/measurement``,
its SMART metadata in ``/<entry>/smart``). ``region``, ``frame``, ``target_id`` (the queue target),
``started_at`` (epoch s) and ``started_sim_s`` (the ``SmartClock`` reading, e.g. a simulated
night's clock, when the scan started) are written by ``smart_run_queue``; ``sem_x_px``/``sem_y_px``
are then the target's point in its frame."""


class SmartMacroError(RuntimeError):
    """A refusal or failure the user must act on; the message says how. When a device refused,
    ``reason`` is its SMART_* (or Tango) reason and ``desc`` what it told the user to do."""

    def __init__(self, message: str, reason: str = "", desc: str = "") -> None:
        super().__init__(message)
        self.reason, self.desc = reason, desc


def check_storable(what: str, value: object) -> None:
    """Refuse a value that the MacroServer environment would not give back as it was stored.

    The stack keeps the environment in the Tango database (sardana.yaml: ``environment_db:
    property``), one JSON text per variable. cppTango's DataBaseds on MariaDB (9.3.4, Debian's
    tango-db) gives back ``"`` for every ``\\"`` in a property (measured in
    tests/facility/test_database_differences.py), and JSON writes a double quote inside a string,
    or a backslash at a string's end, exactly so: such a variable comes back as broken JSON and
    every later macro that reads it fails. Refused before anything is stored, on every database,
    so a session behaves the same on the embedded one and at a facility."""
    if '\\"' in json.dumps(value):
        raise SmartMacroError(f"SMART_BadArgument: {what} holds a double quote (\") or ends a text with a "
                              "backslash (\\), which the facility's Tango database does not store intact "
                              "(the MacroServer environment lives there); rename it without them")


def position_text(value: float, unit: str) -> str:
    """A stage coordinate with its unit, to 1 nm (no 16-digit floats)."""
    return f"{float(value):.{POSITION_DECIMALS.get(unit, 6)}f} {unit}"


def number_text(value: float, decimals: int) -> str:
    """A plain decimal a Sardana command parses as a float: no ``np.float64(...)``, no exponent,
    no ``-0``."""
    text = f"{float(value):.{decimals}f}"
    return "0" if float(text) == 0 else text


def length_text(stage_units: float | None, unit: str) -> str:
    """A length (an uncertainty, a residual) in nm below 1 um, else in um: people's units."""
    if stage_units is None or not math.isfinite(float(stage_units)):
        return "unknown"
    um = float(stage_units) / UNIT_PER_UM[unit]
    return f"{um * 1000:.1f} nm" if abs(um) < 1 else f"{um:.3f} um"


def sigma_text(sigma: float | None, unit: str) -> str:
    """The mapper's 1-sigma uncertainty, or why there is none (an exact fit: 3 pairs, affine)."""
    if sigma is None or not math.isfinite(float(sigma)):
        return "exact fit, so no uncertainty estimate"
    return f"1-sigma {length_text(sigma, unit)}"


def known_range(low: float, high: float) -> tuple[float, float] | None:
    """``(low, high)`` of a motor's limits when both are finite and in order, else None.

    The macros take the numbers from Taurus (``getPositionObj().getRange()``, as Sardana's own
    ``wm`` and ``set_lim`` do), which gives an unset limit ("Not specified") as -inf / +inf; no
    limit text is parsed here. An infinite or inverted range means the limits are unknown, and
    unknown limits are never "within": callers refuse to move."""
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        return None
    return low, high


def stage_of_frame(stage: dict[str, Any], motors: Sequence[str]) -> list[float]:
    """The stage position a camera frame carries (its metadata's ``stage``: motor name or device
    attribute -> position), in the order of ``motors`` (aliases or device names)."""
    values = []
    for name in motors:
        found = [v for k, v in stage.items() if k == name or k.rsplit("/", 1)[-1] == name]
        if not found:
            raise SmartMacroError(f"the camera frame carries no position for {name}: check the camera's "
                                  "StageMotors property")
        if found[0] is None:  # the camera could not read the motor when it took the frame
            raise SmartMacroError(f"the camera frame carries no known position for {name} (the motor did "
                                  "not answer when it was taken): take another frame")
        values.append(float(found[0]))
    return values


def camera_rotation_text(rotation_deg: float, mirrored: bool) -> str:
    """The camera calibration's rotation as people read it: within (-90, 90] deg of the stage axes,
    plus whether the image moves with or against the stage. A stage carries the sample past a
    fixed beam, so the image usually moves against it: a raw angle near 180 deg is that sign."""
    angle = (float(rotation_deg) + 90.0) % 360.0 - 90.0   # (-90, 270]
    against = angle > 90.0
    if against:
        angle -= 180.0
    if angle <= -90.0:
        angle += 180.0
    sense = "against" if against else "with"
    return (f"camera axes {angle:+.2f} deg from the stage axes, image moves {sense} the stage"
            + (", mirrored" if mirrored else ""))


DRIFT_ROTATION_DEG = 5.0
"""Rotation search half-width of the drift check around the rotation smart_register found."""


def drift_check_search(rotation_deg: float | None, model: str | None) -> tuple[str, list[float] | None]:
    """The model and the rotation window (deg) a drift check registers the reference with: the
    model ``smart_register`` stored it with (an SEM image with its own scan errors registers
    affinely only: a similarity check of it is refused every time), and within
    ``DRIFT_ROTATION_DEG`` of its rotation (drift moves the sample, it does not turn it).
    A registration stored before the model was kept is checked as a similarity, as then."""
    window = None if rotation_deg is None else [float(rotation_deg) - DRIFT_ROTATION_DEG,
                                                float(rotation_deg) + DRIFT_ROTATION_DEG]
    return str(model or "similarity"), window


class MeshSpec(NamedTuple):
    """A square mesh centred on a stage position: ``intervals`` steps per axis.

    A NamedTuple, not a dataclass: Sardana executes macro modules without registering
    them in ``sys.modules``, which dataclasses need."""

    x0: float
    x1: float
    y0: float
    y1: float
    intervals: int

    def command(self, macro: str, motor_x: str, motor_y: str, exposure: float) -> list[str]:
        return mesh_words(macro, motor_x, self.x0, self.x1, self.intervals, motor_y, self.y0, self.y1,
                          self.intervals, exposure)


def mesh_words(macro: str, motor_x: str, x0: float, x1: float, nx: int, motor_y: str, y0: float, y1: float,
               ny: int, exposure: float, decimals: int = 9) -> list[str]:
    """A Sardana ``mesh`` command as words, every number a plain decimal (pasteable in Spock).
    ``decimals`` of the stage unit: 9 (1 pm in mm) keeps a computed mesh exact enough."""
    return [macro, motor_x, number_text(x0, decimals), number_text(x1, decimals), str(int(nx)),
            motor_y, number_text(y0, decimals), number_text(y1, decimals), str(int(ny)),
            f"{float(exposure):g}"]


def mesh_around(centre: Sequence[float], half_width: float, step: float) -> MeshSpec:
    """The mesh covering ``centre +- half_width`` at ``step`` (all in stage units)."""
    if not (half_width > 0 and step > 0 and math.isfinite(half_width) and math.isfinite(step)):
        raise SmartMacroError("half width and step must be positive numbers")
    intervals = max(1, int(math.ceil(2 * half_width / step - 1e-9)))
    half = intervals * step / 2
    return MeshSpec(centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half, intervals)


def mesh_points(half_width: float, step: float) -> int:
    """Points of the square mesh ``mesh_around`` makes for this half width and step."""
    return (mesh_around((0.0, 0.0), half_width, step).intervals + 1) ** 2


def peak_centre(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> tuple[float, float, float]:
    """Centre of a single peak in a mesh map, and its significance in sigma.

    The centroid of the points above half the peak is always computed; a 2-D Gaussian
    fit refines it when the peak covers enough points to constrain one, and is
    discarded when it wanders more than two grid steps from the centroid (a coarse
    search map may hold a single bright point). Significance is the peak height over
    the Poisson noise of the background, so a caller can refuse a map with no particle.
    """
    from scipy.optimize import curve_fit

    x, y, counts = (np.asarray(v, float) for v in (x, y, counts))
    background = float(np.percentile(counts, 20))
    signal = np.clip(counts - background, 0, None)
    if signal.max() <= 0:
        return float("nan"), float("nan"), 0.0
    top = signal >= 0.5 * signal.max()
    cx, cy = float(np.average(x[top], weights=signal[top])), float(np.average(y[top], weights=signal[top]))
    significance = float(signal.max() / math.sqrt(max(background, 1.0)))
    xs = np.unique(np.round(x, 12))
    spacing = float(np.median(np.diff(xs))) if len(xs) > 1 else 1.0
    if top.sum() < 4:
        return cx, cy, significance

    def gaussian(p: tuple[np.ndarray, np.ndarray], amp: float, x0: float, y0: float, sigma: float,
                 base: float) -> np.ndarray:
        return amp * np.exp(-((p[0] - x0) ** 2 + (p[1] - y0) ** 2) / (2 * sigma * sigma)) + base

    lower = [0.0, x.min(), y.min(), 0.2 * spacing, 0.0]
    upper = [np.inf, x.max(), y.max(), max(x.max() - x.min(), spacing), max(counts.max(), 1.0)]
    start = [signal.max(), cx, cy, min(max(spacing, 0.25 * spacing), upper[3]), min(background, upper[4])]
    try:
        params, _ = curve_fit(gaussian, (x, y), counts, p0=start, bounds=(lower, upper), maxfev=4000)
    except (RuntimeError, ValueError):
        return cx, cy, significance
    fx, fy = float(params[1]), float(params[2])
    if math.hypot(fx - cx, fy - cy) > 2 * spacing:
        return cx, cy, significance
    return fx, fy, significance


class VisitLog:
    """The per-particle CSV log: one line per finished particle, flushed at once, so a
    stopped or killed run always leaves complete lines only."""

    def __init__(self, path: str) -> None:
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            with open(path, "w", newline="") as handle:
                csv.writer(handle).writerow(VISIT_COLUMNS)

    def write(self, row: dict[str, Any]) -> None:
        values = []
        for column in VISIT_COLUMNS:
            value = row.get(column, "")
            if isinstance(value, float):
                value = "" if not math.isfinite(value) else f"{value:.9g}"
            values.append(value)
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerow(values)
            handle.flush()
            os.fsync(handle.fileno())


def now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def spread_selection(points: np.ndarray, count: int) -> list[int]:
    """Pick ``count`` indices far apart (farthest-point order, starting from the point
    farthest from the centroid): fiducials spread over the field fit an affine best."""
    if len(points) == 0:
        return []
    chosen = [int(np.argmax(np.linalg.norm(points - points.mean(axis=0), axis=1)))]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    while len(chosen) < min(count, len(points)):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return chosen


def reachable_spread(candidates: np.ndarray, points: np.ndarray, reachable: np.ndarray,
                     count: int) -> list[int]:
    """Particle indices (taken from ``candidates``) of up to ``count`` reachable particles spread
    over the field. ``points``/``reachable`` are per candidate; the spread is chosen among the
    reachable ones only, so its positions index the reachable subset, not ``candidates``."""
    reachable_candidates = np.asarray(candidates)[np.asarray(reachable, bool)]
    reachable_points = np.asarray(points, float)[np.asarray(reachable, bool)]
    return [int(reachable_candidates[i]) for i in spread_selection(reachable_points, count)]


FINE_OFFSET_SCATTER_LIMIT_UM = 0.25
"""Largest RMS scatter of the fine alignment's particle offsets (X-ray centre minus coarse
target) about their mean. A right registration leaves one common, smoothly varying offset
(20-40 nm scatter on the virtual beamline); an SEM image of another sample with the same
markers registers just as well, but the X-ray maps then find unrelated particles, up to the
search half-width away in random directions (~0.5 um scatter for +-1 um searches)."""


def offset_scatter_um(targets: np.ndarray, centres: np.ndarray, stage_per_um: float) -> float:
    """RMS distance (um) of the offsets ``centres - targets`` (stage units) from their mean."""
    offsets = (np.asarray(centres, float) - np.asarray(targets, float)) / stage_per_um
    if len(offsets) < 2:
        return 0.0
    return float(np.sqrt(np.mean(np.sum((offsets - offsets.mean(axis=0)) ** 2, axis=1))))


def offsets_agree(targets: np.ndarray, centres: np.ndarray, sigma: float, alpha: float = 0.01) -> bool:
    """Whether the offsets ``centres - targets`` (stage units) agree as one common offset within
    the centres' per-axis noise ``sigma``: the chi-square of their scatter about the mean is
    below its ``1 - alpha`` quantile. When not, the coarse mapping's linear part is off (scale,
    rotation, shear) and more particles are needed to correct it."""
    from scipy import stats

    offsets = np.asarray(centres, float) - np.asarray(targets, float)
    if len(offsets) < 2:
        return True
    chi2 = float(np.sum((offsets - offsets.mean(axis=0)) ** 2) / sigma**2)
    return chi2 <= float(stats.chi2.ppf(1.0 - alpha, 2 * (len(offsets) - 1)))
