"""A test app: a request on ``forward`` is asked on to the echo of the node at ``to``."""

from __future__ import annotations

from typing import Any

from p2phost_sdk import App, Message, handler, hookimpl


class Forwarder(App):
    name = "forwarder"

    def __init__(self, to: str) -> None:
        self.to = to

    @handler("forward")
    async def forward(self, message: Message) -> Any:
        return await self.node.request(self.to, "echo", message.body, timeout=20)


@hookimpl
def p2phost_apps(context: Any) -> list[App]:
    return [Forwarder(str(context.config["to"]))]
