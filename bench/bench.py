#!/usr/bin/env python3
"""Benchmarks of deploy.yml and upgrade.yml against the baselines their issues name, measured in
one run on the lab and printed side by side. Not a test: the figures depend on the machine.

    python bench/bench.py deploy [--regions N]
        the lab's configuration (Istio off): a fresh deploy vs. a `helm upgrade --install --wait`
        loop on fresh clusters; then a no-op rerun of deploy.yml
    python bench/bench.py deploy-istio [--regions N]
        the production configuration (Istio on): the same, against the loop of istio-base,
        istiod, the east-west gateway, the Super-Node chart and istioctl's remote secrets
    python bench/bench.py upgrade [--regions N] [--istio]
        upgrade.yml (a tag rollout, then a values-only one) vs. a `helm upgrade --wait` loop
        with no gates; gate overhead per region. --istio: the production configuration, the
        loop with the values deploy.yml gave the chart there
    python bench/bench.py analysis [--regions N]
        upgrade.yml with the metric analysis (the lab's Prometheus, the shipped checks at the lab's
        pace) vs. upgrade.yml with a plain soak as long as the analysis' own (delay + (samples - 1)
        x interval): the time the checks add per region
    python bench/bench.py fleet [--regions 3 7 14]
        deploy.yml, fresh and no-op, on labs of each size, against the 7-region one

Run through `make bench-deploy`, `make bench-upgrade`, `make bench-fleet` (they set PATH). Each
benchmark starts its own lab in .lab-bench and stops it at the end.
"""
from __future__ import annotations

import argparse
import re
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / ".lab-bench"
sys.path.insert(0, str(ROOT / "lab"))
# The lab's own reader of a region catalogue, and its two catalogues: the chart's regions.yaml, and
# lab/fleet.yaml (21 regions, the chart's seven first).
from icnlab import CHART_CATALOGUE, FLEET_CATALOGUE, catalogue_regions  # noqa: E402


# The regions, in order, from the chart's catalogue (the one source); set_regions(N) picks the first
# N of it, or of lab/fleet.yaml beyond seven, as the lab does.
REGIONS = catalogue_regions(CHART_CATALOGUE)
PRODUCTION = list(REGIONS)
NS = "icn"
ISTIO_MODULE = dict(line.split("=", 1) for line in (ROOT / "lab/versions.env").read_text().splitlines()
                    if "=" in line and not line.startswith("#"))["ISTIO_MODULE_VERSION"]
ISTIO_NS = "istio-system"


def set_regions(count: int) -> None:
    source = CHART_CATALOGUE if count <= len(PRODUCTION) else FLEET_CATALOGUE
    REGIONS[:] = catalogue_regions(source)[:count]
    if len(REGIONS) != count:
        raise SystemExit(f"{count} regions: {source} has only {len(REGIONS)}")


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
    """inventories/local pointed at the bench lab, for the bench's regions (the first N of the
    catalogue; lab/fleet.yaml's as super_node_catalogue beyond seven), with another memory request
    for a values-only change."""
    gvars = {}
    for f in sorted((ROOT / "inventories/local/group_vars/super_nodes").glob("*.yml")):
        gvars.update(yaml.safe_load(f.read_text()) or {})
    gvars["super_node_kubeconfig"] = str(LAB / "kubeconfig")
    gvars["super_node_staking_keys"] = json.loads((LAB / "staking-keys.json").read_text())
    if any(r not in PRODUCTION for r in REGIONS):
        gvars["super_node_catalogue"] = str(FLEET_CATALOGUE)
    if memory:
        gvars["super_node_chart_values"]["resources"]["requests"]["memory"] = memory
    hosts = {"super_nodes": {"hosts": {r: {"super_node_kube_context": f"icn-{r}"} for r in REGIONS},
                             "vars": gvars}}
    path = tmp / f"inventory-{len(REGIONS)}-{memory or 'lab'}.yml"
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


