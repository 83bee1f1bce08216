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
exec python -m pytest tests "$@"
