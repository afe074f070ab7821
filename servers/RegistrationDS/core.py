"""RegistrationCore: everything RegistrationDS does, without Tango.

The device shell parses arguments with the models in :mod:`args`, calls one method here
and maps :class:`~servers.common.errors.SmartError` to ``DevFailed``. Every method either
completes or raises before it changes anything, so a refused command leaves the slots
and the last results as they were. A registration that completes but is doubtful is not
an error: it becomes ``last_result`` with ``success: false`` (the device shows ALARM)
while ``last_good_result`` keeps the previous trustworthy one. Results are the frozen
dataclasses of :mod:`servers.RegistrationDS.results`; the shell sends their ``to_json()``.

Thread safety: slots are immutable snapshots in a locked store; results are swapped
under a lock; the computation itself runs on snapshots without holding any lock, so a
client reading ``last_result`` is never blocked by a registration in progress.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from servers.common.errors import BadArgument
from servers.common.imageio import read_image
from servers.RegistrationDS.affine import AffineEstimate, transform_covariance
from servers.RegistrationDS.args import LoadImageArgs, RegisterArgs, RegisterFiducialsArgs
from servers.RegistrationDS.fiducials import register_pairs
from servers.RegistrationDS.models import DOUBT_CONFIDENCE, ModelEstimate, estimate_model
from servers.RegistrationDS.overlay import blend
from servers.RegistrationDS.preprocess import (
    MAX_WORKING_SIDE,
    MIN_REGISTRATION_SIZE,
    Representation,
    check_has_structure,
    crop,
    represent,
    resample,
    resample_matrix,
)
from servers.RegistrationDS.results import (
    FiducialRegistration,
    FileSource,
    ImageRegistration,
    LoadedImage,
    Registration,
    SlotDescription,
    Uncertainty,
    as_matrix,
)
from servers.RegistrationDS.similarity import rotation_and_scale, within_rotation_range
from servers.RegistrationDS.slots import (
    ImageSlot,
    SlotStore,
    validate_image,
    validate_pixel_size,
    validate_slot_name,
)
from servers.RegistrationDS.uncertainty import entry_covariance, point_sigma, rotation_scale_sigma

DEFAULT_PIXEL_SIZE_UM = 1.0
UNKNOWN_SIGMA = 1e6
"""Stands for a sigma that could not be determined (JSON has no infinity); far above any limit."""
PRIOR_SEARCH_MARGIN_DEG = 2.0
"""A rotation prior narrows the search to its tolerance plus this (one search step)."""


@dataclass(frozen=True)
class _Registered:
    """What the overlay needs: the two snapshots and the matrix between them."""

    reference: ImageSlot
    target: ImageSlot
    matrix: np.ndarray


def _entry_covariance(matrix: np.ndarray, centre: tuple[float, float], sigma: dict[str, Any]) -> list[list[float]]:
    """6x6 covariance of the matrix entries (a11, a12, a13, a21, a22, a23), CoordMapperDS's
    ``SetTransform`` form, from the 1-sigmas of the target centre's image, rotation and scale."""
    values = np.array([*sigma["shift_px"], math.radians(sigma["rotation_deg"]), sigma["scale"]])
    covariance = entry_covariance(matrix, centre, values)
    return ((covariance + covariance.T) / 2).tolist()


def check_prior(prior: Any, matrix: np.ndarray, centre: tuple[float, float], sigma: dict[str, Any],
                warnings: list[str]) -> float:
    """Confidence cap from a prior: 1.0 if the result satisfies every stated expectation
    (within its tolerance plus twice the result's own sigma), else :data:`DOUBT_CONFIDENCE`."""
    rotation, scale = rotation_and_scale(matrix)
    failures = []
    if prior.rotation_deg is not None:
        off = (rotation - prior.rotation_deg + 180.0) % 360.0 - 180.0
        if abs(off) > prior.rotation_tolerance_deg + 2 * sigma["rotation_deg"]:
            failures.append(f"rotation {rotation:.3f} deg is {off:+.3f} deg from the expected "
                            f"{prior.rotation_deg:g} +- {prior.rotation_tolerance_deg:g}")
    if prior.scale is not None:
        off = scale / prior.scale - 1.0
        if abs(off) > prior.scale_tolerance + 2 * sigma["scale"]:
            failures.append(f"scale {scale:.5f} is {100 * off:+.3f} % from the expected {prior.scale:g} "
                            f"+- {100 * prior.scale_tolerance:g} %")
    if prior.shift_px is not None:
        shift = matrix[:2, 2] - np.asarray(prior.shift_px, float)
        allowed = prior.shift_tolerance_px + 2 * max(sigma["shift_px"])
        if float(np.hypot(*shift)) > allowed:
            failures.append(f"shift ({matrix[0, 2]:.2f}, {matrix[1, 2]:.2f}) px is {float(np.hypot(*shift)):.2f} px "
                            f"from the expected {list(prior.shift_px)} +- {prior.shift_tolerance_px:g}")
    for failure in failures:
        warnings.append(f"prior not met: {failure}")
    return DOUBT_CONFIDENCE if failures else 1.0


