"""The three-way merge of --update: git merge-file and the difflib fallback agree."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2phost._authoring import merge3

BASE = "a\nb\nc\nd\ne\n"
IMPLEMENTATIONS = [pytest.param(False, id="difflib")]
if shutil.which("git"):
    IMPLEMENTATIONS.append(pytest.param(True, id="git"))


@pytest.mark.parametrize("use_git", IMPLEMENTATIONS)
def test_changes_on_different_lines_both_survive(use_git: bool) -> None:
    ours = "a\nB (mine)\nc\nd\ne\n"
    theirs = "a\nb\nc\nd\nE (template)\nf (new)\n"
    result = merge3(ours, BASE, theirs, use_git=use_git)
    assert result.conflicts == 0
    assert result.text == "a\nB (mine)\nc\nd\nE (template)\nf (new)\n"


@pytest.mark.parametrize("use_git", IMPLEMENTATIONS)
def test_the_same_line_changed_both_ways_is_a_marked_conflict(use_git: bool) -> None:
    ours, theirs = "a\nb\nmine\nd\ne\n", "a\nb\ntemplate\nd\ne\n"
    result = merge3(ours, BASE, theirs, use_git=use_git)
    assert result.conflicts == 1
    assert "<<<<<<< yours\nmine\n=======\ntemplate\n>>>>>>> template\n" in result.text
    assert result.text.startswith("a\nb\n<<<<<<<")
    assert result.text.endswith(">>>>>>> template\nd\ne\n")


@pytest.mark.parametrize("use_git", IMPLEMENTATIONS)
def test_the_same_change_on_both_sides_is_no_conflict(use_git: bool) -> None:
    same = "a\nb\nboth\nd\ne\n"
    assert merge3(same, BASE, same, use_git=use_git).text == same


@pytest.mark.parametrize("use_git", IMPLEMENTATIONS)
def test_a_file_added_by_both_without_a_base(use_git: bool) -> None:
    result = merge3("mine\n", "", "template\n", use_git=use_git)
    assert result.conflicts == 1 and "mine" in result.text and "template" in result.text


def test_a_missing_final_newline_still_gets_markers_on_their_own_lines() -> None:
    result = merge3("a\nmine", "a\nbase", "a\ntemplate", use_git=False)
    assert result.text == "a\n<<<<<<< yours\nmine\n=======\ntemplate\n>>>>>>> template\n"


_lines = st.lists(st.sampled_from(["x\n", "y\n", "z\n", "w\n"]), max_size=8).map("".join)


@settings(max_examples=200, deadline=None)
@given(base=_lines, ours=_lines)
def test_a_side_that_did_not_change_takes_the_other(base: str, ours: str) -> None:
    assert merge3(ours, base, base, use_git=False).text == ours
    assert merge3(base, base, ours, use_git=False).text == ours


@settings(max_examples=200, deadline=None)
@given(base=_lines, ours=_lines, theirs=_lines)
def test_a_clean_difflib_merge_contains_no_markers(base: str, ours: str, theirs: str) -> None:
    result = merge3(ours, base, theirs, use_git=False)
    assert ("<<<<<<<" in result.text) == (result.conflicts > 0)
