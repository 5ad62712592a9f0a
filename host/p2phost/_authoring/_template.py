"""Template definitions: ``templates/KIND/template.toml`` (questions) and its Jinja2 files.

Every kind's template extends ``templates/_common`` (the questions and files every plugin
project has: name, author, license, pyproject, README, CI); the kind adds its own questions
and files, and overrides common files by writing the same path. A question's default may use
earlier answers (``default = "application/x-{{ name }}"``). Files ending in ``.j2`` are
rendered, other files are copied; path parts may be templated too (``{{ package }}``).
"""

from __future__ import annotations

import hashlib
import keyword
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from p2phost_sdk import KINDS, is_valid_name

from ._errors import AnswerError, TemplateError

#: Where ``plugin new`` looks for templates when P2PHOST_TEMPLATES is not set.
_SEARCH = (
    Path(__file__).resolve().parent.parent / "_templates",  # inside an installed wheel
    Path(__file__).resolve().parents[3] / "templates",  # a source checkout
)
COMMON = "_common"


def templates_root() -> Path:
    """The directory holding ``_common/`` and one directory per kind."""
    override = os.environ.get("P2PHOST_TEMPLATES")
    if override:
        root = Path(override)
        if not (root / COMMON / "template.toml").is_file():
            raise TemplateError(f"P2PHOST_TEMPLATES={override} holds no {COMMON}/template.toml",
                                fix="unset P2PHOST_TEMPLATES to use the bundled templates")
        return root
    for root in _SEARCH:
        if (root / COMMON / "template.toml").is_file():
            return root
    raise TemplateError("the plugin templates are missing from this p2phost installation",
                        fix="reinstall p2phost")


def _check_version(value: str) -> str | None:
    try:
        Version(value)
    except InvalidVersion:
        return "not a PEP 440 version (such as 0.1.0)"
    return None


def _check_specifier(value: str) -> str | None:
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        return 'not a PEP 440 specifier (such as ">=1.0,<2")'
    return None


#: Named checks a question may ask for with ``check = "..."``; each returns a problem or None.
CHECKS: dict[str, Callable[[str], str | None]] = {
    "project-name": lambda v: None if is_valid_name(v) else
    "not a valid project name (letters, digits, '-', '_' and '.', starting and ending with "
    "a letter or digit)",
    "identifier": lambda v: None if v.isidentifier() and not keyword.iskeyword(v)
    and v.isascii() else "not a Python identifier (such as my_plugin)",
    "version": _check_version,
    "specifier": _check_specifier,
    "email": lambda v: None if not v or re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v)
    else "not an e-mail address (or leave it empty)",
    "not-empty": lambda v: None if v.strip() else "must not be empty",
    "positive": lambda v: None if v.strip().isdigit() and int(v) > 0
    else "expected a whole number above 0",
}


@dataclass(frozen=True)
class Question:
    """One question of a template, with its default and how answers are validated."""

    name: str
    prompt: str
    default: str = ""
    type: str = "str"
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    #: What ``pattern`` means, shown when an answer does not match it.
    pattern_help: str = ""
    check: str | None = None
    help: str = ""
    #: False: never asked, its default is taken (``--set`` still changes it).
    ask: bool = True

    def parse(self, raw: str) -> Any:
        """The answer ``raw`` (text) converted and validated; raises :class:`AnswerError`."""
        text = raw.strip()
        if self.type == "bool":
            lowered = text.lower()
            if lowered in ("y", "yes", "true", "1", "on"):
                return True
            if lowered in ("n", "no", "false", "0", "off"):
                return False
            raise AnswerError(self.name, raw, "expected yes or no")
        if self.type == "int":
            try:
                number = int(text)
            except ValueError:
                raise AnswerError(self.name, raw, "expected a whole number") from None
            problem = CHECKS[self.check](text) if self.check else None
            if problem:
                raise AnswerError(self.name, raw, problem)
            return number
        if self.choices and text not in self.choices:
            raise AnswerError(self.name, raw, f"expected one of {', '.join(self.choices)}")
        if self.pattern and not re.fullmatch(self.pattern, text):
            raise AnswerError(self.name, raw, f"expected {self.pattern_help or self.pattern}")
        if self.check:
            problem = CHECKS[self.check](text)
            if problem:
                raise AnswerError(self.name, raw, problem)
        return text


def _question(source: Path, table: Mapping[str, Any]) -> Question:
    known = set(Question.__dataclass_fields__)
    unknown = set(table) - known
    name = table.get("name")
    if unknown or not isinstance(name, str) or not name.isidentifier():
        raise TemplateError(f"{source}: bad question {table!r} (keys: {', '.join(sorted(known))})",
                            fix="fix the template's [[questions]] table")
    check = table.get("check")
    if check is not None and check not in CHECKS:
        raise TemplateError(f"{source}: question {name}: unknown check {check!r} "
                            f"(known: {', '.join(CHECKS)})")
    values = dict(table)
    values["default"] = str(values.get("default", ""))
    values["choices"] = tuple(values.get("choices", ()))
    values.setdefault("prompt", name.replace("_", " "))
    return Question(**values)


@dataclass(frozen=True)
class Template:
    """A kind's template: its questions (common ones first), derived values and file trees."""

    kind: str
    root: Path
    summary: str
    questions: tuple[Question, ...]
    #: Values derived from the answers, as Jinja expressions (``class_name = "..."``).
    computed: Mapping[str, str]
    #: The file trees, common first: a later tree's file replaces an earlier one's.
    file_dirs: tuple[Path, ...]

    @classmethod
    def load(cls, kind: str, root: Path | None = None) -> Template:
        """The template of ``kind``; :class:`TemplateError` when it is missing or broken."""
        if kind not in KINDS:
            raise TemplateError(f"unknown plugin kind {kind!r}",
                                fix=f"use one of: {', '.join(KINDS)}")
        root = templates_root() if root is None else root
        questions: list[Question] = []
        computed: dict[str, str] = {}
        summary = ""
        for part in (COMMON, kind):
            path = root / part / "template.toml"
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise TemplateError(f"cannot read template {path}: {exc}",
                                    fix="reinstall p2phost, or fix P2PHOST_TEMPLATES") from exc
            summary = str(data.get("template", {}).get("summary", summary))
            questions.extend(_question(path, q) for q in data.get("questions", []))
            computed.update({str(k): str(v) for k, v in data.get("computed", {}).items()})
        names = [q.name for q in questions]
        if len(set(names)) != len(names):
            raise TemplateError(f"template {kind}: a question is defined twice: {names}")
        return cls(kind, root, summary, tuple(questions), computed,
                   (root / COMMON / "files", root / kind / "files"))

    def question(self, name: str) -> Question | None:
        """The question called ``name``, if the template asks it."""
        return next((q for q in self.questions if q.name == name), None)

    def files(self) -> dict[str, Path]:
        """Every template file by its path relative to its tree (later trees win)."""
        found: dict[str, Path] = {}
        for tree in self.file_dirs:
            for path in sorted(tree.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    found[path.relative_to(tree).as_posix()] = path
        return found

    def digest(self) -> str:
        """A short hash of the definitions and files, to tell template versions apart."""
        sha = hashlib.sha256()
        sources = [self.root / COMMON / "template.toml", self.root / self.kind / "template.toml",
                   *self.files().values()]
        for path in sources:
            rel = path.relative_to(self.root).as_posix().encode()
            sha.update(rel + b"\0" + path.read_bytes() + b"\0")
        return sha.hexdigest()[:16]
