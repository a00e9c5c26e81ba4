#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs the unit,
# component and end-to-end tests (the e2e tests make real OpenVM proofs and take minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# A scratch PostgreSQL cluster on localhost, for the store suite's PostgreSQL half.
PLAIT_TEST_POSTGRES_URL=$(scripts/start-postgres.sh)
export PLAIT_TEST_POSTGRES_URL
case "$PLAIT_TEST_POSTGRES_URL" in
  postgres://*) ;;
  *) echo "scripts/start-postgres.sh printed no URL: $PLAIT_TEST_POSTGRES_URL" >&2; exit 1 ;;
esac
cargo fmt --all -- --check
# One profile (release) for everything, so OpenVM is compiled once and proofs run at speed.
cargo build --release --workspace --all-targets --features plait-cli/e2e
cargo test --release --workspace --features plait-cli/e2e -- --test-threads=1
