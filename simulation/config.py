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
from dataclasses import dataclass, field
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
    """Camera pixel (x, y) where the X-ray beam is; ``None`` = image centre."""
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
        if self.beam_px is not None:
            return self.beam_px
        return ((self.width - 1) / 2.0, (self.height - 1) / 2.0)


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


class XrfSettings(_Settings):
    """The X-ray fluorescence counter: a Gaussian beam over the sample."""

    beam_fwhm_nm: float = Field(100.0, gt=0)
    ce_cps_reference: float = Field(3000.0, ge=0)
    """Ce-L counts per second from a 50 nm CeO2 cube centred in the beam."""
    pt_cps_full: float = Field(40000.0, ge=0)
    """Pt-L counts per second with the whole beam on a Pt marker."""
    ce_background_cps: float = Field(2.0, ge=0)
    pt_background_cps: float = Field(5.0, ge=0)


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

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "sample": self.sample.to_json(),
                **{k: getattr(self, k).model_dump(mode="json") for k in _SECTIONS}}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")


_SECTIONS: dict[str, type[_Settings]] = {"mounting": Mounting, "stage": StageSettings, "camera": CameraOptics,
                                         "sem": SemGeometry, "xrf": XrfSettings}


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


def _finite_list(matrix: np.ndarray) -> list:
    values = np.asarray(matrix, dtype=float)
    if not np.all(np.isfinite(values)):
        raise BadArgument("a truth matrix is not finite; check the mounting and optics settings")
    return values.tolist()


def truth(beamline: VirtualBeamline) -> dict[str, Any]:
    """What the workflow must discover, for scoring only (see docs/simulation.md)."""
    # imported here: the renderers import their settings from this module
    from simulation.camera import camera_calibration
    from simulation.mounting import sample_to_stage, stage_to_sample
    from simulation.sem import sem_pixel_to_sample

    cam = beamline.camera
    return {
        "seed": beamline.seed,
        "sample_to_stage": _finite_list(sample_to_stage(beamline.sample, beamline.mounting)),
        "stage_to_sample": _finite_list(stage_to_sample(beamline.sample, beamline.mounting)),
        "mounting": beamline.mounting.model_dump(mode="json"),
        "stage": beamline.stage.model_dump(mode="json"),
        "camera": {
            "beam_px": list(cam.beam()),
            "rotation_deg": cam.rotation_deg,
            "flip_x": cam.flip_x,
            "A_mm_per_px": {z: _finite_list(camera_calibration(cam, beamline.mounting, z)) for z in cam.zooms},
            "pixel_size_um": {z: level.pixel_size_um for z, level in cam.zooms.items()},
        },
        "sem": {"pixel_to_sample": _finite_list(sem_pixel_to_sample(beamline.sample, beamline.sem)),
                "pixel_size_um": beamline.sem.pixel_size_um},
        "xrf": {"beam_fwhm_nm": beamline.xrf.beam_fwhm_nm},
        "units": {"sample": "um", "stage": "mm", "camera": "px", "sem": "px"},
    }


def write_truth(beamline: VirtualBeamline, path: str | Path) -> dict[str, Any]:
    data = truth(beamline)
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return data
