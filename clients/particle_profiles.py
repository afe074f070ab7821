"""The named ParticleDS settings (``SmartParticleProfiles``) where they are written: once.

``smart up`` puts them into the MacroServer's environment from the Sardana configuration
(``simulation/launch/sardana.yaml``), where ``smart_particle_profile NAME`` applies them.
The demo and the night (:mod:`clients.workflow`, :mod:`clients.night`) write the same
settings to ParticleDS directly, so they read them from that file instead of keeping a copy.
Tango-free: only the file is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SARDANA_CONFIG = Path(__file__).resolve().parent.parent / "simulation" / "launch" / "sardana.yaml"
"""The virtual beamline's Sardana configuration (the ``sardana:`` entry of smart.yaml)."""
CEO2_50NM = "ceo2_50nm"
"""The profile for ~50 nm CeO2 cubes on a 20 nm/px SEM image: the virtual beamline's sample."""


def particle_profiles(config: Path = SARDANA_CONFIG) -> dict[str, dict[str, Any]]:
    """Every MacroServer's ``SmartParticleProfiles`` in a sardana-config YAML, by name."""
    raw = yaml.safe_load(config.read_text()) or {}
    profiles: dict[str, dict[str, Any]] = {}
    for server in (raw.get("macro_servers") or {}).values():
        variables = ((server or {}).get("environment") or {}).get("variables") or {}
        for name, settings in (variables.get("SmartParticleProfiles") or {}).items():
            profiles[str(name)] = dict(settings)
    return profiles


def particle_profile(name: str, config: Path = SARDANA_CONFIG) -> dict[str, Any]:
    """The settings of one profile; KeyError naming the known ones when there is none."""
    profiles = particle_profiles(config)
    if name not in profiles:
        raise KeyError(f"no particle profile '{name}' in {config} (known: {', '.join(sorted(profiles)) or 'none'})")
    return profiles[name]