ModelT = TypeVar("ModelT", bound=BaseModel)
RegistrationT = TypeVar("RegistrationT", bound=Registration)


def _as_model(args: ModelT | dict[str, Any], model: type[ModelT]) -> ModelT:
    if isinstance(args, model):
        return args
    if isinstance(args, dict):
        try:
            return model.model_validate(args)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'argument'}: {e['msg']}"
                                 for e in exc.errors()[:5])
            raise BadArgument(f"bad argument: {problems}") from None
    raise BadArgument(f"expected a {model.__name__} or a dict, got {type(args).__name__}")


class RegistrationCore:
    """Image slots and registrations between them (see module doc for the guarantees)."""

    def __init__(self) -> None:
        self.slots = SlotStore()
        self._lock = threading.Lock()
        self._last_result: Registration | None = None
        self._last_good_result: Registration | None = None
        self._last_registered: _Registered | None = None
        self._last_good_registered: _Registered | None = None
        self._overlay_cache: dict[int, np.ndarray] = {}

    # ----------------------------------------------------------------- slots
    def load_image(self, slot: str, path: str, pixel_size_um: float | None = None,
                   channel: str | None = None) -> LoadedImage:
        """Read ``path`` into ``slot``. Pixel size: argument, else file metadata, else 1.0 + warning.

        The result says where the pixel size came from (``pixel_size_source``: ``argument``,
        the metadata field, or ``default``), the file's ``format`` and, where the file gives
        it, the ``stage`` position the instrument recorded.
        """
        args = _as_model({"slot": slot, "path": path, "pixel_size_um": pixel_size_um, "channel": channel},
                         LoadImageArgs)
        loaded = read_image(args.path, channel=args.channel)
        data = validate_image(loaded.data, f"the image in '{args.path}'")
        warnings = list(loaded.warnings)
        pixel_size_source = loaded.pixel_size_source
        if args.pixel_size_um is not None:
            size = float(args.pixel_size_um)
            if loaded.pixel_size_um is not None and not math.isclose(size, loaded.pixel_size_um, rel_tol=1e-3):
                warnings.append(f"pixel_size_um {size:g} given; the file says {loaded.pixel_size_um:.6g} um "
                                f"({loaded.pixel_size_source}). The given value is used")
            pixel_size_source = "argument pixel_size_um"
        elif loaded.pixel_size_um is not None:
            size = validate_pixel_size(loaded.pixel_size_um)
        else:
            size = DEFAULT_PIXEL_SIZE_UM
            pixel_size_source = "default (the file gives none)"
            warnings.append("the file gives no pixel size; 1.0 um/px assumed. Pass pixel_size_um "
                            "when slots of different instruments are registered")
        described = FileSource(loaded.file_format, pixel_size_source, dict(loaded.stage) or None,
                               loaded.stage_source, loaded.channel, tuple(loaded.channels))
        metadata = {**loaded.metadata, "file": described.as_dict()}
        image = ImageSlot(args.slot, data, size, loaded.source_dtype, f"file:{args.path}",
                          metadata, tuple(warnings))
        self.slots.put(image)
        return LoadedImage(image.describe(), file=described)

    def put_image(self, slot: str, array: np.ndarray, pixel_size_um: float,
                  metadata: dict[str, Any] | None = None, source: str = "array") -> LoadedImage:
        """Store a grabbed frame; the result is LoadImage's plus the frame's ``metadata``."""
        name = validate_slot_name(slot)
        size = validate_pixel_size(pixel_size_um)
        source_dtype = str(np.asarray(array).dtype)
        data = validate_image(array, f"the image for slot '{name}'")
        metadata = dict(metadata or {})
        image = ImageSlot(name, data, size, source_dtype, source, metadata, ())
        self.slots.put(image)
        return LoadedImage(image.describe(), metadata=metadata)

    def remove_slot(self, slot: str) -> None:
        self.slots.remove(slot)

    @property
    def slot_names(self) -> list[str]:
        return self.slots.names()

    def describe_slots(self) -> list[SlotDescription]:
        return self.slots.describe_all()

    # -------------------------------------------------------------- results
    @property
    def last_result(self) -> Registration | None:
        with self._lock:
            return self._last_result

    @property
    def last_good_result(self) -> Registration | None:
        with self._lock:
            return self._last_good_result

    @property
    def overlay(self) -> np.ndarray | None:
        """Overlay of the last result (good or not: a doubtful one is exactly what to look at)."""
        return self._overlay_of(lambda: self._last_registered)

    @property
    def good_overlay(self) -> np.ndarray | None:
        """Overlay of the last good result."""
        return self._overlay_of(lambda: self._last_good_registered)

    def _overlay_of(self, pick: Any) -> np.ndarray | None:
        with self._lock:
            registered = pick()
            if registered is None:
                return None
            cached = self._overlay_cache.get(id(registered))
        if cached is None:
            cached = blend(registered.reference.data, registered.target.data, registered.matrix)
            cached.setflags(write=False)
            with self._lock:
                if len(self._overlay_cache) > 4:
                    self._overlay_cache.clear()
                self._overlay_cache[id(registered)] = cached
        return cached

    def _publish(self, result: RegistrationT, registered: _Registered) -> RegistrationT:
        with self._lock:
            self._last_result = result
            self._last_registered = registered
            if result.success:
                self._last_good_result = result
                self._last_good_registered = registered
        return result

    # --------------------------------------------------------- registration
    def register(self, args: RegisterArgs | dict[str, Any]) -> ImageRegistration:
        """Image-based registration; see docs/interface.md ``Register`` and docs/registration.md.

        Steps: both images to a common working pixel size; the model's estimate and its own
        confidence rules (:mod:`models`); back to full-resolution pixels; the rules every model
        shares (peak on the edge, precision, prior, rotation window, threshold)."""
        started = time.perf_counter()
        args = _as_model(args, RegisterArgs)
        reference = self.slots.get(args.reference)
        target = self.slots.get(args.target)
        work = _working_pair(reference, target, args)
        representation = _representation(args)
        rotation_range = _rotation_window(args)
        max_shift = None if args.max_shift_px is None else args.max_shift_px * work.ref_factor
        if args.model == "translation" and representation == "intensity":
            # The translation windows its inputs into fresh float32 arrays (preprocess.apodise),
            # the same numbers as from represent's float32 copies, one pass over each frame fewer.
            ref_rep, tgt_rep = work.ref, work.tgt
        else:
            ref_rep, tgt_rep = represent(work.ref, representation), represent(work.tgt, representation)
        estimate = estimate_model(args, ref_rep, tgt_rep, (work.ref, work.tgt), max_shift, rotation_range)
        matrix = _full_resolution_matrix(estimate.matrix, work)
        rotation, scale = rotation_and_scale(matrix)
        verdict = _judge(args, work, estimate, matrix, rotation, rotation_range, reference.pixel_size_um)
        sigma = verdict.sigma
        result = ImageRegistration(
            model=args.model,
            reference=args.reference,
            target=args.target,
            matrix=as_matrix(matrix),
            shift_px=(float(matrix[0, 2]), float(matrix[1, 2])),
            rotation_deg=float(rotation),
            scale=float(scale),
            confidence=float(verdict.confidence),
            success=verdict.success,
            warnings=tuple(verdict.warnings),
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
            uncertainty=Uncertainty((float(sigma["shift_px"][0]), float(sigma["shift_px"][1])),
                                    float(sigma["rotation_deg"]), float(sigma["scale"]),
                                    (float(sigma["point"][0]), float(sigma["point"][1]))),
            covariance=tuple(tuple(float(v) for v in row) for row in verdict.covariance),
            distinctness=float(estimate.peak.distinctness),
            polarity=int(estimate.peak.polarity),
            representation=representation,
            common_pixel_size_um=float(work.common),
        )
        return self._publish(result, _Registered(reference, target, matrix))

    def register_fiducials(self, args: RegisterFiducialsArgs | dict[str, Any]) -> FiducialRegistration:
        """Least-squares registration from point pairs; adds residuals, RMS and inliers."""
        started = time.perf_counter()
        args = _as_model(args, RegisterFiducialsArgs)
        reference = self.slots.get(args.reference)
        target = self.slots.get(args.target)
        for index, (xt, yt, xr, yr) in enumerate(args.pairs):
            if not (-0.5 <= xt <= target.width - 0.5 and -0.5 <= yt <= target.height - 0.5):
                raise BadArgument(f"pair {index}: target point ({xt}, {yt}) is outside the "
                                  f"{target.width}x{target.height} target image")
            if not (-0.5 <= xr <= reference.width - 0.5 and -0.5 <= yr <= reference.height - 0.5):
                raise BadArgument(f"pair {index}: reference point ({xr}, {yr}) is outside the "
                                  f"{reference.width}x{reference.height} reference image")
        fit = register_pairs([list(p) for p in args.pairs], args.model)
        result = replace(fit, reference=args.reference, target=args.target,
                         elapsed_ms=(time.perf_counter() - started) * 1000.0)
        return self._publish(result, _Registered(reference, target, result.matrix_array))


