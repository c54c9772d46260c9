"""The ``diffcore`` command line (``diffcore compare | capture | demo | env | golden | validate``); see
``main.py`` for exit codes."""
from .main import entry_point, main

__all__ = ["entry_point", "main"]
