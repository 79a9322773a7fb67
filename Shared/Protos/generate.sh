#!/usr/bin/env bash
# Regenerates Shared/Model/Generated from Shared/Protos. The only way generated files change.
#
# Needs protoc (Debian: protobuf-compiler). Builds protoc-gen-swift and protoc-gen-grpc-swift-2
# once, in release mode, in a cache folder outside the repo (PLUGIN_DIR, default
# ~/.cache/smartschool-protoc-plugins), then runs protoc over every .proto file and writes the
# descriptor set that server reflection serves as Swift source (DescriptorSet.swift).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROTOS="$ROOT/Shared/Protos"
OUT="$ROOT/Shared/Model/Generated"
PLUGIN_DIR="${PLUGIN_DIR:-$HOME/.cache/smartschool-protoc-plugins}"
GRPC_SWIFT_PROTOBUF_VERSION=2.4.1

command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }

if [[ ! -x "$PLUGIN_DIR/.build/release/protoc-gen-grpc-swift-2" ||
      ! -x "$PLUGIN_DIR/.build/release/protoc-gen-swift" ]]; then
  rm -rf "$PLUGIN_DIR"
  git clone -q https://github.com/grpc/grpc-swift-protobuf.git "$PLUGIN_DIR"
  git -C "$PLUGIN_DIR" checkout -q "$GRPC_SWIFT_PROTOBUF_VERSION"
  swift build -c release --package-path "$PLUGIN_DIR" --product protoc-gen-grpc-swift-2
  swift build -c release --package-path "$PLUGIN_DIR" --product protoc-gen-swift
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cd "$PROTOS"
mapfile -t FILES < <(find . -name '*.proto' | sed 's|^\./||' | sort)
protoc -I "$PROTOS" \
  --plugin=protoc-gen-swift="$PLUGIN_DIR/.build/release/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift="$PLUGIN_DIR/.build/release/protoc-gen-grpc-swift-2" \
  --swift_out=Visibility=Public:"$TMP" \
  --grpc-swift_out=Visibility=Public:"$TMP" \
  --descriptor_set_out="$TMP/descriptors.pb" --include_imports --include_source_info \
  "${FILES[@]}"

rm -rf "$OUT"
mkdir -p "$OUT"
(cd "$TMP" && find . -name '*.swift' -exec cp --parents {} "$OUT/" \;)

# The descriptor set, embedded as base64 so every executable carries it without resources.
{
  echo "// DO NOT EDIT. Written by Shared/Protos/generate.sh from Shared/Protos."
  echo "// The FileDescriptorSet of every proto in the suite (with imports), for server reflection."
  echo ""
  echo '/// Base64 of the serialized `google.protobuf.FileDescriptorSet` of all SmartSchool protos.'
  echo "public let smartSchoolDescriptorSetBase64: String = \"\"\""
  base64 -w 100 "$TMP/descriptors.pb"
  echo "\"\"\""
} > "$OUT/DescriptorSet.swift"
echo "generated $(find "$OUT" -name '*.swift' | wc -l) files into ${OUT#$ROOT/}"
