"""The one exception type users see: a clear, one-line message, no traceback."""


class GensisError(Exception):
    """Bad input or a failed step, explained in one line that names the file, key or value."""


class SlideError(GensisError):
    """A single slide cannot be opened or read; recorded per slide, the run goes on."""
