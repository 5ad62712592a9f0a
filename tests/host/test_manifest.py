"""p2phost.toml: parsing, every bad input with file:line, and edits that keep comments."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2phost._errors import ManifestError
from p2phost._lock import Lock, LockedFile
from p2phost._manifest import Manifest, ManifestEditor

GOOD = """\
# my node
[node]
name = "alice"
listen = ["tcp://0.0.0.0:7400"]   # all interfaces

[registry]
url = "http://127.0.0.1:8470"

[plugins]   # what we run
tcp-transport = ">=1.0,<2"
json-codec = "*"
static-discovery = "*"

[config.static-discovery]
peers = ["tcp://127.0.0.1:7401"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p2phost.toml"
    path.write_text(text)
    return path


def test_reads_the_design_example(tmp_path: Path) -> None:
    m = Manifest.load(write(tmp_path, GOOD))
    assert m.node.name == "alice"
    assert m.node.listen == ["tcp://0.0.0.0:7400"]
    assert m.registries == ["http://127.0.0.1:8470"]
    assert m.plugins == {"tcp-transport": ">=1.0,<2", "json-codec": "*", "static-discovery": "*"}
    assert m.config == {"static-discovery": {"peers": ["tcp://127.0.0.1:7401"]}}


def test_event_loop_is_uvloop_where_installed_unless_the_manifest_says_asyncio(
    tmp_path: Path
) -> None:
    from p2phost._runtime._loop import loop_factory

    assert Manifest.load(write(tmp_path, GOOD)).node.event_loop == "auto"
    chosen = Manifest.load(write(tmp_path, GOOD.replace(
        '[node]\n', '[node]\nevent-loop = "asyncio"\n'))).node.event_loop
    assert loop_factory(chosen) == ("asyncio", None)
    kind, factory = loop_factory("auto")
    assert kind == "uvloop" and factory is not None  # uvloop is one of p2phost's requirements


def test_keepalive_timeout_is_a_setting(tmp_path: Path) -> None:
    assert Manifest.load(write(tmp_path, GOOD)).node.keepalive_timeout == 15.0
    text = GOOD.replace('[node]\n', '[node]\nkeepalive-timeout = 60\n')
    assert Manifest.load(write(tmp_path, text)).node.keepalive_timeout == 60


def test_handshake_limit_per_source_is_a_setting(tmp_path: Path) -> None:
    assert Manifest.load(write(tmp_path, GOOD)).node.handshake_limit_per_source == 8
    text = GOOD.replace('[node]\n', '[node]\nhandshake-limit-per-source = 32\n')
    assert Manifest.load(write(tmp_path, text)).node.handshake_limit_per_source == 32
    text = GOOD.replace('[node]\n', '[node]\nhandshake-limit-per-source = 0\n')
    with pytest.raises(ManifestError) as info:
        Manifest.load(write(tmp_path, text))
    assert str(info.value) == ("p2phost.toml:3: node.handshake-limit-per-source: expected a "
                               "positive int, got 0 (fix: handshake-limit-per-source = 8)")


def test_several_registries_in_order(tmp_path: Path) -> None:
    text = GOOD.replace('url = "http://127.0.0.1:8470"',
                        'url = ["http://a.example:1/", "https://b.example"]')
    assert Manifest.load(write(tmp_path, text)).registries == ["http://a.example:1",
                                                                 "https://b.example"]


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("[node\nname = 1\n", 1, "not valid TOML"),
        (GOOD + "\n[surprise]\nx = 1\n", 17, "unknown top-level key"),
        (GOOD.replace('json-codec = "*"', 'json-codec = ">>1"'), 11, "PEP 440"),
        (GOOD.replace('json-codec = "*"', '"json codec!" = "*"'), 11, "not a valid plugin name"),
        (GOOD.replace('json-codec = "*"', 'json-codec = "*"\nJSON_codec = "*"'), 12,
         "declared twice"),
        (GOOD + "\n[config.echo]\nx = 1\n", 17, "does not declare"),
        (GOOD.replace('name = "alice"', "name = 7"), 3, "expected str"),
        (GOOD.replace('listen = ["tcp://0.0.0.0:7400"]', 'listen = ["localhost:7400"]'), 4,
         "not an address URL"),
        (GOOD.replace('[node]\n', '[node]\nspeed = 3\n'), 3, "unknown key"),
        (GOOD.replace('[node]\n', '[node]\nevent-loop = "fast"\n'), 3, "auto, uvloop, asyncio"),
        (GOOD.replace('[node]\n', '[node]\nkeepalive-timeout = 0.5\n'), 3, "from 2 to 3600"),
        (GOOD.replace('[node]\n', '[node]\nkeepalive-timeout = nan\n'), 3, "from 2 to 3600"),
        (GOOD.replace('[node]\n', '[node]\nkeepalive-timeout = "15"\n'), 3,
         "a number of seconds"),
        (GOOD.replace('[node]\n', '[node]\nhandshake-limit-per-source = true\n'), 3,
         "expected a positive int"),
    ],
)
def test_bad_input_gives_file_line_and_field(tmp_path: Path, text: str, line: int,
                                             needle: str) -> None:
    with pytest.raises(ManifestError) as info:
        Manifest.load(write(tmp_path, text))
    assert info.value.line == line, str(info.value)
    assert needle in str(info.value)
    assert str(info.value).startswith(f"p2phost.toml:{line}")


