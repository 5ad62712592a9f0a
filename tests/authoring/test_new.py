"""``p2phost plugin new``: the generated projects, and every kind of bad answer."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from p2phost._authoring import ANSWERS_FILE, Answers, Template
from p2phost_sdk import KINDS, PluginMetadata
from tests.conftest import run_cli

from .conftest import plugin_name


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_makes_a_complete_plugin_project(kind: str, generated: dict[str, Path]
                                                    ) -> None:
    root = generated[kind]
    meta = PluginMetadata.from_pyproject(root)
    assert (meta.name, meta.version, meta.kinds) == (plugin_name(kind), "1.0.0", (kind,))
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    package = plugin_name(kind).replace("-", "_")
    # pip installs p2phost-NAME; nodes name the plugin NAME, its entry point's name.
    assert pyproject["project"]["name"] == f"p2phost-{meta.name}"
    assert pyproject["project"]["entry-points"]["p2phost.plugins"] == {meta.name: package}
    # The SDK with the range of the plugin's host-api, for pip and uv as for the host.
    assert pyproject["project"]["dependencies"] == [f"p2phost-sdk{meta.host_api}"]
    assert pyproject["project"]["optional-dependencies"]["test"][0] == \
        f"p2phost-sdk[testing]{meta.host_api}"
    assert ("p2phost" in pyproject["project"]["optional-dependencies"]["test"]) == \
        (kind == "app")  # the app kit runs apps on real nodes; the other kits need no host
    license_text = (root / "LICENSE").read_text()
    assert license_text.startswith("MIT License\n\nCopyright (c) ")
    assert "Ada Lovelace" in license_text.splitlines()[2]
    assert pyproject["project"]["authors"] == [{"name": "Ada Lovelace"}]
    extra = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["extra-metadata"]
    assert extra == {"pyproject.toml": "p2phost-plugin.toml"}
    for path in [*root.glob("src/**/*.py"), *root.glob("tests/*.py")]:
        ast.parse(path.read_text(), str(path))  # valid Python, every file
    assert (root / "tests" / "test_conformance.py").is_file()
    assert (root / ".github" / "workflows" / "ci.yml").is_file()
    assert meta.name in (root / "README.md").read_text()
    answers = Answers.load(root)
    assert answers.kind == kind and answers.answers["author"] == "Ada Lovelace"
    assert set(answers.base) == {p.relative_to(root).as_posix() for p in root.rglob("*")
                                 if p.is_file() and p.name != ANSWERS_FILE}


def test_answers_shape_the_project(tmp_path: Path) -> None:
    result = run_cli("plugin", "new", "codec", "loud", "--no-input", "--dir", str(tmp_path / "p"),
                     "--set", "content_type=application/x-loud", "--set", "version=2.0.0",
                     "--set", 'description=Loud """JSON""" \\d', "--set", "license=Apache-2.0")
    assert result.returncode == 0, result.stderr
    meta = PluginMetadata.from_pyproject(tmp_path / "p")
    assert meta.provides == {"content-types": ("application/x-loud",)}
    assert meta.version == "2.0.0" and meta.summary == 'Loud """JSON""" \\d'
    module = ast.parse((tmp_path / "p/src/loud/__init__.py").read_text())
    assert ast.get_docstring(module) == meta.summary
    assert "class LoudCodec(Codec)" in (tmp_path / "p/src/loud/_codec.py").read_text()
    assert "Apache License\n                           Version 2.0" in \
        (tmp_path / "p/LICENSE").read_text()


@pytest.mark.parametrize(("license", "first_words"), [
    ("MIT", "MIT License"),
    ("Apache-2.0", "Apache License"),
    ("BSD-3-Clause", "BSD 3-Clause License"),
    ("MPL-2.0", "Mozilla Public License Version 2.0"),
    ("LGPL-3.0-or-later", "GNU LESSER GENERAL PUBLIC LICENSE"),
    ("GPL-3.0-or-later", "GNU GENERAL PUBLIC LICENSE"),
    ("LicenseRef-Proprietary", "Copyright (c) 1999 Ada. All rights reserved."),
])
def test_the_license_asked_for_is_the_license_file(tmp_path: Path, license: str,
                                                   first_words: str) -> None:
    result = run_cli("plugin", "new", "app", "x", "--no-input", "--dir", str(tmp_path / "p"),
                     "--set", f"license={license}", "--set", "author=Ada", "--set", "year=1999")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "p/LICENSE").read_text()
    assert text.strip().startswith(first_words)
    assert tomllib.loads((tmp_path / "p/pyproject.toml").read_text())["project"]["license"] \
        == license
    if license in ("MIT", "BSD-3-Clause"):
        assert "Copyright (c) 1999" in text and "Ada" in text
    if license == "LGPL-3.0-or-later":  # it adds to the GPL: both texts
        assert "GNU GENERAL PUBLIC LICENSE\n                       Version 3" in text


def test_the_distribution_name_can_be_chosen(tmp_path: Path) -> None:
    result = run_cli("plugin", "new", "codec", "loud", "--no-input", "--dir", str(tmp_path / "p"),
                     "--set", "distribution=acme-loud", "--set", "version=0.3.0")
    assert result.returncode == 0, result.stderr
    meta = PluginMetadata.from_pyproject(tmp_path / "p")
    assert (meta.name, meta.version) == ("loud", "0.3.0")
    assert tomllib.loads((tmp_path / "p/pyproject.toml").read_text())["project"]["name"] == \
        "acme-loud"


def test_an_invalid_answer_is_asked_again(tmp_path: Path) -> None:
    answers = ["", "", "", "not an e-mail", "ada@example.org", "", "one", "1.0.0", "", "",
               "nonsense", "application/x-ok"]
    result = run_cli("plugin", "new", "codec", "asked", "--dir", str(tmp_path / "p"),
                     input="\n".join(answers) + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("invalid:") == 3
    assert "not an e-mail address" in result.stderr and "PEP 440" in result.stderr
    meta = PluginMetadata.from_pyproject(tmp_path / "p")
    assert meta.version == "1.0.0" and meta.provides["content-types"] == ("application/x-ok",)


@pytest.mark.parametrize(("args", "message"), [
    (["codec", "x", "--set", "version=banana"], "version = 'banana': not a PEP 440 version"),
    (["codec", "x", "--set", "license=WTFPL-9"], "license = 'WTFPL-9': expected one of MIT"),
    (["codec", "x", "--set", "colour=red"], "the codec template asks no such question"),
    (["codec", "x", "--set", "novalue"], "--set 'novalue' is not key=value"),
    (["codec", "x", "--set", "content_type=text"], "expected a MIME type"),
    (["discovery", "x", "--set", "expiry=0"], "expiry = '0': expected a whole number above 0"),
    (["discovery", "x", "--set", "expiry=soon"], "expected a whole number"),
    (["codec", "bad name!"], "not a valid project name"),
    (["widget", "x"], "unknown plugin kind 'widget'"),
    (["codec"], "plugin new needs a KIND and a NAME"),
])
def test_bad_answers_with_no_input_are_one_clear_error(tmp_path: Path, args: list[str],
                                                      message: str) -> None:
    result = run_cli("plugin", "new", *args, "--no-input", "--dir", str(tmp_path / "p"))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "fix:" in result.stderr
    assert not (tmp_path / "p").exists()


def test_input_that_ends_early_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("plugin", "new", "app", "x", "--dir", str(tmp_path / "p"), input="\n")
    assert result.returncode == 2
    assert "no answer to 'description': input ended" in result.stderr
    assert "--no-input" in result.stderr


def test_a_directory_that_is_not_empty_is_refused_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = run_cli("plugin", "new", "app", "x", "--no-input", "--dir", str(target))
    assert result.returncode == 2
    assert "exists and is not empty" in result.stderr and "--force" in result.stderr
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    forced = run_cli("plugin", "new", "app", "x", "--no-input", "--dir", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (target / "notes.txt").read_text() == "mine" and (target / "pyproject.toml").exists()


def test_a_broken_template_names_the_file_and_line(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    for part in ("_common", "codec"):
        source = Template.load("codec").root / part
        (templates / part).mkdir(parents=True)
        (templates / part / "template.toml").write_text((source / "template.toml").read_text())
    (templates / "codec" / "files").mkdir()
    (templates / "codec" / "files" / "x.py.j2").write_text("ok\n{{ no_such_answer }}\n")
    result = run_cli("plugin", "new", "codec", "x", "--no-input", "--dir", str(tmp_path / "p"),
                     env={"P2PHOST_TEMPLATES": str(templates)})
    assert result.returncode == 2
    assert "x.py.j2:2" in result.stderr and "no_such_answer" in result.stderr
