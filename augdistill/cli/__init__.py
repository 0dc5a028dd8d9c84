"""The ``augdistill`` command line."""

from augdistill.cli.main import build_parser, main

__all__ = ["main", "build_parser"]
