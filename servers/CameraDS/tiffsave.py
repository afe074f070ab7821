"""Saving a camera frame as TIFF at full bit depth with its metadata.

The frame's FrameMetadata JSON goes into the TIFF ImageDescription, because that is
what ``servers.common.imageio`` (RegistrationDS.LoadImage) reads the pixel size from: a
saved frame must come back at the right scale without the user typing it again. The
write goes to a temporary file in the same folder and is renamed into place, so a
reader polling the folder never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile

from servers.CameraDS.acquisition import Frame
from servers.common.errors import BadArgument, Failed, NotFound, NotReady

SUFFIXES = (".tif", ".tiff")


def save_tiff(path: str, frame: Frame | None) -> str:
    """Write ``frame`` to ``path`` (absolute, .tif/.tiff, existing folder); returns the path."""
    if frame is None:
        raise NotReady("there is no frame to save yet; Start the camera or Snap first")
    if not isinstance(path, str) or not path.strip():
        raise BadArgument("SaveImage needs a file path ending in .tif or .tiff, e.g. /data/frame_0001.tif")
    path = os.path.expanduser(path.strip())
    if not os.path.isabs(path):
        raise BadArgument(f"{path!r} is relative; give an absolute path (it is written by the server, "
                          "whose working folder you do not know)")
    if not path.lower().endswith(SUFFIXES):
        raise BadArgument(f"{path!r} does not end in .tif or .tiff; SaveImage writes TIFF only")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise NotFound(f"the folder {folder!r} does not exist on the camera server's machine; create it first")
    if os.path.isdir(path):
        raise BadArgument(f"{path!r} is a folder; give a file name")
    import tifffile

    description = json.dumps(frame.metadata().as_dict(), allow_nan=False)
    handle, tmp = tempfile.mkstemp(prefix=".saving-", suffix=".tif", dir=folder)
    os.close(handle)
    try:
        resolution = 1e4 / frame.pixel_size_um  # pixels per cm, for programs that ignore our JSON
        tifffile.imwrite(tmp, frame.data, description=description, metadata=None,
                         resolution=(resolution, resolution), resolutionunit="CENTIMETER")
        os.replace(tmp, path)
    except OSError as exc:
        raise Failed(f"cannot write {path!r}: {exc.strerror or exc}; check the permissions and free space") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
