"""The one exception type for bad input: the CLI prints its message as a single line and exits 2."""


class MimoError(Exception):
    """A user-facing error. The message names the file, row or setting at fault."""
