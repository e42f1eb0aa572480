"""`python -m cpullm ...` runs the `cpullm` command."""

import sys

from cpullm.cli import main

sys.exit(main())
