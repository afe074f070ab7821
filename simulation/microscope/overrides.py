"""tango-simlib override class for the SimMicroscope SimDD description.

tango-simlib keeps every attribute as an independent "quantity"; it has no way to say in
data that one quantity is a function of another. This override runs before each model
update (``pre_update``) and derives what the SimDD file cannot express:

- ``PixelSize`` from ``Zoom``, through the ``ZoomLevels`` property of the SimDD file, so the
  camera's pixel size follows the zoom as on the real microscope;
- a refused ``Zoom`` (a name that is not a zoom level) is put back to the previous level, because
  simlib's generic write handler cannot reject a value and a NaN pixel size would poison every
  client that scales images with it;
- State/Status from ``FaultCode``, the quantity the SimControl back channel sets to inject a fault.

The server must run with the device property ``min_update_period = 0``: simlib only calls
``pre_update`` when at least that many seconds passed since the last update, and the default
(0.99 s) would let ``PixelSize`` lag a zoom change by up to a second.
"""

from __future__ import annotations

import logging
from typing import Any

from tango import DevState

LOG = logging.getLogger(__name__)


def parse_pairs(entries: list[str] | str, value_type: type = str) -> dict[str, Any]:
    """``["low:1.1", ...]`` -> ``{"low": 1.1, ...}``; the SimDD schema only has string arrays."""
    if isinstance(entries, str):
        entries = [e for e in entries.replace("\n", ",").split(",") if e.strip()]
    pairs: dict[str, Any] = {}
    for entry in entries:
        key, sep, value = str(entry).partition(":")
        if not sep:
            raise ValueError(f"property entry {entry!r} must be 'name:value'")
        pairs[key.strip()] = value_type(value.strip())
    return pairs


def zoom_levels(model: Any) -> dict[str, float]:
    """Zoom name -> pixel size (µm/px), from the ``ZoomLevels`` property of the SimDD file."""
    return parse_pairs(model.sim_properties["ZoomLevels"]["DefaultPropValue"], float)


def fault_names(model: Any) -> dict[int, str]:
    """Fault code -> description, from the ``FaultCodes`` property of the SimDD file."""
    entries = model.sim_properties["FaultCodes"]["DefaultPropValue"]
    return {int(code): name for code, name in parse_pairs(entries).items()}


class MicroscopeOverride:
    """Named ``Sim_SimMicroscope_Override`` in the SimDD file; simlib builds one per model."""

    def __init__(self) -> None:
        self._last_zoom: dict[str, str] = {}

    def pre_update(self, model: Any, sim_time: float, dt: float) -> None:
        """Derive PixelSize and the device State before simlib snapshots the quantities."""
        levels = zoom_levels(model)
        zoom_quantity = model.sim_quantities["Zoom"]
        zoom = str(zoom_quantity.last_val)
        if zoom not in levels:
            previous = self._last_zoom.get(model.name, next(iter(levels)))
            LOG.warning("%s: zoom %r refused (levels: %s); staying at %r", model.name, zoom,
                        ", ".join(levels), previous)
            zoom_quantity.set_val(previous, sim_time)
            zoom = previous
        self._last_zoom[model.name] = zoom
        model.sim_quantities["PixelSize"].set_val(levels[zoom], sim_time)
        self._update_state(model, zoom, levels[zoom])

    @staticmethod
    def _update_state(model: Any, zoom: str, pixel_size: float) -> None:
        """Only the override knows the fault, so it sets State/Status of the simulated device.

        simlib keeps its devices in ``TangoDeviceServerBase.instances`` (device name -> device),
        keyed like the models; ``pre_update`` runs inside that device's own request
        (``always_executed_hook``), so setting its state here is thread-safe.
        """
        from tango_simlib.tango_sim_generator import TangoDeviceServerBase

        device = TangoDeviceServerBase.instances.get(model.name)
        if device is None:
            return
        code = int(round(float(model.sim_quantities["FaultCode"].last_val)))
        if code:
            name = fault_names(model).get(code, "no description in the FaultCodes property")
            state = DevState.FAULT
            status = (f"FAULT: simulated fault {code}: {name} (injected through SimControl; "
                      "set FaultCode back to 0 to clear it)")
        else:
            illumination = float(model.sim_quantities["Illumination"].last_val)
            state = DevState.ON
            status = (f"Simulated microscope ready: zoom {zoom}, {pixel_size:g} um/px, "
                      f"illumination {illumination:g} %")
        if device.get_state() != state:
            device.set_state(state)
        device.set_status(status)
