#!/usr/bin/env bash
# Builds the `shoal:local` image: a static shoal binary in a FROM scratch image (compose/Dockerfile).
# Nothing is pulled from a registry, so it works on machines that cannot reach one.
#
#   cargo build --target x86_64-unknown-linux-gnu, RUSTFLAGS=+crt-static  ->  static ELF
#   check that it is static (file/ldd)                                  ->  fail clearly if not
#   temp context: Dockerfile + shoal (debug info stripped)  ->  docker build -t shoal:local  ->  print sizes
#
# Environment:
#   SHOAL_IMAGE_PROFILE  release (default) or debug: the dev profile builds faster, makes a bigger binary.
#   SHOAL_IMAGE_TAG      image tag (default shoal:local).
#   CARGO_TARGET_DIR     honoured as cargo does; default: the workspace's target/.
#
# `--target` is explicit so that RUSTFLAGS apply to the shoal binary only, not to build scripts and
# proc macros (which must stay dynamic); the output lands in <target-dir>/x86_64-unknown-linux-gnu/<profile>/
# and never touches the target/debug/shoal the process tests run.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
tag=${SHOAL_IMAGE_TAG:-shoal:local}
profile=${SHOAL_IMAGE_PROFILE:-release}
case "$profile" in
  release) cargo_profile=(--release); out_dir=release ;;
  debug) cargo_profile=(); out_dir=debug ;;
  *) echo "build-image.sh: SHOAL_IMAGE_PROFILE must be 'release' or 'debug', got '$profile'" >&2; exit 2 ;;
esac
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
bin="$target_dir/$target/$out_dir/shoal"

echo "build-image.sh: building a static shoal ($profile) for $target"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build "${cargo_profile[@]}" --locked -p shoal --target "$target"

# A dynamic binary would fail in the scratch image with a bare "no such file or directory" (no loader).
require_static() {
  local kind
  if command -v file >/dev/null; then
    kind=$(file -b "$1")
  else
    # ldd exits 0 on a static-pie binary too, printing "statically linked".
    kind=$(ldd "$1" 2>&1 || true)
  fi
  if [[ "$kind" != *"statically linked"* && "$kind" != *"static-pie linked"* && "$kind" != *"not a dynamic executable"* ]]; then
    echo "build-image.sh: $1 is not statically linked, the scratch image could not run it:" >&2
    echo "  $kind" >&2
    exit 1
  fi
}
require_static "$bin"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp compose/Dockerfile "$context/Dockerfile"
# The image gets the binary without DWARF (release: ~103 MiB -> ~22 MiB); the symbol table stays, so
# a panic's backtrace still names functions, and the unstripped binary stays in the target dir.
if command -v strip >/dev/null; then
  strip --strip-debug -o "$context/shoal" "$bin"
else
  echo "build-image.sh: no strip(1); the image gets the binary with its debug info" >&2
  cp "$bin" "$context/shoal"
fi

# Without buildx, the docker CLI falls back to the legacy builder, which builds FROM scratch as well.
previous=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
docker build -t "$tag" "$context"
# The image this build untagged would pile up at each run; it stays if a container still uses it.
if [[ -n "$previous" && "$previous" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi

mib() { echo "$(($1 / 1024 / 1024)) MiB ($1 bytes)"; }
echo "build-image.sh: built $tag from $bin"
echo "build-image.sh: binary $(mib "$(stat -c %s "$bin")"), in the image $(mib "$(stat -c %s "$context/shoal")")"
echo "build-image.sh: image $tag $(mib "$(docker image inspect -f '{{.Size}}' "$tag")")"
