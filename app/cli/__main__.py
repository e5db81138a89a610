"""`python -m app.cli`: the `steph` command."""

import sys

from app.cli import main

sys.exit(main())
