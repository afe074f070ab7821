"""What the image says around each particle: its multiplicity and unlisted neighbours.

The list of detections is not the sample. trackpy suppresses a maximum nearer than
``Separation`` to a brighter one, merges two touching particles into one feature, and drops
whatever lies below ``MinMass``; every one of them still sits in the beam. So isolation is
also judged on the image itself, in three steps that cost a few blurs and one labelling:

1. **Signal image**: the image smoothed at about a sixth of Diameter (narrower where the
   particles are clearly smaller than Diameter: about their own width), minus a background
   that holds no particles (a grey opening over twice Diameter, then a box blur), minus the
   median background level. Its noise is measured from the lower half of its histogram,
   which particles cannot reach.
2. **Blobs and multiplicity**: the signal above a fraction of the typical particle peak (or
   a few noise sigmas, whichever is higher) falls into connected blobs. Each particle's blob
   has an integrated signal, an area and an elongation; the blobs holding exactly one
   detection give the population of single particles of this very image, whose typical
   integral is fitted robustly (median, re-centred on the main peak). A blob with clearly
   more signal than a single, or clearly elongated, or holding several detections, is two
   or more particles: ``Multiplicity`` 2 or 3 (3 meaning three or more).
3. **Unlisted neighbours**: the local maxima of the signal image above a noise-safe level,
   each moved to the centroid of its surroundings, form a second and much more permissive
   detection, used only here. A maximum outside the particle's own blob and nearer than
   ``IsolationRadius`` is a neighbour, listed or not.

A particle is isolated only when the detections (as before), the multiplicity and the
permissive maxima all agree that nothing else is there.

4. **On a bright area**: a detection whose local background (the particle-free level of step
   1, over about four diameters) stands more than half a typical particle peak above the
   image's median background sits on something bright and wider than any particle, a Pt
   marker or a frame edge, not on the membrane: trackpy finds maxima on such flat areas
   (a cross's centre, an L's corner), but they are not particles.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import cKDTree

from servers.ParticleDS import scratch

SMOOTHING_PER_DIAMETER = 1.0 / 6.0
"""Gaussian sigma of the signal image, per px of Diameter: a matched filter for the particle ..."""
SMOOTHING_PER_SIZE = 0.6
"""... but not wider than this many times the particles' median radius of gyration (trackpy's
``size``, sqrt(2) sigma for a Gaussian spot, so about 0.85 of the particle's own Gaussian
width): a Diameter chosen wider than the particles (a generous mask) would otherwise smooth a
faint neighbour that touches a particle into the particle's own outline. Chosen on the
tuning cases of the corpus (0.55, 0.6, 0.65 tried; docs/particles.md)."""
SMOOTHING_SIZE_MIN_PX = 1.0
"""The narrowing applies only where it leaves at least this sigma: for particles a few pixels
wide (the virtual beamline's 2.5 px cubes: 0.6 x size = 0.8 px against Diameter 7's 1.17) the
pixel noise let through costs more than it shows (3 of 912 isolated cubes lost there at 0.8 px,
1 at 1.1 px)."""
BLOB_PEAK_FRACTION = 0.5
"""Blobs are the signal above this fraction of the typical particle peak ..."""
BLOB_NOISE_SIGMAS = 4.0
"""... and above this many noise sigmas."""
PEAK_NOISE_SIGMAS = 4.5
"""A permissive maximum must stand this many noise sigmas above the background: at 4.5 sigma
a 2048 x 2048 image of pure noise holds about five such maxima."""
PEAK_PEAK_FRACTION = 0.1
"""... and reach this fraction of the typical particle peak."""
SINGLE_EXCESS_MIN = 1.4
"""A blob is more than one particle when its integral exceeds a single's by this factor at least."""
SHAPED_FRACTION = 0.8
"""Shape (elongation, centroid offset) is judged only on blobs with at least this fraction of a
single particle's signal: a blob barely above the level is a ragged outline of a few pixels."""
ELONGATION_MIN = 1.45
"""A blob this elongated (square root of the ratio of its principal second moments) is two
particles side by side, at least."""
HIDDEN_EXCESS_MIN = 1.25
"""Down to the permissive level, a region with this much more signal than a single's holds more."""
HIDDEN_ELONGATION_MIN = 1.15
"""... or one this elongated ..."""
HIDDEN_OFFSET_MIN_PX = 0.5
"""... or one whose centroid lies this far (px) from the particle."""
RAYLEIGH_TAIL = 3.2
"""Offsets beyond this many medians are 1 in 1000 for a Rayleigh distribution."""
ASYMMETRY_INNER_PX = 2.0
"""The point-symmetry test starts this far from the centre (nearer, the centring noise rules)."""
ASYMMETRY_SIGMAS = 6.0
"""An asymmetry this many robust sigmas above the particles' typical one is a neighbour ..."""
ASYMMETRY_NOISE_SIGMAS = 5.0
"""... provided it also stands this many noise sigmas high."""
REACH_SIGMAS = 4.5
"""A particle's region (the signal above the permissive level, connected to it) reaching this
many robust sigmas farther out than the regions of the lone particles holds something else ..."""
REACH_MIN_EXCESS_PX = 1.0
"""... and at least this many px farther (the regions' outlines are whole pixels)."""
REMAP_ROWS = 30_000
"""Rows per cv2.remap call (its maps must stay below 32 767 rows and columns)."""
REMAP_COLUMNS = 1024
"""Columns of the flat position layout handed to cv2.remap."""
MIN_POPULATION = 5
"""Fewer particles than this make no population to judge against."""
ROBUST_SIGMAS = 4.0
"""How far above the single-particle population (in robust sigmas) a blob must lie."""
BRIGHT_AREA_PEAK_FRACTION = 0.5
"""A local background this fraction of the typical particle peak above the image's median
background is an extended bright area (a marker): the same level at which a blob starts.
Charging and shading move the background far less: on the virtual beamline's SEM images
(seeds 0-4) it stands at most 0.14 peak high under the real particles, agglomerates included,
and 1.07 to 2.4 peaks under every detection on a Pt marker."""
BRIGHT_AREA_SPREAD_SIGMAS = 4.0
"""... and this many spreads of the background's lower half (median minus 15.9th percentile)
above its median. Smooth shading stays within about two of them (a linear gradient's highest
point lies 1.5 above the median); in faint corpus images (contrast-to-noise 5-7, gradient and
vignetting) half a particle peak is less than that, and the whole bright side was flagged."""


