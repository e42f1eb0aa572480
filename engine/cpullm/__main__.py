"""`python -m cpullm ...` runs the `cpullm` command."""

import sys

from cpullm.cli.main import main

sys.exit(main())
