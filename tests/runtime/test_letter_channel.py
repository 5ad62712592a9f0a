"""A letter channel (a peer reached through its inbox, no connection) stands in for a
channel wherever the dispatcher hands one on: every public field a channel has, a
letter channel has too, but the connection and the hello it has none of."""

from __future__ import annotations

from types import SimpleNamespace

from p2phost._runtime.node._letters import LetterChannel
from p2phost._runtime.wire._channel import Channel

#: What a letter has none of (code that reads them knows it holds a connection's channel).
CONNECTION_ONLY = {"connection", "hello"}


def _public_fields(cls: type) -> set[str]:
    return {name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())
            if not name.startswith("_")}


def test_a_letter_channel_has_every_public_field_of_a_channel() -> None:
    # The reply path's new look at `usable` met a letter channel without it, and the
    # answer to a request stored in an inbox was lost (AttributeError in the mailbox).
    codec = SimpleNamespace(content_type="application/json")
    channel = LetterChannel(SimpleNamespace(frame_limit=65536),  # type: ignore[arg-type]
                            peer_id="p" * 52, address="redis://127.0.0.1:6379/0#" + "p" * 52,
                            codec=codec, reply_inbox=None,  # type: ignore[arg-type]
                            answering=False)
    missing = {name for name in _public_fields(Channel) - CONNECTION_ONLY
               if not hasattr(channel, name)}
    assert not missing, f"LetterChannel does not set {sorted(missing)}"
    assert channel.usable and not channel.ended and not channel.closing
    assert channel.content_type == "application/json" and not channel.reads_raw
