#!/usr/bin/env python3
"""Benchmarks of deploy.yml and upgrade.yml against the baselines their issues name, measured in
one run on the lab and printed side by side. Not a test: the figures depend on the machine.

    python bench/bench.py deploy     fresh 7-region deploy vs. a `helm upgrade --install --wait`
                                     loop on fresh clusters; then a no-op rerun of deploy.yml
    python bench/bench.py upgrade    upgrade.yml over 7 regions vs. a `helm upgrade --wait` loop
                                     with no gates; gate overhead per region

Run through `make bench-deploy` / `make bench-upgrade` (they set PATH). Each benchmark starts its
own lab in .lab-bench and stops it at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / ".lab-bench"
# The regions, in order, from the chart's catalogue (the one source).
REGIONS = [str(r["name"]) for r in
           yaml.safe_load((ROOT / "charts/super-node/regions.yaml").read_text())["regions"]]
NS = "icn"


def sh(*cmd, env=None, check=True, capture=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, text=True, env=env, cwd=ROOT,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.STDOUT if capture else None)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{(proc.stdout or '')[-4000:]}")
    return proc


def lab_env() -> dict:
    return dict(os.environ, ICN_LAB_DIR=str(LAB), KUBECONFIG=str(LAB / "kubeconfig"))


def lab(*args):
    return sh(sys.executable, str(ROOT / "lab/icnlab.py"), *args, env=lab_env())


def kubectl(ctx, *args):
    return sh("kubectl", "--kubeconfig", str(LAB / "kubeconfig"), "--context", ctx, *args,
              env=lab_env())


def inventory(tmp: Path, memory: str | None = None) -> Path:
    """inventories/local pointed at the bench lab (with another memory request: a values-only change)."""
    import yaml
    hosts = yaml.safe_load((ROOT / "inventories/local/hosts.yml").read_text())
    gvars = {}
    for f in sorted((ROOT / "inventories/local/group_vars/super_nodes").glob("*.yml")):
        gvars.update(yaml.safe_load(f.read_text()) or {})
    gvars["super_node_kubeconfig"] = str(LAB / "kubeconfig")
    gvars["super_node_staking_keys"] = json.loads((LAB / "staking-keys.json").read_text())
    if memory:
        gvars["super_node_chart_values"]["resources"]["requests"]["memory"] = memory
    hosts["super_nodes"]["vars"] = gvars
    path = tmp / f"inventory-{memory or 'lab'}.yml"
    path.write_text(yaml.safe_dump(hosts))
    return path


def playbook(name: str, inv: Path, *args) -> tuple[float, str]:
    env = dict(lab_env(), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ICN_SUMMARY_PATH=str(inv.parent / "summary.json"))
    started = time.monotonic()
    proc = sh("ansible-playbook", str(ROOT / name), "-i", str(inv), *args, env=env, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-5000:]}")
    return seconds, proc.stdout


def region_values(tmp: Path, region: str, tag: str, memory: str | None = None) -> Path:
    """The values deploy.yml gives the chart for a region (same chart, same values)."""
    import yaml
    local = yaml.safe_load((ROOT / "inventories/local/group_vars/super_nodes/workload.yml").read_text())
    values = {"global": {"environment": "lab", "regions": [region]}, "image": {"tag": tag},
              "replicasPerRegion": 2, "autoscaling": {"minReplicas": 2, "maxReplicas": 8}}
    values.update(local.get("super_node_chart_values") or {})
    if memory:
        values["resources"]["requests"]["memory"] = memory
    path = tmp / f"values-{region}.json"
    path.write_text(json.dumps(values))
    return path


def helm_loop(tmp: Path, tag: str, install: bool, memory: str | None = None) -> float:
    started = time.monotonic()
    for region in REGIONS:
        ctx = f"icn-{region}"
        args = ["helm", "--kubeconfig", str(LAB / "kubeconfig"), "--kube-context", ctx,
                "upgrade", f"icn-super-node-{region}", str(ROOT / "charts/super-node"),
                "--namespace", NS, "--values", str(region_values(tmp, region, tag, memory)), "--wait",
                "--timeout", "10m"]
        if install:
            args += ["--install", "--create-namespace"]
        sh(*args, env=lab_env())
    return time.monotonic() - started


def fresh_lab():
    if (LAB / "lab.json").exists():
        lab("down")
    lab("up", "--regions", str(len(REGIONS)))


def helm_revisions() -> dict:
    out = {}
    for region in REGIONS:
        proc = kubectl(f"icn-{region}", "-n", NS, "get", "secrets", "-l", "owner=helm", "-o", "name")
        out[region] = sorted(proc.stdout.split())
    return out


def row(name, ours, base):
    ratio = f"{ours / base:.2f}" if base else "-"
    return f"| {name} | {ours:.1f} s | {base:.1f} s | {ratio} |" if base else f"| {name} | {ours:.1f} s | - | - |"


def bench_deploy(tmp: Path) -> list[str]:
    fresh_lab()
    # The baseline needs what deploy.yml creates before the chart: the namespace and keys.
    keys = json.loads((LAB / "staking-keys.json").read_text())
    for region in REGIONS:
        kubectl(f"icn-{region}", "create", "namespace", NS)
        kubectl(f"icn-{region}", "-n", NS, "create", "secret", "generic", "icn-staking-keys",
                f"--from-literal={region}-staking-key={keys[region]}")
    baseline = helm_loop(tmp, "v1.0.0", install=True)
    fresh_lab()
    inv = inventory(tmp)
    ours, _ = playbook("deploy.yml", inv)
    revisions = helm_revisions()
    noop, out = playbook("deploy.yml", inv)
    changed = sum(int(x) for x in __import__("re").findall(r"changed=(\d+)", out))
    same = helm_revisions() == revisions
    lab("down")
    return [
        "| deploy, 7 fresh regions | deploy.yml | helm loop | ratio (target <= 0.5) |",
        "|---|---|---|---|",
        row("fresh deploy, wall time", ours, baseline),
        row("no-op rerun (target < 20 s)", noop, 0),
        f"| no-op rerun: changed tasks / new Helm revisions | {changed} / {'none' if same else 'SOME'} | | |",
    ]


# One line per StatefulSet event: name|generation|observedGeneration|replicas|readyReplicas|
# updatedReplicas|currentRevision|updateRevision (fields the controller may leave out print empty).
STS_EVENT = ("{.metadata.name}|{.metadata.generation}|{.status.observedGeneration}|{.status.replicas}|"
             "{.status.readyReplicas}|{.status.updatedReplicas}|{.status.currentRevision}|"
             "{.status.updateRevision}{\"\\n\"}")


class RolloutClock:
    """Watches every region's StatefulSets (one `kubectl get --watch` each) and stamps each event
    on this machine's clock: API timestamps have one-second steps, too coarse for rollouts of a
    few seconds. A region's rollout, as its status tells it: from the first event with a new
    spec generation to the first where the controller has seen it, every replica is updated and
    Ready, and currentRevision equals updateRevision."""

    def __init__(self):
        import threading
        self.events = {region: [] for region in REGIONS}
        self.procs = []
        for region in REGIONS:
            proc = subprocess.Popen(
                ["kubectl", "--kubeconfig", str(LAB / "kubeconfig"), "--context", f"icn-{region}",
                 "-n", NS, "get", "statefulsets", "--watch", "-o", f"jsonpath={STS_EVENT}"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=lab_env())
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(region, proc), daemon=True).start()
        time.sleep(2)  # the watches list what exists first

    def _read(self, region, proc):
        for line in proc.stdout:
            fields = line.strip().split("|")
            if len(fields) == 8:
                self.events[region].append((time.monotonic(), fields))

    def stop(self):
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=10)

    def rollout_seconds(self, region: str, since: float, until: float) -> float:
        events = [(t, f) for t, f in self.events[region] if since <= t <= until]
        before = [f for t, f in self.events[region] if t < since]
        generation = int(before[-1][1]) if before else 0
        start = next(t for t, f in events if int(f[1] or 0) > generation)
        for t, (_, gen, seen, replicas, ready, updated, current, update) in events:
            if (t >= start and seen == gen and replicas and ready == replicas == updated
                    and current == update):
                return t - start
        raise SystemExit(f"{region}: no complete rollout seen between the marks")


def bench_upgrade(tmp: Path) -> list[str]:
    """Two rollouts, each against the helm loop an operator would write, in one run on one lab:
    a new image tag, then a values-only change (a memory request) under the same tag."""
    fresh_lab()
    inv = inventory(tmp)
    playbook("deploy.yml", inv)
    clock = RolloutClock()
    lines = []
    try:
        for name, ours_args, loop_args in [
                ("tag v1.0.0 -> v1.1.0 (loop: -> v1.2.0)", (inv, "-e", "super_node_image_tag=v1.1.0"),
                 dict(tag="v1.2.0")),
                ("values only: memory 128Mi -> 192Mi (loop: -> 256Mi)",
                 (inventory(tmp, "192Mi"), "-e", "super_node_image_tag=v1.2.0"),
                 dict(tag="v1.2.0", memory="256Mi"))]:
            t0 = time.monotonic()
            ours, _ = playbook("upgrade.yml", *ours_args)
            t1 = time.monotonic()
            time.sleep(1)  # the last events of our run reach the watch
            own = sum(clock.rollout_seconds(r, t0, t1 + 1) for r in REGIONS)
            t2 = time.monotonic()
            baseline = helm_loop(tmp, install=False, **loop_args)
            t3 = time.monotonic()
            time.sleep(1)
            base_own = sum(clock.rollout_seconds(r, t2, t3 + 1) for r in REGIONS)
            lines += [
                "",
                f"| upgrade, 7 regions, {name} | upgrade.yml | helm loop | ratio (target <= 1.2) |",
                "|---|---|---|---|",
                row("wall time", ours, baseline),
                row("StatefulSet rollouts' own time (sum)", own, base_own),
                f"| overhead per region (target <= 3 s) | {(ours - own) / len(REGIONS):.1f} s "
                f"| {(baseline - base_own) / len(REGIONS):.1f} s | |",
            ]
    finally:
        clock.stop()
    lab("down")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=["deploy", "upgrade"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            lines = (bench_deploy if args.which == "deploy" else bench_upgrade)(Path(tmp))
        finally:
            if (LAB / "lab.json").exists():
                lab("down")
    print(f"\n{args.which} benchmark, {datetime.now().isoformat(timespec='minutes')}, "
          f"{os.cpu_count()} cores\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
