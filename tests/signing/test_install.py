"""Signed plugins end to end: publish --sign, then install, upgrade and sync as users run them.

Every refusal must leave the project as it was: nothing installed, the lock unchanged.
"""

from __future__ import annotations

import hashlib
import io
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

from p2phost._keys import load_key
from p2phost_sdk.signing import PluginSignature
from tests.install.conftest import Workspace
from tests.registry.conftest import Registry

from .conftest import Publisher, new_key, public_key

Wheels = dict[tuple[str, str], Path]
MakePublisher = Callable[[str], Publisher]
MakeProject = Callable[..., Workspace]


def _locked(ws: Workspace, name: str) -> dict[str, str]:
    return next(p for p in tomllib.loads(ws.lock)["plugin"] if p["name"] == name)


def _stored(server: Registry, filename: str) -> Path:
    return server.data / "files" / filename.split("-")[0] / filename


def test_a_signed_plugin_installs_is_pinned_and_syncs_against_the_pin(
        wheels: Wheels, publisher: MakePublisher, project: MakeProject) -> None:
    ada = publisher("ada")
    out = ada.published(wheels["inked", "1.0.0"])
    assert f"signing with {ada.public_key}" in out
    ws = project("first")
    out = ws.ok("plugin", "install", "inked==1.0.0", "--yes", "--require-signed")
    assert "warning" not in out
    assert ws.installed() == {"inked": "1.0.0"}
    locked = _locked(ws, "inked")
    assert locked["publisher_key"] == ada.public_key and locked["signature"]

    # Another machine: sync from the lock, offline, checks each file against the pinned key.
    second = project("second")
    (second.root / "p2phost.toml").write_text(ws.manifest)
    (second.root / "p2phost.lock").write_text(ws.lock)
    second.ok("plugin", "sync", "--offline", "--require-signed")
    assert second.installed() == {"inked": "1.0.0"}

    # A lock whose signature was swapped for another one is refused by sync.
    other = PluginSignature.parse(PluginSignature.create(
        load_key(ada.key), locked["filename"], "00" * 32).to_bytes())
    assert other is not None
    third = project("third")
    (third.root / "p2phost.toml").write_text(ws.manifest)
    (third.root / "p2phost.lock").write_text(ws.lock.replace(locked["signature"],
                                                             other.signature))
    err = third.fails("plugin", "sync", "--offline")
    assert "inked 1.0.0" in err and "does not verify with its pinned key" in err
    assert third.installed() == {}

    # A signed plugin that turns up unsigned is a key change too.
    ada.published(wheels["inked", "1.1.0"], sign=False)
    err = ws.fails("plugin", "install", "inked==1.1.0", "--yes")
    assert "inked 1.1.0 is not signed at all" in err and ada.public_key in err
    assert "p2phost plugin install inked==1.1.0 --trust-new-key" in err
    assert ws.installed() == {"inked": "1.0.0"}