class CpuMeter:
    """CPU seconds spent over a span, split by who spent them: the controller (this process's waited
    children: ansible-playbook, its workers, helm, kubectl), the lab (the processes whose pids lab.json
    records: each cluster's etcd, kube-apiserver, controller manager, scheduler and kwok, and the
    lab's helpers) and the whole machine (busy time from /proc/stat). In production the clusters are
    remote: only the controller's share runs where ansible-playbook runs."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self):
        self.start = self.end = None

    def __enter__(self):
        self.start = self.read()
        return self

    def __exit__(self, *exc):
        self.end = self.read()

    @classmethod
    def lab_pids(cls) -> list[int]:
        state = json.loads((LAB / "lab.json").read_text()) if (LAB / "lab.json").exists() else {}
        pids = [p for components in state.get("pids", {}).values() for p in components.values()]
        return pids + [v for k, v in state.items() if k.endswith("_pid") and v]

    @classmethod
    def read(cls) -> dict:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        lab = 0
        for pid in cls.lab_pids():
            try:  # utime and stime, fields 14 and 15 of /proc/PID/stat
                lab += sum(int(x) for x in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13])
            except (OSError, ValueError):
                pass
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"machine": (sum(fields) - fields[3] - fields[4]) / cls.TICK, "lab": lab / cls.TICK,
                "controller": children.ru_utime + children.ru_stime, "at": time.monotonic()}

    def seconds(self, who: str) -> float:
        return self.end[who] - self.start[who]

    def busy(self) -> float:
        """The share of the machine's cores that were busy over the span."""
        return self.seconds("machine") / ((self.end["at"] - self.start["at"]) * (os.cpu_count() or 1))


def region_values(tmp: Path, region: str, tag: str, memory: str | None = None,
                  base: dict | None = None) -> Path:
    """The values deploy.yml gives the chart for a region (same chart, same values); base: the
    values it gave, as helm get values read them (the image tag and memory set over them)."""
    if base is not None:
        values = json.loads(json.dumps(base[region]))
        values.setdefault("image", {})["tag"] = tag
        if memory:
            values["resources"]["requests"]["memory"] = memory
        path = tmp / f"values-{region}.json"
        path.write_text(json.dumps(values))
        return path
    local = yaml.safe_load((ROOT / "inventories/local/group_vars/super_nodes/workload.yml").read_text())
    values = {"global": {"environment": "lab", "regions": [region]}, "image": {"tag": tag},
              "replicasPerRegion": 2, "autoscaling": {"minReplicas": 2, "maxReplicas": 8}}
    values.update(local.get("super_node_chart_values") or {})
    if memory:
        values["resources"]["requests"]["memory"] = memory
    if any(r not in PRODUCTION for r in REGIONS):  # the fleet's catalogue, as the role passes it
        values["regions"] = yaml.safe_load(FLEET_CATALOGUE.read_text())["regions"]
    path = tmp / f"values-{region}.json"
    path.write_text(json.dumps(values))
    return path


def helm_loop(tmp: Path, tag: str, install: bool, memory: str | None = None,
              base: dict | None = None) -> float:
    started = time.monotonic()
    for region in REGIONS:
        ctx = f"icn-{region}"
        args = ["helm", "--kubeconfig", str(LAB / "kubeconfig"), "--kube-context", ctx,
                "upgrade", f"icn-super-node-{region}", str(ROOT / "charts/super-node"),
                "--namespace", NS, "--values", str(region_values(tmp, region, tag, memory, base)), "--wait",
                "--timeout", "10m"]
        if install:
            args += ["--install", "--create-namespace"]
        sh(*args, env=lab_env())
    return time.monotonic() - started


def fresh_lab(*extra: str):
    if (LAB / "lab.json").exists():
        lab("down")
    lab("up", "--regions", str(len(REGIONS)), *extra)


def helm_revisions() -> dict:
    out = {}
    for region in REGIONS:
        proc = kubectl(f"icn-{region}", "-n", NS, "get", "secrets", "-l", "owner=helm", "-o", "name")
        out[region] = sorted(proc.stdout.split())
    return out


