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
python -m pytest tests -m "not kind" "$@"
# Real nodes last (docs/kind.md): the kind tools and images (cached by version), `molecule test -s
# kind` on three kind clusters, the real-node tests on the same clusters, then their destroy.
echo "== kind (tests/run-kind.sh)"
exec bash tests/run-kind.sh "$@"
