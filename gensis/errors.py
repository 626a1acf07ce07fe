"""The one exception type users see: a clear, one-line message, no traceback."""


class GensisError(Exception):
    """Bad input or a failed step, explained in one line that names the file, key or value."""


class SlideError(GensisError):
    """A single slide cannot be opened or read; recorded per slide, the run goes on."""


class UnsupportedSlide(SlideError):
    """A readable slide gensis does not tile (not brightfield RGB): skipped with this reason in the manifest."""


class NotBrightfield(UnsupportedSlide):
    """A slide of several gray channels (fluorescence, multiplex): no reader turns it into brightfield RGB."""


_DISK_FULL_ERRNOS = {28, 122}  # ENOSPC, EDQUOT


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) says the disk or quota is full; h5py reports it only in its text."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in _DISK_FULL_ERRNOS:
            return True
        text = str(err)
        if "No space left on device" in text or "errno = 28," in text or "Disk quota exceeded" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


def disk_full_error(out, err: BaseException) -> GensisError:
    """The one line for a full output disk: no slide or tile is to blame, and finished work is kept."""
    where = f"out={out}: " if out is not None else ""
    return GensisError(f"{where}the output disk is full ({type(err).__name__}: No space left on device); "
                       f"free some space or choose another out=, then run the same command again: what was "
                       f"finished is kept")
