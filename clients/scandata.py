"""Reading a night back from Sardana's HDF5 scan files: every map with its SMART metadata.

Sardana's NXscan recorder writes one ``/entry<ScanID>`` per scan; the measured columns are in
``measurement/`` (one value per scan point: the motors' positions, the counters) and the SMART
macros add ``smart/`` (``NXcollection``): ``role`` (particle_scan, fine_alignment_search, ...),
``particle_index``, ``frame``, ``region``, ``reference_position_px``, ``target_position``,
``coarse_target_position``, ``measured_centre_position``, ``stage_unit``, ``motors``,
``channel``, ``outcome`` (see macros/smart_records.py, docs/workflow.md). Entries without
``smart/`` (a user's own ``ascan``) are read with empty metadata.

The figures, the morning report and the tests read the maps from here; nothing reads the
MacroServer's memory. Files are opened read-only without HDF5 file locking, so a report can
be made while Sardana appends the next scan (each entry is complete once its ``end_time``
exists; entries without it are marked ``complete=False``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PARTICLE_ROLE = "particle_scan"
FINE_ROLES = ("fine_alignment_search", "fine_alignment_centre")
H5_SUFFIXES = (".h5", ".hdf5", ".nxs")


@dataclass
class ScanMap:
    """One scan entry: its map (flat columns, as scanned) and what SMART wrote about it."""

    file: Path
    entry: str
    title: str
    start_time: str
    end_time: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    channel: str = ""

    @property
    def complete(self) -> bool:
        return self.end_time is not None

    @property
    def role(self) -> str:
        return str(self.metadata.get("role", ""))

    @property
    def index(self) -> int | None:
        value = self.metadata.get("particle_index")
        return None if value is None else int(value)

    @property
    def target(self) -> np.ndarray | None:
        value = self.metadata.get("target_position")
        return None if value is None else np.asarray(value, float)

    @property
    def centre(self) -> np.ndarray | None:
        value = self.metadata.get("measured_centre_position")
        return None if value is None else np.asarray(value, float)

    @property
    def location(self) -> str:
        """``/path/scans.h5::/entry12``: where the data is, as NeXus tools name it."""
        return f"{self.file}::/{self.entry}"

    def grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The map as an image: (x values, y values, counts[y, x]), NaN where not measured."""
        return grid(self.x, self.y, self.counts)


def grid(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A mesh's flat columns as an image (rows y, columns x); points not (yet) measured are NaN."""
    x, y, counts = (np.asarray(v, float) for v in (x, y, counts))
    if len(x) == 0:
        return np.zeros(0), np.zeros(0), np.zeros((0, 0))
    xs, ys = np.unique(np.round(x, 9)), np.unique(np.round(y, 9))
    image = np.full((len(ys), len(xs)), np.nan)
    image[np.searchsorted(ys, np.round(y, 9)), np.searchsorted(xs, np.round(x, 9))] = counts
    return xs, ys, image


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _plain(value: Any) -> Any:
    """An HDF5 dataset's value as plain Python: text, int, float or a list of floats."""
    if isinstance(value, bytes | str):
        return _text(value)
    array = np.asarray(value)
    if array.shape == ():
        item = array.item()
        return _text(item) if isinstance(item, bytes) else item
    return array.tolist()


def _column(measurement: Any, name: str) -> np.ndarray | None:
    """A measurement column by its label or the end of its label (``xrf_ce`` finds ``xrf_ce``)."""
    if not name:
        return None
    wanted = name.lower().rsplit("/", 1)[-1]
    for key in measurement:
        if key.lower() == wanted or key.lower().endswith("_" + wanted):
            item = measurement[key]
            if hasattr(item, "shape") and len(item.shape) == 1:
                return np.asarray(item[()], float)
    return None


def read_entry(file: Path, handle: Any, entry: str) -> ScanMap:
    """One entry of an open h5py file as a ScanMap (columns named by the SMART metadata)."""
    group = handle[entry]
    metadata = {key: _plain(group["smart"][key][()]) for key in group["smart"]} if "smart" in group else {}
    scan = ScanMap(file=file, entry=entry, title=_text(group["title"][()]) if "title" in group else "",
                   start_time=_text(group["start_time"][()]) if "start_time" in group else "",
                   end_time=_text(group["end_time"][()]) if "end_time" in group else None, metadata=metadata)
    measurement = group.get("measurement")
    if measurement is None:
        return scan
    motors = [m for m in str(metadata.get("motors", "")).split(",") if m]
    if len(motors) < 2:  # a scan SMART did not annotate: its first two moveables, by title (mesh samx ... samy ...)
        words = scan.title.split()
        motors = [words[1], words[5]] if len(words) > 5 and words[0] == "mesh" else []
    channel = str(metadata.get("channel", "xrf_ce"))
    columns = [_column(measurement, name) for name in (*motors[:2], channel)] if motors else [None, None, None]
    if all(c is not None for c in columns):
        length = min(len(c) for c in columns)  # a running scan: columns grow one point at a time
        scan.x, scan.y, scan.counts = (c[:length] for c in columns)
        scan.channel = channel
    return scan


def scan_files(where: Path | Iterable[Path]) -> list[Path]:
    """HDF5 files in a folder (recursively), or the given files."""
    if isinstance(where, Path):
        if where.is_dir():
            return sorted(p for p in where.rglob("*") if p.suffix in H5_SUFFIXES)
        return [where] if where.exists() else []
    return [Path(p) for p in where]


def read_scans(where: Path | Iterable[Path]) -> list[ScanMap]:
    """Every entry of every HDF5 scan file under ``where``, in file and scan order."""
    import h5py

    scans = []
    for file in scan_files(where):
        with h5py.File(file, "r", locking=False) as handle:
            entries = sorted((k for k in handle if k.startswith("entry")),
                             key=lambda k: (len(k), k))  # entry2 before entry10
            scans.extend(read_entry(file, handle, entry) for entry in entries)
    return scans


def particle_maps(scans: Iterable[ScanMap]) -> dict[int, ScanMap]:
    """The particle loop's map of each particle: the last complete ``particle_scan`` entry of
    each index (a particle rescanned after a crash keeps its newest map)."""
    maps: dict[int, ScanMap] = {}
    for scan in scans:
        if scan.role == PARTICLE_ROLE and scan.index is not None and scan.complete:
            maps[scan.index] = scan
    return maps


def offset_nm(scan: ScanMap, nm_per_unit: float) -> tuple[float, float]:
    """Measured centre minus target (nm): how far the particle was from where the beam was sent."""
    target, centre = scan.target, scan.centre
    if target is None or centre is None or not np.isfinite(centre).all():
        return math.nan, math.nan
    return float((centre[0] - target[0]) * nm_per_unit), float((centre[1] - target[1]) * nm_per_unit)
