"""Registration cases with known truth, built from :mod:`.sources` and :mod:`.render`.

Every transform is applied in real space: the target is resampled from the *larger* source
image with a cubic spline at the transformed coordinates and then cropped, so its borders
show new content (never a circular ``np.roll``/Fourier shift, whose wrap-around makes phase
correlation exact and hides the window and edge effects real frames have).

Truth convention (that of ``Register``): ``truth`` maps target px ``[x, y, 1]`` to reference
px, (0, 0) = centre of the top-left pixel, x = column.

Noise "2 %" is Gaussian with sigma 0.02 of the source's full grey range (sources are scaled to
[0, 1]); on a smooth, low-contrast source such as ``moon`` (std 0.05) that is 40 % of the
image's own variation, which is what makes the bar demanding there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from benchmarks.corpus import render, sources

MARGIN_PX = 24
"""Distance kept between a crop and the source's border (spline support, shift range)."""

TUNED_SEEDS = (1, 2, 3)
"""Scene seeds of the cross-modal renderer used while choosing methods; others are held out."""


@dataclass
class Case:
    """One registration: ``reference`` and ``target`` arrays and the truth between them."""

    name: str
    source: str
    split: str
    kind: str
    model: str
    reference: np.ndarray
    target: np.ndarray
    truth: np.ndarray | None
    """None for unrelated pairs (the right answer is a refusal)."""
    reference_px_um: float = 1.0
    target_px_um: float = 1.0
    extra: dict = field(default_factory=dict)

    @property
    def related(self) -> bool:
        return self.truth is not None


@functools.lru_cache(maxsize=32)
def _coefficients(name: str) -> np.ndarray:
    return ndimage.spline_filter(sources.load(name).astype(np.float64), order=3)


def _sample(name: str, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Source sampled at ``matrix @ [x, y, 1]`` for every pixel of ``shape`` (cubic spline)."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    sx = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    sy = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    return ndimage.map_coordinates(_coefficients(name), [sy, sx], order=3, mode="mirror",
                                   prefilter=False).astype(np.float32)


