"""`python -m cpubuild.cli`: the `cpubuild` command."""

from cpubuild.cli.main import main

main()
