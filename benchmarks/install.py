"""``p2phost plugin install`` beside pip and uv installing the same wheels; a node's size.

    python benchmarks/install.py [--runs 7] [--plugin json-codec]

Part 1, from a local registry:
A real ``p2phost registry serve`` is seeded with one official plugin. In the same run,
each tool installs that plugin's wheel from it into a fresh target, cold (empty
caches) and warm (its cache filled by a previous run):

- ``p2phost plugin install NAME --yes`` in a fresh project (the JSON API, the download
  cache, the atomic generation switch, manifest and lock written);
- ``pip install --no-deps --target DIR --index-url REGISTRY/simple/ p2phost-NAME``;
- ``uv pip install --no-deps --target DIR --index-url REGISTRY/simple/ p2phost-NAME``.

pip and uv run with their configuration files disabled so that only the registry's
simple index is asked. Medians of RUNS runs are printed, with ratios to p2phost.
The project's own packages are byte-compiled first: under PYTHONDONTWRITEBYTECODE=1
(set on the CI machine) every start would otherwise recompile them from source, which
measures the interpreter, not the installer (pip's own files are compiled by pip).

Part 2, from the built distributions (scripts/dist, built into a temporary folder):

- the install size of a node's environment, p2phost from its wheels plus the default
  plugins, beside the environment every node needed before the split (the host, the SDK and
  the registry's dependencies, which ``p2phost[registry]`` installs today);
- ``p2phost plugin install`` of the default plugins and chat from the built-in source, in a
  fresh project with an empty download cache, beside ``pip`` and ``uv pip install --no-deps
  --target DIR --no-index --find-links FOLDER`` of the same wheels (empty caches).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def start_registry(data: Path, project: Path) -> tuple[subprocess.Popen[str], str]:
    """Seed ``project`` into a store at ``data`` and serve it on a free port."""
    subprocess.run([sys.executable, "-m", "p2phost", "registry", "seed", "--data", str(data),
                    str(project)], check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen([sys.executable, "-m", "p2phost", "registry", "serve", "--port", "0",
                             "--data", str(data)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line:
            return proc, line.split()[-1].rstrip("/")
    proc.kill()
    raise RuntimeError("the registry did not start")


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Seconds one command takes; it must succeed."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--plugin", default="json-codec")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(REPO / d) for d in
                    ("host", "sdk", "registry"))], check=True, capture_output=True)

    with tempfile.TemporaryDirectory(prefix="p2phost-bench-") as tmp:
        root = Path(tmp)
        proc, url = start_registry(root / "data", REPO / "official-plugins" / args.plugin)
        base = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1",
                "UV_NO_CONFIG": "1"}
        for key in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL"):
            base.pop(key, None)
        index = f"{url}/simple/"
        tools = {
            "p2phost plugin install": lambda target, cache: (
                [str(BIN / "p2phost"), "plugin", "install", args.plugin, "--yes"],
                {"P2PHOST_CACHE_DIR": str(cache), "P2PHOST_REGISTRY": url}),
            "pip install --target": lambda target, cache: (
                [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                 str(target), "--index-url", index, "--cache-dir", str(cache),
                 f"p2phost-{args.plugin}"], {}),
            "uv pip install --target": lambda target, cache: (
                [str(BIN / "uv"), "pip", "install", "-q", "--no-deps", "--target", str(target),
                 "--index-url", index, "--cache-dir", str(cache), "--python", sys.executable,
                 f"p2phost-{args.plugin}"], {}),
        }
        results: dict[str, dict[str, list[float]]] = {}
        filled: set[str] = set()
        try:
            for run in range(args.runs):
                for name, make in tools.items():
                    for mode in ("cold", "warm"):
                        work = root / f"{name.split()[0]}-{mode}-{run}"
                        work.mkdir()
                        (work / "p2phost.toml").write_text('[node]\nname = "bench"\n[plugins]\n')
                        cache = root / f"cache-{name.split()[0]}-{mode}" / (
                            str(run) if mode == "cold" else "shared")
                        if mode == "warm" and name not in filled:  # fill it once, untimed
                            filled.add(name)
                            fill = root / f"fill-{name.split()[0]}"
                            fill.mkdir()
                            (fill / "p2phost.toml").write_text("[plugins]\n")
                            command, extra = make(fill / "target", cache)
                            timed(command, fill, {**base, **extra})
                        command, extra = make(work / "target", cache)
                        results.setdefault(name, {}).setdefault(mode, []).append(
                            timed(command, work, {**base, **extra}))
            startup = [timed([str(BIN / "p2phost"), "--version"], root, base)
                       for _ in range(args.runs)]
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    ours = {mode: statistics.median(results["p2phost plugin install"][mode])
            for mode in ("cold", "warm")}
    print(f"install of {args.plugin} from a local registry, median of {args.runs} runs "
          f"(p2phost --version alone: {statistics.median(startup) * 1000:.0f} ms)")
    print(f"{'tool':26} {'cold ms':>9} {'warm ms':>9} {'cold x':>8} {'warm x':>8}")
    for name, modes in results.items():
        cold, warm = (statistics.median(modes[m]) for m in ("cold", "warm"))
        print(f"{name:26} {cold * 1000:9.0f} {warm * 1000:9.0f} {cold / ours['cold']:8.2f} "
              f"{warm / ours['warm']:8.2f}")
    print("(x: time relative to p2phost plugin install; above 1 means slower than p2phost)")
    builtin_part(args.runs)


#: What ``p2phost init`` declares, and chat: the plugins of the README's demo.
NODE_PLUGINS = ("tcp-transport", "noise-security", "json-codec", "static-discovery", "echo",
                "chat")


def size_mb(*paths: Path) -> float:
    """The bytes of every file under ``paths``, in MB."""
    return sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file()) / 1e6


def venv_with(root: Path, dist: Path, requirement: str) -> Path:
    """A fresh venv with ``requirement`` installed from ``dist`` (and uv's cache)."""
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "-q", "--python", sys.executable, str(root)], check=True,
                   capture_output=True)
    subprocess.run([*uv, "pip", "install", "-q", "--offline", "--compile-bytecode", "--python",
                    str(root / "bin" / "python"), "--find-links", str(dist), requirement],
                   check=True, capture_output=True)
    return root


