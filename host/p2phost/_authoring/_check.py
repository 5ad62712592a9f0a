"""``plugin check``: lint a plugin project's metadata, load its code, run its kits.

Three stages, each reporting every problem it finds (not just the first): the metadata in
``pyproject.toml``; the entry point and hooks, loaded in a child process (:mod:`._probe`);
and the SDK conformance kit of each of its kinds, run by pytest in a child process on the
objects its hooks make.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet

from p2phost_sdk import (
    HOST_API,
    PluginMetadata,
    PluginMetadataError,
    host_api_compatible,
    normalize_name,
)
from p2phost_sdk.testing import KITS

from ._pyproject import PluginProject

#: Seconds the probe and the kits may take.
PROBE_TIMEOUT, KIT_TIMEOUT = 60.0, 900.0
#: The SDK distribution plugins depend on (with their host-api range), and the host itself.
_SDK, _HOST = "p2phost-sdk", "p2phost"


@dataclass(frozen=True)
class KitResult:
    """One kind's kit run: counts and the first line of each failure."""

    kind: str
    passed: int = 0
    skipped: int = 0
    failures: tuple[str, ...] = ()


@dataclass
class CheckReport:
    """Everything ``plugin check`` found."""

    project: PluginProject
    metadata: PluginMetadata | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    objects: dict[str, list[str]] = field(default_factory=dict)
    kits: list[KitResult] = field(default_factory=list)
    #: Set when the kits could not run at all (pytest missing, a crash...).
    kit_error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the plugin passed every check."""
        return not self.problems and self.kit_error is None \
            and not any(k.failures for k in self.kits)


def _lint_dependencies(project: PluginProject, report: CheckReport) -> None:
    """A plugin depends on p2phost-sdk with its host-api range, never on the host."""
    deps = project.project.get("dependencies", [])
    sdk: Requirement | None = None
    for dep in deps if isinstance(deps, list) else []:
        try:
            requirement = Requirement(str(dep))
        except InvalidRequirement as exc:
            report.problems.append(f"dependencies: {dep!r} is not a requirement: {exc}")
            continue
        if normalize_name(requirement.name) == _HOST:
            report.problems.append(f"dependencies: {dep!r}: plugins depend on {_SDK}, not on "
                                   "the host (which provides it); remove it")
        elif normalize_name(requirement.name) == _SDK:
            sdk = requirement
    host_api = report.metadata.host_api if report.metadata else ""
    if not host_api:
        return
    if sdk is None:
        report.warnings.append(f'dependencies: add "{_SDK}{host_api}" so that pip and uv see '
                               "the host-api range the host checks")
    elif sdk.specifier != SpecifierSet(host_api):
        report.problems.append(f"dependencies: {sdk}: the range differs from host-api "
                               f"{host_api}; declare \"{_SDK}{host_api}\"")


def lint(project: PluginProject, report: CheckReport) -> None:
    """The metadata stage: everything wrong with ``pyproject.toml``."""
    try:
        report.metadata = PluginMetadata.from_pyproject(project.root)
    except PluginMetadataError as exc:
        report.problems.extend(exc.problems)
    meta = report.metadata
    points = project.entry_points
    if not points:
        report.problems.append('entry point: no [project.entry-points."p2phost.plugins"] '
                               f'(add: {project.name or "NAME"} = "your_module")')
    elif project.name and not {normalize_name(project.name),
                               normalize_name(project.name).removeprefix("p2phost-")
                               } & set(map(normalize_name, points)):
        report.problems.append(f"entry point: none is named like the plugin (the host loads "
                               f"it by its name: {project.name!r}, or the NAME of "
                               f"p2phost-NAME; found {', '.join(points)})")
    _lint_dependencies(project, report)
    backend = str(project.data.get("build-system", {}).get("build-backend", ""))
    extra = project.table("tool", "hatch", "build", "targets", "wheel", "extra-metadata")
    if backend.startswith("hatchling") and extra.get("pyproject.toml") != "p2phost-plugin.toml":
        report.problems.append('wheel: it will not carry the plugin metadata (add '
                               '[tool.hatch.build.targets.wheel.extra-metadata] '
                               '"pyproject.toml" = "p2phost-plugin.toml")')
    elif not backend.startswith("hatchling"):
        report.warnings.append(f"wheel: cannot tell whether {backend or 'the backend'} puts "
                               "p2phost-plugin.toml in the wheel; p2phost plugin build checks")
    if meta is not None and not host_api_compatible(meta.host_api):
        report.problems.append(f"host-api: {meta.host_api!r} excludes this host's API "
                               f"{HOST_API}")
    if not project.project.get("description"):
        report.warnings.append("description: empty (the registry shows it in searches)")
    if not project.project.get("license"):
        report.warnings.append("license: none declared")


def probe(project: PluginProject, report: CheckReport) -> None:
    """The code stage: import the entry point and call the hooks, in a child process."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "p2phost._authoring._probe", str(project.root),
             str(project.source_root())],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        report.problems.append(f"entry point: importing it took over {PROBE_TIMEOUT:.0f} s")
        return
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        report.problems.append(f"entry point: loading it crashed: {tail}")
        return
    report.problems.extend(result["problems"])
    report.objects = result["objects"]


