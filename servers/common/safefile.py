"""File access that cannot freeze a device: regular files only, and every access time-limited.

A Tango device serves all its clients from one monitor, so one ``open()`` that never
returns (a FIFO nobody writes to, a character device, a hung network mount) used to block
the device for every client until the server was killed. Two rules prevent that:

* Only regular files are read. The file is opened with ``O_NONBLOCK`` (which makes opening
  a FIFO return at once) and checked with ``fstat`` on the open descriptor, so a FIFO,
  ``/dev/zero``, a socket or a directory is refused with :class:`BadArgument` before any
  byte is read, and there is no window between the check and the read.
* Every access runs in a worker thread with a time limit. A path that does not answer
  gives :class:`Failed` naming the path after :data:`DEFAULT_TIMEOUT_S`; the caller (and so
  the device) is free again, and only the worker stays behind, blocked in the kernel.
  Such stuck workers are counted: after :data:`MAX_STUCK` of them new file accesses are
  refused at once instead of piling up threads on a dead mount.

A Python thread blocked in the kernel cannot be killed; a process could be, but moving a
100 Mpx image between processes would cost more than the read. The thread is the
tested compromise: the device never waits longer than the limit, and the count bounds
what a dead mount can cost.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from servers.common.errors import BadArgument, Failed, NotFound

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 2.5
"""Longest wait for one file access: below the 3 s default Tango client timeout, so a client
gets the ``SMART_Failed`` naming the path rather than a bare timeout."""
MAX_STUCK = 4
"""File accesses still blocked after their time limit; beyond this, new ones are refused."""

_stuck_lock = threading.Lock()
_stuck: dict[int, str] = {}  # worker id -> what it was doing


def stuck_accesses() -> list[str]:
    """What the file accesses that overran their limit and have not returned yet are doing."""
    with _stuck_lock:
        return list(_stuck.values())


def describe_path(path: str) -> str:
    """The path for a message: quoted, with invisible and undecodable characters made visible."""
    return repr(path)


def check_path_text(path: object, what: str = "path") -> str:
    """A non-empty ``str`` that can be a file name, or :class:`BadArgument` saying why not."""
    if not isinstance(path, str) or not path.strip():
        raise BadArgument(f"the {what} is empty; give the full path of a file on the server")
    if "\x00" in path:
        raise BadArgument(f"the {what} {describe_path(path)} contains a NUL character (U+0000), which no file "
                          "name can hold; remove it")
    try:
        os.fsencode(path)
    except UnicodeError:
        bad = sorted({f"U+{ord(c):04X}" for c in path if 0xD800 <= ord(c) <= 0xDFFF})
        raise BadArgument(f"the {what} {describe_path(path)} contains characters that cannot be a file name on "
                          f"the server ({', '.join(bad) or 'unencodable'}: unpaired UTF-16 surrogates); "
                          "send the name as proper Unicode") from None
    return path


def run_with_time_limit(work: Callable[[], T], what: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> T:
    """Run ``work`` in a worker thread; its result, its exception, or :class:`Failed` after ``timeout_s``.

    ``what`` names the access for the messages ("reading '/data/x.tif'").
    """
    stuck = stuck_accesses()
    if len(stuck) >= MAX_STUCK:
        raise Failed(f"{len(stuck)} earlier file accesses on this server have not returned "
                     f"(e.g. {stuck[-1]}); the file system is not answering. Fix or unmount it; "
                     "the device keeps working for everything else")
    outcome: dict[str, object] = {}
    done = threading.Event()

    def worker() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller unchanged
            outcome["error"] = exc
        finally:
            with _stuck_lock:
                _stuck.pop(threading.get_ident(), None)
            done.set()

    thread = threading.Thread(target=worker, name="file-access", daemon=True)
    thread.start()
    if not done.wait(timeout_s):
        with _stuck_lock:
            if not done.is_set() and thread.ident is not None:
                _stuck[thread.ident] = what
        if not done.is_set():
            raise Failed(f"{what} did not finish within {timeout_s:g} s: the file system does not answer "
                         "(a hung network mount?). The device has stopped waiting for it and serves other calls; "
                         "check the path and the mount, then try again")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def kind_of(mode: int) -> str:
    """'a FIFO (named pipe)', 'a directory', ... for a ``st_mode`` that is not a regular file."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str, what: str = "file") -> BinaryIO:
    """Open ``path`` for reading if, and only if, it is a regular file (never blocks on a FIFO).

    Call it inside :func:`run_with_time_limit`: opening a regular file on a hung mount still blocks.
    """
    check_path_text(path, f"{what} path")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise NotFound(f"no file at {describe_path(path)}; check the path (it is read by the server, "
                       "not the client)") from None
    except OSError as exc:
        raise _open_error(path, what, exc) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BadArgument(f"{describe_path(path)} is {kind_of(mode)}, not a regular file; give the path of "
                              f"one {what} (only regular files are read)")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        raw = io.FileIO(fd, "rb")
        raw.name = path  # decoders (tifffile) use the name, not the descriptor
        return io.BufferedReader(raw)
    except BaseException:
        os.close(fd)
        raise


def check_write_target(path: str, what: str = "file") -> str:
    """Refuse to write where something other than a regular file (or nothing) is: replacing a
    FIFO, a device node such as ``/dev/zero`` or a directory by our file would break whatever
    uses it (the servers may well run as root). Call it inside :func:`run_with_time_limit`."""
    check_path_text(path, f"{what} path")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return path
        raise _open_error(path, what, exc) from None
    if not stat.S_ISREG(mode):
        raise BadArgument(f"{describe_path(path)} is {kind_of(mode)}; give the path of a {what} to write "
                          "(only regular files are replaced)")
    return path


def _open_error(path: str, what: str, exc: OSError) -> Exception:
    code = exc.errno
    shown = describe_path(path)
    if code == errno.ELOOP:
        return BadArgument(f"{shown} is a symbolic link loop (too many levels of links); fix the link")
    if code == errno.ENOTDIR:
        return NotFound(f"no {what} at {shown}: a part of the path is not a directory")
    if code in (errno.EACCES, errno.EPERM):
        return BadArgument(f"the server may not read {shown} (permission denied); make it readable for the "
                           "server's user")
    if code == errno.ENAMETOOLONG:
        return BadArgument(f"the path {shown} is too long for the file system")
    if code == errno.EISDIR:
        return BadArgument(f"{shown} is a directory; give the path of one {what}")
    return Failed(f"cannot open {shown} ({exc.strerror or exc}); check the path and the file system")