@dataclass(frozen=True)
class Crowding:
    """Per particle: its multiplicity and the distance to the nearest unlisted neighbour."""

    multiplicity: np.ndarray
    """1, 2, or 3 (three or more particles in the blob of this detection)."""
    image_neighbour: np.ndarray
    """px from the particle to the nearest permissive maximum outside its own blob (inf if none)."""
    single_integral: float
    """The fitted integral of a single particle's blob (nan when no population could be fitted)."""
    on_bright_area: np.ndarray | None = None
    """True where the detection sits on an extended bright area (a marker), not on the membrane."""

    def __post_init__(self) -> None:
        if self.on_bright_area is None:
            object.__setattr__(self, "on_bright_area", np.zeros(len(self.multiplicity), dtype=bool))


def signal_image(raw: np.ndarray, diameter: int, particle_size: float | None = None) -> tuple[np.ndarray, float]:
    """Background-free, smoothed signal (float32) and its noise sigma (see :func:`signal_parts`)."""
    signal, sigma, _ = signal_parts(raw, diameter, particle_size=particle_size)
    return signal, sigma


def smoothing_sigma(diameter: int, particle_size: float | None = None) -> float:
    """Gaussian sigma (px) of the signal image: Diameter / 6, narrowed to
    :data:`SMOOTHING_PER_SIZE` x ``particle_size`` (the median radius of gyration of the
    particles) where that is narrower and at least :data:`SMOOTHING_SIZE_MIN_PX`."""
    width = diameter * SMOOTHING_PER_DIAMETER
    if particle_size is not None and np.isfinite(particle_size):
        narrowed = SMOOTHING_PER_SIZE * particle_size
        if narrowed >= SMOOTHING_SIZE_MIN_PX:
            width = min(width, narrowed)
    return max(width, 0.8)


