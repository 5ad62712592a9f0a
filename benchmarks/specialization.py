"""Objects on the message path with an instance dict, and attribute reads left generic.

On CPython 3.11 an object's attributes live inline (a values array sharing its keys with
the class) until something builds its instance dict: reading ``vars(obj)`` or
``obj.__dict__``, a ``__class__`` swap, or more attributes than the class's shared keys
hold (30). From then on each attribute read on it takes a slower path
(``LOAD_ATTR_WITH_HINT``, or the generic lookup when the dict still shares its keys):
docs/performance.md, "What is left", tenth session. This script runs two nodes in one
process (``messaging.py``'s node and client, tcp-transport and msgpack-codec), sends
messages, and prints:

* while a request is being handled (its message, futures and tasks alive on both sides):
  per class, the objects whose instance dict has been built, with their attribute count
  (the objects' memory is read for the dict pointer: reading ``__dict__`` here would
  build it);
* for each function called at least once per round trip: its attribute instructions
  that were run and failed to specialize (the adaptive counter backed off), as
  ``name(failures)``. A miss here is not always a dict: a C type's method (a future's
  ``done``), an instance attribute shadowing a method, a namedtuple's field.

``--ops`` lists every adaptive instruction that failed, not only attribute reads (calls,
arithmetic, comparisons, subscripts, globals, unpacking), for the functions called at
least once per one-way message (sender and receiver, in this one process) and then per
round trip. A ``PRECALL``/``CALL`` miss is a call the interpreter makes the generic way
(keyword arguments, ``*args``, a C method through a non-specializable object, a class
call); a ``BINARY_OP``/``COMPARE_OP`` miss, operands of mixed or non-builtin types.

``python benchmarks/specialization.py [--noise] [--loop uvloop] [--ops]``: a few seconds.
CPython 3.11 only (the object layout and the adaptive counters are its own).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import dis
import functools
import gc
import sys
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import messaging as m

_MANAGED_DICT = 1 << 4  # Py_TPFLAGS_MANAGED_DICT (3.11)
_HEAPTYPE = 1 << 9
_WORD = ctypes.sizeof(ctypes.c_void_p)
_ATTRIBUTE_OPS = ("LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR")
#: The modules whose classes the census lists (the rest: import-time objects of the
#: standard library, typing's aliases, enum's own flags).
_LISTED = ("p2phost", "asyncio", "uvloop", "selectors", "socket", "msgpack", "messaging")


def has_dict(obj: object) -> bool:
    """Whether ``obj``'s instance dict has been built (3.11: the dict pointer sits three
    words before the object, ahead of its garbage-collector header)."""
    kind = type(obj)
    if kind.__flags__ & _MANAGED_DICT:
        return bool(ctypes.c_void_p.from_address(id(obj) - 3 * _WORD).value)
    if kind.__dictoffset__ > 0:
        return bool(ctypes.c_void_p.from_address(id(obj) + kind.__dictoffset__).value)
    return False


def dicts_built() -> collections.Counter[tuple[str, int]]:
    """Objects of Python classes (not classes, modules or functions) with a built dict:
    per class and attribute count, how many."""
    found: collections.Counter[tuple[str, int]] = collections.Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        if (kind.__flags__ & _HEAPTYPE and not isinstance(obj, type | types.ModuleType)
                and kind.__module__.startswith(_LISTED) and has_dict(obj)):
            found[f"{kind.__module__}.{kind.__qualname__}", len(vars(obj))] += 1
    return found


def failed_attributes(code: types.CodeType, every: bool = False) -> dict[str, int]:
    """The attribute instructions of ``code`` (``every``: all its adaptive instructions)
    that ran and failed to specialize: per name, the backoff exponent of the adaptive
    counter (0: never ran). Every 3.11 inline cache starts with that counter."""
    raw = code._co_code_adaptive  # type: ignore[attr-defined]
    failed = {}
    for instruction in dis.get_instructions(code, adaptive=True):
        name = instruction.opname
        if name.endswith("_ADAPTIVE") and (every or name.startswith(_ATTRIBUTE_OPS)):
            counter = int.from_bytes(raw[instruction.offset + 2:instruction.offset + 4],
                                     "little")
            if counter & 15:
                line = f"@{instruction.positions.lineno}" if every and instruction.positions \
                    else ""
                failed[f"{name.removesuffix('_ADAPTIVE')} {instruction.argrepr}{line}"] = \
                    counter & 15
    return failed


def report(calls: collections.Counter[types.CodeType], rounds: int, every: bool) -> None:
    """Per function called at least once a round: its failed instructions."""
    for code, count in calls.most_common():
        failed = failed_attributes(code, every) \
            if count >= rounds and code.co_filename != __file__ else {}
        if failed:
            where = "/".join(Path(code.co_filename).parts[-2:])
            print(f"  {count // rounds} {where}:{code.co_firstlineno} {code.co_qualname}: "
                  + ", ".join(f"{name}({backoff})" for name, backoff in failed.items()))


async def main(secure: bool, every: bool) -> None:
    seen: collections.Counter[tuple[str, int]] = collections.Counter()

    async def census() -> bytes:
        seen.update(dicts_built())
        return b"done"

    port = m.free_port()
    server = m.bench_node(port, secure, {b"census": census})
    await server.start()
    client = await m.P2PClient.open(port, secure)
    await m.one_way(client, 64, 500)
    await m.round_trips(client, 200)
    await client.request(b"census")
    print("instance dicts built, while a request is handled (class, attributes: objects)")
    for (name, attributes), count in sorted(seen.items()):
        print(f"  {name}, {attributes}: {count}")
    calls: collections.Counter[types.CodeType] = collections.Counter()

    def profile(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "call":
            calls[frame.f_code] += 1

    rounds = 100
    what = "instructions" if every else "attribute instructions"
    if every:
        sys.setprofile(profile)
        await m.one_way(client, 64, rounds)
        sys.setprofile(None)
        print(f"{what} that failed to specialize (calls per one-way message: "
              "instruction@line backoff)")
        report(calls, rounds, every)
        calls.clear()
    sys.setprofile(profile)
    await m.round_trips(client, rounds)
    sys.setprofile(None)
    print(f"{what} that failed to specialize (calls per round trip: instruction backoff)")
    report(calls, rounds, every)
    await client.close()
    await server.close()


if __name__ == "__main__":
    if sys.version_info[:2] != (3, 11):
        raise SystemExit("CPython 3.11 only: the object layout and counters read are its own")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--noise", action="store_true", help="noise-security on both nodes")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--ops", action="store_true",
                        help="every failed instruction (calls, arithmetic, comparisons), "
                             "one-way then round trip")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=functools.partial(m.new_loop, args.loop)) as runner:
        runner.run(main(args.noise, args.ops))
