"""A script with a p2phost node (the blocking API): send, request, publish and acknowledged
sends to the server at ADDR; prints what the server reports having got, as JSON.

    python blocking_client.py STATE_DIR ADDR PLUGIN...
"""

from __future__ import annotations

import json
import sys
import time

import p2phost


def main(state_dir: str, address: str, plugins: list[str]) -> None:
    manifest = {"node": {"name": "client"}, "plugins": {p: "*" for p in plugins}}
    with p2phost.connect(manifest=manifest, state_dir=state_dir) as node:
        peer = node.connect(address)
        assert node.request(peer, "echo", {"n": 1}) == {"n": 1}
        node.send(peer, "note", "a note")
        published = node.publish("news", "some news")
        for n in range(3):
            node.send(peer, "jobs", n, key=f"job-{n}")
        deadline = time.monotonic() + 20
        while True:
            seen = node.request(peer, "report", None)
            if len(seen["jobs"]) == 3 and seen["note"] and seen["news"]:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        print(json.dumps({"published": published, "seen": seen, "peer": peer}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
