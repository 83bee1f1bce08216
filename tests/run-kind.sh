#!/usr/bin/env bash
# The real-node tests (docs/kind.md), as `make test-kind` runs them. Expects the Makefile's PATH.
# `molecule test -s kind` keeps its three clusters (--destroy never) for the tests in tests/kind,
# which reuse them (ICN_KIND_KEEP=1) instead of making their own; then `molecule destroy -s kind`
# removes them, stops the dockerd and checks that nothing is left, whatever failed before.
set -uo pipefail
cd "$(dirname "$0")/.."
bash lab/build-tools.sh kind containerd kubenode pause || exit 1
echo "== molecule (kind scenario: 3 kind clusters)"
molecule test -s kind --destroy never
rc=$?
if [ "$rc" -eq 0 ]; then
    echo "== pytest -m kind (on the scenario's clusters)"
    ICN_KIND_KEEP=1 python -m pytest tests -m kind "$@"
    rc=$?
fi
echo "== molecule destroy -s kind"
molecule destroy -s kind || rc=1
exit "$rc"
