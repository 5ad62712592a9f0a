"""Run a Dask scheduler or worker CLI with the dask-comm backend from its source tree.

The dev venv does not install official plugins, so Dask's entry point for
``p2phost://`` is not there; this registers the same backend class the entry point
names, then runs Dask's own command: ``python _launch.py scheduler|worker ARGS...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "official-plugins/dask-comm/src"))

from distributed.comm.registry import backends
from p2phost_dask_comm import P2PHostBackend

backends["p2phost"] = P2PHostBackend()

if __name__ == "__main__":
    command = sys.argv.pop(1)
    if command == "scheduler":
        from distributed.cli.dask_scheduler import main
    else:
        from distributed.cli.dask_worker import main
    main()
