#!/usr/bin/env bash
# The project's test command: installs what the tests need, checks formatting and lints, builds once,
# and runs every test (unit, storage conformance, process-level cluster tests, linearizability check).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

profile=default
[ "${CI:-}" = "true" ] && profile=ci

cargo fmt --all --check
# The walls between crates and between the rooms of registry/ (no upward import, no cycle).
python3 scripts/check-rooms.py
cargo build --workspace --all-targets --locked
# The shoal:local image (a static shoal in a FROM scratch image) that the end-to-end tests run on the
# local Docker engine. The dev profile builds ~3x faster than release from cold; whoami needs no speed.
SHOAL_IMAGE_PROFILE="${SHOAL_IMAGE_PROFILE:-debug}" compose/build-image.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --profile "$profile" "$@"
