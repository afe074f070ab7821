"""`smart up --facility` against the Tango database a facility runs (MariaDB + cppTango
DataBaseds from Debian), with Sardana loaded into it by sardana-config, and the workflow
tests of tests/system/test_workflow.py run unchanged against that stack.

The workflow tests are imported, not copied: their fixture ``workflow_stack`` is redefined
here, so each runs against the facility stack instead of the embedded sqlite one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tango

from clients.launcher import Stack
from clients.workflow import Inputs, prepare_inputs
from tests.facility.production_db import FACILITY_TIMINGS, ProductionDatabase, tango_host_set
from tests.system import test_workflow as sqlite_workflow

pytestmark = pytest.mark.timeout(1200)

OUR_DEVICES = ("smart/camera/1", "smart/registration/1", "smart/particles/1", "smart/coordmapper/1")
SARDANA_DEVICES = ("smart/pool/1", "smart/macroserver/1", "smart/door/01")


@pytest.fixture(scope="module")
def workflow_stack(production_db: ProductionDatabase,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Inputs, Path]]:
    """The stack as `TANGO_HOST=<DataBaseds> smart up --facility` brings it up."""
    out = tmp_path_factory.mktemp("facility-workflow")
    inputs = prepare_inputs(out, sqlite_workflow.SEED)
    stack = Stack(out / "stack", beamline=inputs.beamline, echo=False, facility=True)
    with tango_host_set(production_db.tango_host):
        try:
            began = time.monotonic()
            stack.up()
            FACILITY_TIMINGS["smart up --facility (servers + Sardana, MariaDB DataBaseds)"] = (
                time.monotonic() - began)
            yield stack, inputs, out
        finally:
            began = time.monotonic()
            stack.down(quiet=True)
            FACILITY_TIMINGS["smart down (facility)"] = time.monotonic() - began


def test_facility_stack_lives_in_the_mariadb_database(workflow_stack, production_db: ProductionDatabase) -> None:
    """Our servers and Sardana are rows of MariaDB's ``tango.device`` table, exported, and
    answer through DataBaseds; no embedded database was started."""
    stack, _, _ = workflow_stack
    assert stack.tango_host == production_db.tango_host
    assert "PyDatabaseds" not in stack.running_names()
    names = ", ".join(f"'{name}'" for name in OUR_DEVICES + SARDANA_DEVICES)
    rows = production_db.sql(f"SELECT name, server, exported FROM device WHERE name IN ({names}) ORDER BY name")
    table = {name: (server, exported) for name, server, exported in rows}
    assert set(table) == set(OUR_DEVICES + SARDANA_DEVICES), rows
    assert all(exported == "1" for _, exported in table.values()), table
    assert table["smart/camera/1"][0] == "CameraDS/smart"
    assert table["smart/pool/1"][0] == "Pool/smart"
    for name in OUR_DEVICES + SARDANA_DEVICES:
        state = tango.DeviceProxy(f"tango://{production_db.tango_host}/{name}").state()
        assert state not in (tango.DevState.FAULT, tango.DevState.UNKNOWN), (name, state)
    # Sardana's configuration went in with sardana-config: the motors' limits are attribute
    # properties stored by DataBaseds in MariaDB
    limits = production_db.sql("SELECT value FROM property_attribute_device "
                               "WHERE device = (SELECT name FROM device WHERE alias = 'samx') "
                               "AND attribute = 'Position' AND name = 'max_value'")
    assert limits == [("11.5",)], limits


# The workflow tests, in their own order (each builds on the state the previous ones left):
# pytest collects these names here and gives them the ``workflow_stack`` above.
test_complete_workflow_puts_the_beam_on_the_particles = \
    sqlite_workflow.test_complete_workflow_puts_the_beam_on_the_particles
test_goto_outside_the_limits_is_refused_and_nothing_moves = \
    sqlite_workflow.test_goto_outside_the_limits_is_refused_and_nothing_moves
test_registration_in_doubt_is_not_stored = sqlite_workflow.test_registration_in_doubt_is_not_stored
test_a_name_the_environment_cannot_keep_is_refused_before_anything_is_stored = \
    sqlite_workflow.test_a_name_the_environment_cannot_keep_is_refused_before_anything_is_stored
test_resume_after_a_macroserver_crash_scans_every_particle_once = \
    sqlite_workflow.test_resume_after_a_macroserver_crash_scans_every_particle_once
test_fine_alignment_refuses_another_samples_particles = \
    sqlite_workflow.test_fine_alignment_refuses_another_samples_particles
