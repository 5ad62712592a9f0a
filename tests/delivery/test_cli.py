"""``p2phost dead ...`` and ``p2phost peers --stats`` on a real project, node running or not."""

from __future__ import annotations

import pytest

from tests.delivery.conftest import DELIVERY_MEDIA, ProjectMaker

TCP = DELIVERY_MEDIA["tcp"]


def test_dead_letters_with_the_node_stopped_and_running(delivery_project: ProjectMaker
                                                        ) -> None:
    node = delivery_project("node", TCP)
    code, out, _ = node.cli("dead", "list")
    assert (code, out.strip()) == (0, "no dead letters")

    node.start()
    for n in (1, 2):
        code, _, err = node.cli("send", node.node.address, "doomed", f'{{"n": {n}}}')
        assert code == 0 and "(acknowledged)" in err, err
    node.wait_until("two dead letters", lambda: len(node.cli_json("dead", "list")) == 2, 30)

    code, out, _ = node.cli("peers", "--stats")
    assert code == 0
    row = next(line.split() for line in out.splitlines() if line.startswith("doomed"))
    assert row[:2] == ["doomed", "at-least-once"]
    assert "acknowledgements for unknown messages (ignored): 0" in out
    assert node.node.stop() == 0

    # Stopped: the store is read and changed directly.
    code, out, err = node.cli("dead", "list", "--topic", "doomed")
    assert code == 0 and "2 shown, 2 kept of at most 10000" in out, out + err
    assert out.count("the handler failed all 6 attempts") == 2
    first, second = (d["id"] for d in node.cli_json("dead", "list"))
    code, out, _ = node.cli("dead", "show", str(first))
    assert code == 0 and "RuntimeError: doomed until the fix is in" in out and "traceback:" in out
    code, out, _ = node.cli("dead", "retry", str(first))
    assert code == 0 and "1 dead letters go back to their handlers when the node runs" in out
    code, out, _ = node.cli("dead", "purge", str(second))
    assert (code, out.strip()) == (0, "purged 1 dead letters")
    assert node.cli_json("dead", "list") == []

    # The fix, and the next run takes the retried message from its delayed queue.
    (node.root / "fixed").touch()
    node.start()
    node.wait_until("the retried message handled",
                    lambda: list(node.state("doomed/").values()) == [{"n": 1}], 30)


@pytest.mark.parametrize(("args", "message"), [
    (("dead", "retry"), "say which dead letters to retry: their ids, or --all"),
    (("dead", "purge", "1", "--all"), "give dead letter ids or --all to purge, not both"),
    (("dead", "show", "7"), "there is no dead letter #7"),
    (("dead", "retry", "3", "4"), "there is no dead letter #3, #4"),
])
def test_cli_mistakes_are_one_clear_message(delivery_project: ProjectMaker,
                                            args: tuple[str, ...], message: str) -> None:
    node = delivery_project("node", TCP)
    code, out, err = node.cli(*args)
    assert code == 2, out + err
    assert err.startswith(f"error: {message}") and "fix: " in err and "Traceback" not in err


def test_peers_stats_needs_a_running_node(delivery_project: ProjectMaker) -> None:
    code, _, err = delivery_project("node", TCP).cli("peers", "--stats")
    assert code == 2 and "no node of this project is running" in err


def test_dead_show_of_an_outgoing_letter_spaces_its_peer(delivery_project: ProjectMaker
                                                         ) -> None:
    from p2phost._runtime.delivery._deadletter import DeadLetter, DeadLetters
    from p2phost._runtime.delivery._store import open_database

    node = delivery_project("node", TCP)
    db = open_database(node.root / ".p2phost" / "delivery.db")
    DeadLetters(db).add(db, DeadLetter(0, "out", "PEERID", 1, "kept", "application/json",
                                       b"{}", 6, "not acknowledged", "", "", 1.0, 2.0))
    db.close()
    code, out, err = node.cli("dead", "show", "1")
    assert code == 0, err
    assert "could not be sent to: PEERID" in out, out


def test_dead_list_on_a_malformed_database_says_to_move_it_aside(
        delivery_project: ProjectMaker) -> None:
    from tests.delivery.test_damaged_state import grown_database, malformed

    node = delivery_project("node", TCP)
    path = node.root / ".p2phost" / "delivery.db"
    path.parent.mkdir(exist_ok=True)
    grown_database(path)
    malformed(path)
    code, out, err = node.cli("dead", "list")
    assert code == 2, out + err
    assert "malformed" in err and f"fix: stop the node and move {path}" in err, err
    assert "try again" not in err and "Traceback" not in err


def test_doctor_reports_the_damaged_database_run_refuses(delivery_project: ProjectMaker
                                                         ) -> None:
    from tests.delivery.test_damaged_state import grown_database, malformed

    node = delivery_project("node", TCP)
    path = node.root / ".p2phost" / "delivery.db"
    path.parent.mkdir(exist_ok=True)
    grown_database(path)
    malformed(path)
    code, out, err = node.cli("doctor")
    assert code == 1, out + err
    assert f"FAIL the delivery database {path} is damaged" in out, out
    assert f"fix: stop the node and move {path}" in out
