"""Client side of the SimMicroscope back channel (tango-simlib's SimControl device).

SimControl is generic: write the quantity's name to the DevEnum ``attribute_name`` (as an index
into its enum labels), then its ``last_val``. Two writes that tests and demos should not have
to spell out, so they live here. This is for tests and demos only: a real microscope has no
back channel, and nothing in servers/, macros/ or clients/ may depend on it.
"""

from __future__ import annotations

import tango

DEFAULT_SIMCONTROL = "smart/microscope/1-simcontrol"


class MicroscopeBackChannel:
    """Drive the simulated microscope's quantities behind its public interface."""

    def __init__(self, simcontrol: str = DEFAULT_SIMCONTROL, timeout_ms: int = 3000) -> None:
        self.proxy = tango.DeviceProxy(simcontrol)
        self.proxy.set_timeout_millis(timeout_ms)
        self._labels = list(self.proxy.get_attribute_config("attribute_name").enum_labels)

    def set_quantity(self, name: str, value: float) -> None:
        """Set a numeric quantity (``FaultCode``, ``Illumination``) as if the hardware did it."""
        if name not in self._labels:
            raise ValueError(f"{name!r} is not a simulated quantity; choose one of {self._labels}")
        self.proxy.write_attribute("attribute_name", self._labels.index(name))
        self.proxy.write_attribute("last_val", float(value))

    def inject_fault(self, code: int) -> None:
        """Put the microscope in FAULT; its Status names ``code`` from the FaultCodes property."""
        if int(code) == 0:
            raise ValueError("fault code 0 means healthy; use clear_fault()")
        self.set_quantity("FaultCode", int(code))

    def clear_fault(self) -> None:
        """Back to healthy (ON) on the next request to the microscope."""
        self.set_quantity("FaultCode", 0)
