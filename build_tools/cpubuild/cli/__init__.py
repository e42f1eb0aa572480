"""The `cpubuild` command (typer) and its subcommands."""
