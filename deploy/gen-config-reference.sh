#!/usr/bin/env bash
# Regenerates the "Configuration reference" section of deploy/README.md from the built
# executables' own --help (flags, defaults, environment variables, the backup subcommand), so
# the reference can never drift from the code. Tests/Deploy/run.sh runs it with --check, which
# fails when the committed section differs from what the current executables print.
#
#   bash deploy/gen-config-reference.sh [--check] [BIN_DIR]    (BIN_DIR: swift build's bin path)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CHECK=0
if [[ "${1:-}" == "--check" ]]; then CHECK=1; shift; fi
BIN="${1:-$(swift build --show-bin-path)}"
README="deploy/README.md"
BEGIN="<!-- BEGIN GENERATED CONFIG REFERENCE: deploy/gen-config-reference.sh -->"
END="<!-- END GENERATED CONFIG REFERENCE -->"

section="$(mktemp)"
trap 'rm -f "$section" "$section.new"' EXIT
{
  echo "$BEGIN"
  for service in identity catalogue assessment supervision; do
    exe="$BIN/$service-service"
    echo
    echo "### \`$service-service\`"
    echo
    if [[ ! -x "$exe" ]]; then
      echo "Not built in this release yet; it takes the flags of \`supervision-service\` with"
      echo "\`SMARTSCHOOL_${service^^}_\` variables (see deploy/config/$service.env)."
      continue
    fi
    echo '```text'
    # A fixed width and no terminal, so the text is the same on every machine.
    COLUMNS=100 "$exe" --help </dev/null 2>&1 | sed -e 's/[[:space:]]*$//'
    echo '```'
    echo
    echo "\`$service-service backup --help\`:"
    echo
    echo '```text'
    COLUMNS=100 "$exe" backup --help </dev/null 2>&1 | sed -e 's/[[:space:]]*$//'
    echo '```'
  done
  echo
  echo "$END"
} >"$section"

python3 - "$README" "$section" "$BEGIN" "$END" "$CHECK" <<'PY'
import sys
readme, section, begin, end, check = sys.argv[1:]
text = open(readme, encoding="utf-8").read()
new = open(section, encoding="utf-8").read().rstrip("\n")
start, stop = text.find(begin), text.find(end)
if start < 0 or stop < 0:
    sys.exit(f"gen-config-reference: {readme} lacks the markers {begin!r} ... {end!r}")
current = text[start:stop + len(end)]
if check == "1":
    if current != new:
        import difflib
        sys.stdout.writelines(difflib.unified_diff(
            current.splitlines(True), new.splitlines(True), "committed", "from --help"))
        sys.exit("gen-config-reference: deploy/README.md differs from the executables' --help; "
                 "run bash deploy/gen-config-reference.sh and commit")
    print("gen-config-reference: deploy/README.md matches --help")
else:
    open(readme, "w", encoding="utf-8").write(text[:start] + new + text[stop + len(end):])
    print(f"gen-config-reference: rewrote the reference in {readme}")
PY
