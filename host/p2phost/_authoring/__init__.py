"""Plugin authoring: project templates, ``--update`` merges, check, build and publish.

The CLI (``p2phost plugin new/check/build/publish/yank``) is a thin layer over this
package; everything here raises :class:`~p2phost._errors.UserError` subclasses with a
message and a fix, never a bare traceback.
"""

from ._answers import ANSWERS_FILE, Answers
from ._build import build as build_project
from ._build import verify_wheel
from ._check import CheckReport, KitResult
from ._check import check as check_project
from ._errors import AnswerError, BuildError, PublishError, TargetExists, TemplateError
from ._merge import MergeResult, merge3
from ._publish import TOKEN_ENV, Published, RegistryClient, upload_files
from ._pyproject import PluginProject
from ._render import Asker, render, resolve_answers
from ._scaffold import FileChange, ScaffoldReport, generate, update
from ._template import Question, Template, templates_root

__all__ = [
    "ANSWERS_FILE",
    "TOKEN_ENV",
    "AnswerError",
    "Answers",
    "Asker",
    "BuildError",
    "CheckReport",
    "FileChange",
    "KitResult",
    "MergeResult",
    "PluginProject",
    "PublishError",
    "Published",
    "Question",
    "RegistryClient",
    "ScaffoldReport",
    "TargetExists",
    "Template",
    "TemplateError",
    "build_project",
    "check_project",
    "generate",
    "merge3",
    "render",
    "resolve_answers",
    "templates_root",
    "update",
    "upload_files",
    "verify_wheel",
]
