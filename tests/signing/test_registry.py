"""The registry's side of signed plugins, on SQLite and on the real PostgreSQL.

Uploads go straight to the JSON API (the CLI's side is in test_install.py), so each rule is
seen with the exact status and message the registry answers.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from p2phost_sdk import Identity
from p2phost_sdk.signing import PluginSignature, format_publisher_key, key_proof_message
from tests.registry._dists import make_wheel
from tests.registry.conftest import Registry, pg_schema_factory, start_registry

__all__ = ["pg_schema_factory"]  # a fixture this module's fixture uses


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           pg_schema_factory: object) -> Iterator[Registry]:
    """A running registry per storage back end."""
    database = pg_schema_factory() if request.param == "postgresql" else None  # type: ignore[operator]
    running = start_registry(tmp_path_factory.mktemp("registry"), database)
    yield running
    running.stop()


def _signature(identity: Identity, wheel: Path, filename: str | None = None) -> bytes:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return PluginSignature.create(identity, filename or wheel.name, digest).to_bytes()


def _upload(server: Registry, wheel: Path, token: str, signature: bytes | None) -> httpx.Response:
    files = {"file": (wheel.name, wheel.read_bytes())}
    if signature is not None:
        files["signature"] = (wheel.name + ".sig", signature)
    with server.client() as client:
        return client.post("/api/v1/upload", files=files,
                           headers={"Authorization": f"Bearer {token}"})


def _files(server: Registry, name: str) -> dict[str, dict[str, object]]:
    with server.client() as client:
        info = client.get(f"/api/v1/plugins/{name}").json()
    return {f["filename"]: f for v in info["versions"] for f in v["files"]}


def test_signed_upload_records_the_owner_key_and_serves_it(server: Registry,
                                                           tmp_path: Path) -> None:
    ada, token = Identity.generate(), server.token("ada")
    wheel = make_wheel(tmp_path, "ink-app", "1.0.0")
    assert _upload(server, wheel, token, _signature(ada, wheel)).status_code == 201
    entry = _files(server, "ink-app")[wheel.name]
    assert entry["publisher_key"] == format_publisher_key(ada.public_key)
    with server.client() as client:
        served = PluginSignature.parse(client.get(str(entry["signature_url"])).content)
        simple = client.get("/simple/ink-app/",
                            headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
    assert served is not None and served.verifies() and served.sha256 == entry["sha256"]
    # The simple index stays what pip expects: no p2phost fields in it.
    assert "publisher_key" not in str(simple)
    assert simple["files"][0]["hashes"] == {"sha256": entry["sha256"]}
    audit = [e["action"] for e in
             server.client().get("/api/v1/plugins/ink-app/audit").json()["entries"]]
    assert "publisher-key" in audit


def test_signatures_that_do_not_fit_are_refused_whole(server: Registry, tmp_path: Path) -> None:
    ada, token = Identity.generate(), server.token("bea")
    wheel = make_wheel(tmp_path, "fit-app", "1.0.0")
    other = make_wheel(tmp_path, "fit-app", "1.0.1")
    # One base64 character of the signature changed: still well-formed, no longer valid.
    flipped = bytearray(_signature(ada, wheel))
    index = flipped.index(b'"signature": "') + len(b'"signature": "')
    flipped[index] = ord("A") if flipped[index] != ord("A") else ord("B")
    cases = {
        "is for fit_app-1.0.1": _signature(ada, other),
        "does not verify": bytes(flipped),
        "malformed": b'{"format": "p2phost-plugin-signature-v1"}',
    }
    for expected, signature in cases.items():
        response = _upload(server, wheel, token, signature)
        assert response.status_code == 400, response.text
        assert expected in response.json()["error"]
        assert "--sign" in response.json()["error"]
    with server.client() as client:
        assert client.get("/api/v1/plugins/fit-app").status_code == 404  # nothing stored


def test_an_owner_is_held_to_its_key_until_it_registers_another(server: Registry,
                                                               tmp_path: Path) -> None:
    old, new, token = Identity.generate(), Identity.generate(), server.token("cyd")
    first, second = (make_wheel(tmp_path, "held-app", v) for v in ("1.0.0", "1.1.0"))
    assert _upload(server, first, token, _signature(old, first)).status_code == 201
    refused = _upload(server, second, token, _signature(new, second))
    assert refused.status_code == 422
    message = refused.json()["error"]
    assert format_publisher_key(new.public_key) in message
    assert format_publisher_key(old.public_key) in message
    assert "p2phost key register" in message and "--trust-new-key" in message
    assert second.name not in _files(server, "held-app")

    new_key = format_publisher_key(new.public_key)

    def register(token: str, proof: bytes) -> httpx.Response:
        with server.client() as client:
            return client.post("/api/v1/publisher-key", headers={
                "Authorization": f"Bearer {token}"}, json={
                "publisher_key": new_key, "proof": base64.b64encode(proof).decode()})

    good_proof = new.sign(key_proof_message(new_key))
    scoped = register(server.token("cyd", "held-app"), good_proof)
    assert scoped.status_code == 403 and "without --scope" in scoped.json()["error"]
    stolen = register(token, old.sign(key_proof_message(new_key)))
    assert stolen.status_code == 400 and "only the holder" in stolen.json()["error"]
    done = register(token, good_proof)
    assert done.status_code == 200, done.text
    assert done.json() == {"owner": "cyd", "publisher_key": new_key,
                           "previous": format_publisher_key(old.public_key)}
    assert _upload(server, second, token, _signature(new, second)).status_code == 201
    assert _files(server, "held-app")[second.name]["publisher_key"] == new_key
    assert _files(server, "held-app")[first.name]["publisher_key"] != new_key
    audit = server.client().get("/api/v1/plugins/held-app/audit").json()["entries"]
    assert any(new_key in e["detail"] and e["action"] == "publisher-key" for e in audit)


def test_a_foreign_signature_is_kept_as_is_and_names_no_key(server: Registry,
                                                             tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "gpg-app", "1.0.0")
    armored = b"-----BEGIN PGP SIGNATURE-----\nxyz\n-----END PGP SIGNATURE-----\n"
    assert _upload(server, wheel, server.token("dan"), armored).status_code == 201
    entry = _files(server, "gpg-app")[wheel.name]
    assert entry["publisher_key"] is None and entry["signature_url"]
    with server.client() as client:
        assert client.get(str(entry["signature_url"])).content == armored
