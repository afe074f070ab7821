"""ParticleCore: the whole behaviour of ParticleDS behind a thread-safe Python API.

The Tango shell calls this from its command and attribute threads. Settings and results
are replaced as whole immutable objects under a lock, so a reader always sees one
consistent detection; detections themselves are serialised by a second lock and run
outside the state lock, so the previous results stay readable while a new detection
runs, and a refused or failed detection leaves them untouched.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from servers.common.errors import BadArgument, Failed, NotReady, SmartError
from servers.ParticleDS import annotate, crowding, detection, export, image_input, isolation, scratch
from servers.ParticleDS.results import DetectSummary, ParticleResults
from servers.ParticleDS.settings import SETTING_NAMES, DetectArgs, ParticleSettings, validated_settings


def _minimum_region_side(settings: ParticleSettings) -> int:
    """Smallest ROI side with at least one pixel where trackpy accepts a feature centre."""
    radius = settings.Diameter // 2
    margin = max(radius, int(settings.separation_px // 2 - 1), settings.Diameter // 2)
    return 2 * margin + 1


class ParticleCore:
    """Detection settings, the last results, and the operations on them."""

    def __init__(self, settings: ParticleSettings | dict[str, Any] | None = None) -> None:
        initial = settings if isinstance(settings, ParticleSettings) else validated_settings(dict(settings or {}))
        self._state_lock = threading.RLock()
        self._detect_lock = threading.Lock()
        self._settings: ParticleSettings = initial
        self._results: ParticleResults | None = None
        self._source_image: np.ndarray | None = None
        self._annotated: dict[bool, np.ndarray] = {}

    # ----------------------------------------------------------------- settings
    @property
    def settings(self) -> ParticleSettings:
        with self._state_lock:
            return self._settings

    def get_setting(self, name: str) -> Any:
        if name not in SETTING_NAMES:
            raise BadArgument(f"unknown setting '{name}'; known settings: {', '.join(SETTING_NAMES)}")
        return getattr(self.settings, name)

    def set_setting(self, name: str, value: Any) -> None:
        """Validate and store one setting (a refused value changes nothing)."""
        self.update_settings({name: value})

    def update_settings(self, values: dict[str, Any]) -> ParticleSettings:
        """Validate several settings together (e.g. Diameter and NoiseSize) and store them."""
        unknown = sorted(set(values) - set(SETTING_NAMES))
        if unknown:
            raise BadArgument(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTING_NAMES)}")
        with self._state_lock:
            self._settings = self._settings.with_overrides(values)
            return self._settings

    # ---------------------------------------------------------------- detection
    def detect(self, image: np.ndarray, roi: Sequence[int] | None = None,
               overrides: dict[str, Any] | None = None) -> DetectSummary:
        """Detect particles in ``image`` (optionally inside ``roi`` = [x, y, w, h]).

        ``overrides`` are settings for this call only. Returns the summary (count, isolated,
        elapsed_ms, roi); results are then readable.
        """
        start = time.perf_counter()
        unknown = sorted(set(overrides or {}) - set(SETTING_NAMES))
        if unknown:
            raise BadArgument(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTING_NAMES)}")
        settings = self.settings.with_overrides(dict(overrides or {}))
        source = image_input.as_grey_image(image)
        x0, y0, w, h = image_input.resolve_roi(roi, source.shape, _minimum_region_side(settings))
        region = source[y0:y0 + h, x0:x0 + w]
        image_input.check_not_constant(region)
        with self._detect_lock:
            try:
                with warnings.catch_warnings(), scratch.borrow() as work:
                    warnings.simplefilter("ignore")
                    region = np.ascontiguousarray(region)
                    features = detection.detect(region, settings, work)
                    crowd = self._crowding(region, features, settings, work)
            except SmartError:
                raise
            except Exception as exc:  # trackpy/numba errors on unforeseen input
                raise Failed(f"particle detection failed ({type(exc).__name__}: {exc}); check the image and "
                             "settings, or report this image to the SMART maintainers") from None
            results = self._build_results(features, crowd, settings, (x0, y0, w, h), source.shape, start)
            with self._state_lock:
                self._results = results
                self._source_image = source
                self._annotated = {}
        return results.summary()

    def detect_args(self, args: DetectArgs, image: np.ndarray) -> DetectSummary:
        """Detect with a parsed ``Detect`` argument; the shell has resolved path/attribute to ``image``."""
        return self.detect(image, args.roi, args.overrides())

    @staticmethod
    def _crowding(region: np.ndarray, features: detection.Features, settings: ParticleSettings,
                  work: scratch.Scratch) -> crowding.Crowding:
        """Multiplicity and unlisted neighbours of the particles, from the image itself."""
        all_xy = np.column_stack([features.x, features.y])
        particles = all_xy[features.kept]
        h, w = region.shape[:2]
        listed = isolation.nearest_neighbour_distance(particles, all_xy) >= settings.IsolationRadius
        listed &= isolation.edge_distance(particles, (0, 0, w, h)) >= settings.IsolationRadius
        size = float(np.median(features.size[features.kept])) if len(particles) else None
        return crowding.analyse(detection.detection_image(region, settings), particles, all_xy,
                                settings.Diameter, settings.IsolationRadius, candidates=listed, work=work,
                                particle_size=size)

    @staticmethod
    def _build_results(features: detection.Features, crowd: crowding.Crowding, settings: ParticleSettings,
                       roi: tuple[int, int, int, int], shape: tuple[int, ...],
                       start: float) -> ParticleResults:
        x_all = features.x + roi[0]
        y_all = features.y + roi[1]
        kept = features.kept
        all_xy = np.column_stack([x_all, y_all])
        nn = np.minimum(isolation.nearest_neighbour_distance(all_xy[kept], all_xy), crowd.image_neighbour)
        isolated = isolation.isolated_mask(nn, settings.IsolationRadius)
        isolated &= isolation.edge_distance(all_xy[kept], roi) >= settings.IsolationRadius
        isolated &= crowd.multiplicity == 1
        on_bright_area = crowd.on_bright_area
        assert on_bright_area is not None  # Crowding.__post_init__ fills it in
        isolated &= ~on_bright_area  # a maximum on a marker is not a particle to scan
        return ParticleResults(
            x=x_all[kept], y=y_all[kept], mass=features.mass[kept], size=features.size[kept],
            ecc=features.ecc[kept], signal=features.signal[kept],
            isolated=isolated, nn_distance=nn, multiplicity=crowd.multiplicity,
            on_bright_area=on_bright_area,
            roi=roi, image_shape=(int(shape[0]), int(shape[1])), settings=settings.model_dump(),
            elapsed_ms=(time.perf_counter() - start) * 1e3, timestamp=time.time(),
            neighbours_only=int(np.count_nonzero(~kept)),
        )

    # ------------------------------------------------------------------ results
    @property
    def results(self) -> ParticleResults | None:
        """The last successful detection, or None before the first one."""
        with self._state_lock:
            return self._results

    def _require_results(self) -> ParticleResults:
        results = self.results
        if results is None:
            raise NotReady("no detection has run yet; call Detect first")
        return results

    def _array(self, name: str) -> np.ndarray:
        results = self.results
        if results is None:
            return np.empty(0, dtype=bool if name in ("isolated", "on_bright_area") else np.float64)
        return getattr(results, name)

    @property
    def count(self) -> int:
        results = self.results
        return 0 if results is None else results.count

    @property
    def x(self) -> np.ndarray:
        return self._array("x")

    @property
    def y(self) -> np.ndarray:
        return self._array("y")

    @property
    def mass(self) -> np.ndarray:
        return self._array("mass")

    @property
    def size(self) -> np.ndarray:
        return self._array("size")

    @property
    def eccentricity(self) -> np.ndarray:
        return self._array("ecc")

    @property
    def signal(self) -> np.ndarray:
        return self._array("signal")

    @property
    def isolated(self) -> np.ndarray:
        return self._array("isolated")

    @property
    def nn_distance(self) -> np.ndarray:
        return self._array("nn_distance")

    @property
    def multiplicity(self) -> np.ndarray:
        results = self.results
        return np.empty(0, dtype=np.int64) if results is None else results.multiplicity

    @property
    def on_bright_area(self) -> np.ndarray:
        return self._array("on_bright_area")

    def table(self) -> str:
        """The Table attribute: JSON rows (``[]`` before the first detection)."""
        results = self.results
        return "[]" if results is None else export.table_json(results)

    def export_csv(self, path: str) -> str:
        """Write the last results as CSV on the server; returns the absolute path."""
        return export.write_csv(self._require_results(), path)

    def annotated_image(self, rgb: bool = True) -> np.ndarray:
        """The source image with particles circled and numbered (uint8, RGB or grey); cached."""
        with self._state_lock:
            results, source = self._results, self._source_image
            cached = self._annotated.get(rgb)
        if results is None or source is None:
            raise NotReady("no detection has run yet, so there is nothing to annotate; call Detect first")
        if cached is not None:
            return cached
        image = annotate.annotate(source, results, int(results.settings["Diameter"]), rgb=rgb)
        image.setflags(write=False)
        with self._state_lock:
            if self._results is results:
                self._annotated[rgb] = image
        return image
