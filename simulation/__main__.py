"""``python -m simulation ...``: see :mod:`simulation.cli`."""

import sys

from simulation.cli import main

sys.exit(main())
