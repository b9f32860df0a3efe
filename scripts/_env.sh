# Sourced by scripts/demo.sh and scripts/test.sh: create .venv if missing and (re)install the
# project when pyproject.toml (or the constraints) changed since the last install. Idempotent and
# quiet when up to date.
#   AITRADER_VENV=DIR              use another virtualenv (default: .venv)
#   AITRADER_CONSTRAINTS="a==1.* b<2"  pip constraints for that venv (.ci/run: pandas==2.2.*)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AITRADER_VENV:-$ROOT/.venv}"
CONSTRAINTS="${AITRADER_CONSTRAINTS:-}"
PY_BOOT="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "setting up $VENV ..." >&2
    "$PY_BOOT" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
fi
STAMP="$VENV/.aitrader-install-stamp"
# Without constraints this is the sha256 of pyproject.toml alone (what older stamps hold).
WANT="$( { cat "$ROOT/pyproject.toml"; printf '%s' "$CONSTRAINTS"; } | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "installing aitrader and its dependencies into $VENV ${CONSTRAINTS:+(constraints: $CONSTRAINTS)} ..." >&2
    CONSTRAINT_ARGS=()
    if [ -n "$CONSTRAINTS" ]; then
        read -r -a PINS <<< "$CONSTRAINTS"  # split on spaces, no glob expansion of "2.2.*"
        printf '%s\n' "${PINS[@]}" > "$VENV/.aitrader-constraints.txt"
        CONSTRAINT_ARGS=(-c "$VENV/.aitrader-constraints.txt")
    fi
    "$VENV/bin/python" -m pip install --quiet ${CONSTRAINT_ARGS[@]+"${CONSTRAINT_ARGS[@]}"} -e "$ROOT[dev]" >&2
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
# Cached bytecode: each command imports ~100 aitrader modules, and without their .pyc files (a shell that
# sets PYTHONDONTWRITEBYTECODE) every command compiles them again, ~0.2-0.3 s of its start-up here.
# __pycache__/ is in .gitignore.
unset PYTHONDONTWRITEBYTECODE
