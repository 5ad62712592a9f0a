"""The ``schemas`` field of the hello: the JSON Schema of each topic whose handler has a
model (``handler(model=...)``), so a peer can describe this node (``p2phost describe``).

A hello is at most ``MAX_HELLO`` bytes: schemas share a budget of half of it, and a topic
whose schema no longer fits is listed in ``schemas_omitted`` instead (docs/wire.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from p2phost_sdk import contract_of_handler

from ..messaging._routes import Route
from ..wire._handshake import MAX_HELLO

log = logging.getLogger("p2phost.node")
#: Bytes of JSON all schemas in one hello may take.
SCHEMA_BUDGET = MAX_HELLO // 2


def hello_schemas(routes: Mapping[str, Route]) -> dict[str, Any]:
    """The hello's ``schemas`` (and ``schemas_omitted``) fields; empty without models."""
    schemas: dict[str, Any] = {}
    omitted: list[str] = []
    used = 0
    for topic in sorted(routes):
        contract = contract_of_handler(routes[topic].handler)
        if contract is None:
            continue
        try:
            schema = contract.schema()
        except Exception as exc:  # a model msgspec or pydantic cannot draw: say so, run on
            log.warning("topic %r: no JSON Schema for model %s: %s", topic, contract.name, exc)
            omitted.append(topic)
            continue
        size = len(json.dumps(schema, separators=(",", ":")))
        if used + size > SCHEMA_BUDGET:
            omitted.append(topic)
            continue
        used += size
        schemas[topic] = schema
    if omitted:
        log.warning("the JSON Schemas of %s do not fit in the hello (%d bytes at most): "
                    "peers see those topics without them", ", ".join(omitted), SCHEMA_BUDGET)
    answer: dict[str, Any] = {}
    if schemas:
        answer["schemas"] = schemas
    if omitted:
        answer["schemas_omitted"] = omitted
    return answer
