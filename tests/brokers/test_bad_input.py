"""Bad input on inbox media: one clear error (no traceback), or ignored and logged.

Wrong URLs, refused credentials, a broker that is down at start (retried, then a clear
error; picked up if it comes up in time), a message larger than the broker allows
(refused before it is sent), and foreign messages on a node's inbox.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

from tests.brokers.conftest import (
    DURABLE,
    MEDIA,
    Node,
    NodeMaker,
    ProjectMaker,
    ProxyMaker,
    with_port,
)
from tests.brokers.test_greedy_sender import rss
from tests.conftest import run_cli
from tests.runtime.processes import RunningNode, free_port

BROKERS = ["redis", "nats", "mqtt", "amqp", "postgresql"]


def fails_clearly(root: Path, *args: str, timeout: float = 30) -> str:
    """Run ``p2phost ARGS`` in ``root``; it must fail with one ``error:`` line and no
    traceback. Returns what it printed."""
    done = run_cli(*args, cwd=root, timeout=timeout)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "Traceback" not in out, out
    assert [line for line in out.splitlines() if line.startswith("error: ")], out
    return out


@pytest.mark.services
@pytest.mark.parametrize(("medium", "url", "says"), [
    ("redis", "redis://127.0.0.1:6379/notadb", "the path must be the database number"),
    ("nats", "nats://127.0.0.1:4222/a/path", "expected nats://HOST:PORT"),
    ("mqtt", "mqtt://127.0.0.1:notaport", "the port is not 0-65535"),
    ("amqp", "amqp://127.0.0.1:5672/?heartbeat=x", "no query"),
    ("postgresql", "postgresql://127.0.0.1:5432", "no database"),
])
def test_a_wrong_url_is_one_clear_error(medium: str, url: str, says: str,
                                       make_project: ProjectMaker) -> None:
    """Malformed in [node] listen: a usage error (exit 2) before anything connects, from
    ``run --check`` too, with the form to write (the medium's ``check_address``)."""
    root = make_project("bad", MEDIA[medium], url=url)
    for args in (("run", "--check"), ("run",)):
        done = run_cli(*args, cwd=root, timeout=30)
        out = done.stdout + done.stderr
        assert done.returncode == 2 and "Traceback" not in out, out
        assert done.stderr.startswith("error: [node] listen: bad address"), out
        assert says in out and "\nfix: in [node] listen of p2phost.toml, write the address " \
            f"as {medium}" in out, out
        assert "loaded " not in done.stdout, out


@pytest.mark.services
def test_an_upper_case_scheme_is_served_and_its_inbox_found(
        make_project: ProjectMaker) -> None:
    """``REDIS://...`` in [node] listen: doctor finds it served, so ``run --check`` takes
    it too (it said "expected redis://HOST:PORT"), and ``inbox`` finds the inbox there (it
    said "this node has no inbox"), given either case."""
    MEDIA["redis"].require()
    url = MEDIA["redis"].url.replace("redis://", "REDIS://")
    root = make_project("upper", MEDIA["redis"], url=url)
    done = run_cli("run", "--check", cwd=root, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    for medium in (url, MEDIA["redis"].url):
        done = run_cli("inbox", "stats", medium, "--json", cwd=root, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        [row] = json.loads(done.stdout)
        assert row["medium"].startswith("redis://127.0.0.1:6379"), row


@pytest.mark.services
def test_addresses_without_a_peer_or_with_a_bad_one(make_project: ProjectMaker) -> None:
    MEDIA["redis"].require()
    root = make_project("client", MEDIA["redis"])
    url = MEDIA["redis"].url
    assert "it names no peer" in fails_clearly(root, "send", url, "note", "{}")
    assert "is not a peer id" in fails_clearly(root, "send", f"{url}#nobody", "note", "{}")
    unknown = f"{url}#{'a' * 52}"
    out = fails_clearly(root, "ping", unknown, "--count", "1")
    assert "not a peer id" in out or "no node with that peer id" in out


@pytest.mark.services
# (The Redis, NATS and Mosquitto here take anyone: they have no credentials to refuse.)
@pytest.mark.parametrize(("medium", "url"), [
    ("amqp", "amqp://guest:wrong@127.0.0.1:5672/"),
    ("postgresql", "postgresql://no_such_role@127.0.0.1:5432/test"),
])
def test_refused_credentials_fail_at_once(medium: str, url: str,
                                          make_project: ProjectMaker) -> None:
    MEDIA[medium].require()
    root = make_project("refused", MEDIA[medium], url=url, transport={"connect-timeout": 20.0})
    started = time.monotonic()
    out = fails_clearly(root, "run")
    assert "refused" in out and "wrong" not in out, out  # never echo the password
    assert time.monotonic() - started < 15, "refused credentials are not worth retrying"


@pytest.mark.parametrize("medium", BROKERS)
def test_a_broker_down_at_start_is_retried_then_a_clear_error(
    medium: str, make_project: ProjectMaker
) -> None:
    over = MEDIA[medium]
    assert over.service is not None
    url = with_port(over.url, free_port())  # nothing listens there
    root = make_project("down", over, url=url, transport={"connect-timeout": 1.5})
    started = time.monotonic()
    out = fails_clearly(root, "run")
    assert "retried for 1.5s" in out and "cannot reach" in out, out
    assert time.monotonic() - started < 20


@pytest.mark.services
def test_a_broker_that_comes_up_while_retrying_is_used(
    make_project: ProjectMaker, proxy_to: ProxyMaker
) -> None:
    over = MEDIA["redis"]
    over.require()
    port = free_port()
    root = make_project("late", over, url=with_port(over.url, port),
                        transport={"connect-timeout": 20.0})
    # The broker appears (through a proxy on that port) once the node says it is retrying:
    # a fixed delay raced a slow start on a loaded machine.
    def when_retrying() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                "cannot reach" in log.read_text() for log in root.glob("stderr-*.log")):
            time.sleep(0.05)
        proxy_to(6379, port=port)

    late = threading.Thread(target=when_retrying)
    late.start()
    try:
        node = RunningNode(root)
    finally:
        late.join()
    try:
        assert node.address.endswith(node.peer_id)
        assert "cannot reach" in node.stderr and "retrying" in node.stderr
    finally:
        node.stop()


@pytest.mark.services
def test_a_message_larger_than_the_broker_allows_is_refused_before_sending(
    make_node: NodeMaker
) -> None:
    over = MEDIA["nats"]  # NATS allows 1 MiB per message by default
    over.require()
    bob = make_node("bob", over)
    alice = make_node("alice", over, connect=[bob.address])
    alice.wait_connected([bob.peer_id])
    code, _, err = alice.cli("send", alice.address, "burst", json.dumps(
        {"to": bob.peer_id, "count": 1, "pad": 1_500_000}), "--request")
    assert code != 0 and "Traceback" not in err
    assert "FrameTooLarge" in err and "the message size limit of the medium" in err, err
    # Nothing was sent, and the connection still works.
    assert alice.request(alice.address, "burst", {"to": bob.peer_id, "count": 3}) == 3
    assert bob.ledger.wait(alice.peer_id, 3, 10) == [{"n": n} for n in range(3)]


async def _inject(medium: str, peer_id: str) -> None:
    """Put junk on ``peer_id``'s inbox with the broker's own client, as a stranger would."""
    junk = b"not a p2phost record"
    if medium == "redis":
        import redis.asyncio as aioredis

        async with aioredis.Redis() as client:
            await client.xadd(f"p2phost:inbox:{peer_id}", {"r": junk})
            await client.xadd(f"p2phost:inbox:{peer_id}", {"other": b"field"})
    elif medium in ("nats", "nats-jetstream"):
        import nats

        client = await nats.connect("nats://127.0.0.1:4222")
        if medium == "nats":
            await client.publish(f"p2phost.inbox.{peer_id}", junk)
        else:
            await client.jetstream().publish(f"p2phost.inbox.{peer_id}", junk)
        await client.flush()
        await client.close()
    elif medium == "mqtt":
        import aiomqtt

        async with aiomqtt.Client("127.0.0.1", 1883) as client:
            await client.publish(f"p2phost/inbox/{peer_id}", junk, qos=1)
    elif medium == "amqp":
        import aio_pika

        connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(aio_pika.Message(junk),
                                                   routing_key=f"p2phost.inbox.{peer_id}")
    else:
        import psycopg

        async with await psycopg.AsyncConnection.connect(MEDIA["postgresql"].url,
                                                         autocommit=True) as connection:
            await connection.execute("INSERT INTO p2phost_inbox_records (inbox, body) "
                                     "VALUES (%s, %s)", (peer_id, junk))


@pytest.mark.services
@pytest.mark.parametrize("medium", ["nats", *DURABLE])
def test_foreign_messages_on_an_inbox_are_ignored_and_logged(
    medium: str, make_node: NodeMaker
) -> None:
    over = MEDIA[medium]
    over.require()
    bob = make_node("bob", over)
    asyncio.run(_inject(medium, bob.peer_id))
    _wait_log(bob, "foreign message")
    code, out, err = bob.cli("ping", bob.address, "--count", "2", "--interval", "0")
    assert code == 0, out + err
    if medium == "redis":  # taken off the inbox, not left pending forever
        import redis

        with redis.Redis() as client:
            assert client.xlen(f"p2phost:inbox:{bob.peer_id}") == 0


def _wait_log(node: Node, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in node.process.stderr:
        assert time.monotonic() < deadline, node.process.stderr
        time.sleep(0.05)


@pytest.mark.services
def test_a_postgres_row_larger_than_the_node_reads_is_refused_unread(
    make_node: NodeMaker
) -> None:
    import psycopg

    over = MEDIA["postgresql"]
    over.require()
    bob = make_node("bob", over)  # max-frame-size: the default 16 MiB
    code, out, err = bob.cli("ping", bob.address, "--count", "1", "--interval", "0")
    assert code == 0, out + err
    before = rss(bob.process.process.pid, "VmHWM")
    size = 96 * 1024 * 1024
    with psycopg.connect(over.url, autocommit=True) as connection:
        # Made on the server (and compressed there): anyone who may insert rows can.
        connection.execute("INSERT INTO p2phost_inbox_records (inbox, body) "
                           "SELECT %s, convert_to(repeat('x', %s), 'UTF8')",
                           (bob.peer_id, size))
        deadline = time.monotonic() + 30
        while connection.execute("SELECT count(*) FROM p2phost_inbox_records WHERE inbox "
                                 "= %s", (bob.peer_id,)).fetchall() != [(0,)]:
            assert time.monotonic() < deadline, "the row is deleted, not left on the inbox"
            time.sleep(0.1)
    grown = rss(bob.process.process.pid, "VmHWM") - before
    print(f"a 96 MiB row: bob's peak memory grew by {grown / 2**20:.1f} MiB")
    # Fetched, it cost its size at least once (it was then dropped as foreign).
    assert grown < 16 * 2**20, f"bob's peak memory grew by {grown / 2**20:.0f} MiB"
    _wait_log(bob, "refused a record of 100663296 bytes")
    assert "fix: raise max-frame-size" in bob.process.stderr
    code, out, err = bob.cli("ping", bob.address, "--count", "1", "--interval", "0")
    assert code == 0, out + err
