"""File access with a time limit and for regular files only (servers.common.safefile)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from servers.common import safefile
from servers.common.errors import BadArgument, Failed


def test_a_read_that_never_returns_gives_failed_naming_the_path(tmp_path: Path) -> None:
    fifo = tmp_path / "never.tif"
    os.mkfifo(fifo)
    with pytest.raises(Failed) as info:  # a blocking open of a FIFO nobody writes to: the hung-mount case
        safefile.run_with_time_limit(lambda: fifo.read_bytes(), f"reading '{fifo}'", timeout_s=0.3)
    assert str(fifo) in info.value.desc and "0.3 s" in info.value.desc
    assert any(str(fifo) in what for what in safefile.stuck_accesses())
    with open(fifo, "wb"):  # release the stuck worker: it finishes and is no longer counted
        pass
    for thread in threading.enumerate():
        if thread.name == "file-access":
            thread.join(5)
    assert not any(str(fifo) in what for what in safefile.stuck_accesses())


def test_too_many_stuck_accesses_refuse_new_ones_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safefile, "_stuck", {i: f"reading '/mnt/dead/{i}.tif'" for i in range(safefile.MAX_STUCK)})
    with pytest.raises(Failed) as info:
        safefile.run_with_time_limit(lambda: 1, "reading 'x'")
    assert "/mnt/dead/" in info.value.desc and "not answering" in info.value.desc


def test_errors_and_results_of_the_work_come_back_unchanged() -> None:
    assert safefile.run_with_time_limit(lambda: 42, "nothing") == 42
    with pytest.raises(BadArgument):
        safefile.run_with_time_limit(lambda: safefile.check_path_text(""), "nothing")


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_only_regular_files_are_opened_and_none_blocks(tmp_path: Path, kind: str) -> None:
    path = {"fifo": tmp_path / "p", "directory": tmp_path, "device": Path("/dev/null")}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(BadArgument) as info:
        safefile.open_regular(str(path))
    assert "not a regular file" in info.value.desc
    with pytest.raises(BadArgument):
        safefile.check_write_target(str(path))


def test_symlink_loop_and_impossible_names(tmp_path: Path) -> None:
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    with pytest.raises(BadArgument, match="symbolic link loop"):
        safefile.open_regular(str(tmp_path / "a"))
    with pytest.raises(BadArgument, match="U\\+0000"):
        safefile.open_regular("/tmp/a\x00b")
    with pytest.raises(BadArgument, match="U\\+D800"):
        safefile.open_regular("/tmp/\ud800")
