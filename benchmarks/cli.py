"""The command line's own cost: start-up, and installing from a warm cache, beside pip and uv.

    python benchmarks/cli.py [--runs 10]

In one run, on this machine, medians of RUNS runs each:

- start-up: ``p2phost --version``, ``p2phost --help`` and ``p2phost run --check`` (a project
  with the 5 plugins ``p2phost init`` declares) beside ``python -c pass``, ``pip --version``
  and ``uv --version``;
- install from a warm cache: ``p2phost plugin install --yes`` of those 5 plugins in a fresh
  project beside ``pip install --no-deps --target`` and ``uv pip install --no-deps --target``
  of the same 5 wheels from the same local registry (its simple index), each tool's cache
  filled by an untimed first run;
- a no-op install: the same command again where everything is installed already.

The registry says its answers stay fresh for 10 s (``Cache-Control: max-age=10``).
``--refresh`` makes a tool revalidate every kept answer (5 conditional GETs answered 304,
the wheels still from its cache): what both tools do for a user who installs a minute
after the last time, and each such run makes the kept answers fresh again. Runs are a
second apart, so the plain runs of both tools answer from their caches without asking the
registry. Both paths of both tools are printed, and the ratios of like to like.

A plain ``p2phost plugin install --yes`` whose answers are fresh replays what the full
installer recorded the last time it installed that manifest (``p2phost._replay``: the
untimed first run records it), and so does ``--refresh`` once each of its conditional
requests is answered 304; ``P2PHOST_REPLAY=0`` runs the full installer instead, printed as
its own row.

``--instructions`` also counts, once each under ``valgrind --tool=callgrind`` (which the
load does not change), the instructions of ``python -c pass``, of the plain installs of both
tools right after a ``--refresh`` (their answers fresh), of both with ``--refresh``, of
p2phost's full installer with ``--refresh``, and of both no-ops.

Ratios are to ``python -c pass`` (start-up) and to uv (install). The aims (docs/cli.md):
``--version`` and ``--help`` within 100 ms; install within 2x uv's time.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PLUGINS = ("tcp-transport", "noise-security", "json-codec", "static-discovery", "echo")
#: Their distributions, as pip and uv ask the simple index for them.
DISTRIBUTIONS = tuple(f"p2phost-{name}" for name in PLUGINS)


def start_registry(data: Path) -> tuple[subprocess.Popen[str], str]:
    """Seed the 5 plugins into a store at ``data`` and serve it on a free port."""
    subprocess.run([sys.executable, "-m", "p2phost", "registry", "seed", "--data", str(data),
                    *(str(REPO / "official-plugins" / p) for p in PLUGINS)],
                   check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen([sys.executable, "-m", "p2phost", "registry", "serve", "--port",
                             "0", "--data", str(data)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line:
            return proc, line.split()[-1].rstrip("/")
    proc.kill()
    raise RuntimeError("the registry did not start")


#: CPU seconds (user + system) of each timed command, by name: steadier than wall time on a
#: loaded machine. Filled by ``timed``.
cpu: dict[str, list[float]] = {}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], cwd: Path, env: dict[str, str], name: str = "") -> float:
    """Seconds one command takes; it must succeed."""
    before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - started
    if name:
        cpu.setdefault(name, []).append(_children_cpu() - before)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions under callgrind (valgrind on PATH)")
    args = parser.parse_args()
    # Under PYTHONDONTWRITEBYTECODE=1 every start would recompile the sources: measure the
    # command, not the compiler.
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(REPO / d) for d in
                    ("host", "sdk", "registry"))], check=True, capture_output=True)
    base = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1",
            "UV_NO_CONFIG": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for key in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL"):
        base.pop(key, None)

    with tempfile.TemporaryDirectory(prefix="p2phost-bench-cli-") as tmp:
        root = Path(tmp)
        proc, url = start_registry(root / "data")
        try:
            startup, install = measure(root, url, base, args.runs)
            counts = instructions(root, url, base) if args.instructions else {}
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    baseline = statistics.median(startup["python -c pass"])
    print(f"start-up, median of {args.runs} runs (x: relative to python -c pass)")
    print(f"{'command':34} {'ms':>8} {'x':>7}")
    for name, times in startup.items():
        print(f"{name:34} {median_ms(times):8.1f} {statistics.median(times) / baseline:7.2f}")
    uv = statistics.median(install["uv pip install --target"])
    asks = statistics.median(install["uv pip install --target --refresh"])
    print(f"\ninstall of {len(PLUGINS)} plugins from a warm cache, median of {args.runs} runs "
          "(x uv: relative to uv pip install, from its cache while fresh; x asks: to uv "
          "--refresh, which revalidates with the registry)")
    print(f"{'tool':40} {'ms':>8} {'CPU ms':>8} {'x uv':>7} {'x asks':>7}")
    for name, times in install.items():
        middle = statistics.median(times)
        print(f"{name:40} {middle * 1000:8.1f} {statistics.median(cpu[name]) * 1000:8.1f} "
              f"{middle / uv:7.2f} {middle / asks:7.2f}")
    ours = statistics.median(install["p2phost plugin install --yes"])
    ours_asking = statistics.median(install["p2phost plugin install --yes --refresh"])
    print(f"like for like: from the caches {ours / uv:.2f}x uv, revalidating "
          f"(--refresh) {ours_asking / asks:.2f}x uv (aim: within 2x)")
    if counts:
        print("\ninstructions (callgrind, one run each; x uv: relative to uv pip install)")
        print(f"{'command':44} {'instructions':>14} {'x uv':>7}")
        for name, count in counts.items():
            print(f"{name:44} {count:14,} {count / counts['uv pip install --target']:7.2f}")


def measure(root: Path, url: str, base: dict[str, str], runs: int
            ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(start-up times, install times) per command, interleaved run by run."""
    env = {**base, "P2PHOST_REGISTRY": url, "P2PHOST_CACHE_DIR": str(root / "p2phost-cache")}
    project = root / "project"
    subprocess.run([str(BIN / "p2phost"), "init", str(project), "--listen",
                    "tcp://127.0.0.1:0"], check=True, capture_output=True, env=env)
    timed([str(BIN / "p2phost"), "plugin", "install", "--yes"], project, env)  # fills the cache
    startup_commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "pip --version": [sys.executable, "-m", "pip", "--version"],
        "uv --version": [str(BIN / "uv"), "--version"],
        "p2phost --version": [str(BIN / "p2phost"), "--version"],
        "p2phost --help": [str(BIN / "p2phost"), "--help"],
        "p2phost run --check (5 plugins)": [str(BIN / "p2phost"), "run", "--check"],
    }
    index = f"{url}/simple/"
    install_commands: dict[str, Callable[[Path], tuple[list[str], dict[str, str]]]] = {
        "p2phost plugin install --yes": lambda target: (
            [str(BIN / "p2phost"), "plugin", "install", "--yes"], env),
        "p2phost plugin install --yes --refresh": lambda target: (
            [str(BIN / "p2phost"), "plugin", "install", "--yes", "--refresh"], env),
        "p2phost ... --yes, P2PHOST_REPLAY=0": lambda target: (
            [str(BIN / "p2phost"), "plugin", "install", "--yes"], {**env, "P2PHOST_REPLAY": "0"}),
        "pip install --target": lambda target: (
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
             "--index-url", index, "--cache-dir", str(root / "pip-cache"), *DISTRIBUTIONS], base),
        "uv pip install --target": lambda target: (
            [str(BIN / "uv"), "pip", "install", "-q", "--no-deps", "--target", str(target),
             "--index-url", index, "--cache-dir", str(root / "uv-cache"), "--python",
             sys.executable, *DISTRIBUTIONS], base),
        "uv pip install --target --refresh": lambda target: (
            [str(BIN / "uv"), "pip", "install", "-q", "--no-deps", "--target", str(target),
             "--index-url", index, "--cache-dir", str(root / "uv-cache"), "--python",
             sys.executable, "--refresh", *DISTRIBUTIONS], base),
    }
    # The no-op: everything is installed already (p2phost: the project filled above).
    noop_target = root / "uv-noop"
    noop_commands = {
        "p2phost plugin install --yes (no-op)": (
            [str(BIN / "p2phost"), "plugin", "install", "--yes"], project, env),
        "uv pip install --target (no-op)": (
            install_commands["uv pip install --target"](noop_target)[0], root, base),
    }
    manifest = (project / "p2phost.toml").read_text()
    startup: dict[str, list[float]] = {}
    install: dict[str, list[float]] = {}
    timed(*noop_commands["uv pip install --target (no-op)"])  # fills the target
    for name, make in install_commands.items():  # fill each tool's cache, untimed
        fill = root / f"fill-{name.split()[0]}-{len(name)}"
        fill.mkdir()
        (fill / "p2phost.toml").write_text(manifest)
        command, tool_env = make(fill / "target")
        timed(command, fill, tool_env)
    for run in range(runs):
        for name, command in startup_commands.items():
            startup.setdefault(name, []).append(timed(command, project, env))
        for name, make in install_commands.items():
            work = root / f"{name.split()[0]}-{len(name)}-{run}"
            work.mkdir()
            (work / "p2phost.toml").write_text(manifest)
            command, tool_env = make(work / "target")
            install.setdefault(name, []).append(timed(command, work, tool_env, name))
        for name, (command, cwd, tool_env) in noop_commands.items():
            install.setdefault(name, []).append(timed(command, cwd, tool_env, name))
    return startup, install


