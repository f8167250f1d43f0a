"""The one error type a user can cause."""


class ArchprofError(Exception):
    """Something the user gave was wrong: the message says what and what to do.

    The CLI prints the message on one line and exits with status 2.
    """