def _judge_affine(affine: AffineEstimate, args: RegisterArgs, left: np.ndarray, right: np.ndarray,
                  centre: tuple[float, float], sigma: dict[str, Any], confidence: float,
                  warnings: list[str]) -> tuple[list[list[float]] | None, float]:
    """The affine model's own checks: its departure from a similarity must be plausible
    (``max_anisotropy``, ``max_shear_deg``), and the position sigma of the target centre is
    the affine fit's (it replaces the similarity's in ``sigma``). Returns the 6x6 entry
    covariance in the caller's pixels (None if the fit gave none) and the capped confidence."""
    warnings.extend(affine.warnings)
    if affine.covariance is None:
        confidence = min(confidence, DOUBT_CONFIDENCE)
        warnings.append("the affine fit of the target's parts gave no uncertainty; the affine is not trustworthy")
        return None, confidence
    if not (affine.anisotropy <= args.max_anisotropy and abs(affine.shear_deg) <= args.max_shear_deg):
        confidence = min(confidence, DOUBT_CONFIDENCE)
        warnings.append(f"the affine departs from a similarity by {100 * affine.anisotropy:.2f} % anisotropic scale "
                        f"and {affine.shear_deg:+.2f} deg shear, beyond max_anisotropy {100 * args.max_anisotropy:g} % "
                        f"or max_shear_deg {args.max_shear_deg:g}: more than scan errors give; the images may not "
                        "show the same area (raise the limits if the instruments are known to distort this much)")
    covariance = transform_covariance(affine.covariance, left, right)
    covariance = (covariance + covariance.T) / 2
    sigma["shift_px"] = list(point_sigma(covariance, centre))
    matrix = np.linalg.multi_dot([left, affine.matrix, right])
    sigma["rotation_deg"], sigma["scale"] = rotation_scale_sigma(matrix, covariance)
    return covariance.tolist(), confidence


