"""The ``p2phost`` command line (typer). Each module adds one group of commands."""
