"""``SimMicroscope`` device server: the tango-simlib generated server for microscope.json.

This is what ``tango-simlib-generator`` would write, kept as a module so that it is a
console script (``SimMicroscope = simulation.microscope.server:main``) the launcher can start
like our other servers, and so the SimDD path travels with the package instead of being
baked into a generated file.

One process serves two devices (register both, in the same server ``SimMicroscope/<instance>``):
- class ``SimMicroscope``: the simulated microscope (property ``min_update_period = 0``);
- class ``SimMicroscopeSimControl``: its back channel (property ``model_key`` = the
  microscope's device name).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

SERVER_NAME = "SimMicroscope"
SIMDD_FILE = Path(__file__).resolve().parent / "microscope.json"


def main(argv: list[str] | None = None) -> None:
    """Run the server; ``argv`` is ``[instance, tango options...]`` (default: the command line)."""
    args = list(sys.argv[1:] if argv is None else argv)
    # simlib derives the server name from argv[0] (and so does Tango): make it the same
    # however we were started (console script, ``python -m``, a test).
    sys.argv = [SERVER_NAME, *args]
    with warnings.catch_warnings():
        # tango-simlib 0.9.4 still imports pkg_resources; the warning is noise in every log.
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from tango_simlib.tango_sim_generator import configure_device_models, get_tango_device_server
    from tango.server import server_run

    files = [str(SIMDD_FILE)]
    models = configure_device_models(files)
    server_run(get_tango_device_server(models, files))


if __name__ == "__main__":
    main()