@dataclass(frozen=True)
class _WorkingPair:
    """Both images cropped to their ROIs and resampled to one working pixel size."""

    ref: np.ndarray
    tgt: np.ndarray
    ref_crop_shape: tuple[int, int]
    tgt_crop_shape: tuple[int, int]
    ref_offset: tuple[float, float]
    tgt_offset: tuple[float, float]
    common: float
    """The common pixel size (um): the coarser of the two."""
    ref_factor: float
    tgt_factor: float
    warnings: list[str]

    def ref_to_work(self) -> np.ndarray:
        """Reference slot px -> working reference px (crop, then resample)."""
        return resample_matrix(self.ref_crop_shape, self.ref_factor) @ _offset(*(-v for v in self.ref_offset))

    def tgt_to_work(self) -> np.ndarray:
        """Target slot px -> working target px (crop, then resample)."""
        return resample_matrix(self.tgt_crop_shape, self.tgt_factor) @ _offset(*(-v for v in self.tgt_offset))


def _working_pair(reference: ImageSlot, target: ImageSlot, args: RegisterArgs) -> _WorkingPair:
    """Crop, check for structure, resample both to the coarser pixel size, binned to at most
    MAX_WORKING_SIDE; refused when too small to register."""
    ref_crop, ref_offset = crop(reference.data, args.reference_roi, "reference")
    tgt_crop, tgt_offset = crop(target.data, args.target_roi, "target")
    check_has_structure(ref_crop, "reference")
    check_has_structure(tgt_crop, "target")
    common = max(reference.pixel_size_um, target.pixel_size_um)
    ref_factor = reference.pixel_size_um / common
    tgt_factor = target.pixel_size_um / common
    longest = max(max(ref_crop.shape) * ref_factor, max(tgt_crop.shape) * tgt_factor)
    warnings: list[str] = []
    if longest > MAX_WORKING_SIDE:
        binning = MAX_WORKING_SIDE / longest
        ref_factor *= binning
        tgt_factor *= binning
        warnings.append(f"images binned by {1 / binning:.2f} to at most {MAX_WORKING_SIDE} px for "
                        "registration; use ROIs for full-resolution precision")
    ref_work = _resample_float(ref_crop, ref_factor)
    tgt_work = _resample_float(tgt_crop, tgt_factor)
    if min(ref_work.shape + tgt_work.shape) < MIN_REGISTRATION_SIZE:
        raise BadArgument(
            f"after resampling to a common pixel size of {common:g} um the images are "
            f"{ref_work.shape[1]}x{ref_work.shape[0]} and {tgt_work.shape[1]}x{tgt_work.shape[0]} px; "
            f"at least {MIN_REGISTRATION_SIZE} px per side are needed. Enlarge the ROIs")
    return _WorkingPair(ref_work, tgt_work, (ref_crop.shape[0], ref_crop.shape[1]),
                        (tgt_crop.shape[0], tgt_crop.shape[1]), ref_offset, tgt_offset, common,
                        ref_factor, tgt_factor, warnings)