@pytest.mark.parametrize(("table", "fix"), [
    ('retry-dealy = 2', "rename retry-dealy to retry-delay in [delivery.orders]"),
    ('zzz = 2', 'a [delivery.TOPIC] table takes mode = "at-most-once", "at-least-once" or '
                '"effectively-once", immediate-retries and delayed-retries'),
    ('retry-delay = 0', "retry-delay (seconds > 0) and retry-backoff (a factor >= 1)"),
])
def test_a_bad_delivery_table_says_what_it_takes_without_the_docs(
        tmp_path: Path, table: str, fix: str) -> None:
    # docs/ is not in the wheel: the fix itself says what to write.
    with pytest.raises(ManifestError) as info:
        Manifest.load(write(tmp_path, GOOD + f"\n[delivery.orders]\n{table}\n"))
    assert fix in str(info.value.fix) and "docs/" not in str(info.value.fix)


def test_check_lists_every_problem(tmp_path: Path) -> None:
    text = GOOD.replace('json-codec = "*"', 'json-codec = ">>1"') + "\n[surprise]\n"
    _, problems = Manifest.check(write(tmp_path, text))
    assert len(problems) == 2
    assert {p.line for p in problems} == {11, 17}


def test_editor_keeps_comments_and_layout(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    editor = ManifestEditor(path)
    editor.set_plugin("echo", ">=1.0")
    editor.set_plugin("JSON_Codec", ">=2")  # same plugin, other spelling: replaced in place
    assert editor.remove_plugin("static-discovery")
    editor.save()
    text = path.read_text()
    assert "# my node" in text and "# all interfaces" in text and "# what we run" in text
    assert 'json-codec = ">=2"' in text and 'echo = ">=1.0"' in text
    assert "static-discovery" not in text  # its [config.*] table went with it
    m = Manifest.load(path)
    assert m.plugins == {"tcp-transport": ">=1.0,<2", "json-codec": ">=2", "echo": ">=1.0"}


def test_lock_round_trip_is_stable(tmp_path: Path) -> None:
    lock = Lock(plugins=(
        LockedFile("tcp-transport", "1.0.0", "http://127.0.0.1:8470",
                   "tcp_transport-1.0.0-py3-none-any.whl", "ab" * 32),
        LockedFile("echo", "1.0.0", "http://127.0.0.1:8470", "echo-1.0.0-py3-none-any.whl",
                   "cd" * 32, requires=("json-codec",)),
    ))
    path = tmp_path / "p2phost.lock"
    lock.save(path)
    again = Lock.load(path)
    assert again.plugin("echo") == lock.plugin("echo")
    assert again.dumps() == lock.dumps()


def _tomlkit_dumps(lock: Lock) -> str:
    """How p2phost.lock was written with tomlkit (before the writer needed no tomlkit)."""
    import dataclasses

    import tomlkit

    doc = tomlkit.document()
    doc.add(tomlkit.comment("Written by p2phost; do not edit. `p2phost plugin sync` installs "
                            "exactly this."))
    doc["version"] = 1
    for key, entries in (("plugin", lock.plugins), ("package", lock.packages)):
        array = tomlkit.aot()
        for entry in entries:
            row = {k: list(v) if isinstance(v, tuple) else v
                   for k, v in dataclasses.asdict(entry).items() if v not in (None, ())}
            array.append(tomlkit.item(row))
        if entries:
            doc[key] = array
    return tomlkit.dumps(doc)


def test_the_lock_is_written_byte_for_byte_as_tomlkit_writes_it(tmp_path: Path) -> None:
    odd = 'quote " backslash \\ tab \t newline \n bell \x07 del \x7f é 😀 \u2028'
    plugin = LockedFile("a-plugin", "1.0.0", odd, "a-1.0.0-py3-none-any.whl", "ab" * 32,
                        requires=("b", "c"), signature="c2ln", publisher_key=odd,
                        url="http://x/a.whl", dependencies=('x; python_version < "3.12"', odd))
    package = LockedFile("x", "2.0", "https://pypi.org/simple/", "x-2.0-py3-none-any.whl",
                         "cd" * 32, url="https://files/x.whl")
    for lock in (Lock(), Lock(plugins=(plugin,)), Lock(packages=(package,)),
                 Lock(plugins=(plugin, package), packages=(package,))):
        assert lock.dumps() == _tomlkit_dumps(lock)
        lock.save(tmp_path / "p2phost.lock")
        assert Lock.load(tmp_path / "p2phost.lock") == lock


def test_lock_edited_into_nonsense_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "p2phost.lock"
    path.write_text("version = 1\n[[plugin]]\nname = 'x'\n")
    with pytest.raises(ManifestError, match="malformed entry"):
        Lock.load(path)
    path.write_text("version = [")
    with pytest.raises(ManifestError, match="not valid TOML"):
        Lock.load(path)
