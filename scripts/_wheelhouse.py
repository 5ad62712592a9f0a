"""Fill ``.cache/wheelhouse-KEY/`` with the third-party wheels a generated plugin project needs.

``tests/authoring/test_anywhere.py`` installs generated projects in clean venvs whose only
index is a test registry: this wheelhouse stands in for PyPI for everything that is not a
p2phost distribution (pytest, hatchling, httpx...). Filling it is set-up, like installing the
dev tools, so ``scripts/test`` runs this before pytest and the tests themselves reach nothing
but loopback. The key is a hash of the requirements, so a changed dependency fills a new one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent

#: Third-party packages a generated project's install, tests, check and build need.
TOOLS = ("hatchling>=1.24", "build>=1.2", "pytest>=8", "pytest-asyncio>=0.23",
         "hypothesis>=6", "editables>=0.5")


def requirements() -> list[str]:
    """What p2phost-sdk[testing] and p2phost require from elsewhere, and the tools."""
    wanted = set(TOOLS)
    for dist, extras in (("p2phost-sdk", ("", "testing")), ("p2phost", ("",))):
        for line in importlib.metadata.requires(dist) or []:
            requirement = Requirement(line)
            if requirement.name.startswith("p2phost"):
                continue
            if requirement.marker is None or any(
                    requirement.marker.evaluate({"extra": e}) for e in extras):
                requirement.marker = None
                wanted.add(str(requirement))
    return sorted(wanted)


def folder() -> Path:
    """Where the wheelhouse for today's requirements lives (``.complete`` once filled)."""
    key = hashlib.sha256("\n".join(requirements()).encode()).hexdigest()[:12]
    return ROOT / ".cache" / f"wheelhouse-{key}"


def main() -> int:
    target = folder()
    if (target / ".complete").exists():
        return 0
    print(f"== filling {target.relative_to(ROOT)} (third-party wheels for generated projects)")
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary",
                           ":all:", "-d", str(target), *requirements()])
    if done.returncode != 0:
        return done.returncode
    for wheel in target.glob("p2phost*.whl"):
        wheel.unlink()  # never from here: only the test registry may provide them
    (target / ".complete").write_text("\n".join(requirements()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
