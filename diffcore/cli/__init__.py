"""The ``diffcore`` command line (``diffcore compare | capture | demo``); see ``main.py`` for exit codes."""
from .main import entry_point, main

__all__ = ["entry_point", "main"]
