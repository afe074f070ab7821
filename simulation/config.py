"""The virtual beamline as one JSON-serialisable bundle: sample + mounting + stage +
camera optics + SEM geometry + XRF settings.

Everything that a test scores against lives here, so it is saved once (``beamline.json``)
and replayed exactly; :func:`truth` extracts what the workflow must *discover* (the
sample-to-stage matrix, the camera calibration) into ``truth.json`` for the scorer, never
for the workflow. The settings are pydantic models with ``extra="forbid"`` and no NaN, so
a typo in a hand-edited beamline file is refused, naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from servers.common.errors import BadArgument, NotFound
from simulation.generate import SampleRecipe, generate_sample
from simulation.sample import Sample, sample_from_json


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, frozen=True)


class Mounting(_Settings):
    """How the sample sits on the stage: the truth the workflow has to find."""

    rotation_deg: float = 0.0
    """Sample frame turned against the lab frame (positive from +x towards +y)."""
    offset_mm: tuple[float, float] = (0.0, 0.0)
    """Stage position (motor units, mm) that puts the centre of the sample field in the beam."""
    nonorthogonality_deg: float = 0.0
    """The y motor moves at 90° + this angle to the x motor (stage shear)."""


class StageSettings(_Settings):
    """The simulated motors (see :mod:`simulation.axis`)."""

    velocity_mm_s: float = Field(0.5, gt=0)
    backlash_mm: tuple[float, float] = (0.0, 0.0)
    repeatability_mm: float = Field(0.0, ge=0)
    """1-sigma error of where the load really stops after each move."""
    readback_noise_mm: float = Field(0.0, ge=0)
    """1-sigma jitter of the reported position."""
    limits_mm: tuple[float, float] = (-12.0, 12.0)

    @model_validator(mode="after")
    def _check(self) -> StageSettings:
        if min(self.backlash_mm) < 0:
            raise ValueError("backlash_mm must not be negative")
        if self.limits_mm[0] >= self.limits_mm[1]:
            raise ValueError("limits_mm must be (low, high) with low < high")
        return self


class ZoomLevel(_Settings):
    pixel_size_um: float = Field(gt=0)
    psf_sigma_um: float = Field(gt=0)
    """1-sigma of the objective's Gaussian point spread function, in the sample plane."""


def _default_zooms() -> dict[str, ZoomLevel]:
    return {"low": ZoomLevel(pixel_size_um=1.1, psf_sigma_um=1.0),
            "mid": ZoomLevel(pixel_size_um=0.55, psf_sigma_um=0.55),
            "high": ZoomLevel(pixel_size_um=0.275, psf_sigma_um=0.35)}


class CameraOptics(_Settings):
    """The on-axis optical microscope: fixed on the beamline, looking at the beam position.

    Output is uint16 holding 12-bit data (0..4095), as from a typical machine-vision camera.
    """

    zooms: dict[str, ZoomLevel] = Field(default_factory=_default_zooms)
    zoom: str = "mid"
    width: int = Field(2048, gt=0, le=8192)
    height: int = Field(2048, gt=0, le=8192)
    rotation_deg: float = 0.0
    """Camera turned against the lab (stage) axes."""
    flip_x: bool = False
    """Mirror the columns (e.g. an odd number of mirrors in the light path)."""
    beam_px: tuple[float, float] | None = None
    """Camera pixel (x, y) where the X-ray beam truly is (at the night's start); ``None`` =
    image centre."""
    beam_px_calibrated: tuple[float, float] | None = None
    """What the beamline's once-per-beamline calibration file says the beam pixel is: the
    value a workflow may read. ``None`` = exact (the true ``beam_px``)."""
    exposure_ms: float = Field(20.0, gt=0)
    electrons_per_ms: float = Field(500.0, gt=0)
    """Photo-electrons per pixel per ms at reflectance 1 and full illumination."""
    gain_dn_per_e: float = Field(0.35, gt=0)
    read_noise_e: float = Field(6.0, ge=0)
    offset_dn: float = Field(64.0, ge=0)
    illumination_falloff: float = Field(0.3, ge=0, lt=1)
    """Relative loss of illumination in the image corners (vignetting)."""
    illumination_tilt: tuple[float, float] = (0.06, -0.04)
    """Linear illumination slope across the image (fraction per half width/height)."""
    reflectance_membrane: float = Field(0.25, ge=0)
    reflectance_frame: float = Field(0.55, ge=0)
    """The Si chip around the membrane window."""
    reflectance_pt: float = Field(0.9, ge=0)
    reflectance_ceo2: float = Field(0.75, ge=0)

    @model_validator(mode="after")
    def _check(self) -> CameraOptics:
        if self.zoom not in self.zooms:
            raise ValueError(f"zoom {self.zoom!r} is not one of the zoom levels {sorted(self.zooms)}")
        return self

    def beam(self) -> tuple[float, float]:
        """The true beam pixel (truth; the simulation renders with it)."""
        if self.beam_px is not None:
            return self.beam_px
        return ((self.width - 1) / 2.0, (self.height - 1) / 2.0)

    def beam_calibrated(self) -> tuple[float, float]:
        """The beam pixel as the beamline's calibration file gives it (what the workflow has)."""
        return self.beam_px_calibrated if self.beam_px_calibrated is not None else self.beam()


