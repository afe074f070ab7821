"""Run registration methods on corpus cases and tabulate their errors.

``ours`` is ``RegistrationCore.register`` with the device's defaults (upsample 100): the
exact code path of the ``Register`` command minus the Tango shell. The others are what a
user would otherwise call, on the same arrays, each with its documented sign convention
(checked once on a clean case):

- ``skimage``: ``phase_cross_correlation(ref, tgt, upsample_factor=100)`` (translation);
- ``cv2.phaseCorrelate`` with a Hann window (translation);
- ``cv2.findTransformECC`` (translation: MOTION_TRANSLATION; similarity: MOTION_AFFINE reported
  as the closest similarity; identity start, 200 iterations); it refuses when it does not converge;
- ``imreg_dft``: ``translation`` / ``similarity(numiter=3)``.

None of the baselines has a notion of refusing a match, except ECC's non-convergence, so
every answer they give counts as accepted; that is what their false-success column says.
Cross-modal cases (different pixel sizes, a small field in a large frame) are run only with
ours: the baselines have no way to take two pixel sizes and a contained target.

Errors: translation = Euclidean shift error (px); similarity = rotation (deg), scale (%)
and point error = largest displacement error over the target's four corners and centre,
in reference px (camera px for cross-modal cases). Coverage: the fraction of accepted
cases whose error lies within 2 reported sigmas, per quantity (shift x and y counted
separately, rotation, scale).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

from benchmarks.corpus.cases import Case
from servers.common.errors import SmartError
from servers.RegistrationDS.core import RegistrationCore
from servers.RegistrationDS.results import ImageRegistration
from servers.RegistrationDS.similarity import rotation_and_scale, similarity_matrix


@dataclass
class Outcome:
    """One method on one case."""

    method: str
    case: Case
    accepted: bool
    matrix: np.ndarray | None
    seconds: float
    sigma: dict = field(default_factory=dict)
    """Reported 1-sigma: ``shift_px`` [sx, sy] (of the target centre), ``rotation_deg``, ``scale``."""
    note: str = ""

    # ------------------------------------------------------------------ errors
    def _points(self) -> np.ndarray:
        h, w = self.case.target.shape
        return np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1],
                         [(w - 1) / 2, (h - 1) / 2, 1]], float).T

    def errors(self) -> dict[str, float]:
        """Error figures of an accepted answer to a related case (empty otherwise)."""
        if self.matrix is None or self.case.truth is None:
            return {}
        truth, found = self.case.truth, self.matrix
        if self.case.model == "translation":
            delta = found[:2, 2] - truth[:2, 2]
            return {"shift": float(np.hypot(*delta)), "dx": float(delta[0]), "dy": float(delta[1])}
        rotation, scale = rotation_and_scale(found)
        true_rotation, true_scale = rotation_and_scale(truth)
        points = self._points()
        moved = (found @ points - truth @ points)[:2]
        centre = moved[:, -1]
        return {"rotation": float(abs((rotation - true_rotation + 180.0) % 360.0 - 180.0)),
                "scale": float(abs(scale / true_scale - 1.0) * 100.0),
                "point": float(np.max(np.hypot(moved[0], moved[1]))),
                "dx": float(centre[0]), "dy": float(centre[1]),
                "signed_rotation": float((rotation - true_rotation + 180.0) % 360.0 - 180.0),
                "signed_scale": float(scale / true_scale - 1.0)}

    def coverage(self) -> dict[str, bool]:
        """Whether each reported 1-sigma covers the true error at 2 sigma."""
        errors = self.errors()
        if not errors or not self.sigma:
            return {}
        out = {}
        shift = self.sigma.get("shift_px")
        if shift is not None:
            out["shift_x"] = abs(errors["dx"]) <= 2 * shift[0]
            out["shift_y"] = abs(errors["dy"]) <= 2 * shift[1]
        if "signed_rotation" in errors and self.sigma.get("rotation_deg") is not None:
            out["rotation"] = abs(errors["signed_rotation"]) <= 2 * self.sigma["rotation_deg"]
        if "signed_scale" in errors and self.sigma.get("scale") is not None:
            out["scale"] = abs(errors["signed_scale"]) <= 2 * self.sigma["scale"]
        return out


def _centre_sigma(result: ImageRegistration) -> dict:
    sigma = result.uncertainty
    return {"shift_px": list(sigma.shift_px), "rotation_deg": sigma.rotation_deg, "scale": sigma.scale}


def run_ours(case: Case, **extra: object) -> Outcome:
    core = RegistrationCore()
    core.put_image("ref", case.reference, case.reference_px_um, {})
    core.put_image("tgt", case.target, case.target_px_um, {})
    started = time.perf_counter()
    try:
        result = core.register({"reference": "ref", "target": "tgt", "model": case.model, "upsample": 100,
                                **extra})
    except SmartError as exc:
        return Outcome("ours", case, False, None, time.perf_counter() - started, note=str(exc))
    elapsed = time.perf_counter() - started
    matrix = result.matrix_array if result.success else None
    return Outcome("ours", case, result.success, matrix, elapsed, _centre_sigma(result), "; ".join(result.warnings))


def _translation(dx: float, dy: float) -> np.ndarray:
    out = np.eye(3)
    out[:2, 2] = (dx, dy)
    return out


def run_skimage(case: Case) -> Outcome | None:
    if case.model != "translation":
        return None
    from skimage.registration import phase_cross_correlation

    started = time.perf_counter()
    shift = phase_cross_correlation(case.reference, case.target, upsample_factor=100)[0]
    return Outcome("skimage", case, True, _translation(float(shift[1]), float(shift[0])),
                   time.perf_counter() - started)


def run_cv2_phase(case: Case) -> Outcome | None:
    if case.model != "translation":
        return None
    started = time.perf_counter()
    window = cv2.createHanningWindow(case.reference.shape[::-1], cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(case.reference.astype(np.float64), case.target.astype(np.float64), window)
    return Outcome("cv2.phaseCorrelate", case, True, _translation(-dx, -dy), time.perf_counter() - started)


def run_ecc(case: Case) -> Outcome | None:
    if case.reference_px_um != case.target_px_um:
        return None
    started = time.perf_counter()
    motion = cv2.MOTION_TRANSLATION if case.model == "translation" else cv2.MOTION_AFFINE
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)
    try:
        _, warp = cv2.findTransformECC(case.reference.astype(np.float32), case.target.astype(np.float32),
                                       warp, motion, criteria, None, 5)
    except cv2.error:
        return Outcome("cv2.findTransformECC", case, False, None, time.perf_counter() - started, note="no convergence")
    # warp maps reference px to target px
    matrix = np.linalg.inv(np.vstack([warp.astype(np.float64), [0, 0, 1.0]]))
    if case.model != "translation":
        rotation, scale = rotation_and_scale(matrix)
        centre = np.array([(case.target.shape[1] - 1) / 2, (case.target.shape[0] - 1) / 2, 1.0])
        similar = similarity_matrix(rotation, scale, (0.0, 0.0))
        similar[:2, 2] = (matrix @ centre)[:2] - similar[:2, :2] @ centre[:2]
        matrix = similar
    return Outcome("cv2.findTransformECC", case, True, matrix, time.perf_counter() - started)


def run_imreg_dft(case: Case) -> Outcome | None:
    if case.reference_px_um != case.target_px_um or case.reference.shape != case.target.shape:
        return None
    import imreg_dft

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case.model == "translation":
            ty, tx = imreg_dft.translation(case.reference, case.target)["tvec"]
            matrix = _translation(float(tx), float(ty))
        else:
            result = imreg_dft.similarity(case.reference, case.target, numiter=3)
            ty, tx = (float(v) for v in result["tvec"])
            h, w = case.target.shape
            matrix = similarity_matrix(-float(result["angle"]), float(result["scale"]), ((w - 1) / 2, (h - 1) / 2),
                                       (tx, ty))
    return Outcome("imreg_dft", case, True, matrix, time.perf_counter() - started)


BASELINES: tuple[Callable[[Case], Outcome | None], ...] = (run_skimage, run_cv2_phase, run_ecc, run_imreg_dft)


def run_all(cases: Iterable[Case], baselines: bool = True) -> list[Outcome]:
    outcomes = []
    for case in cases:
        outcomes.append(run_ours(case))
        if baselines:
            for baseline in BASELINES:
                outcome = baseline(case)
                if outcome is not None:
                    outcomes.append(outcome)
    return outcomes


# ---------------------------------------------------------------------- tables
MAIN_ERROR = {"translation": "shift", "similarity": "point"}


@dataclass
class Row:
    method: str
    kind: str
    group: str
    cases: int
    accepted: int
    errors: dict[str, tuple[float, float, float]]
    """per quantity: (median, 95th percentile, max) over accepted related cases"""
    coverage: float | None
    false_success: float | None


def summarise(outcomes: list[Outcome], by: str = "split") -> list[Row]:
    """One row per (method, kind, split) — or per (method, kind, source) with ``by='source'``."""
    groups: dict[tuple[str, str, str], list[Outcome]] = {}
    for outcome in outcomes:
        key = (outcome.method, outcome.case.kind, outcome.case.split if by == "split" else outcome.case.source)
        groups.setdefault(key, []).append(outcome)
    rows = []
    for (method, kind, group), members in sorted(groups.items()):
        accepted = [o for o in members if o.accepted]
        errors: dict[str, tuple[float, float, float]] = {}
        false_success = None
        coverage = None
        if kind.startswith("unrelated"):
            false_success = len(accepted) / len(members)
        else:
            quantities = ("shift",) if members[0].case.model == "translation" else ("rotation", "scale", "point")
            for quantity in quantities:
                values = np.array([o.errors()[quantity] for o in accepted])
                if values.size:
                    errors[quantity] = (float(np.median(values)), float(np.percentile(values, 95)),
                                        float(values.max()))
            checks = [flag for o in accepted for flag in o.coverage().values()]
            coverage = float(np.mean(checks)) if checks else None
        rows.append(Row(method, kind, group, len(members), len(accepted), errors, coverage, false_success))
    return rows


def _cell(values: tuple[float, float, float] | None, digits: int) -> str:
    if values is None:
        return "-"
    return " / ".join(f"{v:.{digits}f}" for v in values)


def markdown(rows: list[Row]) -> str:
    """The accuracy table as markdown: errors as median / 95th pct / max."""
    lines = ["| method | kind | split or source | cases | accepted | shift px | rotation deg | scale % | "
             "point px | 2-sigma coverage | false success |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row.method} | {row.kind} | {row.group} | {row.cases} | {row.accepted} | "
            f"{_cell(row.errors.get('shift'), 3)} | {_cell(row.errors.get('rotation'), 3)} | "
            f"{_cell(row.errors.get('scale'), 3)} | {_cell(row.errors.get('point'), 2)} | "
            f"{'-' if row.coverage is None else f'{100 * row.coverage:.0f} %'} | "
            f"{'-' if row.false_success is None else f'{100 * row.false_success:.0f} %'} |")
    return "\n".join(lines)


def rms_shift(outcomes: list[Outcome]) -> float:
    values = [o.errors()["shift"] for o in outcomes if o.accepted and o.case.truth is not None
              and o.case.model == "translation"]
    return math.sqrt(float(np.mean(np.square(values)))) if values else float("nan")
