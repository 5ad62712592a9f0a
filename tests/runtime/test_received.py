"""A received message formats its id only when asked, and is a Message in every other way."""

from __future__ import annotations

import copy
import dataclasses
import pickle

from p2phost._runtime.messaging._received import Received, number_of
from p2phost_sdk import Message, MessageKind


def _received() -> Received:
    return Received(0xABC, MessageKind.REQUEST, "peer", "topic", b"body", None, "ct")


def test_the_id_is_the_frames_number_as_16_hex_digits() -> None:
    message = _received()
    assert isinstance(message, Message)
    assert message.id == "0000000000000abc" and message.id == "0000000000000abc"
    message.id = "mine"
    assert message.id == "mine"
    assert Received("given", MessageKind.MESSAGE, "p", "t", None).id == "given"


def test_it_shows_compares_copies_and_pickles_as_a_message() -> None:
    message = _received()
    assert repr(message).startswith("Message(id='0000000000000abc', kind=")
    assert message == _received() and hash(message) == hash(_received())
    changed = dataclasses.replace(message, body=b"other")
    assert (changed.id, changed.body) == ("0000000000000abc", b"other")
    for twin in (copy.copy(message), pickle.loads(pickle.dumps(message))):
        assert type(twin) is Message
        assert dataclasses.astuple(twin) == dataclasses.astuple(message)


def test_number_of_reads_the_frames_number_without_the_hex_string() -> None:
    message = _received()
    assert number_of(message) == 0xABC
    message.id = "00000000000000ff"  # an id set later is the one that counts
    assert number_of(message) == 0xFF
    plain = Message("0000000000000010", MessageKind.MESSAGE, "p", "t", None)
    assert number_of(plain) == 0x10


def test_the_hot_receive_path_sets_every_field_of_message_and_work() -> None:
    # Dispatcher.received builds both without their __init__, field by field: a field
    # added to either must be set there too (else reading it raises AttributeError).
    import inspect

    from p2phost._runtime.messaging._dispatch import Dispatcher
    from p2phost._runtime.messaging._routes import Work

    source = inspect.getsource(Dispatcher.received)
    for name in (f.name for f in dataclasses.fields(Message) if f.name != "id"):
        assert f"message.{name} = " in source, name
    for name in (f.name for f in dataclasses.fields(Work)):
        assert f"item.{name} = " in source, name
