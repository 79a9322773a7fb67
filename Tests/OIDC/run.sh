#!/usr/bin/env bash
# OpenID Connect checks with maintained client libraries against the built identity-service
# executable's HTTP port: PyJWT verifies the JWKS; headless Chromium driven by Selenium signs in
# on identity's login page to relying-party apps built on authlib (browser_test.py; pyotp for
# two-factor codes, grpcio for the audience check at a real catalogue-service).
#
#   bash Tests/OIDC/run.sh [pytest args…]
#   SMARTSCHOOL_OIDC_DATABASE_URL=postgres://… bash Tests/OIDC/run.sh   # identity on PostgreSQL
#   bash Tests/OIDC/run.sh --setup-only   # only install the browser and the venv (Tests/Reports)
#
# Installs Debian's chromium and chromium-driver when missing; creates Tests/OIDC/.venv (pinned
# packages, ignored by git). Needs .build/debug/identity-service, catalogue-service and
# smartschool (`swift build`).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
PY="$VENV/bin/python"

PACKAGES=(
  pyjwt==2.15.1
  cryptography==50.0.2
  pytest==9.2.0
  authlib==1.9.10
  flask==3.1.3
  requests==2.34.2
  selenium==4.51.0
  pyotp==2.12.0
  grpcio==1.85.1
)

for exe in identity-service catalogue-service smartschool; do
  if [[ ! -x "$ROOT/.build/debug/$exe" ]]; then
    echo "oidc: $ROOT/.build/debug/$exe is missing; run 'swift build' first" >&2
    exit 1
  fi
done

# The browser and its WebDriver come from Debian (Selenium is told where they are, so it never
# downloads a driver of its own).
need=()
for pkg in chromium chromium-driver python3-venv; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "oidc: installing ${need[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
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

[[ "${1:-}" == "--setup-only" ]] && exit 0

cd "$ROOT"
SMARTSCHOOL_ROOT="$ROOT" PYTHONDONTWRITEBYTECODE=1 \
  "$PY" -m pytest -p no:cacheprovider -q "$HERE" "$@"
