"""ParticleDS core: trackpy particle detection and isolation scoring, free of Tango.

The device shell (``device.py``) declares the Tango interface and calls
:class:`ParticleCore`; everything that can be tested without a control system lives here.
"""

from servers.ParticleDS.core import ParticleCore
from servers.ParticleDS.results import ParticleResults
from servers.ParticleDS.settings import DetectArgs, ParticleSettings

__all__ = ["DetectArgs", "ParticleCore", "ParticleResults", "ParticleSettings"]
