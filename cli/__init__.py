"""The ``diffconv`` command-line application (click). Imports no torch at module level."""

__version__ = "0.1.0"
