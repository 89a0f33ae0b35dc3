"""CLI subcommands: each module adds its parser and calls one library function."""
