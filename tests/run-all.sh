#!/usr/bin/env bash
# Every test of the project, as `make test` (and so CI) runs them. Expects the Makefile's PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== lint"
yamllint --strict .
ansible-lint --profile production
echo "== collection build"
ansible-galaxy collection build --force --output-path build/ >/dev/null
echo "== molecule (default scenario: 3 lab regions)"
molecule test -s default
echo "== pytest (brings the lab up and down itself)"
# The real-node tests (tests/kind, marker kind) and `molecule test -s kind` are `make test-kind`,
# not yet part of make test: a cold make test with them has not been measured inside CI's 90
# minutes (docs/kind.md).
exec python -m pytest tests -m "not kind" "$@"
