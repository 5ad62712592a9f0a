"""``p2phost plugin check``: every metadata problem at once, broken code, failing kits."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import OFFICIAL, run_cli

BAD_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "bad name!"
version = "one"
dependencies = ["p2phost>=0.1"]

[tool.p2phost.plugin]
kinds = ["widget"]
host-api = "nonsense"
capabilities = ["root"]
requires = { json-codec = "new" }
config = { port = { type = "port" } }
"""


def test_every_metadata_problem_is_listed(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(BAD_PYPROJECT)
    result = run_cli("plugin", "check", str(tmp_path))
    assert result.returncode == 1
    for problem in ["name: 'bad name!' is not a valid project name",
                    "version: 'one' is not a PEP 440 version",
                    "kinds: unknown kind 'widget'",
                    "host-api: 'nonsense' is not a PEP 440 specifier",
                    "capabilities: unknown 'root'",
                    "requires.json-codec: 'new' is not a PEP 440 specifier",
                    "config.port.type: expected one of",
                    'entry point: no [project.entry-points."p2phost.plugins"]',
                    "dependencies: 'p2phost>=0.1': plugins depend on p2phost-sdk",
                    "wheel: it will not carry the plugin metadata"]:
        assert problem in result.stdout, problem
    assert "check failed: 10 problem(s)" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_directory_without_a_project_is_a_user_error(tmp_path: Path) -> None:
    result = run_cli("plugin", "check", str(tmp_path))
    assert result.returncode == 2
    assert "is not a plugin project (no pyproject.toml)" in result.stderr


@pytest.fixture
def codec_copy(generated: dict[str, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "codec"
    shutil.copytree(generated["codec"], copy)
    return copy


def test_a_codec_that_breaks_the_kit_fails_check_naming_the_tests(codec_copy: Path) -> None:
    code = codec_copy / "src/shout_codec/_codec.py"
    # The author "simplifies" decode: malformed bodies now raise ValueError, not CodecError.
    with code.open("a") as source:
        source.write("\n\nShoutCodec.decode = lambda self, data: json.loads(data)\n")
    result = run_cli("plugin", "check", str(codec_copy))
    assert result.returncode == 1, result.stdout
    assert "✗ codec conformance kit:" in result.stdout
    assert "test_garbage_is_a_codec_error" in result.stdout


def test_code_that_does_not_import_is_reported(codec_copy: Path) -> None:
    (codec_copy / "src/shout_codec/_codec.py").write_text("import no_such_module_here\n")
    result = run_cli("plugin", "check", str(codec_copy))
    assert result.returncode == 1
    assert "entry point: cannot load it: ModuleNotFoundError" in result.stdout
    assert "conformance kit" not in result.stdout


def test_what_the_code_serves_must_match_provides(codec_copy: Path) -> None:
    pyproject = codec_copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        'content-types = ["application/x-shout"]', 'content-types = ["application/x-loud"]'))
    result = run_cli("plugin", "check", str(codec_copy), "--no-kits")
    assert result.returncode == 1
    assert ("provides.content-types: declares ['application/x-loud'], the codec objects serve "
            "['application/x-shout']") in result.stdout


def test_hooks_must_match_kinds(codec_copy: Path) -> None:
    pyproject = codec_copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('kinds = ["codec"]', 'kinds = ["app"]'))
    result = run_cli("plugin", "check", str(codec_copy), "--no-kits")
    assert result.returncode == 1
    assert "p2phost_codecs is implemented but kinds does not list 'codec'" in result.stdout
    assert "kinds lists 'app' but shout_codec has no p2phost_apps hook" in result.stdout


@pytest.mark.parametrize("name", ["echo", "chat", "broker-bridge", "dask-comm"])
def test_the_official_apps_pass_the_app_kit(name: str) -> None:
    result = run_cli("plugin", "check", str(OFFICIAL / name), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ app conformance kit: 5 passed" in result.stdout