class OpticalPath(_Settings):
    """Imperfections of the camera's optical path (see :mod:`simulation.optics`); all zero =
    the ideal microscope of :class:`CameraOptics`."""

    distortion_k1: float = Field(0.0, ge=-0.05, le=0.05)
    """Radial lens distortion: relative displacement at the image corner (positive =
    barrel: a pixel at normalised radius r sees the point at r (1 + k1 r^2))."""
    defocus_sigma_um: float = Field(0.0, ge=0)
    """Extra Gaussian blur (1 sigma, sample plane) of a sample out of focus."""
    view_angle_deg: float = Field(0.0, ge=0, le=10)
    """Angle between the camera's optical axis and the X-ray beam."""
    view_azimuth_deg: float = 0.0
    """Lab direction (from +x towards +y) in which a raised sample appears shifted."""
    sample_height_um: float = 0.0
    """Height of the sample surface (at its field centre) above the plane where the beam
    pixel was calibrated; with a view angle, it shifts the camera's view (parallax)."""
    sample_tilt_mrad: tuple[float, float] = (0.0, 0.0)
    """Sample surface slope along the sample x and y axes: the height, hence the parallax,
    changes across the sample."""


class SemGeometry(_Settings):
    """A lab SEM image: its own field, pixel size and scan rotation, and its contrast."""

    pixel_size_um: float = Field(0.02, gt=0)
    width: int = Field(4096, gt=0, le=16384)
    height: int = Field(4096, gt=0, le=16384)
    centre_um: tuple[float, float] | None = None
    """Sample point (µm) at the image centre; ``None`` = centre of the sample field."""
    rotation_deg: float = 0.0
    """Scan rotation: image axes turned against the sample axes."""
    noise: bool = True
    level_membrane: float = Field(6000.0, ge=0)
    level_frame: float = Field(11000.0, ge=0)
    level_pt: float = Field(30000.0, ge=0)
    level_ceo2: float = Field(24000.0, ge=0)
    edge_gain: float = Field(1.6, ge=0)
    """Brightness of the edge rim relative to the face (SEM edge effect)."""
    rim_um: float = Field(0.008, ge=0)
    probe_sigma_um: float = Field(0.010, ge=0)
    """1-sigma of the effective probe (beam + SE escape), 24 nm FWHM. Particle positions
    are sub-pixel honest when this is >= ~0.5 px (pixel <= 20 nm by default)."""
    charging: float = Field(0.15, ge=0, lt=1)
    """Amplitude of the slow charging gradient (fraction of the local level)."""
    noise_gain: float = Field(8.0, ge=0)
    """Noise variance per grey level (shot-noise-like: sigma = sqrt(noise_gain * level))."""
    scale_error: tuple[float, float] = (0.0, 0.0)
    """Magnification error along the image x and y axes: the true pixel is
    ``pixel_size_um * (1 + e)`` while the SEM (and the TIFF) says ``pixel_size_um``."""
    shear_deg: float = Field(0.0, ge=-5, le=5)
    """The slow-scan (y) axis is not perpendicular to the fast-scan axis by this angle."""
    nonlinearity: tuple[float, float] = (0.0, 0.0)
    """Scan non-linearity along x and y: a cubic displacement ``a (u^3 - 0.6 u)`` in units
    of the half width/height (u in [-1, 1]); zero mean and no affine part over the field,
    so the truth ``pixel_to_sample`` stays the best affine and this is extra."""

    @model_validator(mode="after")
    def _check_errors(self) -> SemGeometry:
        if max(abs(v) for v in (*self.scale_error, *self.nonlinearity)) > 0.1:
            raise ValueError("scale_error and nonlinearity are fractions below 0.1")
        return self


