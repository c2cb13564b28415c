# Sourced by scripts/*: create .venv and install the project with the extras asked for ("[dev]",
# "[dev,test]"), again only when pyproject.toml changed or an extra is missing. The stamp file keeps
# what is installed, so scripts/demo after scripts/test (or the other way round) installs nothing.
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
WANTED="$(printf '%s' "${1:-}" | tr -d '[]' | tr ',' ' ')"
HAVE_HASH="" HAVE_EXTRAS=""
[ -f "$STAMP" ] && read -r HAVE_HASH HAVE_EXTRAS < "$STAMP" || true
[ "$HAVE_HASH" = "$HASH" ] || HAVE_EXTRAS=""
MISSING=""
for extra in $WANTED; do
  case " $HAVE_EXTRAS " in *" $extra "*) ;; *) MISSING=1 ;; esac
done
if [ "$HAVE_HASH" != "$HASH" ] || [ -n "$MISSING" ]; then
  EXTRAS="$(printf '%s\n' $HAVE_EXTRAS $WANTED | sort -u | tr '\n' ' ')"
  SPEC="$(printf '%s' "$EXTRAS" | xargs | tr ' ' ',')"
  echo "==> installing unsub-relay${SPEC:+ with extras [$SPEC]} into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".${SPEC:+[$SPEC]}"
  echo "$HASH $EXTRAS" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