def signal_parts(raw: np.ndarray, diameter: int, work: scratch.Scratch | None = None,
                 particle_size: float | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """Background-free, smoothed signal (float32), its noise sigma, and the background.

    The background is the mean of the pixels that hold no particle, over a window of about
    four diameters (a normalised box filter): a grey opening first marks the particles, so
    neither they nor the opening's own bias leak into the background level. The background
    is smooth, so it is computed on the image binned by about a third of Diameter and
    interpolated back: the same level at a tenth of the cost. With ``work`` the signal and the
    background are its slots ``"a"`` and ``"b"``. The signal's smoothing is :func:`smoothing_sigma`;
    the background is always found on the image smoothed at Diameter / 6, the scale its window
    and its noise threshold were set for.
    """
    # full-size results are written into arrays already in hand: a fresh 16 MB array costs
    # its page faults again on every call (see scratch.py)
    work = work or scratch.Scratch()
    image = work.array("a", raw.shape[:2], np.float32)
    np.copyto(image, raw, casting="unsafe")
    h, w = image.shape
    narrow, reference = smoothing_sigma(diameter, particle_size), smoothing_sigma(diameter)
    wide = None
    if narrow < reference:  # the background is found at the Diameter's scale, whatever the signal's
        wide = cv2.GaussianBlur(image, (0, 0), reference, dst=work.array("b", (h, w), np.float32),
                                borderType=cv2.BORDER_REPLICATE)
    smooth = cv2.GaussianBlur(image, (0, 0), narrow, dst=image, borderType=cv2.BORDER_REPLICATE)
    binning = max(1, min(diameter // 3, h // 16, w // 16))
    # the smoothing already removed what bilinear sampling would alias
    small = cv2.resize(smooth if wide is None else wide, (max(w // binning, 1), max(h // binning, 1)),
                       interpolation=cv2.INTER_LINEAR)
    side = max(3, (2 * diameter + 1) // binning) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    opened = cv2.morphologyEx(small, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE)
    first = small - cv2.blur(opened, (side, side), borderType=cv2.BORDER_REPLICATE)
    low, median = _lower_half(first)
    sigma = max(median - low, 1e-6)
    empty = (first < median + 3.0 * sigma).astype(np.float32)
    window = (2 * side + 1, 2 * side + 1)
    weight = cv2.blur(empty, window, borderType=cv2.BORDER_REPLICATE)
    level = cv2.blur(small * empty, window, borderType=cv2.BORDER_REPLICATE)
    background = np.where(weight > 0.05, level / np.maximum(weight, 0.05), opened)
    background = cv2.resize(background, (w, h), dst=work.array("b", (h, w), background.dtype),
                            interpolation=cv2.INTER_LINEAR)
    signal = cv2.subtract(smooth, background, dst=smooth)
    low, median = _lower_half(signal)
    signal = cv2.subtract(signal, median, dst=signal)  # type: ignore[call-overload]  # OpenCV takes a scalar; its stubs do not say so
    sigma = median - low
    if not sigma > 0:  # a noise-free image: let the particle peaks set the scale
        sigma = float(np.ptp(signal)) * 1e-3 or 1e-6
    return signal, sigma, background


def _lower_half(image: np.ndarray) -> tuple[float, float]:
    """The 15.9th percentile and the median of ``image`` (a subsample of ~100 000 pixels)."""
    step = max(1, int(np.sqrt(image.size / 100_000)))
    low, median = np.percentile(image[::step, ::step], [15.865, 50.0])
    return float(low), float(median)


def _robust_centre(values: np.ndarray) -> tuple[float, float]:
    """Centre of the main peak of ``values`` (median, re-centred on the peak) and the robust
    sigma of all ``values`` around it (MAD): a broad population keeps its breadth."""
    centre = float(np.median(values))
    window = values
    for _ in range(3):
        window = values[(values > 0.5 * centre) & (values < 1.5 * centre)]
        if len(window) == 0:
            break
        centre = float(np.median(window))
    spread = 1.4826 * float(np.median(np.abs(values - centre)))
    return centre, spread


def analyse(raw: np.ndarray, particles_xy: np.ndarray, features_xy: np.ndarray, diameter: int,
            reach: float, candidates: np.ndarray | None = None, work: scratch.Scratch | None = None,
            particle_size: float | None = None) -> Crowding:
    """Multiplicity and unlisted neighbours of ``particles_xy`` (x, y in ``raw``'s pixels).

    ``raw`` is the image as detected (bright particles, i.e. already inverted for dark
    ones); ``features_xy`` are all detected features, particles and neighbours-only;
    neighbours are looked for out to ``reach`` px (the IsolationRadius), around the
    ``candidates`` only (the particles that could still be isolated; default all): the
    others are crowded anyway, and the search costs time per particle. The full-size work images
    go into ``work`` (default: the process's kept scratch, see :mod:`scratch`).
    ``particle_size`` is the particles' median radius of gyration (trackpy's ``size``), which
    can narrow the signal image's smoothing (:func:`smoothing_sigma`).
    """
    with scratch.borrow(work) as borrowed:
        return _analyse(raw, particles_xy, features_xy, diameter, reach, candidates, borrowed, particle_size)


def _analyse(raw: np.ndarray, particles_xy: np.ndarray, features_xy: np.ndarray, diameter: int,
             reach: float, candidates: np.ndarray | None, work: scratch.Scratch,
             particle_size: float | None) -> Crowding:
    n = len(particles_xy)
    ones = np.ones(n, dtype=np.int64)
    if n == 0:
        return Crowding(ones, np.empty(0), float("nan"))
    signal, sigma, background = signal_parts(raw, diameter, work, particle_size)
    h, w = signal.shape
    ix = np.clip(np.rint(particles_xy[:, 0]).astype(np.intp), 0, w - 1)
    iy = np.clip(np.rint(particles_xy[:, 1]).astype(np.intp), 0, h - 1)
    peak = float(np.median(signal[iy, ix]))
    if not peak > 0:
        return Crowding(ones, np.full(n, np.inf), float("nan"))
    smoothing = smoothing_sigma(diameter, particle_size)
    reference = smoothing_sigma(diameter)
    bright_peak = peak
    if smoothing < reference:
        # the bright-area level is half a particle peak as seen at the Diameter's own smoothing,
        # the scale it was calibrated on: a narrower smoothing raises the peaks, not the markers
        difference = _local_gaussian(raw, ix, iy, reference) - _local_gaussian(raw, ix, iy, smoothing)
        bright_peak = float(np.median(signal[iy, ix] + difference))
    on_bright_area = on_bright_area_mask(background, ix, iy, bright_peak)

    blob_level = max(BLOB_PEAK_FRACTION * peak, BLOB_NOISE_SIGMAS * sigma)
    level = max(PEAK_NOISE_SIGMAS * sigma, PEAK_PEAK_FRACTION * peak)
    region_mask = cv2.compare(signal, level, cv2.CMP_GT, dst=work.array("m1", (h, w), np.uint8))  # type: ignore[call-overload]  # OpenCV takes a scalar; its stubs do not say so
    region_pixels = _pixels(region_mask)
    mask = cv2.compare(signal, blob_level, cv2.CMP_GT, dst=work.array("m2", (h, w), np.uint8))  # type: ignore[call-overload]  # OpenCV takes a scalar; its stubs do not say so
    count, labels = cv2.connectedComponents(mask, work.array("c", (h, w), np.int32), connectivity=8,
                                            ltype=cv2.CV_32S)
    if blob_level >= level:  # the blob pixels are region pixels: pick them instead of a second image scan
        ys, xs = region_pixels
        inside = cv2.compare(signal[ys, xs], blob_level, cv2.CMP_GT).ravel() > 0  # type: ignore[call-overload]  # OpenCV takes a scalar; its stubs do not say so
        blob_pixels = ys[inside], xs[inside]
    else:
        blob_pixels = _pixels(mask)
    stats = _blob_stats(signal, labels, count, *blob_pixels)
    own = labels[iy, ix]

    fx = np.clip(np.rint(features_xy[:, 0]).astype(np.intp), 0, w - 1)
    fy = np.clip(np.rint(features_xy[:, 1]).astype(np.intp), 0, h - 1)
    detections_in_blob = np.bincount(labels[fy, fx], minlength=count)
    detections_in_blob[0] = 0

    multiplicity = _multiplicity(stats, own, detections_in_blob)
    region_count, regions = cv2.connectedComponents(region_mask, work.array("d", (h, w), np.int32), connectivity=8,
                                                    ltype=cv2.CV_32S)
    region_stats = _blob_stats(signal, regions, region_count, *region_pixels)
    own_region = regions[iy, ix]
    image_neighbour = np.full(n, np.inf)
    rows = np.arange(n) if candidates is None else np.flatnonzero(candidates)
    if len(rows):
        edge = float(np.median(np.sqrt(region_stats.area[np.unique(own_region)] / np.pi)))
        image_neighbour[rows] = _unlisted_neighbours(signal, labels, regions, region_pixels, particles_xy[rows],
                                                     own[rows], own_region[rows], diameter, reach, edge)
    features_in_region = np.bincount(regions[fy, fx], minlength=region_count)
    features_in_region[0] = 0
    # a particle alone in its blob is centred on the blob's centroid: the detector's windowed
    # centroid can sit half a pixel off a particle wider than its mask
    centres = particles_xy.copy()
    alone = (own > 0) & (detections_in_blob[own] == 1)
    centres[alone] = stats.centroid[own[alone]]
    hidden = _hidden_neighbour(region_stats, own_region, features_in_region, particles_xy, centres)
    if len(rows) >= MIN_POPULATION:
        hidden[rows] = np.minimum(hidden[rows], _residual_neighbour(signal, sigma, particles_xy[rows], diameter))
        # judged against the particles that every other test calls isolated
        clear = (multiplicity[rows] == 1) & (image_neighbour[rows] >= reach) & (hidden[rows] >= reach)
        hidden[rows] = np.minimum(hidden[rows], _reach_neighbour(regions, region_pixels, particles_xy[rows],
                                                                 own_region[rows], features_in_region, clear))
    return Crowding(multiplicity, np.minimum(image_neighbour, hidden), float(stats.single_integral),
                    on_bright_area)


def _local_gaussian(raw: np.ndarray, ix: np.ndarray, iy: np.ndarray, sigma: float) -> np.ndarray:
    """``raw`` smoothed by a Gaussian of ``sigma`` at the pixels (``ix``, ``iy``) only, edges replicated."""
    half = int(np.ceil(3 * sigma))
    offsets = np.arange(-half, half + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    h, w = raw.shape[:2]
    rows = np.clip(iy[:, None] + offsets, 0, h - 1)
    cols = np.clip(ix[:, None] + offsets, 0, w - 1)
    patches = raw[rows[:, :, None], cols[:, None, :]].astype(np.float64)
    return np.einsum("i,nij,j->n", weights, patches, weights)


def on_bright_area_mask(background: np.ndarray, ix: np.ndarray, iy: np.ndarray, peak: float) -> np.ndarray:
    """True where the local background at pixel (``ix``, ``iy``) stands more than
    :data:`BRIGHT_AREA_PEAK_FRACTION` of the typical particle ``peak`` above the image's
    median background, and more than :data:`BRIGHT_AREA_SPREAD_SIGMAS` times the spread of
    the background's lower half: the detection lies on an extended bright area, not on the
    membrane. Shading moves the bulk of the background (a faint image's gradient can exceed
    half a particle peak); a marker stands out of it, and cannot widen the lower half."""
    low, median = _lower_half(background)
    level = max(BRIGHT_AREA_PEAK_FRACTION * peak, BRIGHT_AREA_SPREAD_SIGMAS * (median - low))
    return background[iy, ix] - median > level


@dataclass
class _BlobStats:
    integral: np.ndarray
    elongation: np.ndarray
    centroid: np.ndarray
    """(x, y) of each blob's signal centroid."""
    area: np.ndarray
    """px of each blob."""
    single_integral: float = float("nan")
    excess_level: float = SINGLE_EXCESS_MIN
    elongation_level: float = ELONGATION_MIN


def _pixels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the non-zero pixels of a uint8 mask (OpenCV: one pass, no full-size index)."""
    points = cv2.findNonZero(mask)
    if points is None:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty
    points = points.reshape(-1, 2)
    return points[:, 1].astype(np.intp), points[:, 0].astype(np.intp)


def _blob_stats(signal: np.ndarray, labels: np.ndarray, count: int, ys: np.ndarray, xs: np.ndarray) -> _BlobStats:
    """Integrated signal and elongation of every blob (index = label; 0 = background); ``ys``,
    ``xs`` are the blob pixels."""
    flat = ys * labels.shape[1] + xs  # flat indices: a gather from a raveled image is the cheaper one
    label = labels.ravel()[flat]
    weight = signal.ravel()[flat].astype(np.float64)
    y, x = ys.astype(np.float64), xs.astype(np.float64)
    total = np.bincount(label, weight, minlength=count)
    safe = np.where(total > 0, total, 1.0)
    mx = np.bincount(label, weight * x, minlength=count) / safe
    my = np.bincount(label, weight * y, minlength=count) / safe
    dx, dy = x - mx[label], y - my[label]
    sxx = np.bincount(label, weight * dx * dx, minlength=count) / safe
    syy = np.bincount(label, weight * dy * dy, minlength=count) / safe
    sxy = np.bincount(label, weight * dx * dy, minlength=count) / safe
    half_trace = (sxx + syy) / 2
    root = np.sqrt(((sxx - syy) / 2) ** 2 + sxy**2)
    major, minor = half_trace + root, np.maximum(half_trace - root, 1e-6)
    return _BlobStats(integral=total, elongation=np.sqrt(np.maximum(major, 0) / minor),
                      centroid=np.column_stack([mx, my]), area=np.bincount(label, minlength=count))


def _multiplicity(stats: _BlobStats, own: np.ndarray, detections_in_blob: np.ndarray) -> np.ndarray:
    """1, 2 or 3+ per particle, from its blob against the blobs of single detections."""
    n = len(own)
    multiplicity = np.ones(n, dtype=np.int64)
    in_blob = own > 0
    singles = np.unique(own[in_blob & (detections_in_blob[own] == 1)])
    if len(singles) < MIN_POPULATION:  # no population to judge against: only the detection count speaks
        multiplicity[in_blob] = np.minimum(detections_in_blob[own[in_blob]], 3)
        return multiplicity
    single, spread = _robust_centre(stats.integral[singles])
    elong_centre, elong_spread = _robust_centre(stats.elongation[singles])
    stats.single_integral = single
    stats.excess_level = max(1.0 + ROBUST_SIGMAS * spread / single, SINGLE_EXCESS_MIN)
    stats.elongation_level = max(ELONGATION_MIN, elong_centre + ROBUST_SIGMAS * elong_spread)
    blobs = own[in_blob]
    ratio = stats.integral[blobs] / single
    estimate = np.where(ratio >= stats.excess_level, np.maximum(np.rint(ratio), 2), 1)
    # a blob barely above the level is a few pixels of ragged outline: its shape says nothing
    shaped = ratio >= SHAPED_FRACTION
    estimate = np.where(shaped & (stats.elongation[blobs] >= stats.elongation_level), np.maximum(estimate, 2),
                        estimate)
    estimate = np.maximum(estimate, detections_in_blob[blobs])
    multiplicity[in_blob] = np.minimum(estimate, 3)
    return multiplicity


def _hidden_neighbour(stats: _BlobStats, own: np.ndarray, features_in_region: np.ndarray,
                      particles_xy: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Where the particle's own faint surroundings hold a second object: its estimated distance.

    Down to the permissive level, a particle's region also takes in a faint neighbour that
    touches it (debris, a small particle) and has no maximum of its own. Judged against the
    regions of this image that hold one detection only, such a region has more signal, a
    stretched shape, or a centroid pulled away from the particle. The excess signal's
    centroid, ``(I c - I1 p) / (I - I1)``, is where the neighbour sits.

    The centroid's pull is measured from ``centres``: the centroid of the particle's own blob
    (above half the typical peak) where it holds no other detection, else the detection. The
    detector's position is a centroid inside a window of Diameter on whole pixels; for a
    particle as wide as that window it can sit half a pixel off (0.5-0.7 px on truly isolated
    corpus cubes with Diameter 9), which this test read as a neighbour's pull. The blob, the
    particle's bright core, takes in little of a faint neighbour's signal, so it marks the
    particle's centre without that error.
    """
    distance = np.full(len(particles_xy), np.inf)
    in_region = own > 0
    singles = np.unique(own[in_region & (features_in_region[own] == 1)])
    if len(singles) < MIN_POPULATION:
        return distance
    single, spread = _robust_centre(stats.integral[singles])
    elong_centre, elong_spread = _robust_centre(stats.elongation[singles])
    rows = np.flatnonzero(in_region)
    regions = own[rows]
    offset = np.hypot(*(stats.centroid[regions] - centres[rows]).T)
    lone = features_in_region[regions] == 1
    # a lone particle's centroid offset is noise in two directions: Rayleigh distributed, its
    # 1-in-1000 tail at 3.2 times the median
    offset_level = max(HIDDEN_OFFSET_MIN_PX, RAYLEIGH_TAIL * float(np.median(offset[lone]))) if lone.any() else np.inf
    excess_level = max(1.0 + ROBUST_SIGMAS * spread / single, HIDDEN_EXCESS_MIN)
    shaped = stats.integral[regions] >= SHAPED_FRACTION * single
    crowded = ((stats.integral[regions] >= excess_level * single)
               | shaped & (stats.elongation[regions] >= max(HIDDEN_ELONGATION_MIN,
                                                            elong_centre + ROBUST_SIGMAS * elong_spread))
               | shaped & (offset >= offset_level))
    excess = np.maximum(stats.integral[regions] - single, 1e-12)
    where = (stats.integral[regions, None] * stats.centroid[regions] - single * particles_xy[rows]) / excess[:, None]
    estimate = np.hypot(*(where - particles_xy[rows]).T)
    estimate = np.where(stats.integral[regions] > single, estimate, 0.0)
    distance[rows[crowded]] = estimate[crowded]
    return distance


def _residual_neighbour(signal: np.ndarray, sigma: float, particles_xy: np.ndarray, diameter: int) -> np.ndarray:
    """Distance to a neighbour that breaks the particle's point symmetry.

    A particle seen from above (a cube at any rotation and size, a sphere, a rod) is its own
    image turned half a turn about its centre; a touching or close neighbour is not. The
    signal at ``centre + d`` minus the signal at ``centre - d`` (bilinear, so the sub-pixel
    centre is kept) stays at the noise for a lone particle and rises where a neighbour sits,
    even one merged with the particle, without its own maximum, below MinMass. Judged
    against the same figure of all the given particles (mostly lone ones), out to one
    Diameter.
    """
    distance = np.full(len(particles_xy), np.inf)
    offsets = np.arange(-int(diameter), int(diameter) + 1, dtype=np.float64)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    r = np.hypot(dx, dy)
    ring = (r >= ASYMMETRY_INNER_PX) & (r <= diameter)
    dy, dx, r = dy[ring], dx[ring], r[ring]
    x = particles_xy[:, 0, None]
    y = particles_xy[:, 1, None]
    asymmetry = _bilinear(signal, x + dx, y + dy) - _bilinear(signal, x - dx, y - dy)
    asymmetry = asymmetry.astype(np.float64)
    best = np.argmax(asymmetry, axis=1)
    height = asymmetry[np.arange(len(particles_xy)), best]
    centre = float(np.median(height))
    spread = 1.4826 * float(np.median(np.abs(height - centre)))
    level = max(centre + ASYMMETRY_SIGMAS * spread, ASYMMETRY_NOISE_SIGMAS * sigma)
    flagged = height > level
    distance[flagged] = r[best[flagged]]
    return distance


def _reach_neighbour(regions: np.ndarray, region_pixels: tuple[np.ndarray, np.ndarray], particles_xy: np.ndarray,
                     own_region: np.ndarray, features_in_region: np.ndarray, clear: np.ndarray) -> np.ndarray:
    """Distance to a faint neighbour that stretches the particle's region outwards.

    Down to the permissive level, a faint object a few px from the particle (debris below
    MinMass, on the particle's flank, without a maximum of its own) joins the particle's
    region and pushes its outline out on one side, while adding too little signal to raise
    the region's integral, stretch it or pull its centroid beyond the population's spread.
    The farthest pixel of the region sees it: for lone particles (regions holding one
    detection, ``clear``: called isolated by every other test) that reach is set by the
    particle's size, rotation and the blur, the same for all of them to a few tenths of a px
    (the particles with something else in their region would widen that spread). A region reaching more than
    :data:`REACH_SIGMAS` robust sigmas (and :data:`REACH_MIN_EXCESS_PX`) beyond their
    median holds something else; its distance is taken as that farthest pixel's (an upper
    bound of where the neighbour's signal lies).
    """
    distance = np.full(len(particles_xy), np.inf)
    ys, xs = region_pixels
    if len(ys) == 0:
        return distance
    pixel_region = regions.ravel()[ys * regions.shape[1] + xs]
    row_of_region = np.full(max(int(pixel_region.max()), int(own_region.max(initial=0))) + 1, -1, dtype=np.intp)
    inside = own_region > 0
    row_of_region[own_region[inside]] = np.flatnonzero(inside)
    row = row_of_region[pixel_region]
    keep = row >= 0
    row = row[keep]
    d = np.hypot(xs[keep] - particles_xy[row, 0], ys[keep] - particles_xy[row, 1])
    far = np.zeros(len(particles_xy))
    np.maximum.at(far, row, d)
    lone = inside & (features_in_region[own_region] == 1) & clear
    if np.count_nonzero(lone) < MIN_POPULATION:
        return distance
    centre = float(np.median(far[lone]))
    spread = 1.4826 * float(np.median(np.abs(far[lone] - centre)))
    flagged = inside & (far > centre + max(REACH_SIGMAS * spread, REACH_MIN_EXCESS_PX))
    distance[flagged] = far[flagged]
    return distance


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``image`` (float32) at the real positions (x, y), any shape, bilinear, edges replicated.

    cv2.remap maps must have fewer than 32 767 rows *and* columns (a large Diameter gives more
    samples per particle than that), so the positions are laid out flat in rows of
    ``REMAP_COLUMNS`` and sampled in chunks of ``REMAP_ROWS`` rows.
    """
    shape = np.shape(x)
    flat_x = np.asarray(x, dtype=np.float32).ravel()
    flat_y = np.asarray(y, dtype=np.float32).ravel()
    count = flat_x.size
    if count == 0:
        return np.empty(shape, dtype=np.float32)
    rows = -(-count // REMAP_COLUMNS)
    padded_x = np.zeros(rows * REMAP_COLUMNS, dtype=np.float32)
    padded_y = np.zeros(rows * REMAP_COLUMNS, dtype=np.float32)
    padded_x[:count], padded_y[:count] = flat_x, flat_y
    map_x, map_y = padded_x.reshape(rows, REMAP_COLUMNS), padded_y.reshape(rows, REMAP_COLUMNS)
    chunks = [cv2.remap(image, map_x[i:i + REMAP_ROWS], map_y[i:i + REMAP_ROWS], cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE) for i in range(0, rows, REMAP_ROWS)]
    return np.concatenate(chunks).ravel()[:count].reshape(shape)


def _unlisted_neighbours(signal: np.ndarray, labels: np.ndarray, regions: np.ndarray,
                         region_pixels: tuple[np.ndarray, np.ndarray], particles_xy: np.ndarray, own: np.ndarray,
                         own_region: np.ndarray, diameter: int, reach: float, single_edge: float) -> np.ndarray:
    """Distance from each particle to the nearest signal of something else within ``reach``.

    Two views of "something else", the nearer wins:
    - permissive maxima (local maxima of the regions above the permissive level, moved to
      their centroid) outside the particle's own blob and farther than half a Diameter
      (nearer ones are the particle's own shape, judged by the multiplicity);
    - regions not connected to the particle: the distance to their nearest pixel plus the
      radius at which a single particle's signal falls to the level, because a region holding
      two merged particles has its maximum between them, farther than the nearer particle.
      The regions of the given particles themselves are left out (each is at least
      ``reach`` from the others: they are the particles the list calls isolated).
    """
    n = len(particles_xy)
    distance = np.full(n, np.inf)
    ys, xs = region_pixels
    if n == 0 or len(ys) == 0:
        return distance
    neighbours = _Neighbours(signal.shape, ys, xs)
    flat_signal = signal.ravel()
    value = flat_signal[neighbours.flat]
    is_peak = np.ones(len(ys), dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                is_peak &= value >= flat_signal[neighbours.index(dy, dx)]
    peaks = np.column_stack([ys[is_peak], xs[is_peak]])
    particles = cKDTree(particles_xy)
    if len(peaks):
        refined = _centroids(signal, peaks, max(2, diameter // 4))
        peak_label = labels[peaks[:, 0], peaks[:, 1]]
        row, which = _pairs_within(particles, refined[:, ::-1], reach + diameter)
        if len(row):
            # the nearer of the maximum and its centroid: a faint maximum's centroid wanders with the noise
            d = np.minimum(np.hypot(*(refined[which, ::-1] - particles_xy[row]).T),
                           np.hypot(*(peaks[which, ::-1] - particles_xy[row]).T))
            foreign = ((peak_label[which] != own[row]) | (own[row] == 0)) & (d > diameter / 2.0)
            np.minimum.at(distance, row[foreign], d[foreign])

    # the nearest pixel of another region is on its outline: only outlines go into the tree
    flat_regions = regions.ravel()
    pixel_region = flat_regions[neighbours.flat]
    outline = np.zeros(len(ys), dtype=bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        outline |= flat_regions[neighbours.index(dy, dx)] != pixel_region
    points = np.column_stack([xs[outline], ys[outline]]).astype(np.float64)
    point_region = pixel_region[outline]
    if len(points):
        np.minimum(distance, _nearest_foreign_outline(particles, particles_xy, own_region, points, point_region,
                                                      reach) + single_edge, out=distance)
    return distance


def _nearest_foreign_outline(particles: cKDTree, particles_xy: np.ndarray, own_region: np.ndarray,
                             points: np.ndarray, point_region: np.ndarray, reach: float) -> np.ndarray:
    """Distance from each particle to the nearest outline point of another region within ``reach``
    (inf if none).

    Most outline points belong to regions that hold none of the particles: foreign to all of
    them, so one nearest-neighbour query answers for them. Only the points of the particles'
    own regions need the pair search that leaves each particle's own region out; listing every
    pair within ``reach`` for all points would cost far more (thousands per particle).
    """
    distance = np.full(len(particles_xy), np.inf)
    near = _near_any(particles_xy, points, reach)
    points, point_region = points[near], point_region[near]
    owned = np.isin(point_region, own_region[own_region > 0])
    others = points[~owned]
    if len(others):
        # the k-d tree's bound is strict; the pair search below keeps points at exactly ``reach``
        tree_distance, index = cKDTree(others).query(particles_xy, distance_upper_bound=np.nextafter(reach, np.inf))
        found = tree_distance <= reach
        distance[found] = np.hypot(*(others[index[found]] - particles_xy[found]).T)
    if owned.any():
        row, which = _pairs_within(particles, points[owned], reach)
        foreign = point_region[owned][which] != own_region[row]
        d = np.hypot(*(points[owned][which[foreign]] - particles_xy[row[foreign]]).T)
        np.minimum.at(distance, row[foreign], d)
    return distance


def _near_any(particles_xy: np.ndarray, points: np.ndarray, radius: float) -> np.ndarray:
    """False for points that are surely farther than ``radius`` from every particle.

    The plane is cut into square cells of side ``radius``: a point within ``radius`` of a
    particle lies in the particle's cell or one of its 8 neighbours. Marking those cells on a
    small grid spares the k-d trees the many outline points far from the (isolated) particles.
    """
    if len(particles_xy) == 0 or len(points) == 0:
        return np.zeros(len(points), dtype=bool)
    cell = max(float(radius), 1.0) * (1 + 1e-6)  # a hair larger: rounding cannot push a neighbour 2 cells off
    low = np.minimum(particles_xy.min(axis=0), points.min(axis=0))
    particle_cell = np.floor((particles_xy - low) / cell).astype(np.intp) + 1
    point_cell = np.floor((points - low) / cell).astype(np.intp) + 1
    grid = np.zeros(tuple(np.maximum(particle_cell.max(axis=0), point_cell.max(axis=0)) + 2), dtype=bool)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            grid[particle_cell[:, 0] + dx, particle_cell[:, 1] + dy] = True
    return grid[point_cell[:, 0], point_cell[:, 1]]


def _pairs_within(particles: cKDTree, points: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(particle row, point row) of every point within ``radius`` of a particle, as arrays.

    One tree-against-tree search instead of a Python list per particle.
    """
    pairs = particles.sparse_distance_matrix(cKDTree(points), radius, output_type="ndarray")
    return pairs["i"].astype(np.intp), pairs["j"].astype(np.intp)


class _Neighbours:
    """Flat indices (into a C-contiguous image of ``shape``) of the pixels (ys, xs) and of their
    8 neighbours, with the edges replicated: a neighbour beyond the edge is the edge pixel.

    Clipping the few row and column coordinates once costs a fraction of padding the image
    (a full-size copy per image looked at).
    """

    def __init__(self, shape: tuple[int, ...], ys: np.ndarray, xs: np.ndarray) -> None:
        h, w = shape[:2]
        self.flat = ys * w + xs
        self._rows = {dy: np.clip(ys + dy, 0, h - 1) * w for dy in (-1, 1)} | {0: ys * w}
        self._cols = {dx: np.clip(xs + dx, 0, w - 1) for dx in (-1, 1)} | {0: xs}

    def index(self, dy: int, dx: int) -> np.ndarray:
        """Flat indices of the neighbours at (row + dy, col + dx), dy and dx in -1, 0, 1."""
        return self._rows[dy] + self._cols[dx]


def _centroids(signal: np.ndarray, peaks: np.ndarray, half: int) -> np.ndarray:
    """(row, col) centroids of the positive signal in a (2 half + 1)² window around each peak."""
    h, w = signal.shape
    offsets = np.arange(-half, half + 1)
    rows = np.clip(peaks[:, 0, None, None] + offsets[None, :, None], 0, h - 1)
    cols = np.clip(peaks[:, 1, None, None] + offsets[None, None, :], 0, w - 1)
    window = np.clip(signal[rows, cols], 0, None).astype(np.float64)
    total = window.sum(axis=(1, 2))
    total = np.where(total > 0, total, 1.0)
    dy = (window * offsets[None, :, None]).sum(axis=(1, 2)) / total
    dx = (window * offsets[None, None, :]).sum(axis=(1, 2)) / total
    return np.column_stack([peaks[:, 0] + dy, peaks[:, 1] + dx])
