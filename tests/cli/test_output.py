"""The CLI's consoles write plain text to a pipe themselves: it must be what rich writes."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from p2phost._cli._output import Output

TEXTS = [
    "", "installed 5 plugin(s): tcp-transport 1.0.0, noise-security 1.0.0",
    "x" * 300, "wide: 漢字かな 😀 é", "  indented and trailing  ", "two\nlines\n",
    "+ echo 1.0.0  [app]  publisher: p2phost  capabilities: none  unsigned",
    "[bold]not markup[/]", "url http://127.0.0.1:8470/files/a.whl at 12:30:59",
    "an emoji :smile: code", ":thumbs_up-emoji:", "a:b:c", "tab\there", "bell\x07 cr\r",
    "esc \x1b[31mred", "del\x7f", "nbsp\u00a0 line sep\u2028",
]


@pytest.mark.parametrize("text", TEXTS)
def test_plain_output_to_a_pipe_is_what_rich_prints(text: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    want = io.StringIO()
    Console(file=want, highlight=False, soft_wrap=True, markup=False).print(text)
    got = io.StringIO()
    monkeypatch.setattr(sys, "stdout", got)
    out = Output()
    out.print(text)
    out.print(text, markup=False)
    assert got.getvalue() == want.getvalue() * 2


def test_a_terminal_or_forced_colour_goes_through_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    out = Output()
    assert out.is_terminal and out._console is not None


def test_plain_lines_to_a_pipe_need_no_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    out = Output()
    out.print(TEXTS[1])
    out.print(TEXTS[6], markup=False)
    assert out._console is None