def _noisy(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return (image + rng.normal(0.0, sigma, image.shape)).astype(np.float32)


def _degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Illumination gradient (+-15 % across the frame, random direction) and blur (sigma 0.6-1.2 px)."""
    h, w = image.shape
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:h, 0:w]
    ramp = ((xs - w / 2) * math.cos(angle) + (ys - h / 2) * math.sin(angle)) / max(h, w)
    out = ndimage.gaussian_filter(image, rng.uniform(0.6, 1.2)) * (1.0 + 0.3 * ramp)
    return out.astype(np.float32)


def _translation_matrix(x0: float, y0: float) -> np.ndarray:
    out = np.eye(3)
    out[:2, 2] = (x0, y0)
    return out


def translation_case(name: str, rng: np.random.Generator, degraded: bool = False) -> Case:
    """Reference = plain crop; target = the same region shifted by a sub-pixel (dx, dy) <= 16 px."""
    source = sources.load(name)
    h, w = source.shape
    n = int(min(256, min(h, w) - 2 * MARGIN_PX - 32))
    x0 = rng.uniform(MARGIN_PX + 16, w - n - MARGIN_PX - 16)
    y0 = rng.uniform(MARGIN_PX + 16, h - n - MARGIN_PX - 16)
    x0, y0 = float(round(x0)), float(round(y0))
    shift = rng.uniform(-16.0, 16.0, 2)
    reference = source[int(y0):int(y0) + n, int(x0):int(x0) + n].astype(np.float32)
    # target pixel p shows source point (x0, y0) + p - shift: its content moved by +shift.
    target = _sample(name, _translation_matrix(x0 - shift[0], y0 - shift[1]), (n, n))
    noise = 0.05 if degraded else 0.02
    if degraded:
        target = _degrade(target, rng)
    truth = _translation_matrix(-shift[0], -shift[1])
    kind = "translation-degraded" if degraded else "translation"
    return Case(f"{kind}:{name}", name, sources.split_of(name), kind, "translation",
                _noisy(reference, rng, noise), _noisy(target, rng, noise), truth)


def similarity_case(name: str, rng: np.random.Generator) -> Case:
    """Target = the reference region rotated 2-15 deg (either sign), scaled 0.9-1.15, shifted <= 12 px."""
    source = sources.load(name)
    h, w = source.shape
    n = int(min(256, (min(h, w) - 2 * MARGIN_PX) / 1.5))
    cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h
    x0, y0 = float(round(cx - n / 2)), float(round(cy - n / 2))
    rotation = rng.uniform(2.0, 15.0) * rng.choice([-1.0, 1.0])
    scale = rng.uniform(0.9, 1.15)
    shift = rng.uniform(-12.0, 12.0, 2)
    angle = math.radians(rotation)
    a, b = scale * math.cos(angle), scale * math.sin(angle)
    centre = (n - 1) / 2
    # target px -> reference px: rotate/scale about the crop centre, then shift.
    truth = np.array([[a, -b, centre - a * centre + b * centre + shift[0]],
                      [b, a, centre - b * centre - a * centre + shift[1]],
                      [0.0, 0.0, 1.0]])
    reference = source[int(y0):int(y0) + n, int(x0):int(x0) + n].astype(np.float32)
    target = _sample(name, _translation_matrix(x0, y0) @ truth, (n, n))
    return Case(f"similarity:{name}", name, sources.split_of(name), "similarity", "similarity",
                _noisy(reference, rng, 0.02), _noisy(target, rng, 0.02), truth,
                extra={"rotation_deg": rotation, "scale": scale})


def unrelated_case(first: str, second: str, model: str, rng: np.random.Generator) -> Case:
    """Two different sources: any 'success' is a false one."""
    crops = []
    for name in (first, second):
        image = sources.load(name)
        n = int(min(256, min(image.shape) - 2 * MARGIN_PX))
        y = int(rng.integers(0, image.shape[0] - n + 1))
        x = int(rng.integers(0, image.shape[1] - n + 1))
        crops.append(_noisy(image[y:y + n, x:x + n], rng, 0.02))
    n = min(c.shape[0] for c in crops)
    split = "held-out" if "held-out" in (sources.split_of(first), sources.split_of(second)) else "tuned"
    return Case(f"unrelated-{model}:{first}/{second}", f"{first}/{second}", split, f"unrelated-{model}",
                model, crops[0][:n, :n], crops[1][:n, :n], None)


def crossmodal_case(seed: int, variant: str, rng: np.random.Generator, unrelated: bool = False) -> Case:
    """SEM-like field into an optical-like camera frame drawn by :mod:`.render`.

    ``variant``: ``bar`` (0.08 um/px, 82 um field, 0.55 um/px camera, 3-12 deg, fully in view),
    ``ratio`` (pixel-size ratio 3x-30x), ``partial`` (20-45 % of the field outside the frame).
    ``unrelated``: the SEM field is drawn from another scene (another sample), so the right
    answer is a refusal."""
    sem_px, field_um, camera_px = 0.08, 82.0, 0.55
    if variant == "ratio":
        ratio = float(np.exp(rng.uniform(math.log(3.0), math.log(30.0))))
        sem_px = camera_px / ratio
        field_um = min(82.0, 1400 * sem_px)
    rotation = rng.uniform(3.0, 12.0) * rng.choice([-1.0, 1.0])
    frame = 512
    frame_um = frame * camera_px
    if variant == "partial":
        outside = rng.uniform(0.2, 0.45)
        side = rng.choice([-1.0, 1.0])
        centre_x = frame_um / 2 + side * (frame_um / 2 - field_um * (0.5 - outside))
        centre = (centre_x, frame_um / 2 + rng.uniform(-30, 30))
    else:
        centre = (frame_um / 2 + rng.uniform(-60, 60), frame_um / 2 + rng.uniform(-60, 60))
    scene = render.Scene.random(seed, (frame_um + 40.0, frame_um + 40.0))
    sem_scene = render.Scene.random(seed + 1000, (frame_um + 40.0, frame_um + 40.0)) if unrelated else scene
    camera = render.render_optical(scene, camera_px, (frame, frame), rng, inverted=variant != "upright")
    sem, truth = render.render_sem(sem_scene, sem_px, field_um, centre, rotation, camera_px, rng)
    split = "tuned" if seed in TUNED_SEEDS else "held-out"
    kind = "unrelated-crossmodal" if unrelated else f"crossmodal-{variant}"
    return Case(f"{kind}:seed{seed}", f"render-seed{seed}", split, kind, "similarity", camera, sem,
                None if unrelated else truth, camera_px, sem_px,
                extra={"rotation_deg": rotation, "ratio": camera_px / sem_px})


def corpus(per_source: int = 4, crossmodal_seeds: tuple[int, ...] = tuple(range(1, 13)),
           unrelated: int = 24, seed: int = 2026) -> Iterator[Case]:
    """The full corpus (``make bench``): a deterministic sequence of cases."""
    rng = np.random.default_rng(seed)
    names = list(sources.LOADERS)
    for name in names:
        for _ in range(per_source):
            yield translation_case(name, rng)
        for _ in range(max(1, per_source // 2)):
            yield translation_case(name, rng, degraded=True)
        for _ in range(max(1, per_source // 2)):
            yield similarity_case(name, rng)
    for seed_ in crossmodal_seeds:
        yield crossmodal_case(seed_, "bar", rng)
        yield crossmodal_case(seed_, "ratio" if seed_ % 2 else "partial", rng)
    for index in range(unrelated):
        first, second = rng.choice(names, 2, replace=False)
        yield unrelated_case(str(first), str(second), "translation" if index % 2 else "similarity", rng)
    for seed_ in crossmodal_seeds[: max(1, unrelated // 4)]:
        yield crossmodal_case(seed_, "bar", rng, unrelated=True)


def sample(seed: int = 14) -> Iterator[Case]:
    """The fixed small sample the unit tests assert the bars on (a few tens of seconds)."""
    rng = np.random.default_rng(seed)
    for name in ("camera", "cell", "moon", "immunohistochemistry", "retina", "dem", "coffee", "gravel"):
        yield translation_case(name, rng)
    for name in ("astronaut", "coins", "hubble_deep_field", "brick", "rocket"):
        yield similarity_case(name, rng)
    for seed_ in (1, 7):
        yield crossmodal_case(seed_, "bar", rng)
    for first, second in (("camera", "gravel"), ("moon", "dem"), ("cell", "retina")):
        yield unrelated_case(first, second, "translation", rng)
        yield unrelated_case(first, second, "similarity", rng)
    yield crossmodal_case(5, "bar", rng, unrelated=True)
