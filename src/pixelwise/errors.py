"""Errors that pixelwise raises for bad input.

Every error a user can cause (a bad mask, a missing folder, a checkpoint that does not fit the data) is a
:class:`PixelwiseError` whose message names the file and the fix. The command line prints the message and exits
with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class PixelwiseError(Exception):
    """Base class of the errors caused by the user's input (data, config, checkpoint)."""


class DatasetError(PixelwiseError, ValueError):
    """A dataset on disk is malformed: missing folder, empty split, bad mask, unreadable image."""


class CheckpointError(PixelwiseError, ValueError):
    """A checkpoint is unreadable or does not fit the model or data it is used with."""


class ConfigError(PixelwiseError, ValueError):
    """A configuration value or command-line option is invalid."""
