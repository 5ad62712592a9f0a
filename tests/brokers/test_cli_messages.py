"""What the CLI says about broker addresses (the outsider report, D2 and D5): no password
printed, a broker that is down is named as the thing to fix, a malformed address exits 2."""

from __future__ import annotations

import pytest

from tests.brokers.conftest import MEDIA, ProjectMaker
from tests.conftest import run_cli
from tests.runtime.processes import free_port


@pytest.mark.services
def test_a_stored_send_never_prints_the_brokers_password(make_project: ProjectMaker) -> None:
    MEDIA["amqp"].require()
    bob = run_cli("id", cwd=make_project("bob", MEDIA["amqp"])).stdout.strip()
    alice = make_project("alice", MEDIA["amqp"])
    done = run_cli("send", f"{MEDIA['amqp'].url}#{bob}", "note", "{}", cwd=alice, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "sent to amqp://guest@127.0.0.1:5672/" in done.stderr, done.stderr
    assert "guest:guest" not in done.stdout + done.stderr


@pytest.mark.services
def test_a_broker_that_is_down_is_what_the_fix_names(make_project: ProjectMaker) -> None:
    MEDIA["redis"].require()
    root = make_project("alice", MEDIA["redis"], transport={"connect-timeout": 1.0,
                                                             "send-timeout": 1.0})
    me = run_cli("id", cwd=root).stdout.strip()
    port = free_port()
    for command in (("ping", "-c", "1"), ("send",)):
        extra = ("note", "{}") if command == ("send",) else ()
        done = run_cli(command[0], f"redis://127.0.0.1:{port}/0#{me}", *extra, *command[1:],
                       cwd=root, timeout=60)
        assert done.returncode == 1, done.stderr
        assert f"fix: check that Redis runs at 127.0.0.1:{port}" in done.stderr, done.stderr
        assert "that a node runs there" not in done.stderr


@pytest.mark.services
def test_a_broker_address_without_a_peer_id_is_malformed(make_project: ProjectMaker) -> None:
    MEDIA["redis"].require()
    root = make_project("alice", MEDIA["redis"])
    done = run_cli("ping", MEDIA["redis"].url, "-c", "1", cwd=root, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "names no peer" in done.stderr and "#PEERID" in done.stderr.split("fix:")[1]
