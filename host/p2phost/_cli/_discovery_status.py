"""Discovery plugins as ``p2phost peers`` and ``p2phost doctor`` show them: up or down (with
the fix), and the counters of records accepted and rejected (docs/discovery.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: One line per plugin: (healthy, text, fix or None).
StatusLine = tuple[bool, str, str | None]
#: The fix for dials the peer reached but whose handshake was refused (docs/security.md).
REFUSED_FIX = ("on the refusing node, `p2phost trust add PEER-ID` with this node's id (or "
               "its [trust] policy); if this node refuses them, the same here")


def discovery_lines(answer: Mapping[str, Any]) -> list[StatusLine]:
    """What a running node's ``peers`` answer says about its discovery plugins."""
    status = answer.get("discovery") or {}
    lines: list[StatusLine] = []
    for plugin in status.get("plugins", []):
        counters = plugin.get("counters") or {}
        shown = ", ".join(f"{k} {v}" for k, v in counters.items() if v) or "no records yet"
        name = plugin.get("name", "?")
        if plugin.get("state") == "down":
            lines.append((False, f"discovery {name} is down (tried {plugin.get('attempts')} "
                                 f"times, retrying): {plugin.get('error')}",
                          plugin.get("fix") or None))
        else:
            lines.append((True, f"discovery {name} is {plugin.get('state')}: {shown}", None))
    dialling = dict(status.get("dialling") or {})
    reason = dialling.pop("refused_reason", "")
    fix = dialling.pop("refused_fix", "")
    if dialling:
        lines.append((True, "dialling: " + ", ".join(f"{k} {v}" for k, v in dialling.items()),
                      None))
    if dialling.get("refused") and reason:  # reached, but the handshake was refused
        # A refusal at the peer's limits carries its own fix (the node's answer gives it
        # apart, and its error ends with it); the trust policy's is ours.
        if fix:
            reason = reason.removesuffix(f"; fix: {fix}")
        lines.append((False, f"peers refused this node {dialling['refused']} times, the "
                             f"last: {reason}", fix or REFUSED_FIX))
    return lines


def running_discovery(project: Any) -> list[StatusLine]:
    """The discovery lines of the project's running node (none when it is not running)."""
    from .._runtime import NodeNotRunning, query_control  # only when doctor gets this far

    try:
        answer = query_control(project.control_socket, "peers", 2.0)
    except NodeNotRunning:
        return []
    return discovery_lines(answer)