class XrfSettings(_Settings):
    """The X-ray fluorescence counter: a Gaussian beam over the sample."""

    beam_fwhm_nm: float = Field(100.0, gt=0)
    ce_cps_reference: float = Field(3000.0, ge=0)
    """Ce-L counts per second from a 50 nm CeO2 cube centred in the beam."""
    pt_cps_full: float = Field(40000.0, ge=0)
    """Pt-L counts per second with the whole beam on a Pt marker."""
    ce_background_cps: float = Field(2.0, ge=0)
    pt_background_cps: float = Field(5.0, ge=0)


class ClockSettings(_Settings):
    """The simulated clock shared by every process of the virtual beamline (see
    :mod:`simulation.clock`): simulated seconds since the night's start are
    ``max(0, (time.time() - epoch_unix) * acceleration)``."""

    acceleration: float = Field(1.0, gt=0, le=1000)
    epoch_unix: float | None = None
    """Unix time at which the night starts; ``None`` = the clock stands at 0 (a world
    without time: no drift, the ring at its start value)."""
    duration_h: float = Field(8.0, gt=0, le=72)
    """Length of the night: the timelines are precomputed up to this (plus a margin) and
    held at their last value beyond."""


class SampleDrift(_Settings):
    """Drift of the sample against the beam and the camera (see :mod:`simulation.drift`)."""

    thermal_um_per_h: float = Field(0.0, ge=0)
    """Speed of the smooth thermal drift."""
    turn_period_h: float = Field(6.0, gt=0)
    """The thermal drift's direction turns through 360 degrees in this time."""
    random_walk_um_per_sqrt_h: float = Field(0.0, ge=0)
    """Random walk on top: 1-sigma displacement per axis after one hour."""
    step_um: float = Field(0.0, ge=0)
    """Step in a random direction at each refill of the ring (thermal load change)."""


class BeamDrift(_Settings):
    """Drift of the X-ray beam against the camera (optics); only X-rays can see it."""

    drift_um_per_h: float = Field(0.0, ge=0)
    """Speed of the steady drift, in a seeded random direction."""
    random_walk_um_per_sqrt_h: float = Field(0.0, ge=0)


class RingSettings(_Settings):
    """The beam intensity over the night, as a fraction of the nominal ring current: shared
    by the XRF counter (counts scale with it) and SimRing's ``Current``."""

    lifetime_h: float | None = Field(None, gt=0)
    """Beam lifetime (exponential decay between refills); ``None`` = no decay."""
    refill_period_h: float | None = Field(None, gt=0)
    """A refill restores the full current every this many hours; ``None`` = no refill."""
    refill_duration_s: float = Field(0.0, ge=0)
    """No X-rays during a refill (shutters closed), simulated seconds."""
    losses: int = Field(0, ge=0, le=100)
    """Beam-loss periods (dumps) over the night, at seeded random times."""
    loss_duration_s: tuple[float, float] = (180.0, 600.0)
    """Range of a loss's simulated duration; after a loss the current is back at nominal."""

    @model_validator(mode="after")
    def _check(self) -> RingSettings:
        if not 0 < self.loss_duration_s[0] <= self.loss_duration_s[1]:
            raise ValueError("loss_duration_s must be (low, high) with 0 < low <= high")
        return self


@dataclass
class VirtualBeamline:
    """The full simulation state; :func:`default_beamline` makes a randomised one."""

    seed: int
    sample: Sample
    mounting: Mounting = field(default_factory=Mounting)
    stage: StageSettings = field(default_factory=StageSettings)
    camera: CameraOptics = field(default_factory=CameraOptics)
    sem: SemGeometry = field(default_factory=SemGeometry)
    xrf: XrfSettings = field(default_factory=XrfSettings)
    optical_path: OpticalPath = field(default_factory=OpticalPath)
    clock: ClockSettings = field(default_factory=ClockSettings)
    drift: SampleDrift = field(default_factory=SampleDrift)
    beam_drift: BeamDrift = field(default_factory=BeamDrift)
    ring: RingSettings = field(default_factory=RingSettings)

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "sample": self.sample.to_json(),
                **{k: getattr(self, k).model_dump(mode="json") for k in _SECTIONS}}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")

    def starting_at(self, epoch_unix: float) -> VirtualBeamline:
        """A copy whose night starts at the Unix time ``epoch_unix`` (what a runner writes
        into the file it hands to the stack, see :mod:`simulation.clock`)."""
        return replace(self, clock=self.clock.model_copy(update={"epoch_unix": float(epoch_unix)}))


