"""`python -m pruneviz`: the command-line interface (see pruneviz/cli/)."""

import sys

from pruneviz.cli import main

sys.exit(main())