def _callgrind(command: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Instructions ``command`` executes (all its threads), counted by callgrind."""
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           *command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed under callgrind:\n{done.stderr}")
    refs = [line for line in done.stderr.splitlines() if "refs:" in line]
    return int(refs[-1].split("refs:")[1].replace(",", "").strip())


def instructions(root: Path, url: str, base: dict[str, str]) -> dict[str, int]:
    """Instructions per command (see the module's docstring), in one fresh place each."""
    env = {**base, "P2PHOST_REGISTRY": url, "P2PHOST_CACHE_DIR": str(root / "p2phost-cache")}
    manifest = (root / "project" / "p2phost.toml").read_text()
    uv = [str(BIN / "uv"), "pip", "install", "-q", "--no-deps", "--index-url", f"{url}/simple/",
          "--cache-dir", str(root / "uv-cache"), "--python", sys.executable, *DISTRIBUTIONS]
    ours = [str(BIN / "p2phost"), "plugin", "install", "--yes"]
    places = iter(range(10**6))

    def place() -> Path:
        work = root / f"count-{next(places)}"
        work.mkdir()
        (work / "p2phost.toml").write_text(manifest)
        return work

    counts = {"python -c pass": _callgrind([sys.executable, "-c", "pass"], root, base)}
    # Each plain install right after a --refresh of its tool: its answers are fresh.
    timed([*uv[:3], "--target", str(place() / "t"), *uv[3:], "--refresh"], root, base)
    counts["uv pip install --target"] = _callgrind(
        [*uv[:3], "--target", str(place() / "t"), *uv[3:]], root, base)
    timed([*ours, "--refresh"], place(), env)
    counts["p2phost plugin install --yes"] = _callgrind(ours, place(), env)
    counts["uv pip install --target --refresh"] = _callgrind(
        [*uv[:3], "--target", str(place() / "t"), *uv[3:], "--refresh"], root, base)
    counts["p2phost plugin install --yes --refresh"] = _callgrind([*ours, "--refresh"],
                                                                  place(), env)
    counts["p2phost ... --refresh, P2PHOST_REPLAY=0"] = _callgrind(
        [*ours, "--refresh"], place(), {**env, "P2PHOST_REPLAY": "0"})
    timed([*uv[:3], "--target", str(place() / "t"), *uv[3:], "--refresh"], root, base)
    counts["uv pip install --target (no-op)"] = _callgrind(
        [*uv[:3], "--target", str(root / "uv-noop"), *uv[3:]], root, base)
    project = root / "project"
    timed(ours, project, env)  # a no-op decided by the full installer once, then replayed
    counts["p2phost plugin install --yes (no-op)"] = _callgrind(ours, project, env)
    return counts


if __name__ == "__main__":
    main()
