"""Fixtures that give tests a running lab. A test that needs Kubernetes never skips: if no lab
is running, the session starts the one it needs and stops it at the end; if the test needs the
other topology than the lab it started, it swaps them. A lab that was already running when the
session began (a developer's) is used as is, and never stopped; if its topology is wrong, the
test fails and says so.

Tests run in this order: no lab, then the multi-cluster lab, then the single-cluster lab, then
the kind clusters (tests/kind: real nodes, which start and destroy their own clusters), so a full
run starts each lab once."""
from __future__ import annotations

import os
import uuid

import pytest

from labkit import LAB_DIR, REGIONS, Cluster, icnlab, lab_state

ORDER = {"multi": 1, "single": 2, "kind": 3}


def pytest_configure(config):
    config.addinivalue_line("markers", "multi: needs the multi-cluster lab (one cluster per region)")
    config.addinivalue_line("markers", "single: needs the single-cluster lab (icn-single)")
    config.addinivalue_line("markers", "kind: needs the kind clusters of real nodes (tests/kind, docs/kind.md)")


def pytest_collection_modifyitems(items):
    def rank(item):
        for name, order in ORDER.items():
            if item.get_closest_marker(name):
                return order
        return 0
    items.sort(key=rank)  # stable: keeps file order within a rank


class LabManager:
    def __init__(self):
        self.started: str | None = None  # topology this session started, if any
        self.clusters: dict[str, dict[str, Cluster]] = {}

    def ensure(self, topology: str) -> dict[str, Cluster]:
        state = lab_state()
        if state is not None and state["topology"] != topology:
            assert self.started == state["topology"], (
                f"these tests need the {topology} lab, but a {state['topology']} lab that this "
                f"test session did not start is running in {LAB_DIR}: run `make lab-down` first")
            self.stop()
            state = None
        if state is None:
            args = ["up", "--topology", topology]
            if topology == "multi":
                # With the lab's Prometheus (tests/alerts/test_live_alerts.py reads it).
                args += ["--regions", os.environ.get("ICN_TEST_REGIONS", str(len(REGIONS))),
                         "--prometheus"]
            proc = icnlab(*args)
            assert proc.returncode == 0, f"the lab did not start:\n{proc.stderr[-4000:]}"
            self.started = topology
            state = lab_state()
        if topology not in self.clusters:
            self.clusters[topology] = {ctx: Cluster(ctx) for ctx in state["clusters"]}
        return self.clusters[topology]

    def stop(self):
        if self.started and not os.environ.get("ICN_KEEP_LAB"):
            proc = icnlab("down")
            assert proc.returncode == 0, proc.stderr[-3000:]
        self.started = None
        self.clusters.clear()


@pytest.fixture(scope="session")
def lab_manager():
    manager = LabManager()
    yield manager
    manager.stop()


@pytest.fixture(scope="module")
def lab(lab_manager) -> dict[str, Cluster]:
    """The multi-cluster lab: {region: Cluster} (module scope: a module's own fixtures, such as a
    deploy run once, build on it)."""
    return {ctx.removeprefix("icn-"): c for ctx, c in lab_manager.ensure("multi").items()}


@pytest.fixture
def single_lab(lab_manager) -> Cluster:
    """The single-cluster lab: one Cluster whose nodes span every region."""
    return lab_manager.ensure("single")["icn-single"]


@pytest.fixture
def namespace_in():
    """namespace_in(cluster) -> a fresh namespace there, deleted (volumes recycled) afterwards."""
    made = []

    def make(cluster: Cluster) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        cluster.create_namespace(name)
        made.append((cluster, name))
        return name

    yield make
    for cluster, name in made:
        cluster.delete_namespace(name)
