"""``python -m nnport``: the same as the ``nnport`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
