"""Argument models of the CoordMapperDS commands (docs/interface.md, CoordMapperDS).

The shell does ``parse_args(text, Model)`` and hands the model to
:class:`~servers.CoordMapperDS.core.CoordMapperCore`. Everything a caller can get wrong in
the *shape* of an argument is declared here, so it is refused with the key named before
the graph is touched; what depends on the stored graph (unknown frames, unit clashes,
singular matrices) is checked by the core.

``from`` is a Python keyword, so the models spell it ``from_`` with the JSON alias ``from``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from servers.common.jsonargs import StrictArgs

FRAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
"""Frame names are short identifiers: they appear in attribute values, logs and macros."""

FrameName = Annotated[str, Field(pattern=FRAME_PATTERN)]
Unit = Literal["mm", "um", "nm", "px"]
"""Units a frame may carry; ``um`` is micrometres (ASCII, as in Tango unit strings)."""

MAX_POINTS = 100_000
MAX_PAIRS = 10_000

Point = Annotated[list[float], Field(min_length=2, max_length=2)]
Pair = Annotated[list[float], Field(min_length=4, max_length=4)]
Row3 = Annotated[list[float], Field(min_length=3, max_length=3)]
Matrix3 = Annotated[list[Row3], Field(min_length=3, max_length=3)]
Row6 = Annotated[list[float], Field(min_length=6, max_length=6)]
Covariance6 = Annotated[list[Row6], Field(min_length=6, max_length=6)]
Sigma = Annotated[float, Field(ge=0.0, le=1e12)]


class _EdgeArgs(StrictArgs):
    """Common keys of the commands that store an edge."""

    from_: FrameName = Field(alias="from")
    to: FrameName
    stage_position: Point | None = None
    from_unit: Unit | None = None
    to_unit: Unit | None = None

    @model_validator(mode="after")
    def _distinct_frames(self) -> _EdgeArgs:
        if self.from_ == self.to:
            raise ValueError(f"'from' and 'to' are both '{self.to}'; an edge joins two different frames")
        return self


class SetTransformArgs(_EdgeArgs):
    """``SetTransform``: store a known 3x3 matrix mapping ``from`` to ``to``.

    ``sigma`` (1-sigma position error in ``to`` units, isotropic) or ``covariance`` (6x6
    over the entries a11, a12, a13, a21, a22, a23) say how well it is known; neither means
    exact. For an edge to or from ``camera``, ``stage_position`` is where the stage was
    when that camera frame was taken.
    """

    matrix: Matrix3
    sigma: Sigma | None = None
    covariance: Covariance6 | None = None

    @model_validator(mode="after")
    def _one_uncertainty(self) -> SetTransformArgs:
        if self.sigma is not None and self.covariance is not None:
            raise ValueError("give either 'sigma' or 'covariance', not both")
        return self


class FitTransformArgs(_EdgeArgs):
    """``FitTransform``: least-squares fit of ``pairs`` ``[x, y, X, Y]`` (``from`` -> ``to``).

    ``reflection``: similarity only; ``true`` for a mirrored frame (e.g. a flipped camera),
    ``"auto"`` to let the residuals decide (needs one pair more than the minimum).
    ``noise_sigma``: known per-axis error of the ``to`` coordinates; else estimated.
    ``prior``: refine the mapping the graph already gives ``from -> to`` (its matrix and
    covariance are the prior) instead of fitting from the pairs alone
    (``servers/common/priorfit.py``); needs ``noise_sigma``. Then ``model`` may also be
    ``translation`` or ``auto`` (chosen by evidence, the default with a prior),
    ``linear_sigma`` is the relative error of the prior's linear part beyond its covariance and
    ``translation_sigma`` (``to`` units) that of its translation (absent: not known, flat).
    """

    pairs: Annotated[list[Pair], Field(min_length=1, max_length=MAX_PAIRS)]
    model: Literal["translation", "similarity", "affine", "auto"] | None = None
    reflection: bool | Literal["auto"] = False
    noise_sigma: Annotated[float, Field(gt=0.0, le=1e12)] | None = None
    reject_outliers: bool = True
    prior: bool = False
    linear_sigma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.01
    translation_sigma: Annotated[float, Field(gt=0.0, le=1e12)] | None = None

    @model_validator(mode="after")
    def _enough_pairs(self) -> FitTransformArgs:
        if self.prior:
            if self.noise_sigma is None:
                raise ValueError("a fit with \"prior\": true needs \"noise_sigma\", the 1-sigma error of one "
                                 "measured point in 'to' units")
            return self
        if self.model in ("translation", "auto"):
            raise ValueError(f"model '{self.model}' needs \"prior\": true (a refinement of the existing "
                             "mapping); without a prior use similarity or affine")
        model = self.model or "affine"
        needed = 2 if model == "similarity" else 3
        if len(self.pairs) < needed:
            raise ValueError(f"a {model} fit needs at least {needed} pairs, got {len(self.pairs)}")
        return self


class CalibrateCameraArgs(StrictArgs):
    """``CalibrateCamera``: the camera calibration ``A`` from stage steps and image shifts.

    Each step is ``[dX, dY, dx, dy]``: the stage moved by ``(dX, dY)`` (motor units) from a
    reference position, and the image content moved by ``(dx, dy)`` pixels (the shift a
    registration of the new frame onto the reference frame reports). Since a fixed sample
    point must keep the same beam position, ``A (dx, dy) = -(dX, dY)``.
    """

    steps: Annotated[list[Pair], Field(min_length=1, max_length=MAX_PAIRS)]
    model: Literal["similarity", "affine"] = "affine"
    reflection: bool | Literal["auto"] = False
    noise_sigma: Annotated[float, Field(gt=0.0, le=1e12)] | None = None
    reject_outliers: bool = True
    stage_position: Point | None = None


class MapArgs(StrictArgs):
    """``Map``: points of frame ``from`` expressed in frame ``to``.

    ``stage_position``: where the stage was when the camera frame was taken, used when
    ``from`` or ``to`` is ``camera``.
    """

    from_: FrameName = Field(alias="from")
    to: FrameName
    points: Annotated[list[Point], Field(min_length=1, max_length=MAX_POINTS)]
    stage_position: Point | None = None

