#!/usr/bin/env bash
# The CLI's HTML reports in a real browser: headless Chromium, driven by Selenium, opens the
# pages `smartschool report … --format html` writes against the four built services holding the
# small demo county and a joint exam (report_browser_test.py), and checks their tables and
# charts; CSV one file per table; `report student` without the catalogue.
#
#   bash Tests/Reports/run.sh [pytest args…]
#   SMARTSCHOOL_REPORTS_DATABASE_URL=postgres://… bash Tests/Reports/run.sh   # on PostgreSQL
#
# Chromium, chromium-driver and the Python venv are the OpenID Connect tests' (Tests/OIDC/run.sh
# --setup-only installs them). Needs the .build/debug services and smartschool (`swift build`).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

for exe in identity-service catalogue-service assessment-service supervision-service smartschool; do
  if [[ ! -x "$ROOT/.build/debug/$exe" ]]; then
    echo "reports: $ROOT/.build/debug/$exe is missing; run 'swift build' first" >&2
    exit 1
  fi
done

bash "$ROOT/Tests/OIDC/run.sh" --setup-only

cd "$ROOT"
SMARTSCHOOL_ROOT="$ROOT" PYTHONDONTWRITEBYTECODE=1 \
  "$ROOT/Tests/OIDC/.venv/bin/python" -m pytest -p no:cacheprovider -q --durations=5 \
  "$HERE" "$@"
