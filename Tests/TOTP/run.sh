#!/usr/bin/env bash
# Two-factor login checked with a maintained TOTP library (pyotp): it reads the otpauth:// URI
# identity gives, computes the codes, and the built `smartschool` CLI logs in with them
# against the built identity-service executable.
#
#   bash Tests/TOTP/run.sh [pytest args…]
#
# Creates Tests/TOTP/.venv (pinned packages, ignored by git). Needs
# .build/debug/identity-service and .build/debug/smartschool (`swift build`).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
PY="$VENV/bin/python"

PACKAGES=(
  pyotp==2.12.0
  pytest==9.2.0
)

for exe in identity-service smartschool; do
  if [[ ! -x "$ROOT/.build/debug/$exe" ]]; then
    echo "totp: $ROOT/.build/debug/$exe is missing; run 'swift build' first" >&2
    exit 1
  fi
done

# The venv is reused while its package list is unchanged.
STAMP="$VENV/.smartschool-packages"
if [[ ! -x "$PY" || ! -f "$STAMP" || "$(cat "$STAMP")" != "${PACKAGES[*]}" ]]; then
  echo "totp: creating $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
  echo "${PACKAGES[*]}" >"$STAMP"
fi

cd "$ROOT"
SMARTSCHOOL_ROOT="$ROOT" PYTHONDONTWRITEBYTECODE=1 \
  "$PY" -m pytest -p no:cacheprovider -q "$HERE" "$@"
