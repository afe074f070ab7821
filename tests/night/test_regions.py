"""Several regions of one sample through a real stack: the overview registered to the camera,
two tiles registered into the overview (``tile -> overview -> camera -> stage`` in
CoordMapperDS), tile pixels mapped to the stage against the simulation's truth, and the
particles of every tile in the night queue with their tile as frame and region."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.door import DoorClient, MacroFailed
from clients.launcher import Stack
from clients.regions import RegionOptions, region_accuracy, run_regions
from simulation.regions import RegionInputs, prepare_regions, small_recipe
from tests.system.stacks import running_stack, stack_proxy

SEED = 4
TILE_TO_STAGE_TOLERANCE_NM = 500.0
"""Every tile pixel through the mapper (no X-ray refinement) within 0.5 µm of where the truth
puts it: half the fine alignment's +-1 µm search, which must contain the particle."""

# A hang guard, not a speed target (stack up, calibration and three registrations).
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def regions_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, RegionInputs]]:
    out = tmp_path_factory.mktemp("regions")
    # Each SEM image with its own scan errors (small_recipe's default: 1-2 % magnification per
    # axis, shear, non-linearity): the overview -> camera and tile -> overview mappings are
    # affine, registered with model affine (docs/registration.md, "Affine": tile -> stage
    # measured within 61 and 90 nm of the truth).
    inputs = prepare_regions(out, SEED, small_recipe())
    stack = Stack(out / "stack", beamline=inputs.beamline, echo=False)
    with running_stack(stack):
        yield stack, inputs


def _door(stack: Stack) -> DoorClient:
    return DoorClient(f"tango://{stack.tango_host}/smart/door/01")


def test_tiles_map_to_the_stage_through_the_overview_and_fill_the_queue(regions_stack) -> None:
    stack, inputs = regions_stack
    camera = stack_proxy(stack, "smart/camera/1")
    camera.Snap()
    width, height = camera.read_attribute("Width").value, camera.read_attribute("Height").value
    # the beam's camera pixel: a once-per-beamline calibration; the simulated optics put it at the centre
    stack_proxy(stack, "smart/coordmapper/1").write_attribute("BeamPosition", [(width - 1) / 2, (height - 1) / 2])
    with _door(stack) as door:
        door.run("smart_calibrate_camera 20 3", timeout_s=600)
        door.run("smart_particle_profile ceo2_50nm", timeout_s=60)
    # the overview's rotation onto the camera is within +-17 deg by construction (mount 4,
    # camera 3, scan rotation 10)
    found = run_regions(stack.tango_host, inputs.overview, inputs.tiles, RegionOptions(rotation_range_deg=(-20, 20)))
    for name in inputs.tiles:
        assert found[name]["confidence"] >= 0.995, found
        assert found[name]["added"] >= 1, found
    accuracy = region_accuracy(stack.tango_host, inputs.truth, list(inputs.tiles))
    print("tile -> stage through the mapper, against the truth:", json.dumps(accuracy))
    for name, figures in accuracy.items():
        assert "overview" in json.dumps(figures["path"]), figures["path"]  # tile -> overview -> camera -> stage
        assert figures["max_nm"] < TILE_TO_STAGE_TOLERANCE_NM, (name, figures)
    # the overview registered again (as after a remount): the tiles keep their place in it
    with _door(stack) as door:
        said = door.run(f"smart_register {inputs.overview} affine overview", timeout_s=600).text()
    assert f"kept the registrations of {', '.join(inputs.tiles)} into overview" in said, said
    again = region_accuracy(stack.tango_host, inputs.truth, list(inputs.tiles))
    print("after registering the overview again:", json.dumps(again))
    assert all(figures["max_nm"] < TILE_TO_STAGE_TOLERANCE_NM for figures in again.values()), again
    targets = json.loads(stack_proxy(stack, "smart/queue/1").read_attribute("Targets").value)
    by_region: dict[str, int] = {}
    for target in targets:
        assert target["frame"] == target["region"], target
        by_region[target["region"]] = by_region.get(target["region"], 0) + 1
    assert set(by_region) == set(inputs.tiles), by_region
    assert all(by_region[name] == found[name]["added"] for name in inputs.tiles), (by_region, found)


def test_register_region_refuses_what_it_cannot_store(regions_stack) -> None:
    stack, inputs = regions_stack
    mapper = stack_proxy(stack, "smart/coordmapper/1")
    before = mapper.Transforms
    tile = next(iter(inputs.tiles.values()))
    with _door(stack) as door:
        with pytest.raises(MacroFailed, match="could not be loaded"):
            door.run(f"smart_register_region {Path(tile).parent / 'missing.tif'} tileX overview", timeout_s=120)
        with pytest.raises(MacroFailed, match="SMART_BadArgument"):
            door.run(f"smart_register_region {tile} camera overview", timeout_s=120)
        with pytest.raises(MacroFailed, match="SMART_NotFound"):
            door.run(f"smart_register_region {tile} tileX nowhere {inputs.overview}", timeout_s=120)
        with pytest.raises(MacroFailed, match="SMART_NotFound"):
            door.run("smart_queue_region tileX", timeout_s=120)
        # a rotation window that excludes the truth: the registration is in doubt, nothing is stored
        door.run("senv SmartRegionRotationRange 60 70", timeout_s=60)
        try:
            with pytest.raises(MacroFailed, match="SMART_Unsafe"):
                door.run(f"smart_register_region {tile} tileX overview", timeout_s=600)
        finally:
            door.run("usenv SmartRegionRotationRange", timeout_s=60)
    assert mapper.Transforms == before
