"""One line for a failed read or write of a run (a full disk, a read-only folder): which setting's
folder, the cause, and for a full disk how much room was free and how much the write needed.

A full disk does not always say so: numpy's ``tofile`` (the token cache) reports a short write as
``OSError("515963 requested and 204800 written")``, with neither errno nor file name. That text is
read as a full disk, and the folder taken to be the setting's whose file system has the least room.
"""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from growth.checkpoint import complete_folders

SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")
FULL = (errno.ENOSPC, errno.EDQUOT)
DENIED = (errno.EACCES, errno.EROFS, errno.EPERM)


def os_error_line(err: OSError, folders: Sequence[tuple[str, Path]]) -> str:
    """``folders``: (setting, folder) pairs, e.g. ("data.cache_dir", Path(...)), the first that holds
    the failed file names it."""
    short = SHORT_WRITE.search(str(err))
    owner = _owner(Path(err.filename), folders) if err.filename else None
    if err.errno in FULL or short:
        owner = owner or _least_room(folders)
        return _full_line(err, owner, short)
    where = f"{owner[0]}={owner[1]}: {err.filename}" if owner else (err.filename or "a file")
    what = err.strerror or str(err)
    if err.errno in DENIED:
        return f"error: {where}: {what}; make it writable or choose another location"
    return f"error: {where}: {what}"


def _full_line(err: OSError, owner: tuple[str, Path] | None, short: re.Match | None) -> str:
    key, folder = owner if owner else ("", None)
    where = (
        f"{key}={folder}" + (f": {err.filename}" if err.filename else "")
        if owner
        else (err.filename or "a file")
    )
    room = []
    if folder is not None:
        room.append(f"{_free_bytes(folder) / 1e6:.1f} MB free")
    if short:
        room.append(f"the write that failed needed {int(short.group(1)) - int(short.group(2)):,} bytes more")
    elif key == "train.out_dir" and folder is not None and (size := _checkpoint_size(folder)):
        room.append(f"a checkpoint of this run takes {size / 1e6:.1f} MB")
    detail = f" ({'; '.join(room)})" if room else ""
    instead = f" or choose another {key}" if key else ""
    return (
        f"error: {where}: no space left on the device{detail}; free some space{instead} and launch again "
        "(train.resume=auto continues from the last complete checkpoint, which is intact)"
    )


def _owner(path: Path, folders: Sequence[tuple[str, Path]]) -> tuple[str, Path] | None:
    for key, folder in folders:
        if path.resolve().is_relative_to(folder.resolve()):
            return key, folder
    return None


def _existing(folder: Path) -> Path:
    folder = folder.resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(_existing(folder)).free
    except OSError:
        return 0


def _least_room(folders: Sequence[tuple[str, Path]]) -> tuple[str, Path] | None:
    return min(folders, key=lambda pair: _free_bytes(pair[1]), default=None)


def _checkpoint_size(out_dir: Path) -> int:
    """Bytes of the newest complete checkpoint in ``out_dir`` (0 if none): what one more save needs."""
    done = complete_folders(out_dir / "checkpoints")
    return sum(p.stat().st_size for p in done[-1].iterdir() if p.is_file()) if done else 0
