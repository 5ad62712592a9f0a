"""The errors of plugin authoring: each says what is wrong, where, and what fixes it."""

from __future__ import annotations

from .._errors import UserError


class TemplateError(UserError):
    """A template (``templates/KIND/``) is missing or broken."""


class AnswerError(UserError):
    """An answer to a template question is invalid."""

    def __init__(self, question: str, value: object, problem: str, *, fix: str | None = None
                 ) -> None:
        self.question, self.value, self.problem = question, value, problem
        super().__init__(f"{question} = {value!r}: {problem}", fix=fix)


class TargetExists(UserError):
    """``plugin new`` would write into a directory that already holds files."""


class BuildError(UserError):
    """``python -m build`` failed, or produced something that is not a plugin."""


class PublishError(UserError):
    """The registry refused an upload or a yank, or could not be reached."""
