"""The named ParticleDS settings are read from the Sardana configuration, the one place they are written."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.particle_profiles import CEO2_50NM, particle_profile, particle_profiles

CONFIG = """
macro_servers:
  ms_a:
    environment:
      variables:
        SmartParticleProfiles:
          small: {Diameter: 5, MinMass: 100.0}
  ms_b:
    environment:
      variables:
        SmartCamera: smart/camera/1
"""


def test_profiles_are_read_from_every_macro_server(tmp_path: Path) -> None:
    config = tmp_path / "sardana.yaml"
    config.write_text(CONFIG)
    assert particle_profiles(config) == {"small": {"Diameter": 5, "MinMass": 100.0}}
    with pytest.raises(KeyError, match="no particle profile 'large'.*known: small"):
        particle_profile("large", config)


def test_the_virtual_beamlines_profile_names_the_detection_settings() -> None:
    """The demo and the night take Diameter, MinMass, MaxSize and Separation from here
    (clients.workflow.PARTICLE_SETTINGS_50NM); IsolationRadius (px at 20 nm/px) is the
    workflow's isolation_um default, 2 um."""
    profile = particle_profile(CEO2_50NM)
    assert set(profile) == {"Diameter", "MinMass", "MaxSize", "Separation", "IsolationRadius"}
    assert profile["IsolationRadius"] * 0.020 == pytest.approx(2.0)
