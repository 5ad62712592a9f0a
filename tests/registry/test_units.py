"""Pure unit tests: look-alike names, content negotiation, migrations, crash recovery."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from p2phost_registry import SCHEMA_VERSION, Store, StoreError
from p2phost_registry._names import too_close, ultranormalize
from p2phost_registry._simple import HTML_TYPE, JSON_TYPE, TEXT_HTML, negotiate


@pytest.mark.parametrize(("name", "close_to"), [
    ("tcp-transp0rt", "tcp-transport"),
    ("TCP_Transport2", "tcp-transport"),
    ("tcp.transport", None),  # the same plugin, not a look-alike
    ("tpc-transport", "tcp-transport"),
    ("tcp-transpor", "tcp-transport"),
    ("tcptransport", "tcp-transport"),
    ("udp-transport", None),
    ("echo", None),
    ("ech0", "echo"),
    ("echp", None),  # short names may differ by one letter
])
def test_too_close(name: str, close_to: str | None) -> None:
    assert too_close(name, ["tcp-transport", "echo"]) == close_to


def test_ultranormalize_folds_lookalikes() -> None:
    assert ultranormalize("My_Plug-1n.O") == ultranormalize("myplugln0")


@pytest.mark.parametrize(("accept", "chosen"), [
    ("", TEXT_HTML),
    ("*/*", TEXT_HTML),
    (f"{JSON_TYPE}, {HTML_TYPE}; q=0.1, text/html; q=0.01", JSON_TYPE),
    (f"{HTML_TYPE}, {JSON_TYPE}", JSON_TYPE),
    (f"{HTML_TYPE}, {JSON_TYPE};q=0.5", HTML_TYPE),
    ("application/vnd.pypi.simple.latest+json", JSON_TYPE),
    ("text/html;q=0.9, image/png", TEXT_HTML),
    ("image/png", None),
    (f"{JSON_TYPE};q=0", None),
])
def test_negotiate(accept: str, chosen: str | None) -> None:
    assert negotiate(accept) == chosen


def test_migrations_are_versioned(tmp_path: Path) -> None:
    Store(tmp_path).close()
    db = tmp_path / "registry.sqlite3"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    Store(tmp_path).close()  # re-opening applies nothing twice
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 'x')")
    with pytest.raises(StoreError, match="newer than this p2phost understands"):
        Store(tmp_path)


def test_recover_drops_what_no_row_points_at(tmp_path: Path) -> None:
    Store(tmp_path).close()
    orphan = tmp_path / "files" / "ghost" / "ghost-1.0-py3-none-any.whl"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x")
    dead = tmp_path / "tmp" / "999999-aa.part"
    dead.write_bytes(b"x")
    live = tmp_path / "tmp" / f"{os.getppid()}-bb.part"  # a running process's upload
    live.write_bytes(b"x")
    Store(tmp_path, recover=True).close()
    assert not orphan.exists() and not dead.exists() and live.exists()


def test_rows_from_before_schema_4_get_their_pep440_identity(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.db.transaction() as tx:  # as an older p2phost stored them: twins apart
        tx.run("INSERT INTO plugins (name, display_name, created) VALUES ('old', 'old', 'x')")
        for n, version in enumerate(("0.1.0", "0.1", "0.2")):
            tx.run("INSERT INTO versions (plugin, version, summary, metadata, readme, "
                   "readme_type, uploaded, uploader) VALUES ('old', ?, '', '{}', '', "
                   "'text/plain', ?, 'o')", (version, f"2026-01-0{n + 1}"))
            tx.run("INSERT INTO files (filename, plugin, version, packagetype, sha256, size, "
                   "uploaded) VALUES (?, 'old', ?, 'bdist_wheel', '', 0, 'x')",
                   (f"old-{version}-py3-none-any.whl", version))
    store.close()
    store = Store(tmp_path)
    try:
        with store.db.transaction() as tx:
            versions = dict(tx.all("SELECT version, canonical FROM versions"))
            files = dict(tx.all("SELECT filename, dist_key FROM files"))
    finally:
        store.close()
    assert versions == {"0.1.0": "0.1", "0.1": None, "0.2": "0.2"}
    assert files["old-0.2-py3-none-any.whl"] == "0.2|wheel||py3-none-any"
    assert sum(v is None for v in files.values()) == 1


def test_download_counter_counts_each_address_once_per_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from p2phost_registry import _downloads

    now = [0.0]
    counter = _downloads.DownloadCounter(clock=lambda: now[0])
    assert counter.count("10.0.0.1", "app", "1.0", "app-1.0.whl")
    assert not counter.count("10.0.0.1", "app", "1.0", "app-1.0.whl")
    assert counter.count("10.0.0.2", "app", "1.0", "app-1.0.whl")
    assert counter.count("10.0.0.1", "app", "2.0", "app-2.0.whl")
    now[0] = _downloads.CLIENT_WINDOW + 1
    assert counter.count("10.0.0.1", "app", "1.0", "app-1.0.whl")
    assert counter.take() == {("app", "1.0"): 3, ("app", "2.0"): 1}
    assert counter.take() == {}
    # Memory stays bounded however many addresses come by.
    monkeypatch.setattr(_downloads, "MAX_CLIENTS", 100)
    for n in range(1000):
        counter.count(f"10.1.{n // 256}.{n % 256}", "app", "1.0", "app-1.0.whl")
    assert len(counter._seen) <= 100
    assert counter.take() == {("app", "1.0"): 1000}