_TEST_MODULE = '''\
"""Generated by `p2phost plugin check`: the kits of this plugin's kinds, on its objects."""
from pathlib import Path

import pytest

from p2phost_sdk.testing import PluginUnderTest

PLUGIN = PluginUnderTest.from_project(Path({root!r}))
'''

_TEST_CLASS = '''
from {module} import {conformance}


class Test_{kind}({conformance}):
    @pytest.fixture(params={indexes!r}, ids={ids!r})
    def {fixture}(self, request):
        return PLUGIN.kit_fixture({kind!r}, request.param)
'''


def run_kits(project: PluginProject, report: CheckReport) -> None:
    """The conformance stage: pytest runs each kind's kit on the plugin's objects."""
    kinds = [k for k in report.objects if KITS[k].available()]
    for kind in report.objects:
        if kind not in kinds:
            report.warnings.append(f"{kind}: this SDK has no conformance kit for it yet")
    if not kinds:
        return
    with tempfile.TemporaryDirectory(prefix="p2phost-check-") as tmp:
        here = Path(tmp)
        source = _TEST_MODULE.format(root=str(project.root))
        for kind in kinds:
            kit, ids = KITS[kind], report.objects[kind]
            source += _TEST_CLASS.format(module=kit.module, conformance=kit.conformance,
                                         kind=kind, fixture=kit.fixture,
                                         indexes=list(range(len(ids))), ids=ids)
        (here / "test_p2phost_check.py").write_text(source, encoding="utf-8")
        (here / "conftest.py").write_text('pytest_plugins = ["p2phost_sdk.testing"]\n',
                                          encoding="utf-8")
        (here / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n"
                                         "asyncio_default_fixture_loop_scope = function\n",
                                         encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(project.source_root()), os.environ.get("PYTHONPATH")]))}
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                 str(here / "pytest.ini"), "--rootdir", str(here),
                 "--junitxml", str(here / "report.xml"), str(here)],
                cwd=here, capture_output=True, text=True, timeout=KIT_TIMEOUT, env=env,
                check=False)
        except subprocess.TimeoutExpired:
            report.kit_error = f"the conformance kits took over {KIT_TIMEOUT:.0f} s"
            return
        xml = here / "report.xml"
        if not xml.is_file() or proc.returncode not in (0, 1):
            output = proc.stdout + proc.stderr
            if "No module named pytest" in output or "asyncio_mode" in output:
                report.kit_error = ("the conformance kits need pytest and pytest-asyncio "
                                    "beside p2phost: pip install pytest pytest-asyncio "
                                    "hypothesis")
                return
            tail = "\n".join(output.strip().splitlines()[-8:])
            report.kit_error = f"the conformance kits could not run:\n{tail}"
            return
        report.kits = _parse_junit(xml, kinds)


def _parse_junit(xml: Path, kinds: list[str]) -> list[KitResult]:
    passed: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    failures: dict[str, list[str]] = {k: [] for k in kinds}
    for case in ElementTree.parse(xml).getroot().iter("testcase"):
        kind = case.get("classname", "").rpartition("Test_")[2]
        if kind not in failures:
            continue
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            first = (bad.get("message") or bad.text or "failed").strip().splitlines()
            failures[kind].append(f"{case.get('name')}: {first[0] if first else 'failed'}")
        elif case.find("skipped") is not None:
            skipped[kind] += 1
        else:
            passed[kind] += 1
    return [KitResult(k, passed[k], skipped[k], tuple(failures[k])) for k in kinds]


def check(project: PluginProject, *, kits: bool = True) -> CheckReport:
    """Lint, probe and (when ``kits`` and the code loads) run the conformance kits."""
    report = CheckReport(project)
    lint(project, report)
    if report.metadata is None or not project.entry_points:
        return report
    probe(project, report)
    if kits and report.objects and not any(p.startswith("entry point") for p in
                                            report.problems):
        run_kits(project, report)
    return report
