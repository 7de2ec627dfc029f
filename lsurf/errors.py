"""The exceptions lsurf raises for problems a user can fix.

Every error a researcher can cause (a missing file, a bad config key, a checkpoint that does
not fit the model, ...) is an `LsurfError`. The CLI prints its message as one line and exits
with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LsurfError(Exception):
    """A problem with the user's input; the message says what is wrong and how to fix it."""


class ConfigError(LsurfError):
    """The sweep or training config is malformed (unknown key, wrong type, bad grid spec)."""


class CheckpointError(LsurfError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class DataError(LsurfError):
    """The dataset is missing or malformed."""


class OutputError(LsurfError):
    """The output file exists and cannot be used for this run (different sweep, unreadable)."""


class AlignmentError(LsurfError):
    """A model whose units cannot be matched by permutations (an operation, a layer or a
    permutation that weight matching cannot place)."""
