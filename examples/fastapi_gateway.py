"""A FastAPI service that turns HTTP requests into p2phost requests.

    P2PHOST_PROJECT=path/to/project P2PHOST_PEER=tcp://127.0.0.1:7400 \\
        uvicorn examples.fastapi_gateway:app

``POST /ask/TOPIC`` with a JSON body asks the peer's TOPIC handler and answers with its
reply. The node opens with the application (FastAPI's lifespan) and drains when it stops.
A handler's failure is a 502 naming it, an unreachable peer a 503, no reply a 504.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Body, FastAPI, HTTPException

import p2phost

PEER = os.environ.get("P2PHOST_PEER", "tcp://127.0.0.1:7400")
node = p2phost.open_node(os.environ.get("P2PHOST_PROJECT", "."))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with node:
        yield


app = FastAPI(title="p2phost gateway", lifespan=lifespan)


@app.post("/ask/{topic}")
async def ask(topic: str, body: Any = Body(None)) -> Any:
    """The reply of the peer's ``topic`` handler to ``body``."""
    try:
        return await node.request(PEER, topic, body, timeout=5.0)
    except p2phost.RemoteError as exc:
        raise HTTPException(502, exc.remote_message) from exc
    except p2phost.PeerUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc
    except p2phost.RequestTimeout as exc:
        raise HTTPException(504, str(exc)) from exc


@app.get("/node")
async def about() -> dict[str, Any]:
    """This gateway's node: its peer id, addresses and connected peers."""
    return {"peer_id": node.peer_id, "addresses": node.addresses,
            "peers": [p.peer_id for p in node.peers()]}
