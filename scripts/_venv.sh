# Sourced by the other scripts: make .venv (once) with the three distributions installed
# editable (sdk/, host/ with its registry extra, registry/) and the dev tools of the root
# pyproject's [dependency-groups] dev. Re-installs only when a pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip uv
fi
stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$ROOT/sdk/pyproject.toml" \
  "$ROOT/host/pyproject.toml" "$ROOT/registry/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "== installing p2phost-sdk, p2phost, p2phost-registry (editable) and the dev tools into $VENV"
  mapfile -t dev < <("$VENV/bin/python" - "$ROOT/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as fh:
    print("\n".join(tomllib.load(fh)["dependency-groups"]["dev"]))
PY
)
  # The old single-distribution layout installed one editable `p2phost` from the root.
  "$VENV/bin/python" -m uv pip uninstall --python "$VENV/bin/python" -q p2phost 2>/dev/null || true
  "$VENV/bin/python" -m uv pip install --python "$VENV/bin/python" -q --compile-bytecode \
    -e "$ROOT/sdk" -e "$ROOT/host" -e "$ROOT/registry" "${dev[@]}"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