def row(name, ours, base):
    ratio = f"{ours / base:.2f}" if base else "-"
    return f"| {name} | {ours:.1f} s | {base:.1f} s | {ratio} |" if base else f"| {name} | {ours:.1f} s | - | - |"


def namespace_and_keys():
    """What deploy.yml creates before the chart, made for the loop: the namespace and keys."""
    keys = json.loads((LAB / "staking-keys.json").read_text())
    for region in REGIONS:
        kubectl(f"icn-{region}", "create", "namespace", NS)
        kubectl(f"icn-{region}", "-n", NS, "create", "secret", "generic", "icn-staking-keys",
                f"--from-literal={region}-staking-key={keys[region]}")


def changed_count(out: str) -> int:
    return sum(int(x) for x in re.findall(r"changed=(\d+)", out))


class Deploy:
    """deploy.yml on fresh clusters, then again: the wall times, the no-op's changed count, whether
    it made a Helm revision, and the CPU each run spent (CpuMeter)."""

    def __init__(self, tmp: Path, *extra: str):
        inv = inventory(tmp)
        with CpuMeter() as self.fresh_cpu:
            self.fresh, _ = playbook("deploy.yml", inv, *extra)
        revisions = helm_revisions()
        with CpuMeter() as self.noop_cpu:
            self.noop, out = playbook("deploy.yml", inv, *extra)
        self.changed = changed_count(out)
        self.same = helm_revisions() == revisions


def cpu_cell(meter: CpuMeter) -> str:
    return (f"{meter.seconds('controller'):.0f} / {meter.seconds('lab'):.0f} s "
            f"({meter.busy():.0%} busy)")


def deploy_table(title: str, ours: Deploy, baseline: float, loop_cpu: CpuMeter, noop_target: str) -> list[str]:
    return [
        "",
        f"| {title} | deploy.yml | helm loop | ratio (target <= 0.5) |",
        "|---|---|---|---|",
        row("fresh deploy, wall time", ours.fresh, baseline),
        f"| fresh deploy, CPU: controller / lab (the cores' busy share) | {cpu_cell(ours.fresh_cpu)} "
        f"| {cpu_cell(loop_cpu)} | |",
        row(f"no-op rerun (target {noop_target})", ours.noop, 0),
        f"| no-op rerun, CPU: controller / lab (the cores' busy share) | {cpu_cell(ours.noop_cpu)} | | |",
        f"| no-op rerun: changed tasks / new Helm revisions | {ours.changed} / {'none' if ours.same else 'SOME'} | | |",
    ]


def bench_deploy(tmp: Path) -> list[str]:
    """The lab's configuration (Istio off): the loop first, then deploy.yml, each on fresh clusters."""
    fresh_lab()
    namespace_and_keys()
    with CpuMeter() as loop_cpu:
        baseline = helm_loop(tmp, "v1.0.0", install=True)
    fresh_lab()
    ours = Deploy(tmp)
    lab("down")
    return deploy_table(f"deploy, {len(REGIONS)} fresh regions, Istio off (the lab's configuration)",
                        ours, baseline, loop_cpu, "< 10 s")


def helm_json(ctx: str, *args) -> object:
    return json.loads(sh("helm", "--kubeconfig", str(LAB / "kubeconfig"), "--kube-context", ctx, *args,
                         "-o", "json", env=lab_env()).stdout or "null")