def test_a_file_altered_after_signing_is_refused(
        wheels: Wheels, publisher: MakePublisher, project: MakeProject,
        registry_server: Registry) -> None:
    wheel = wheels["doctored", "1.0.0"]
    publisher("dora").published(wheel)
    # Someone with write access to the registry's store slips code into the wheel and fixes
    # up the recorded sha256 and size, so that only the publisher's signature can tell.
    stored = _stored(registry_server, wheel.name)
    buffer = io.BytesIO()
    with zipfile.ZipFile(stored) as src, zipfile.ZipFile(buffer, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "doctored/__init__.py":
                data += b"\nimport os  # the attacker's code\n"
            dst.writestr(item, data)
    stored.write_bytes(buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    store = registry_server.store()
    try:
        with store.db.transaction() as tx:
            tx.run("UPDATE files SET sha256 = ?, size = ? WHERE filename = ?",
                   (digest, len(buffer.getvalue()), wheel.name))
    finally:
        store.close()

    ws = project()
    err = ws.fails("plugin", "install", "doctored", "--yes")
    assert "doctored 1.0.0" in err and "is not what its publisher signed" in err
    assert "changed after signing" in err and digest in err
    assert ws.installed() == {} and ws.lock == "" and "doctored" not in ws.manifest


def test_a_signature_by_an_unknown_key_is_refused(
        wheels: Wheels, publisher: MakePublisher, project: MakeProject,
        registry_server: Registry, tmp_path: Path) -> None:
    wheel = wheels["forged", "1.0.0"]
    fay = publisher("fay")
    fay.published(wheel)
    ws = project()
    sig = _stored(registry_server, wheel.name).with_name(wheel.name + ".sig")
    sig.write_bytes(b"-----BEGIN PGP SIGNATURE-----\n")
    err = ws.fails("plugin", "install", "forged", "--yes")
    assert "the signature of forged 1.0.0" in err and "is malformed" in err

    # The signature beside the file is replaced by one of another key, valid in itself.
    mallory = load_key(new_key(tmp_path / "mallory.key"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    forged = PluginSignature.create(mallory, wheel.name, digest)
    sig.write_bytes(forged.to_bytes())
    err = ws.fails("plugin", "install", "forged", "--yes")
    assert f"signed by an unknown key {forged.publisher_key}" in err
    assert f"not by its publisher's key {fay.public_key}" in err
    assert ws.installed() == {} and ws.lock == ""


def test_a_key_change_is_refused_until_the_user_trusts_the_new_key(
        wheels: Wheels, publisher: MakePublisher, project: MakeProject,
        registry_server: Registry, tmp_path: Path) -> None:
    tara = publisher("tara")
    tara.published(wheels["turncoat", "1.0.0"])
    ws = project()
    ws.ok("plugin", "install", "turncoat", "--yes")
    old_key = tara.public_key
    assert _locked(ws, "turncoat")["publisher_key"] == old_key

    # The publisher replaces the key: the registry wants the new key registered first.
    new = new_key(tmp_path / "tara-new.key")
    refused = tara.publish(wheels["turncoat", "1.1.0"], key=new)
    assert refused.returncode != 0 and "p2phost key register" in refused.stderr
    register = ws.cli("key", "register", "--key", str(new), "--token", tara.token,
                      "--registry", registry_server.url)
    assert register.returncode == 0, register.stderr
    assert f"(replacing {old_key})" in register.stdout
    tara.published(wheels["turncoat", "1.1.0"], key=new)
    new_public = public_key(new)

    lock_before = ws.lock
    err = ws.fails("plugin", "upgrade", "--yes")
    assert "THE PUBLISHER KEY OF turncoat HAS CHANGED" in err
    assert f"turncoat 1.1.0 is signed by {new_public}" in err
    assert f"p2phost.lock pins {old_key} (from turncoat 1.0.0)" in err
    assert "fix: " in err and "p2phost plugin upgrade --trust-new-key" in err
    assert ws.installed() == {"turncoat": "1.0.0"} and ws.lock == lock_before

    ws.ok("plugin", "upgrade", "--yes", "--trust-new-key")
    assert ws.installed() == {"turncoat": "1.1.0"}
    assert _locked(ws, "turncoat")["publisher_key"] == new_public
    # A newcomer has nothing pinned: the current key is accepted on first use.
    fresh = project("fresh")
    fresh.ok("plugin", "install", "turncoat", "--yes")
    assert _locked(fresh, "turncoat")["publisher_key"] == new_public


def test_unsigned_warns_and_is_refused_when_signatures_are_required(
        wheels: Wheels, publisher: MakePublisher, project: MakeProject) -> None:
    publisher("bob").published(wheels["plain", "1.0.0"], sign=False)
    ws = project("warned")
    done = ws.cli("plugin", "install", "plain", "--yes")
    assert done.returncode == 0, done.stderr
    assert "warning: plain 1.0.0 is not signed by its publisher" in done.stderr
    assert ws.installed() == {"plain": "1.0.0"}
    assert "publisher_key" not in _locked(ws, "plain")

    strict = project("strict")
    err = strict.fails("plugin", "install", "plain", "--yes", "--require-signed")
    assert "plain 1.0.0: not signed by a publisher key" in err and "--require-signed" in err
    assert strict.installed() == {} and strict.lock == ""

    manifest = project("manifest", extra="\n[registry]\nrequire-signed = true\n")
    err = manifest.fails("plugin", "install", "plain", "--yes")
    assert "signatures are required" in err and manifest.installed() == {}

    synced = project("synced", extra="\n[registry]\nrequire-signed = true\n")
    (synced.root / "p2phost.lock").write_text(ws.lock)
    err = synced.fails("plugin", "sync", "--offline")
    assert "plain 1.0.0: not signed" in err and synced.installed() == {}


def test_a_kept_signature_is_verified_again_without_asking(
        wheels: Wheels, publisher: MakePublisher, project: MakeProject,
        registry_server: Registry) -> None:
    import threading

    from tests.install.test_response_cache import Proxy, through

    publisher("kim").published(wheels["kept", "1.0.0"])
    first = project("first")
    first.ok("plugin", "install", "kept==1.0.0", "--yes", "--require-signed")
    kept, = first.cache.rglob("kept-1.0.0-*.whl.sig")  # beside the wheel
    # Asked through another URL (so the plugin's page is asked for again), the wheel and
    # its signature come from the download cache: only the page is requested.
    proxy = Proxy(registry_server.url)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        second = through(project("second"), proxy)
        second.ok("plugin", "install", "kept==1.0.0", "--yes", "--require-signed")
        assert [p for p, _, _ in proxy.seen] == ["/api/v1/plugins/kept"]
        assert _locked(second, "kept")["signature"] == _locked(first, "kept")["signature"]
        # A kept signature that no longer verifies is fetched again, not trusted.
        kept.write_bytes(kept.read_bytes().replace(b'"signature": "', b'"signature": "AA'))
        proxy.seen.clear()
        through(project("third"), proxy).ok("plugin", "install", "kept==1.0.0", "--yes",
                                            "--require-signed")
        assert [p for p, _, _ in proxy.seen if p.endswith(".sig")] != []
        assert PluginSignature.parse(kept.read_bytes()) is not None
    finally:
        proxy.shutdown()
        proxy.server_close()
