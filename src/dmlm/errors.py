"""The one exception type for bad input: the CLI prints its message (no traceback) and exits 2."""


class DmlmError(Exception):
    """A user-facing error. The message names the file or config key and what is wrong."""
