"""``python -m edgecc`` (and ``torchrun -m edgecc compile ...``): the CLI."""

import sys

from edgecc.cli import main

if __name__ == "__main__":
    sys.exit(main())