def builtin_part(runs: int) -> None:
    """Node environment sizes, and installs from the built-in source beside pip and uv."""
    from p2phost._keys import create_key

    with tempfile.TemporaryDirectory(prefix="p2phost-bench-dist-") as tmp:
        root = Path(tmp)
        create_key(root / "release.key")
        dist = root / "dist"
        subprocess.run([sys.executable, str(REPO / "scripts" / "_dist.py"), "--out", str(dist)],
                       check=True, capture_output=True,
                       env={**os.environ, "P2PHOST_RELEASE_KEY": str(root / "release.key")})
        node = venv_with(root / "node", dist, "p2phost")
        before = venv_with(root / "before", dist, "p2phost[registry]")
        env = {k: v for k, v in os.environ.items()
               if k not in ("P2PHOST_REGISTRY", "P2PHOST_BUILTIN_DIR")}
        env.update(PIP_CONFIG_FILE=os.devnull, UV_NO_CONFIG="1")
        for key in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL"):
            env.pop(key, None)
        wheels = [next((dist / "plugins").glob(f"p2phost_{p.replace('-', '_')}-*.whl"))
                  for p in NODE_PLUGINS]
        names = [f"p2phost-{p}" for p in NODE_PLUGINS]
        p2phost = str(node / "bin" / "p2phost")
        times: dict[str, list[float]] = {}
        sizes: dict[str, float] = {}
        for run in range(runs):
            work = root / f"run-{run}"
            subprocess.run([p2phost, "init", str(work / "project")], check=True,
                           capture_output=True, env=env)
            times.setdefault("p2phost plugin install", []).append(timed(
                [p2phost, "plugin", "install", "--yes", *NODE_PLUGINS], work / "project",
                {**env, "P2PHOST_CACHE_DIR": str(work / "p2phost-cache")}))
            times.setdefault("pip install --find-links", []).append(timed(
                [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                 "--target", str(work / "pip"), "--find-links", str(dist / "plugins"),
                 "--cache-dir", str(work / "pip-cache"), *names], work, env))
            times.setdefault("uv pip install --find-links", []).append(timed(
                [str(BIN / "uv"), "pip", "install", "-q", "--no-deps", "--no-index",
                 "--target", str(work / "uv"), "--find-links", str(dist / "plugins"),
                 "--cache-dir", str(work / "uv-cache"), "--python", sys.executable, *names],
                work, env))
            if run == 0:
                plugins = size_mb(work / "project" / ".p2phost" / "env")
                sizes = {"p2phost + default plugins (now)": size_mb(node) + plugins,
                         "p2phost[registry] + plugins (all a node had before)":
                             size_mb(before) + plugins}
    print(f"\nnode environment size (venv + plugin environment; {len(wheels)} plugins)")
    now = sizes["p2phost + default plugins (now)"]
    for label, mb in sizes.items():
        print(f"{label:55} {mb:7.1f} MB  x{mb / now:5.2f}")
    ours = statistics.median(times["p2phost plugin install"])
    print(f"\ninstall of {len(NODE_PLUGINS)} official plugins, cold caches, median of {runs} runs")
    print(f"{'tool':32} {'ms':>8} {'x':>6}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:32} {median * 1000:8.0f} {median / ours:6.2f}")
    print("(x: relative to p2phost plugin install from the built-in source, which also checks "
          "each wheel's release-key signature and writes the manifest and the lock)")


if __name__ == "__main__":
    main()
