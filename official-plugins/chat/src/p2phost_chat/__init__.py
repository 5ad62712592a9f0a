"""Chat app for p2phost: messages on topic ``chat`` are printed by the receiving node."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from p2phost_sdk import App, Message, PluginContext, handler, hookimpl

__all__ = ["CHAT_TOPIC", "ChatApp", "p2phost_apps"]

CHAT_TOPIC = "chat"


class ChatApp(App):
    """Prints ``[chat] SENDER: TEXT`` for every chat message it receives."""

    name = "chat"

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out

    @handler(CHAT_TOPIC)
    async def chat(self, message: Message) -> Any:
        """Print the message; a body without a string ``text`` is refused."""
        body = message.body
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise ValueError('a chat message is an object like {"text": "hi"}')
        sender = body.get("from")
        if not isinstance(sender, str) or not sender:
            sender = message.sender[:12]
        text = body["text"].replace("\n", " ")
        print(f"[chat] {sender}: {text}", file=self.out or sys.stdout, flush=True)
        return {"ok": True}


@hookimpl
def p2phost_apps(context: PluginContext) -> Sequence[App]:
    """The chat app."""
    return [ChatApp()]
