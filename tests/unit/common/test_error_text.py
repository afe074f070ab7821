"""One DevFailed-to-sentence helper (servers/common/error_text.py), checked without Tango.

A ``DevFailed`` is an exception whose ``args`` are ``DevError`` records; the fakes below have
the same shape, so the test runs where Tango is not installed.
"""

from __future__ import annotations

from types import SimpleNamespace

from servers.common.error_text import devfailed_line, devfailed_reason, devfailed_text, error_stack
from servers.common.errors import NotReady


class FakeDevFailed(Exception):
    pass


def dev_error(reason: str, desc: str) -> SimpleNamespace:
    return SimpleNamespace(reason=reason, desc=desc, origin="somewhere")


TIMEOUT = FakeDevFailed(dev_error("API_DeviceTimedOut", " Timeout (3000 ms) exceeded on device a/b/c\n more "),
                        dev_error("API_CorbaException", "TRANSIENT_CallTimedout"))


def test_the_first_line_of_the_first_description() -> None:
    assert devfailed_line(TIMEOUT) == "Timeout (3000 ms) exceeded on device a/b/c"


def test_reasons_and_descriptions_of_the_first_errors() -> None:
    assert devfailed_text(TIMEOUT) == ("API_DeviceTimedOut: Timeout (3000 ms) exceeded on device a/b/c\n more; "
                                       "API_CorbaException: TRANSIENT_CallTimedout")
    assert devfailed_text(TIMEOUT, depth=1).startswith("API_DeviceTimedOut: ")
    assert devfailed_reason(TIMEOUT) == "API_DeviceTimedOut"


def test_an_error_event_stack_reads_the_same() -> None:
    errors = list(TIMEOUT.args)
    assert error_stack(errors) == tuple(errors)
    assert devfailed_line(errors) == devfailed_line(TIMEOUT)


def test_other_exceptions_give_their_own_first_line() -> None:
    assert devfailed_line(NotReady("no image yet\nsecond line")) == "no image yet"
    assert devfailed_line(ValueError("bad value")) == "bad value"
    assert devfailed_line(ValueError()) == ""
    assert devfailed_reason(ValueError("x")) == "" and devfailed_text(ValueError("x")) == ""


def test_nothing_is_no_stack() -> None:
    assert error_stack(None) == () and error_stack("text") == () and error_stack(3) == ()
    assert devfailed_line([]) == "" and devfailed_line(None) == ""
