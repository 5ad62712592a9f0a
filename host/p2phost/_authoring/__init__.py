"""Plugin authoring: project templates, ``--update`` merges, check, build and publish.

The CLI (``p2phost plugin new/check/build/publish/yank``) is a thin layer over this
package; everything here raises :class:`~p2phost._errors.UserError` subclasses with a
message and a fix, never a bare traceback.
"""

from ._answers import ANSWERS_FILE, Answers
from ._errors import AnswerError, BuildError, PublishError, TargetExists, TemplateError
from ._merge import MergeResult, merge3
from ._render import Asker, render, resolve_answers
from ._scaffold import FileChange, ScaffoldReport, generate, update
from ._template import Question, Template, templates_root

__all__ = [
    "ANSWERS_FILE",
    "AnswerError",
    "Answers",
    "Asker",
    "BuildError",
    "FileChange",
    "MergeResult",
    "PublishError",
    "Question",
    "ScaffoldReport",
    "TargetExists",
    "Template",
    "TemplateError",
    "generate",
    "merge3",
    "render",
    "resolve_answers",
    "templates_root",
    "update",
]