def istio_capture(tmp: Path) -> dict:
    """After deploy.yml with Istio: each region's releases (chart, namespace, the values deploy.yml
    gave) and the objects it applied itself, for the loop to write the same."""
    charts = {"istio-base": "base", "istio-eastwestgateway": "gateway"}
    istio_charts = Path(os.environ["ICN_TOOLS_CACHE"]) / f"istio-{ISTIO_MODULE}" / "charts"
    out = {}
    for region in REGIONS:
        ctx = f"icn-{region}"
        releases = []
        for ns in (ISTIO_NS, NS):
            for rel in helm_json(ctx, "list", "-n", ns) or []:
                name = rel["name"]
                chart = (ROOT / "charts/super-node" if ns == NS else
                         istio_charts / charts.get(name, "istio-discovery"))
                values = tmp / f"values-{region}-{name}.json"
                values.write_text(json.dumps(helm_json(ctx, "get", "values", name, "-n", ns)))
                releases.append((name, ns, str(chart), values))
        # istio-base, istiod, the gateway, then the Super-Node chart: the role's order
        order = {"istio-base": 0, "istio-eastwestgateway": 2}
        releases.sort(key=lambda r: (r[1] == NS, order.get(r[0], 1)))
        objects = []
        for kind, ns, selector in (("namespace", None, f"kubernetes.io/metadata.name={ISTIO_NS}"),
                                   ("namespace", None, f"kubernetes.io/metadata.name={NS}"),
                                   ("gateways.networking.istio.io", ISTIO_NS, None),
                                   ("peerauthentications.security.istio.io", NS, None)):
            args = ["get", kind, "-o", "json"] + (["-n", ns] if ns else []) + (["-l", selector] if selector else [])
            for item in json.loads(kubectl(ctx, *args).stdout)["items"]:
                meta = item["metadata"]
                item["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels") if k in meta}
                item.pop("status", None)
                objects.append(item)
        path = tmp / f"objects-{region}.json"
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        out[region] = {"releases": releases, "objects": path}
    return out


