"""The one error type a user can cause."""


class ArchprofError(Exception):
    """Something the user gave was wrong: the message says what and what to do.

    The CLI prints the message on one line and exits with status 2.
    """


class ArchprofWarning(UserWarning):
    """archprof had to do something other than asked, and says so once (the CPU fallback of
    a forward that cannot run on the meta device). The CLI prints it as one line on stderr."""
