"""`python -m pruneviz`: the command-line interface (see pruneviz/cli.py)."""

import sys

from pruneviz.cli import main

sys.exit(main())
