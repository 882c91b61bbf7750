"""One run per run directory: an advisory lock (``fcntl.flock``) on ``<out_dir>/.lock``.

The kernel drops a ``flock`` when the process that holds it ends, however it ends (``kill -9``
included), so a crashed run never leaves a stale lock: the file may stay behind, but nobody holds it
and the next run takes it over. While a run holds it, a second run on the same directory stops with
one line naming the holder's PID (written into the file). Rank 0 takes the lock for the whole run;
the lock is re-entrant within a process (``train()`` called again on the same directory), and
released (the file removed) when the run ends. Taking it also removes the temporaries a killed run
left behind (``remove_stale_temporaries``).
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from pathlib import Path

from growth.errors import CheckpointError

LOCK_FILE = ".lock"


class RunDirInUse(CheckpointError):
    """Another process holds the run directory's lock."""


class RunLock:
    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        """Remove the file, then drop the lock (a waiter that opened the old file sees it is gone)."""
        if self.fd < 0:
            return
        try:
            if _same_file(self.path, self.fd):
                self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1


_HELD: dict[Path, RunLock] = {}


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def holder(out_dir: Path) -> str:
    """What the lock file says about its holder ("pid 123 on host, since ..."), or "" if nothing."""
    try:
        return (Path(out_dir) / LOCK_FILE).read_text(errors="replace").strip()
    except OSError:
        return ""


def _holder_line(fd: int, wait: float = 2.0) -> str:
    """The holder's line from the lock file; the holder writes it right after taking the lock, so a racer that
    finds the lock taken but the file still empty waits up to ``wait`` seconds for it."""
    deadline = time.monotonic() + wait
    while not (line := os.pread(fd, 256, 0).decode(errors="replace").strip()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return line


def lock_run_dir(out_dir: Path) -> RunLock:
    """Take the lock on ``out_dir`` (which must exist) or raise :class:`RunDirInUse`."""
    key = Path(out_dir).resolve()
    if key in _HELD and _HELD[key].fd >= 0:
        return _HELD[key]
    path = key / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder_line(fd) or "a process that has not written its PID yet"
            os.close(fd)
            pid = who.split()[1] if who.startswith("pid ") else "PID"
            raise RunDirInUse(
                f"train.out_dir={out_dir} is in use by another run ({who}); wait for it to end or stop "
                f"it (kill {pid}), or choose another train.out_dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(path, fd):
            break
        os.close(fd)  # the holder removed the file between our open and our lock: take the new one
    os.ftruncate(fd, 0)
    os.pwrite(
        fd,
        f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(),
        0,
    )
    lock = _HELD[key] = RunLock(path, fd)
    remove_stale_temporaries(key)
    return lock


STALE = re.compile(r".+\.tmp\d+")


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """With the lock held nobody else writes here: remove the ``*.tmp<pid>`` files a killed run left
    in ``out_dir`` and ``out_dir/checkpoints`` (inside an incomplete checkpoint folder they go with
    the folder, which the next save at its step replaces)."""
    removed = []
    for folder in (out_dir, out_dir / "checkpoints"):
        if folder.is_dir():
            for path in folder.iterdir():
                if STALE.fullmatch(path.name) and path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def release_run_dir(out_dir: Path) -> None:
    lock = _HELD.pop(Path(out_dir).resolve(), None)
    if lock is not None:
        lock.release()


def release_all() -> None:
    for key in list(_HELD):
        release_run_dir(key)
