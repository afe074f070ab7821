"""The RegistrationDS Tango shell: declares the public interface and delegates to the core."""

from __future__ import annotations

from tango import DevState
from tango.server import Device

from servers.common.tango_glue import run_server


class RegistrationDS(Device):
    """See docs/interface.md for the public interface of this device."""

    def init_device(self) -> None:
        super().init_device()
        self.set_state(DevState.ON)
        self.set_status("RegistrationDS is ready.")


def main(argv: list[str] | None = None) -> int:
    return run_server([RegistrationDS], argv)


if __name__ == "__main__":
    raise SystemExit(main())
