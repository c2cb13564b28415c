# Sourced by scripts/*: create .venv and install the project (again only when pyproject.toml changed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${UNSUB_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.unsub-installed"
HASH="$(sha256sum pyproject.toml | cut -d' ' -f1)"
WANT="$HASH${1:-}"
HAVE="$(cat "$STAMP" 2>/dev/null || true)"
# An install with extras also serves a caller that wants none (scripts/demo after scripts/test).
if [ "$HAVE" != "$WANT" ] && { [ -n "${1:-}" ] || [ "${HAVE#"$HASH"}" = "$HAVE" ]; }; then
  echo "==> installing unsub-relay${1:+ with extras $1} into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".${1:-}"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
