"""Errors a user can fix.

Anything raised as :class:`TcsFewshotError` is a mistake in the input (a bad flag, a
file that is not what it claims, a class too small for the task shape). The command
line prints its message on one line and exits with code 2; library users catch it.
Anything else is a bug in the toolkit and keeps its traceback.
"""


class TcsFewshotError(Exception):
    """A user-facing error whose message says what is wrong and how to fix it."""


class TaskShapeError(TcsFewshotError, ValueError):
    """The requested N-way K-shot Q-query shape does not fit the data."""


class RunDirectoryError(TcsFewshotError):
    """A run directory holds another run, or a damaged or foreign store."""


class TaskFileError(TcsFewshotError):
    """A task file is damaged, foreign, or does not match the data it is used with."""
