"""Argument models of the RegistrationDS commands (docs/interface.md, RegistrationDS).

The shell only does ``parse_args(text, Model)`` and hands the model to
:class:`~servers.RegistrationDS.core.RegistrationCore`; every rule a caller can break
is declared here so that it is refused before any work is done and with the key named.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from servers.common.jsonargs import StrictArgs
from servers.RegistrationDS.confidence import DEFAULT_MIN_CONFIDENCE

SLOT_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
"""Slot names are short identifiers so they can appear in Tango attribute values and logs."""

SlotName = Annotated[str, Field(pattern=SLOT_PATTERN)]
PositiveSize = Annotated[float, Field(gt=0, le=1e6)]
Roi = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=4, max_length=4)]
Angle = Annotated[float, Field(ge=-720.0, le=720.0)]
MAX_FIDUCIAL_PAIRS = 10_000


class LoadImageArgs(StrictArgs):
    """``LoadImage``: read a file into a slot; ``pixel_size_um`` overrides the file's metadata.

    ``channel`` chooses the channel of an AFM file (default: its height channel) or the
    element map (``Fe_Ka``, ``Fe``) or electron image (``BSE``) of an EDX file.
    """

    slot: SlotName
    path: Annotated[str, Field(min_length=1, max_length=4096)]
    pixel_size_um: PositiveSize | None = None
    channel: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class GrabImageArgs(StrictArgs):
    """``GrabImage``: copy the current frame of a camera device (the shell does the grabbing)."""

    slot: SlotName
    device: Annotated[str, Field(min_length=3, max_length=256)]


class RegistrationPrior(StrictArgs):
    """What the result is expected to be (e.g. the last good registration), with tolerances.

    A result outside any stated expectation (by more than its tolerance plus twice the
    result's own 1-sigma) is not a success, whatever its confidence. ``shift_px`` is the
    expected translation column of the matrix (reference px). For a similarity without
    ``rotation_range_deg``, the rotation prior also narrows the rotation search.
    """

    rotation_deg: Angle | None = None
    rotation_tolerance_deg: Annotated[float, Field(gt=0.0, le=180.0)] = 1.0
    scale: PositiveSize | None = None
    scale_tolerance: Annotated[float, Field(gt=0.0, le=10.0)] = 0.01
    shift_px: Annotated[list[Annotated[float, Field(ge=-1e7, le=1e7)]], Field(min_length=2, max_length=2)] | None = None
    shift_tolerance_px: Annotated[float, Field(gt=0.0, le=1e7)] = 2.0

    @model_validator(mode="after")
    def _states_something(self) -> RegistrationPrior:
        if self.rotation_deg is None and self.scale is None and self.shift_px is None:
            raise ValueError("a prior needs at least one of rotation_deg, scale, shift_px")
        return self


class RegisterArgs(StrictArgs):
    """``Register``: image-based registration of ``target`` onto ``reference``.

    ROIs are ``[x, y, w, h]`` in the pixels of their own image, ``x`` = column.
    ``max_shift_px`` bounds the displacement between the two (ROI) crops, in reference pixels.
    ``representation`` chooses what is correlated: ``intensity`` (same modality, best
    precision), ``gradient`` (gradient magnitude: survives contrast inversion and different
    instruments) or ``auto`` (intensity for translation, gradient for similarity).
    ``model`` ``affine`` (an extension of INTERFACE.md): the similarity search, then an affine
    fitted to the positions of the target's parts (see :mod:`affine`); its departure from a
    similarity must stay within ``max_anisotropy`` (singular value ratio - 1; default 5 %) and
    ``max_shear_deg`` (default 2 deg), what two instruments' scan errors can plausibly give.
    ``rotation_range_deg`` ``[low, high]`` (similarity and affine) is where the rotation of target
    onto reference is known to lie, e.g. from the instruments' scan rotations: the contained
    search then scans only that range (fewer chances for a false match, and the angles saved go into a
    finer scan: ``contained.search_factor``), and a
    result outside it (by more than 1 deg) is not a success.
    ``prior`` (:class:`RegistrationPrior`): expected rotation, scale and/or shift with
    tolerances that the result must satisfy to be a success.
    ``max_sigma_px`` (in pixels of the coarser of the two images) and ``max_sigma_deg``: a
    result whose 1-sigma position (of the target centre) or rotation is larger is not a
    success: the match may be right but is not precise enough to act on.
    """

    reference: SlotName
    target: SlotName
    model: Literal["translation", "similarity", "affine"] = "translation"
    reference_roi: Roi | None = None
    target_roi: Roi | None = None
    upsample: Annotated[int, Field(ge=1, le=1000)] = 100
    max_shift_px: PositiveSize | None = None
    representation: Literal["auto", "intensity", "gradient"] = "auto"
    min_confidence: Annotated[float, Field(gt=0.0, lt=1.0)] = DEFAULT_MIN_CONFIDENCE
    rotation_range_deg: Annotated[list[Angle], Field(min_length=2, max_length=2)] | None = None
    prior: RegistrationPrior | None = None
    max_sigma_px: Annotated[float, Field(gt=0.0, le=1e6)] = 0.15
    max_sigma_deg: Annotated[float, Field(gt=0.0, le=180.0)] = 0.1
    max_anisotropy: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05
    max_shear_deg: Annotated[float, Field(gt=0.0, le=45.0)] = 2.0

    @model_validator(mode="after")
    def _affine_limits_need_affine(self) -> RegisterArgs:
        if self.model != "affine" and ("max_anisotropy" in self.model_fields_set
                                       or "max_shear_deg" in self.model_fields_set):
            raise ValueError("max_anisotropy and max_shear_deg apply to model 'affine' only")
        return self

    @model_validator(mode="after")
    def _rotation_range_is_usable(self) -> RegisterArgs:
        if self.rotation_range_deg is None:
            return self
        if self.model == "translation":
            raise ValueError("rotation_range_deg applies to models 'similarity' and 'affine' only "
                             "(a translation has no rotation)")
        low, high = self.rotation_range_deg
        if not low < high:
            raise ValueError(f"rotation_range_deg [low, high] needs low < high, got {self.rotation_range_deg}; "
                             "e.g. [-10, 10] for rotations within 10 deg of zero")
        if high - low > 360:
            raise ValueError(f"rotation_range_deg {self.rotation_range_deg} spans more than 360 deg; "
                             "leave it out to search the whole circle")
        return self

    @field_validator("reference_roi", "target_roi")
    @classmethod
    def _roi_has_area(cls, roi: list[int] | None) -> list[int] | None:
        if roi is not None and (roi[2] < 1 or roi[3] < 1):
            raise ValueError("ROI width and height must be at least 1 pixel: [x, y, w, h]")
        return roi


FiducialPair = Annotated[list[float], Field(min_length=4, max_length=4)]


class RegisterFiducialsArgs(StrictArgs):
    """``RegisterFiducials``: fit from clicked point pairs ``[xt, yt, xr, yr]`` (target -> reference px)."""

    reference: SlotName
    target: SlotName
    pairs: Annotated[list[FiducialPair], Field(min_length=2, max_length=MAX_FIDUCIAL_PAIRS)]
    model: Literal["similarity", "affine"] = "similarity"

    @model_validator(mode="after")
    def _enough_pairs(self) -> RegisterFiducialsArgs:
        needed = 2 if self.model == "similarity" else 3
        if len(self.pairs) < needed:
            raise ValueError(f"a {self.model} fit needs at least {needed} pairs, got {len(self.pairs)}")
        return self
