"""The `cpullm` command and its subcommands (argparse; standard library at import)."""
