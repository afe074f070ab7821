"""Hostile files and names: what an ordinary user can hand a device by accident.

Each entry is a path a command that reads or writes files may be given: paths that are not
regular files (a FIFO whose open never returns, ``/dev/zero`` that never ends, a directory, a
symlink loop), files that are broken (empty, truncated, a TIFF header claiming 50000 x 50000
pixels, a text file) and valid images whose names are written in several scripts. Built in a
folder of its own, and rebuilt after any call that may have written into it (``SaveImage``
over the FIFO replaces it with a file), so every call sees the same corpus.
"""

from __future__ import annotations

import functools
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

SCRIPT_NAMES = {
    "cjk": "画像",
    "arabic": "صورة",
    "cyrillic": "снимок",
    "devanagari": "छवि",
    "emoji": "📷sample",
    "en_dash": "scan–1",
    "latin1": "Ñandú",
    "combining": "e\u0301chantillon",
}
"""Names a user may type in their own language; each must be accepted or refused clearly."""

HOSTILE_TEXT = [
    "", " ", "..", "../../etc/passwd", "a" * 5000, "\t\n", "\x00nul", "\u202eRTL",
    "{", "[]", "null", "NaN", "1e309", "名前", "🙂", "–", "\\\\server\\share", "~", "*", "?",
]
"""Free text for names and plain-string arguments (some are not valid as anything)."""


@dataclass(frozen=True)
class HostilePath:
    label: str   # short name in the report, e.g. "fifo"
    path: str


@dataclass(frozen=True)
class Corpus:
    folder: Path
    valid: Path          # a 128x128 uint16 TIFF with particles: what probes load
    valid_large: Path    # 1024x1024, what the ParticleDS probe detects on: large enough for any
                         # Diameter and Separation that ParticleDS accepts
    valid_shifted: Path  # the same scene shifted by (3, -2) px, for registrations
    stream: str          # a files: glob of a few frames for a camera
    hostile: tuple[HostilePath, ...]

    def paths(self) -> list[str]:
        return [h.path for h in self.hostile]

    def label(self, text: str) -> str:
        """The corpus label of the hostile path inside ``text`` ('' if none)."""
        for entry in sorted(self.hostile, key=lambda h: -len(h.path)):
            if entry.path in text:
                return entry.label
        return ""

    def rebuild(self) -> None:
        """Put back whatever a write command replaced or created."""
        build_corpus(self.folder)


@functools.lru_cache(maxsize=8)
def scene(shape: tuple[int, int] = (128, 128), shift: tuple[float, float] = (0.0, 0.0), seed: int = 0) -> np.ndarray:
    """A grey background with a dozen Gaussian particles, as uint16 (cached: the corpus is
    rebuilt after every hostile call; callers must not modify the array)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    image = np.full(shape, 1000.0)
    for x, y in np.random.default_rng(0).uniform(12, min(shape) - 12, size=(12, 2)):
        image += 20000.0 * np.exp(-((xx - x - shift[0]) ** 2 + (yy - y - shift[1]) ** 2) / (2 * 2.0 ** 2))
    image += rng.normal(0, 30, shape)
    return np.clip(image, 0, 65535).astype(np.uint16)


def huge_tiff_header(path: Path, side: int = 50000) -> None:
    """A small little-endian TIFF whose one IFD claims ``side`` x ``side`` uint8 pixels in one strip.

    A reader that believes the header before checking the file size allocates side**2 bytes."""
    entries = [  # tag, type (3 SHORT, 4 LONG), value
        (256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 1), (262, 3, 1),
        (273, 4, 8 + 2 + 12 * 10 + 4), (277, 3, 1), (278, 4, side), (279, 4, side * side), (284, 3, 1),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3
                                                  else struct.pack("<I", value))
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(64))


def _fresh(path: Path) -> Path:
    """Remove whatever is at ``path`` (file, link, FIFO or folder) so it can be made again."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists() or os.path.lexists(path):
        path.unlink()
    return path


def build_corpus(folder: Path) -> Corpus:
    """Write the corpus into ``folder`` (again: every entry is made afresh)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    valid, shifted = folder / "valid.tif", folder / "valid_shifted.tif"
    tifffile.imwrite(_fresh(valid), scene())
    tifffile.imwrite(_fresh(shifted), scene(shift=(3.0, -2.0), seed=1))
    large = folder / "valid_large.tif"  # no hostile path points at it: written once
    if not large.is_file() or large.is_symlink():
        tifffile.imwrite(_fresh(large), scene((1024, 1024)))
    stream = folder / "stream"
    stream.mkdir(exist_ok=True)
    for i in range(3):
        tifffile.imwrite(_fresh(stream / f"frame_{i:03d}.tif"), scene(seed=i))
    (folder / "out").mkdir(exist_ok=True)

    hostile: list[HostilePath] = []

    def add(label: str, path: Path | str) -> None:
        hostile.append(HostilePath(label, str(path)))

    os.mkfifo(_fresh(folder / "fifo.tif"))
    add("fifo", folder / "fifo.tif")
    # /dev/zero reached through a link of the corpus: a write command that replaced the path
    # (temporary file renamed over it) would replace the link, never the machine's device node
    _fresh(folder / "dev_zero.tif").symlink_to("/dev/zero")
    add("dev_zero", folder / "dev_zero.tif")
    _fresh(folder / "a_directory.tif").mkdir()
    add("directory", folder / "a_directory.tif")
    _fresh(folder / "empty.tif").write_bytes(b"")
    add("empty", folder / "empty.tif")
    _fresh(folder / "truncated.tif").write_bytes(valid.read_bytes()[: valid.stat().st_size // 2])
    add("truncated", folder / "truncated.tif")
    huge_tiff_header(_fresh(folder / "huge_header.tif"))
    add("header_50000x50000", folder / "huge_header.tif")
    loop_a, loop_b = folder / "loop_a.tif", folder / "loop_b.tif"
    _fresh(loop_a).symlink_to(loop_b.name)
    _fresh(loop_b).symlink_to(loop_a.name)
    add("symlink_loop", loop_a)
    _fresh(folder / "no_such_file.tif")
    add("missing", folder / "no_such_file.tif")
    add("relative", "valid.tif")
    _fresh(folder / "notes.tif").write_text("not an image\n")
    add("text_as_tif", folder / "notes.tif")
    for script, name in SCRIPT_NAMES.items():
        _fresh(folder / f"{name}.tif").write_bytes(valid.read_bytes())
        add(f"name_{script}", folder / f"{name}.tif")
    return Corpus(folder, valid, large, shifted, str(stream / "*.tif"), tuple(hostile))
