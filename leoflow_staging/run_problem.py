"""The error of the per-run commands (``hold``, ``release``, ``reclaim``): kept apart so the CLI maps it to an
exit status without importing the database code."""

from __future__ import annotations


class RunProblem(Exception):
    """The command cannot act on the run as asked; ``code`` is the exit status, the message says why."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code
