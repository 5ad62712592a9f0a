"""The answers file keeps any text exactly: it is the merge base of the next update."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2phost._authoring import Answers, TemplateError

_paths = st.from_regex(r"[a-z_.]{1,8}(/[a-z_.{} ]{1,8}){0,2}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(base=st.dictionaries(_paths, st.text(), max_size=4),
       answer=st.text(), number=st.integers(), flag=st.booleans())
def test_answers_and_base_survive_a_round_trip(base: dict[str, str], answer: str, number: int,
                                               flag: bool) -> None:
    saved = Answers("codec", {"description": answer, "expiry": number, "flag": flag}, base,
                    "0123456789abcdef", "0.1.0")
    with tempfile.TemporaryDirectory() as tmp:
        saved.save(Path(tmp))
        loaded = Answers.load(Path(tmp))
    assert loaded == saved


def test_a_damaged_answers_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / ".p2phost-template.toml").write_text("[template\n")
    with pytest.raises(TemplateError, match=r"restore \.p2phost-template\.toml"):
        Answers.load(tmp_path)
