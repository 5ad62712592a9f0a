"""Placeholder until its issue lands."""

import typer


def register(app: typer.Typer) -> None:
    """Add nothing yet."""