def istio_loop(tmp: Path, captured: dict) -> float:
    """The loop an operator would write for deploy.yml's result with Istio on, per context: helm
    upgrade --install of istio-base, istiod, the east-west gateway (their namespace labelled with
    the network first; no --wait, as deploy.yml's istio role does not wait on them either: helm
    would wait forever for the gateway's LoadBalancer address, which no lab cluster gives), the Gateway, the workload namespace's revision label and strict mTLS
    (kubectl apply), the Super-Node chart with --wait; then every cluster's remote secret into every other, as
    `istioctl create-remote-secret | kubectl apply` writes it. It does not check anything
    deploy.yml checks (preflight, the revision guard, the remote secrets' presence, the region's
    health) nor wait beyond helm's --wait."""
    started = time.monotonic()
    for region in REGIONS:
        ctx = f"icn-{region}"
        objects = json.loads(captured[region]["objects"].read_text())["items"]
        first, rest = objects[:1], objects[1:]  # the istio-system namespace, labelled with its network
        for name, ns, chart, values in captured[region]["releases"]:
            if name == "istio-base":
                sh("helm", "--kubeconfig", str(LAB / "kubeconfig"), "--kube-context", ctx, "upgrade", "--install",
                   name, chart, "-n", ns, "--create-namespace", "--values", str(values), "--timeout", "10m",
                   env=lab_env())
                doc = tmp / f"ns-{region}.json"
                doc.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": first}))
                kubectl(ctx, "apply", "-f", str(doc))
                continue
            if ns == NS:  # the Istio objects of the workload namespace before the Super-Nodes
                doc = tmp / f"rest-{region}.json"
                doc.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": rest}))
                kubectl(ctx, "apply", "-f", str(doc))
            wait = ["--wait"] if ns == NS else []
            sh("helm", "--kubeconfig", str(LAB / "kubeconfig"), "--kube-context", ctx, "upgrade", "--install",
               name, chart, "-n", ns, "--values", str(values), *wait, "--timeout", "10m", env=lab_env())
    for source in REGIONS:
        # (its warnings go to stderr: sh() would mix them into the Secret)
        proc = subprocess.run(["istioctl", "--kubeconfig", str(LAB / "kubeconfig"), "--context", f"icn-{source}",
                               "create-remote-secret", f"--name={source}"], text=True, env=lab_env(),
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise SystemExit(f"istioctl create-remote-secret --name={source} failed:\n{proc.stderr[-3000:]}")
        secret = proc.stdout
        doc = tmp / f"remote-{source}.yaml"
        doc.write_text(secret)
        for target in REGIONS:
            if target != source:
                kubectl(f"icn-{target}", "apply", "-f", str(doc))
    return time.monotonic() - started


def bench_deploy_istio(tmp: Path) -> list[str]:
    """The production configuration (Istio on): deploy.yml first (the loop writes what it wrote,
    with the same values), then the loop on fresh clusters."""
    extra = ("-e", "super_node_istio_enabled=true")
    fresh_lab()
    ours = Deploy(tmp, *extra)
    print(f"deploy.yml, Istio on: fresh {ours.fresh:.1f} s, no-op {ours.noop:.1f} s, no-op changed {ours.changed}, "
          f"new revisions {'none' if ours.same else 'SOME'} (the loop follows)", flush=True)
    captured = istio_capture(tmp)
    fresh_lab()
    namespace_and_keys()
    with CpuMeter() as loop_cpu:
        baseline = istio_loop(tmp, captured)
    lab("down")
    return deploy_table(f"deploy, {len(REGIONS)} fresh regions, Istio on (the production configuration)",
                        ours, baseline, loop_cpu, "< 15 s")


def bench_fleet(tmp: Path, counts: list[int]) -> list[str]:
    """deploy.yml (Istio off) on fresh labs of each size, fresh and no-op, against the 7-region one."""
    results = {}
    for count in counts:
        set_regions(count)
        fresh_lab()
        results[count] = Deploy(tmp)
        lab("down")
    ref = results.get(7)

    def ratio(value, of):
        return f"{value / of:.2f}" if ref else "-"

    lines = ["", "| regions | fresh deploy | x 7 regions (target 14: <= 1.6) | no-op rerun | x 7 regions "
             "(target 14: <= 1.6) | no-op changed / new revisions |", "|---|---|---|---|---|---|"]
    for count, ours in results.items():
        lines.append(f"| {count} | {ours.fresh:.1f} s | {ratio(ours.fresh, ref and ref.fresh)} | {ours.noop:.1f} s "
                     f"| {ratio(ours.noop, ref and ref.noop)} | {ours.changed} / {'none' if ours.same else 'SOME'} |")
    # Where the time went: the CPU each run spent, the controller's apart from the lab's clusters'
    # (remote in production), and how busy the cores were.
    # The floor: the run's CPU (controller and lab) spread over every core, the shortest wall time
    # any scheduling of the same work could reach on this machine.
    cores = os.cpu_count() or 1

    def floor(meter):
        return (meter.seconds("controller") + meter.seconds("lab")) / cores

    for run in ("fresh", "no-op"):
        lines += ["", f"| {run}: regions | controller CPU | x 7 regions | per region | lab CPU | cores busy "
                      f"| floor: CPU / {cores} cores | floor / the 7 regions' wall time |", "|---|---|---|---|---|---|---|---|"]
        for count, ours in results.items():
            meter, wall_of_7, cpu_of_7 = ((ours.fresh_cpu, ref and ref.fresh, ref and ref.fresh_cpu) if run == "fresh"
                                          else (ours.noop_cpu, ref and ref.noop, ref and ref.noop_cpu))
            controller = meter.seconds("controller")
            lines.append(f"| {count} | {controller:.1f} s | {ratio(controller, cpu_of_7 and cpu_of_7.seconds('controller'))} "
                         f"| {controller / count:.2f} s | {meter.seconds('lab'):.1f} s | {meter.busy():.0%} "
                         f"| {floor(meter):.1f} s | {ratio(floor(meter), wall_of_7)} |")
    return lines


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
        # Each watch lists what exists first: the rollouts are timed only once every region's listing
        # is in (on a loaded machine, a watch that starts late would see a finished rollout only).
        deadline = time.monotonic() + 120
        while not all(self.events.values()):
            if time.monotonic() > deadline:
                raise SystemExit("the StatefulSet watches did not list every region within 120 s")
            time.sleep(0.2)

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


def bench_upgrade(tmp: Path, istio: bool = False) -> list[str]:
    """Two rollouts, each against the helm loop an operator would write, in one run on one lab:
    a new image tag, then a values-only change (a memory request) under the same tag. istio: the
    production configuration (the loop upgrades with the values deploy.yml gave the chart)."""
    fresh_lab()
    inv = inventory(tmp)
    extra = ("-e", "super_node_istio_enabled=true") if istio else ()
    playbook("deploy.yml", inv, *extra)
    base = ({r: helm_json(f"icn-{r}", "get", "values", f"icn-super-node-{r}", "-n", NS) for r in REGIONS}
            if istio else None)
    config = "Istio on" if istio else "Istio off"
    clock = RolloutClock()
    lines = []
    try:
        for name, ours_args, loop_args in [
                ("tag v1.0.0 -> v1.1.0 (loop: -> v1.2.0)", (inv, *extra, "-e", "super_node_image_tag=v1.1.0"),
                 dict(tag="v1.2.0", base=base)),
                ("values only: memory 128Mi -> 192Mi (loop: -> 256Mi)",
                 (inventory(tmp, "192Mi"), *extra, "-e", "super_node_image_tag=v1.2.0"),
                 dict(tag="v1.2.0", memory="256Mi", base=base))]:
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
                f"| upgrade, {len(REGIONS)} regions, {config}, {name} | upgrade.yml | helm loop | ratio (target <= 1.2) |",
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


# The lab's pace for the analysis (as tests/upgrade/test_analysis.py): a 20 s window, a first sample
# 27 s after the rollout, 2 samples 5 s apart. The lab's Prometheus scrapes every 5 s.
ANALYSIS = {"window": "20s", "delay": 27, "interval": 5, "samples": 2, "alert_interval": 5}
SCRAPE_SECONDS = 5


def bench_analysis(tmp: Path) -> list[str]:
    """Two tag rollouts on one lab with Prometheus: a plain soak of the analysis' length, then the
    analysis; their difference per region is what the checks add to the soak itself."""
    fresh_lab("--prometheus")
    inv = inventory(tmp)
    playbook("deploy.yml", inv)
    # The analysis' own length: its first sample after `delay`, its last `samples - 1` intervals later.
    soak = ANALYSIS["delay"] + (ANALYSIS["samples"] - 1) * ANALYSIS["interval"]
    plain, _ = playbook("upgrade.yml", inv, "-e", "super_node_image_tag=v1.1.0",
                        "-e", f"rollout_soak_seconds={soak}")
    analysed, out = playbook("upgrade.yml", inv, "-e", "super_node_image_tag=v1.2.0",
                             "-e", "rollout_analysis_enabled=true",
                             *(a for k, v in ANALYSIS.items() for a in ("-e", f"rollout_analysis_{k}={v}")))
    passed = len(re.findall(r"passed 5 checks", out))
    lab("down")
    added = (analysed - plain) / len(REGIONS)
    return [
        "",
        f"| upgrade, {len(REGIONS)} regions, soak of {soak} s per region | with the analysis | plain soak | ratio |",
        "|---|---|---|---|",
        row("wall time", analysed, plain),
        f"| added per region (target <= one scrape interval, {SCRAPE_SECONDS} s) | {added:.1f} s | | |",
        f"| regions that passed the 5 shipped checks | {passed} of {len(REGIONS)} | | |",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=["deploy", "deploy-istio", "upgrade", "analysis", "fleet"])
    parser.add_argument("--istio", action="store_true", help="upgrade: with Istio on (production)")
    parser.add_argument("--regions", type=int, nargs="+", default=None,
                        help="deploy, deploy-istio, upgrade: the number of regions (default 7); "
                             "fleet: the sizes to compare (default 3 7 14)")
    args = parser.parse_args()
    counts = args.regions or ([3, 7, 14] if args.which == "fleet" else [len(PRODUCTION)])
    if args.which != "fleet":
        set_regions(counts[0])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if args.which == "fleet":
                lines = bench_fleet(Path(tmp), counts)
            else:
                lines = {"deploy": bench_deploy, "deploy-istio": bench_deploy_istio,
                         "upgrade": lambda t: bench_upgrade(t, args.istio),
                         "analysis": bench_analysis}[args.which](Path(tmp))
        finally:
            if (LAB / "lab.json").exists():
                lab("down")
    print(f"\n{args.which} benchmark, {datetime.now().isoformat(timespec='minutes')}, "
          f"{os.cpu_count()} cores\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
