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
    assert (meta.name, meta.version, meta.kinds) == (plugin_name(kind), "0.1.0", (kind,))
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    package = plugin_name(kind).replace("-", "_")
    assert pyproject["project"]["entry-points"]["p2phost.plugins"] == {meta.name: package}
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


def test_an_invalid_answer_is_asked_again(tmp_path: Path) -> None:
    answers = ["", "", "not an e-mail", "ada@example.org", "", "one", "1.0.0", "", "",
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
    assert "no answer to 'author': input ended" in result.stderr
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
