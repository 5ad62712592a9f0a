"""Echo app for p2phost: answers requests on topic ``echo`` with their body."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from p2phost_sdk import App, Message, PluginContext, handler, hookimpl

__all__ = ["ECHO_TOPIC", "EchoApp", "p2phost_apps"]

#: The topic ``p2phost ping`` sends its requests on.
ECHO_TOPIC = "echo"


class EchoApp(App):
    """Replies with the body it was sent."""

    name = "echo"

    @handler(ECHO_TOPIC)
    async def echo(self, message: Message) -> Any:
        """The request's own body."""
        return message.body


@hookimpl
def p2phost_apps(context: PluginContext) -> Sequence[App]:
    """The echo app."""
    return [EchoApp()]