def _rotation_window(args: RegisterArgs) -> tuple[float, float] | None:
    """Where the rotation is searched: rotation_range_deg, else a rotation prior's tolerance
    plus one search step, else the whole circle (None)."""
    if args.rotation_range_deg is not None:
        return (float(args.rotation_range_deg[0]), float(args.rotation_range_deg[1]))
    prior = args.prior
    if (args.model in ("similarity", "affine") and prior is not None and prior.rotation_deg is not None
            and prior.rotation_tolerance_deg < 179.0):
        return (prior.rotation_deg - prior.rotation_tolerance_deg - PRIOR_SEARCH_MARGIN_DEG,
                prior.rotation_deg + prior.rotation_tolerance_deg + PRIOR_SEARCH_MARGIN_DEG)
    return None


def _representation(args: RegisterArgs) -> Representation:
    """``auto`` is intensity for a translation (same modality, the fastest) and gradients for
    the rotation-searching models (they must survive contrast inversion between instruments)."""
    if args.representation != "auto":
        return args.representation
    return "intensity" if args.model == "translation" else "gradient"


def _full_resolution_matrix(working_matrix: np.ndarray, work: _WorkingPair) -> np.ndarray:
    """The estimate, found between the cropped and resampled working images, as a matrix
    between the slots' own full-resolution pixels."""
    matrix = np.linalg.inv(work.ref_to_work()) @ working_matrix @ work.tgt_to_work()
    matrix[2] = (0.0, 0.0, 1.0)
    return matrix


@dataclass(frozen=True)
class _Verdict:
    """What the rules every model shares make of an estimate."""

    confidence: float
    success: bool
    warnings: list[str]
    sigma: dict[str, Any]
    """1-sigma ``shift_px`` (full-resolution reference px), ``rotation_deg``, ``scale`` and
    the target ``point`` they refer to."""
    covariance: list[list[float]]


