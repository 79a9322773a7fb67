#!/usr/bin/env bash
# OpenID Connect checks with maintained client libraries (PyJWT) against the built
# identity-service executable's HTTP port.
#
#   bash Tests/OIDC/run.sh [pytest args…]
#
# Creates Tests/OIDC/.venv (pinned packages, ignored by git). Needs
# .build/debug/identity-service (`swift build`).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
PY="$VENV/bin/python"

PACKAGES=(
  pyjwt==2.15.1
  cryptography==50.0.2
  pytest==9.2.0
)

if [[ ! -x "$ROOT/.build/debug/identity-service" ]]; then
  echo "oidc: $ROOT/.build/debug/identity-service is missing; run 'swift build' first" >&2
  exit 1
fi

# The venv is reused while its package list is unchanged.
STAMP="$VENV/.smartschool-packages"
if [[ ! -x "$PY" || ! -f "$STAMP" || "$(cat "$STAMP")" != "${PACKAGES[*]}" ]]; then
  echo "oidc: creating $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
  echo "${PACKAGES[*]}" >"$STAMP"
fi

cd "$ROOT"
SMARTSCHOOL_ROOT="$ROOT" PYTHONDONTWRITEBYTECODE=1 \
  "$PY" -m pytest -p no:cacheprovider -q "$HERE" "$@"
