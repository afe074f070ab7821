"""The simulated microscope peripherals (zoom, pixel size, illumination), served by tango-simlib.

The device is described in data (``microscope.json``, a tango-simlib SimDD file); the only
code is the override that makes ``PixelSize`` follow ``Zoom`` and turns a ``FaultCode`` set
through the SimControl back channel into the device's State/Status. See docs/microscope.md.
"""
