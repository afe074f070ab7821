"""`smart-gui`: the Taurus panel where users watch the beamline and step in.

Thin like the CLI: it reads the SMART devices and runs macros through the Door
(clients.commands), never imports ``servers/``. Run it with
``python -m clients.gui.main [--tango-host H:P] [--yes] [--screenshot PNG]``.
"""
