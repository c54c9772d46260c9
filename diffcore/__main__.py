"""``python -m diffcore``: the same as the ``diffcore`` console script."""
from .cli import entry_point

if __name__ == "__main__":
    entry_point()
