"""A notebook-style script on the blocking API: no async, no event loop to manage.

    python examples/notebook_script.py PROJECT_DIR PEER_ADDRESS

PROJECT_DIR is a p2phost project (``p2phost init`` + ``p2phost plugin install --yes``);
PEER_ADDRESS a node that runs the echo app (``p2phost run`` in another project prints it).
Each step below could be a cell of its own: the node keeps running between cells, on its
own loop in a background thread, even in Jupyter, whose loop is already running.
"""

from __future__ import annotations

import statistics
import sys
import time

import p2phost

project, address = sys.argv[1], sys.argv[2]

# Cell 1: open the project's node (as `p2phost run` would, with this script's handlers).
node = p2phost.connect(project)


@node.handler("greet")
def greet(message: p2phost.Message) -> str:  # a plain function: runs in a worker thread
    return f"hello, {message.body['name']}"


node.open()
print("my peer id:", node.peer_id)

# Cell 2: reach a peer and ask it something.
peer = node.connect(address)
print("reply:", node.request(peer, "echo", {"text": "hi"}))

# Cell 3: time a few round trips.
times = []
for i in range(20):
    started = time.perf_counter()
    node.request(peer, "echo", {"seq": i})
    times.append((time.perf_counter() - started) * 1000)
print(f"round trip: median {statistics.median(times):.2f} ms over {len(times)}")

# Cell 4: done (drains what is in flight, like `p2phost run` on Ctrl-C).
node.close()
