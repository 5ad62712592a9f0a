"""Rendering a template: answers in, the files of a plugin project out (as text, in memory).

Nothing is written here, so ``--update`` can merge what the template renders now into
the author's files before touching any of them.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import tomlkit

from p2phost_sdk import HOST_API

from .. import __version__
from ._errors import AnswerError, TemplateError
from ._template import Question, Template

#: Asks one question: gets the question, its rendered default and, when asking again, what
#: was wrong with the last answer; returns the raw answer.
Asker = Callable[[Question, str, str | None], str]


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text))


def _toml(value: Any) -> str:
    # Answers go into pyproject.toml: quote them as TOML, never by hand.
    return str(tomlkit.item(value).as_string())


def _docstring(text: str) -> str:
    # Answers go into docstrings too: a backslash or three quotes must not end them.
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def _line_in(exc: BaseException, path: Path) -> int | None:
    """The line of ``path`` a render error happened at (Jinja keeps template frames)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def environment(root: Path) -> jinja2.Environment:
    """The Jinja2 environment templates are rendered in (strict: a typo is an error)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(root),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(camel=_camel, toml=_toml, docstring=_docstring)
    return env


def _render_string(env: jinja2.Environment, text: str, context: Mapping[str, Any],
                   where: str) -> str:
    try:
        return env.from_string(text).render(context)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{where}: {exc}", fix="fix the template") from exc


def base_context(template: Template) -> dict[str, Any]:
    """What every template sees besides the answers."""
    return {"kind": template.kind, "host_api": str(HOST_API), "p2phost_version": __version__,
            "host_api_major": HOST_API.major, "this_year": datetime.date.today().year}


def resolve_answers(template: Template, given: Mapping[str, str], ask: Asker | None
                    ) -> dict[str, Any]:
    """Every question answered: from ``given``, else by ``ask`` (None: take the defaults).

    ``ask`` is called again while its answer is invalid; an invalid ``given`` value or
    default is an :class:`AnswerError` (there is nobody to ask again).
    """
    unknown = set(given) - {q.name for q in template.questions}
    if unknown:
        raise AnswerError(sorted(unknown)[0], given[sorted(unknown)[0]],
                          f"the {template.kind} template asks no such question",
                          fix="known: " + ", ".join(q.name for q in template.questions))
    env = environment(template.root)
    answers: dict[str, Any] = {}
    for question in template.questions:
        if question.name in given:
            try:
                answers[question.name] = question.parse(given[question.name])
            except AnswerError as exc:
                raise AnswerError(question.name, given[question.name], exc.problem,
                                  fix=f"--set {question.name}=VALUE with a valid value"
                                  + (f" ({question.help})" if question.help else "")) from None
            continue
        context = {**base_context(template), **answers}
        default = _render_string(env, question.default, context,
                                 f"{template.kind} template, default of {question.name}")
        if ask is None or not question.ask:
            try:
                answers[question.name] = question.parse(default)
            except AnswerError as exc:
                raise AnswerError(question.name, default, exc.problem,
                                  fix=f"give one with --set {question.name}=VALUE") from None
            continue
        problem: str | None = None
        while True:  # interactive: ask the same question until the answer is valid
            try:
                answers[question.name] = question.parse(ask(question, default, problem))
                break
            except AnswerError as exc:
                problem = exc.problem
    return answers


def render(template: Template, answers: Mapping[str, Any]) -> dict[str, str]:
    """The project's files (relative POSIX path -> text) for ``answers``."""
    env = environment(template.root)
    context = {**base_context(template), **answers}
    for name, expression in template.computed.items():
        context[name] = _render_string(env, expression, context,
                                       f"{template.kind} template, computed {name}")
    files: dict[str, str] = {}
    for rel, path in template.files().items():
        target = _render_string(env, rel, context, f"file name {rel}")
        if rel.endswith(".j2"):
            target = target[:-3]
            name = path.relative_to(template.root).as_posix()
            try:
                text = env.get_template(name).render(context)
            except jinja2.TemplateError as exc:
                line = getattr(exc, "lineno", None) or _line_in(exc, path)
                where = f"{path}:{line}" if line else str(path)
                raise TemplateError(f"{where}: {exc}", fix="fix the template") from exc
            # A template may render a file empty to leave it out of this project.
            if not text.strip():
                continue
        else:
            text = path.read_text(encoding="utf-8")
        files[target] = text
    return files
