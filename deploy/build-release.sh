#!/usr/bin/env bash
# The release build of the service executables: what deploy/README.md ("Build") tells operators
# to run and what the container image's build stage runs (Tests/Deploy/run.sh checks both name
# this same command). Builds every `<service>-service` product the package has, with the Swift
# runtime linked in (the binaries then need only glibc, libstdc++ and libsqlite3 at run time),
# and copies them into DEST (default ./.build/dist/bin, ignored by git).
#
#   bash deploy/build-release.sh [DEST]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/.build/dist/bin}"
cd "$ROOT"
mkdir -p "$DEST"
for service in identity catalogue assessment supervision; do
  if ! grep -q "\"$service-service\"" Package.swift; then
    echo "build-release: no $service-service product yet, skipped"
    continue
  fi
  swift build -c release --static-swift-stdlib --product "$service-service"
  install -m 0755 "$(swift build -c release --show-bin-path)/$service-service" "$DEST/"
  echo "build-release: $DEST/$service-service"
done
