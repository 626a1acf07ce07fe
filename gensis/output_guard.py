"""What an output may replace, and one run per output at a time.

- :func:`refuse_foreign_output`: ``out=`` may replace only the same command's own earlier
  output, never another file and never an input of the run.
- :func:`hold_output_lock`: an exclusive lock (``flock``) on a lock file beside or inside the
  output, held until the process exits (a killed run's lock goes with it), so that a second
  run into the same ``out=`` stops with one line instead of deleting the first one's
  temporaries. Processes started by a multi-process launcher (ranks above 0) share the first
  process's lock and take none.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable, Iterable

from gensis.errors import GensisError

_HELD: dict[Path, int] = {}  # lock file -> open descriptor, for the life of the process


def refuse_foreign_output(out: str | os.PathLike, what: str, is_own: Callable[[Path], bool],
                          inputs: Iterable[str | os.PathLike | None] = (), key: str = "out") -> None:
    """Raise a one-line error when writing ``what`` to ``out`` would replace something it must not."""
    path = Path(out)
    for given in inputs:
        if given and Path(given).exists() and path.exists() and os.path.samefile(path, given):
            raise GensisError(f"{key}={out} is also an input of this run; choose another {key}= for the {what}")
    if path.is_dir():
        raise GensisError(f"{key}={out} is a folder; give a file path for the {what}, e.g. {path / 'out.h5'}")
    if path.exists() and not is_own(path):
        raise GensisError(f"{key}={out} already exists and is not a {what} written by gensis; it was left "
                          f"untouched: choose another {key}= or move that file away")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def launched_rank() -> int:
    """This process's rank when a launcher (Lightning, torchrun, SLURM) started several, else 0."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def hold_output_lock(out: str | os.PathLike) -> None:
    """Take the lock of output ``out`` (kept until exit); one line if another run holds it.

    The lock file is ``out/.gensis.lock`` for an output folder (create it first), else the
    hidden sibling ``.<name>.lock``.
    """
    import fcntl

    path = Path(out)
    lock_file = (path / ".gensis.lock" if path.is_dir() else path.with_name(f".{path.name}.lock")).resolve()
    if lock_file in _HELD or launched_rank() > 0:
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            ended = holder.isdigit() and not _alive(int(holder))
            hint = (" (it has ended; its worker processes let go within seconds: run again shortly)" if ended
                    else "; wait for it to finish or choose another out=")
            raise GensisError(f"out={out} is being written by another gensis run (pid {holder}){hint}") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD[lock_file] = fd

