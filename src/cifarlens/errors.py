"""One exception type for every user-facing failure: the CLI prints its message on one line."""


class CifarlensError(Exception):
    """A problem the user can fix (bad input, missing file, corrupt data). Never a bug."""
