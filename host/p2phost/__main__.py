"""``python -m p2phost``: the same as the ``p2phost`` command."""

from p2phost._cli.main import run

run()
