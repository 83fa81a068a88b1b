"""One render per output folder: a lock file, and the stale temporaries it makes safe to remove.

Two renders writing into one folder interleave stage outputs and rename half-made masters
over each other. A render takes ``OUT/.aiprod.lock`` with an advisory ``flock`` for its whole
run; the kernel drops the lock when the process ends, however it ends (kill -9 included), so
a lock is never left behind by a crash. The file holds the holder's pid and start time for
the message a second render prints.

With the lock held nothing else writes in the folder, so temporaries found there (written
by :func:`aiprod_post.files.atomic_path` or ``np.save`` to a ``.tmp`` name) belong to a
render that died; they are removed.

>>> import tempfile
>>> out = Path(tempfile.mkdtemp())
>>> with output_lock(out):
...     try:
...         with output_lock(out):
...             pass
...     except OutputBusyError as exc:
...         print(exc.message.split(" (")[0])
output folder is in use by another render
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Iterator

from .errors import AiprodError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, renders are not guarded
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "OutputBusyError", "output_lock", "lock_holder",
           "remove_stale_temporaries", "process_identity"]

LOCK_NAME = ".aiprod.lock"

# atomic_path names a temporary ".{stem}.{8 random}{suffix}" with suffix ".tmp", ".tmp.wav",
# ".part.mov" ...; the keyframe store saves "{key}.tmp.npy" before renaming.
_STALE = re.compile(r"(^\..+\.[a-z0-9_]{8}\.(tmp|part)(\.[A-Za-z0-9]{1,8})?$)"
                    r"|(\.tmp(\.[A-Za-z0-9]{1,8})?$)")


class OutputBusyError(AiprodError):
    """Another render holds the output folder."""


def process_identity(pid: int) -> str | None:
    """A string naming process ``pid`` and no other: its start time since this boot.

    None where the process does not exist (or is a zombie) or the system does not say
    (non-Linux). A recorded identity that still matches is the same process, not a new
    one that reused the pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return f"{boot}:{fields[19]}"  # field 22 of stat: start time in clock ticks


@contextlib.contextmanager
def output_lock(outdir: str | Path) -> Iterator[Path]:
    """Hold ``outdir``'s render lock for the block; OutputBusyError if another render has it."""
    outdir = Path(outdir)
    path = outdir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutputBusyError(f"output folder is in use by another render "
                                      f"({_holder(fd)}); wait for it to finish or stop it",
                                      source=outdir) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({
            "pid": os.getpid(), "identity": process_identity(os.getpid()),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
        ).encode())
        yield path
    finally:
        os.close(fd)  # releases the flock


def lock_holder(outdir: str | Path) -> tuple[int, str | None] | None:
    """(pid, identity) of the render holding ``outdir``'s lock now; None if nobody holds it."""
    path = Path(outdir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        if fcntl is None:
            return None
        try:  # a shared lock is refused only while a render holds its exclusive one
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            pass
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return int(info["pid"]), info.get("identity")
        except (OSError, ValueError, KeyError, TypeError):
            return None
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {int(info['pid'])}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def remove_stale_temporaries(outdir: str | Path) -> list[Path]:
    """Remove temporaries a killed render left in ``outdir`` (call with the lock held)."""
    removed = []
    for folder, dirs, files in os.walk(outdir):  # does not follow symlinked folders
        for name in files:
            path = Path(folder) / name
            if _STALE.search(name) and not path.is_symlink() and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
