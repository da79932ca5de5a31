# Sourced by the other scripts: make sure .venv exists and has the project with
# the extras in $EXTRAS installed; reinstall only when pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    echo "Creating $VENV ..."
    "${PYTHON:-python3}" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(echo "$EXTRAS" | tr ',' '-')-$(sha1sum "$ROOT/pyproject.toml" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    echo "Installing lightning-xai[$EXTRAS] into $VENV (torch takes a few minutes the first time) ..."
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -e "$ROOT[$EXTRAS]"
    case ",$EXTRAS," in  # zennit, the LRP reference, asks for Python >= 3.11.11 but runs on any 3.11
        *,compare,*) "$PY" -m pip install --quiet --ignore-requires-python "zennit>=1.0" ;;
    esac
    touch "$stamp"
fi
cd "$ROOT"