_SECTIONS: dict[str, type[_Settings]] = {"mounting": Mounting, "stage": StageSettings, "camera": CameraOptics,
                                         "sem": SemGeometry, "xrf": XrfSettings, "optical_path": OpticalPath,
                                         "clock": ClockSettings, "drift": SampleDrift, "beam_drift": BeamDrift,
                                         "ring": RingSettings}


def beamline_from_json(data: Any) -> VirtualBeamline:
    """Validate a decoded beamline JSON object; unknown or malformed fields are refused by name."""
    if not isinstance(data, dict):
        raise BadArgument("beamline: must be a JSON object with seed, sample and settings sections")
    allowed = {"seed", "sample", *_SECTIONS}
    for key in data:
        if key not in allowed:
            raise BadArgument(f"beamline.{key}: unknown key; allowed keys are {', '.join(sorted(allowed))}")
    for key in ("seed", "sample"):
        if key not in data:
            raise BadArgument(f"beamline.{key}: missing")
    if isinstance(data["seed"], bool) or not isinstance(data["seed"], int):
        raise BadArgument("beamline.seed: must be an integer")
    sections = {}
    for key, model in _SECTIONS.items():
        try:
            sections[key] = model.model_validate_json(json.dumps(data.get(key, {})))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in (key, *err.get("loc", ())))
            raise BadArgument(f"{where}: {err.get('msg', 'invalid')}; fix the beamline file") from None
    return VirtualBeamline(seed=data["seed"], sample=sample_from_json(data["sample"]), **sections)


