"""``p2phost plugin new --update``: the author's edits stay, the template's changes arrive."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from p2phost._authoring import Answers, templates_root
from p2phost_sdk import PluginMetadata
from tests.conftest import run_cli

APP_CODE = "src/greeter/_app.py"
TEMPLATE_CODE = "app/files/src/{{ package }}/_app.py.j2"


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A copy of the bundled templates that a test may change (P2PHOST_TEMPLATES)."""
    copy = tmp_path / "templates"
    shutil.copytree(templates_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _cli(templates: Path, *args: str):  # type: ignore[no-untyped-def]
    return run_cli(*args, env={"P2PHOST_TEMPLATES": str(templates)})


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def project(tmp_path: Path, templates: Path) -> Path:
    root = tmp_path / "greeter"
    result = _cli(templates, "plugin", "new", "app", "greeter", "--no-input", "--dir",
                  str(root))
    assert result.returncode == 0, result.stderr
    return root


def test_update_keeps_the_authors_edit_and_takes_the_templates_change(
        project: Path, templates: Path) -> None:
    # The author changes the reply and adds a module and a README section.
    _edit(project / APP_CODE, '"text": f"{self.greeting}, {who}"',
          '"text": f"{self.greeting}, {who}!"')
    (project / "src/greeter/extra.py").write_text("WORDS = 3\n")
    with (project / "README.md").open("a") as readme:
        readme.write("\n## Notes by the author\n\nKeep this.\n")
    # Meanwhile the template improves another part of the same files, and adds a file.
    _edit(templates / TEMPLATE_CODE, "from collections import Counter\n",
          "from collections import Counter  # per-peer counts\n")
    _edit(templates / "_common/files/README.md.j2", "## Use it\n", "## Install it\n")
    (templates / "_common/files/CHANGELOG.md.j2").write_text("# {{ name }} changes\n")
    before = Answers.load(project).template_digest

    result = _cli(templates, "plugin", "new", "--update", "--dir", str(project))

    assert result.returncode == 0, result.stderr
    code = (project / APP_CODE).read_text()
    assert '"text": f"{self.greeting}, {who}!"' in code  # the author's edit
    assert "from collections import Counter  # per-peer counts" in code  # the template's
    readme = (project / "README.md").read_text()
    assert "## Install it" in readme and "Keep this." in readme and "## Use it" not in readme
    assert (project / "CHANGELOG.md").read_text() == "# greeter changes\n"
    assert (project / "src/greeter/extra.py").read_text() == "WORDS = 3\n"
    assert "merged    " + APP_CODE in result.stdout and "created   CHANGELOG.md" in result.stdout
    answers = Answers.load(project)
    assert answers.template_digest != before and "CHANGELOG.md" in answers.base
    # Nothing changed since: a second update is a no-op.
    again = _cli(templates, "plugin", "new", "--update", "--dir", str(project))
    assert again.returncode == 0 and "nothing to change" in again.stdout


def test_a_real_conflict_is_marked_and_fails(project: Path, templates: Path) -> None:
    _edit(project / APP_CODE, "self.seen[message.sender] += 1",
          "self.seen[message.sender] += 2  # the author's")
    _edit(templates / TEMPLATE_CODE, "self.seen[message.sender] += 1",
          "self.seen[message.sender] += 10  # the template's")

    result = _cli(templates, "plugin", "new", "--update", "--dir", str(project))

    assert result.returncode == 1
    assert f"conflict  {APP_CODE} (1 conflict)" in result.stdout
    assert "1 file(s) have conflicts" in result.stderr
    code = (project / APP_CODE).read_text()
    assert ("<<<<<<< yours\n        self.seen[message.sender] += 2  # the author's\n=======\n"
            "        self.seen[message.sender] += 10  # the template's\n>>>>>>> template\n"
            ) in code


def test_set_changes_an_answer_and_deleted_files_stay_deleted(
        project: Path, templates: Path) -> None:
    (project / ".github/workflows/ci.yml").unlink()
    _edit(templates / "_common/files/.github/workflows/ci.yml.j2", "name: ci", "name: checks")

    result = _cli(templates, "plugin", "new", "--update", "--dir", str(project),
                  "--set", "description=Greets peers", "--no-input")

    assert result.returncode == 0, result.stderr
    assert PluginMetadata.from_pyproject(project).summary == "Greets peers"
    assert Answers.load(project).answers["description"] == "Greets peers"
    assert not (project / ".github/workflows/ci.yml").exists()
    assert "skipped   .github/workflows/ci.yml" in result.stdout


def test_a_new_question_of_the_template_is_answered_on_update(
        project: Path, templates: Path) -> None:
    with (templates / "app/template.toml").open("a") as definition:
        definition.write('\n[[questions]]\nname = "motto"\ndefault = "be kind"\n')
    (templates / "app/files/MOTTO.txt.j2").write_text("{{ motto }}\n")

    asked = _cli(templates, "plugin", "new", "--update", "--dir", str(project),
                 "--set", "motto=be brief")

    assert asked.returncode == 0, asked.stderr
    assert (project / "MOTTO.txt").read_text() == "be brief\n"


def test_update_outside_a_generated_project_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("plugin", "new", "--update", "--dir", str(tmp_path))
    assert result.returncode == 2
    assert "was not generated by `p2phost plugin new`" in result.stderr
    broken = run_cli("plugin", "new", "app", "x", "--update")
    assert broken.returncode == 2 and "--update takes no KIND or NAME" in broken.stderr


def test_a_conflict_keeps_the_old_base_until_it_is_resolved(
        project: Path, templates: Path) -> None:
    _edit(project / APP_CODE, "self.seen[message.sender] += 1",
          "self.seen[message.sender] += 2  # the author's")
    _edit(templates / TEMPLATE_CODE, "self.seen[message.sender] += 1",
          "self.seen[message.sender] += 10  # the template's")
    first = _cli(templates, "plugin", "new", "--update", "--dir", str(project))
    assert first.returncode == 1
    marked = (project / APP_CODE).read_text()
    # The file still marks the conflict: a second run says so again, not "nothing to
    # change", and a third does not nest markers into the first ones.
    for _ in range(2):
        again = _cli(templates, "plugin", "new", "--update", "--dir", str(project))
        assert again.returncode == 1, again.stdout
        assert f"conflict  {APP_CODE} (1 conflict)" in again.stdout
        assert "nothing to change" not in again.stdout
        assert (project / APP_CODE).read_text() == marked
    assert marked.count("<<<<<<<") == 1
    # The author resolves it by taking the template's line: the next update is clean,
    # and from then on nothing is left to change.
    start = marked.index("<<<<<<< yours\n")
    end = marked.index(">>>>>>> template\n") + len(">>>>>>> template\n")
    (project / APP_CODE).write_text(
        marked[:start] + "        self.seen[message.sender] += 10  # the template's\n"
        + marked[end:])
    resolved = _cli(templates, "plugin", "new", "--update", "--dir", str(project))
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    assert "<<<<<<<" not in (project / APP_CODE).read_text()
    last = _cli(templates, "plugin", "new", "--update", "--dir", str(project))
    assert last.returncode == 0 and "nothing to change" in last.stdout


def test_a_project_made_before_distribution_names_keeps_its_own(
        project: Path, templates: Path) -> None:
    # As `plugin new` wrote it before it asked for a distribution name: pyproject's name
    # was the plugin's, and the answers file has no "distribution".
    _edit(project / "pyproject.toml", 'name = "p2phost-greeter"', 'name = "greeter"')
    answers = Answers.load(project)
    del answers.answers["distribution"]
    answers.base["pyproject.toml"] = answers.base["pyproject.toml"].replace(
        'name = "p2phost-greeter"', 'name = "greeter"')
    answers.save(project)
    result = _cli(templates, "plugin", "new", "--update", "--dir", str(project))
    assert result.returncode == 0, result.stderr
    assert 'name = "greeter"' in (project / "pyproject.toml").read_text()
    assert Answers.load(project).answers["distribution"] == "greeter"
    assert (project / "LICENSE").read_text().startswith("MIT License")  # new: created