def _judge(args: RegisterArgs, work: _WorkingPair, estimate: ModelEstimate, matrix: np.ndarray, rotation: float,
           rotation_range: tuple[float, float] | None, reference_pixel_size_um: float) -> _Verdict:
    """The rules every model shares, in order: a peak on the edge of the searched shifts, the
    affine's own plausibility, the prior, the precision limits, the rotation window, and
    ``min_confidence``. Each can only lower the model's own confidence."""
    warnings = work.warnings + estimate.warnings
    confidence = estimate.confidence
    if estimate.peak.on_edge:
        confidence = min(confidence, DOUBT_CONFIDENCE)
        warnings.append("the correlation peak lies on the edge of the searched shifts (max_shift_px or half "
                        "the image): the true match may lie outside; widen max_shift_px or use ROIs")
    sigma, target_centre = _sigma_at_target_centre(estimate.sigma, work)
    entry_cov = None
    if estimate.affine is not None:
        entry_cov, confidence = _judge_affine(estimate.affine, args, np.linalg.inv(work.ref_to_work()),
                                              work.tgt_to_work(),
                                              target_centre, sigma, confidence, warnings)
    if args.prior is not None:
        confidence = min(confidence, check_prior(args.prior, matrix, target_centre, sigma, warnings))
    confidence = _precision_rules(args, sigma, reference_pixel_size_um / work.common, work.common,
                                  confidence, warnings)
    if estimate.peak.polarity < 0:
        warnings.append("the target matched with inverted contrast")
    if rotation_range is not None and not within_rotation_range(rotation, rotation_range):
        confidence = 0.0
        warnings.append(f"the rotation found, {rotation:.2f} deg, is outside rotation_range_deg "
                        f"{list(rotation_range)}: widen the range, or check the images and their pixel sizes")
    success = bool(confidence >= args.min_confidence)
    if not success:
        warnings.append(f"confidence {confidence:.3g} is below {args.min_confidence}: the images may "
                        "not show the same area; check ROIs, pixel sizes, or use fiducials")
    covariance = entry_cov if entry_cov is not None else _entry_covariance(matrix, target_centre, sigma)
    return _Verdict(confidence, success, warnings, sigma, covariance)


def _sigma_at_target_centre(sigma_work: tuple[float, ...], work: _WorkingPair
                            ) -> tuple[dict[str, Any], tuple[float, float]]:
    """The model's working-size sigmas in full-resolution reference px, referred to the centre
    of the target's crop (where the shift is best known); an undetermined sigma is UNKNOWN_SIGMA."""
    known = tuple(float(v) if math.isfinite(v) else UNKNOWN_SIGMA for v in sigma_work)
    target_centre = ((work.tgt_crop_shape[1] - 1) / 2 + work.tgt_offset[0],
                     (work.tgt_crop_shape[0] - 1) / 2 + work.tgt_offset[1])
    sigma: dict[str, Any] = {"shift_px": [float(known[0] / work.ref_factor), float(known[1] / work.ref_factor)],
                             "rotation_deg": float(known[2]), "scale": float(known[3]),
                             "point": [float(target_centre[0]), float(target_centre[1])]}
    return sigma, target_centre


def _precision_rules(args: RegisterArgs, sigma: dict[str, Any], to_common: float, common: float,
                     confidence: float, warnings: list[str]) -> float:
    """A match less precise than max_sigma_px (at the common pixel size) or max_sigma_deg is in doubt."""
    sigma_common_px = max(sigma["shift_px"]) * to_common
    if not sigma_common_px <= args.max_sigma_px:
        confidence = min(confidence, DOUBT_CONFIDENCE)
        warnings.append(f"the match is not precise enough: 1-sigma position {sigma_common_px:.3g} px (of "
                        f"{common:g} um) exceeds max_sigma_px {args.max_sigma_px:g}; the images may lack "
                        "contrast or structure at this size, or differ too much; raise max_sigma_px to accept it")
    if not sigma["rotation_deg"] <= args.max_sigma_deg:
        confidence = min(confidence, DOUBT_CONFIDENCE)
        warnings.append(f"the rotation is not precise enough: 1-sigma {sigma['rotation_deg']:.3g} deg exceeds "
                        f"max_sigma_deg {args.max_sigma_deg:g}; raise max_sigma_deg to accept it")
    return confidence


def _resample_float(image: np.ndarray, factor: float) -> np.ndarray:
    """Resampled float32 image; at factor 1 the slot's own array is passed on (no copy: the
    windowing makes the first float32 array anyway and nothing downstream writes to it)."""
    if abs(factor - 1.0) < 1e-12 and image.dtype in (np.uint8, np.uint16, np.float32):
        return image
    return resample(image.astype(np.float32), factor)


def _offset(dx: float, dy: float) -> np.ndarray:
    matrix = np.eye(3)
    matrix[0, 2], matrix[1, 2] = dx, dy
    return matrix