def load_beamline(path: str | Path) -> VirtualBeamline:
    """Read a beamline JSON, or a bare sample JSON (then the settings are defaults, mounting
    zero): the CLI accepts either so that a quick render needs no bundle."""
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"file {str(p)!r} does not exist; give a beamline or sample JSON")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadArgument(f"{str(p)!r} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and "particles" in data:
        return VirtualBeamline(seed=0, sample=sample_from_json(data))
    return beamline_from_json(data)


# Documented ranges of the random mounting errors of default_beamline().
MOUNT_ROTATION_MAX_DEG = 4.0
MOUNT_OFFSET_MAX_MM = 1.0
NONORTHOGONALITY_MAX_DEG = 0.1
CAMERA_ROTATION_MAX_DEG = 3.0
DEFAULT_BACKLASH_MM = 0.0003
DEFAULT_REPEATABILITY_MM = 0.000005


def default_beamline(seed: int, sample: Sample | None = None, recipe: SampleRecipe | None = None) -> VirtualBeamline:
    """A beamline with a generated sample and random mounting errors within the documented
    ranges: rotation ±4°, offset ±1 mm per axis, stage shear ±0.1°, camera rotation ±3°,
    backlash 0.3 µm, repeatability 5 nm. Same seed, same beamline."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB1]))
    mounting = Mounting(
        rotation_deg=float(rng.uniform(-MOUNT_ROTATION_MAX_DEG, MOUNT_ROTATION_MAX_DEG)),
        offset_mm=(float(rng.uniform(-MOUNT_OFFSET_MAX_MM, MOUNT_OFFSET_MAX_MM)),
                   float(rng.uniform(-MOUNT_OFFSET_MAX_MM, MOUNT_OFFSET_MAX_MM))),
        nonorthogonality_deg=float(rng.uniform(-NONORTHOGONALITY_MAX_DEG, NONORTHOGONALITY_MAX_DEG)),
    )
    camera = CameraOptics(rotation_deg=float(rng.uniform(-CAMERA_ROTATION_MAX_DEG, CAMERA_ROTATION_MAX_DEG)))
    stage = StageSettings(backlash_mm=(DEFAULT_BACKLASH_MM, DEFAULT_BACKLASH_MM),
                          repeatability_mm=DEFAULT_REPEATABILITY_MM)
    sem = SemGeometry(rotation_deg=float(rng.uniform(-10.0, 10.0)))
    if sample is None:
        sample = generate_sample(seed, recipe)
    return VirtualBeamline(seed=int(seed), sample=sample, mounting=mounting, stage=stage, camera=camera, sem=sem)


# Night defaults (night_beamline): each models a figure of a real beamline, see docs/simulation.md.
NIGHT_ACCELERATION = 16.0
NIGHT_REPEATABILITY_MM = 0.000020
NIGHT_READBACK_NOISE_MM = 0.000003
NIGHT_BEAM_PX_OFF_CENTRE_MAX = 40.0
NIGHT_BEAM_CALIBRATION_ERROR_UM = (0.2, 0.4)
NIGHT_DISTORTION_K1 = 0.003
NIGHT_DEFOCUS_SIGMA_UM = 0.3
NIGHT_VIEW_ANGLE_DEG = 0.6
NIGHT_SAMPLE_HEIGHT_UM = (20.0, 40.0)
NIGHT_SAMPLE_TILT_MAX_MRAD = 5.0
NIGHT_SEM_SCALE_ERROR = (0.01, 0.02)
NIGHT_SEM_SHEAR_MAX_DEG = 0.3
NIGHT_SEM_NONLINEARITY = 0.003
NIGHT_STREAM = 0x416E7


def night_beamline(seed: int, sample: Sample | None = None, recipe: SampleRecipe | None = None,
                   hours: float = 8.0, acceleration: float = NIGHT_ACCELERATION,
                   epoch_unix: float | None = None) -> VirtualBeamline:
    """:func:`default_beamline` (same mounting for the same seed) made as unkind as a real
    beamline over a night of ``hours``: drift of sample and beam, an imperfect beam-pixel
    calibration, a 20 nm stage, an imperfect SEM and optical path, a decaying ring with
    refills and losses, on a clock running ``acceleration`` times faster than the wall
    clock from ``epoch_unix`` (``None``: the clock stands at 0 until the runner sets it).
    Every figure is documented in docs/simulation.md; same seed, same night."""
    base = default_beamline(seed, sample, recipe)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), NIGHT_STREAM]))

    def signed(low: float, high: float) -> float:
        return float(rng.uniform(low, high) * rng.choice([-1.0, 1.0]))

    cam = base.camera
    centre = np.array([(cam.width - 1) / 2.0, (cam.height - 1) / 2.0])
    beam = centre + rng.uniform(-NIGHT_BEAM_PX_OFF_CENTRE_MAX, NIGHT_BEAM_PX_OFF_CENTRE_MAX, 2)
    error_px = rng.uniform(*NIGHT_BEAM_CALIBRATION_ERROR_UM) / cam.zooms[cam.zoom].pixel_size_um
    angle = rng.uniform(0.0, 2.0 * np.pi)
    calibrated = beam + error_px * np.array([np.cos(angle), np.sin(angle)])
    camera = cam.model_copy(update={"beam_px": (float(beam[0]), float(beam[1])),
                                    "beam_px_calibrated": (float(calibrated[0]), float(calibrated[1]))})
    path = OpticalPath(distortion_k1=NIGHT_DISTORTION_K1, defocus_sigma_um=NIGHT_DEFOCUS_SIGMA_UM,
                       view_angle_deg=NIGHT_VIEW_ANGLE_DEG, view_azimuth_deg=float(rng.uniform(0.0, 360.0)),
                       sample_height_um=signed(*NIGHT_SAMPLE_HEIGHT_UM),
                       sample_tilt_mrad=(float(rng.uniform(-NIGHT_SAMPLE_TILT_MAX_MRAD, NIGHT_SAMPLE_TILT_MAX_MRAD)),
                                         float(rng.uniform(-NIGHT_SAMPLE_TILT_MAX_MRAD, NIGHT_SAMPLE_TILT_MAX_MRAD))))
    sem = base.sem.model_copy(update={
        "scale_error": (signed(*NIGHT_SEM_SCALE_ERROR), signed(*NIGHT_SEM_SCALE_ERROR)),
        "shear_deg": float(rng.uniform(-NIGHT_SEM_SHEAR_MAX_DEG, NIGHT_SEM_SHEAR_MAX_DEG)),
        "nonlinearity": (NIGHT_SEM_NONLINEARITY, NIGHT_SEM_NONLINEARITY)})
    stage = base.stage.model_copy(update={"repeatability_mm": NIGHT_REPEATABILITY_MM,
                                          "readback_noise_mm": NIGHT_READBACK_NOISE_MM})
    return VirtualBeamline(
        seed=base.seed, sample=base.sample, mounting=base.mounting, stage=stage, camera=camera, sem=sem,
        xrf=base.xrf, optical_path=path,
        clock=ClockSettings(acceleration=float(acceleration), epoch_unix=epoch_unix, duration_h=float(hours)),
        drift=SampleDrift(thermal_um_per_h=0.3, turn_period_h=6.0, random_walk_um_per_sqrt_h=0.05, step_um=0.1),
        beam_drift=BeamDrift(drift_um_per_h=0.04, random_walk_um_per_sqrt_h=0.03),
        ring=RingSettings(lifetime_h=12.0, refill_period_h=4.0, refill_duration_s=120.0, losses=2,
                          loss_duration_s=(180.0, 600.0)),
    )
