"""upgrade.yml's metric analysis against the lab's live Prometheus (icnlab.py up --prometheus).

Three regions (--limit) are upgraded one at a time; each soaks until the five shipped checks
(roles/rollout/defaults/main.yml) have their samples, read by PromQL from what the lab's exporter
serves: kube-state-metrics' series from the real objects, the Super-Nodes' own counters from values set
in kube-system/lab-metrics (by pod, owner, image tag or for all). The peer checks compare the region
with the regions still on the old release, over the same window; the last region, with no peer
left, with itself before its upgrade. The alerts are the chart's, deployed with `for: 5s` and
evaluated by Prometheus.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from labkit import NS, REGIONS, ROOT, Relay, lab_state, region_tags, release_revision, wait_for
from playbook import local_inventory, run_playbook

pytestmark = pytest.mark.multi
THREE = REGIONS[:3]
# Short windows for the lab (scrapes every 5 s): 2 samples 5 s apart per check.
FAST = ["-e", "rollout_analysis_enabled=true", "-e", "rollout_analysis_window=20s",
        "-e", "rollout_analysis_interval=5", "-e", "rollout_analysis_samples=2",
        "-e", "rollout_analysis_alert_interval=5", "-e", "rollout_analysis_timeout=150",
        # the first samples when the 20 s window holds only what came after the rollout
        "-e", "rollout_analysis_delay=27"]
ALERTS_FOR = {a: {"for": "5s"} for a in ("regionBelowMinReady", "podNotReady", "volumeFull",
                                         "hpaAtMax", "notScraped")}
BYTES = "icn_super_node_network_bytes_total"
ERRORS = "icn_super_node_errors_total"


def prometheus(path: str, **params) -> dict:
    url = f"{lab_state()['prometheus_url']}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)["data"]


def scraped(region: str) -> bool:
    """Both pods of the region up, with enough samples for a 20 s rate."""
    result = prometheus("/api/v1/query", query=f'count(count_over_time(up{{namespace="{NS}", '
                        f'job="icn-super-node-{region}-headless"}}[20s]) >= 3)')["result"]
    return bool(result) and result[0]["value"][1] == "2"


@pytest.fixture(scope="module")
def inventory(lab, tmp_path_factory):
    """inventories/local for every lab region, the chart's alerts firing after 5 s; deployed at v1.0.0."""
    assert (lab_state() or {}).get("prometheus_url"), "the lab runs no Prometheus (icnlab.py up --prometheus)"
    tmp = tmp_path_factory.mktemp("analysis")
    values = {}
    for f in sorted((ROOT / "inventories/local/group_vars/super_nodes").glob("*.yml")):
        values.update((yaml.safe_load(f.read_text()) or {}).get("super_node_chart_values") or {})
    values["metrics"] = {"prometheusRule": {"alerts": ALERTS_FOR}}
    inv = local_inventory(tmp, group_vars={"super_node_chart_values": values})
    run = run_playbook("deploy.yml", inv, "-e", "super_node_image_tag=v1.0.0",
                       "-e", "super_node_parallel_restart=true", tmp_path=tmp)
    assert run.rc == 0, run.output[-5000:]
    yield inv
    for c in lab.values():  # every value this module set, gone
        data = c.core.read_namespaced_config_map("lab-metrics", "kube-system").data or {}
        extra = {k: None for k in data if k.startswith(f"{NS}.tag-") or k.startswith(BYTES)
                 or "kubelet_volume_stats" in k}
        if extra:
            c.set_pod_metrics(extra)


def upgrade(inv, tag: str, tmp_path, *args, regions=THREE):
    for region in regions:
        wait_for(lambda: scraped(region), 60, f"Prometheus to scrape {region}'s pods")
    return run_playbook("upgrade.yml", inv, "-e", f"super_node_image_tag={tag}", "--limit", ",".join(regions),
                        *FAST, *args, tmp_path=tmp_path)


@contextlib.contextmanager
def once_upgraded(lab, region: str, tag: str, action):
    """For the with block: action() once, as soon as every pod of region runs tag (its soak begins)."""
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if region_tags({region: lab[region]})[region] == {tag}:
                action()
                return
            time.sleep(0.5)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join(5)


def cuttable_prometheus() -> Relay:
    """A relay to the lab's Prometheus that the test cuts, as a Prometheus going down mid-soak."""
    url = urllib.parse.urlsplit(lab_state()["prometheus_url"])
    return Relay(url.hostname, url.port)


def verdict(lab, region: str) -> dict | None:
    """The metric verdict upgrade.yml recorded on the region's deployed revision (its Helm Secret)."""
    name = f"sh.helm.release.v1.icn-super-node-{region}.v{release_revision(lab[region], region)}"
    raw = (lab[region].core.read_namespaced_secret(name, NS).metadata.annotations or {}).get("icn.io/analysis")
    return json.loads(raw) if raw else None


def flat(text: str) -> str:
    return " ".join(text.split())


def test_check_lists_each_regions_checks_and_changes_nothing(lab, inventory, tmp_path):
    before = {r: release_revision(lab[r], r) for r in THREE}
    run = upgrade(inventory, "v1.1.0", tmp_path, "--check")
    assert run.rc == 0, run.output[-5000:]
    out = flat(run.output)
    for region in THREE:
        assert (f'bandwidth-per-pod: sum(rate({BYTES}{{namespace="icn", pod=~"icn-super-node-{region}-[0-9]+"}}'
                f'[20s])) / count(up{{namespace="icn", job="icn-super-node-{region}-headless"}} == 1) '
                f'> 0.8 * baseline') in out
        assert run.summary["regions"][region]["analysis"] == "5 checks"
    assert {r: release_revision(lab[r], r) for r in THREE} == before


def test_a_healthy_release_passes_every_check_against_its_peers(lab, inventory, tmp_path):
    run = upgrade(inventory, "v1.1.0", tmp_path)
    assert run.rc == 0, run.output[-6000:]
    for region in THREE:
        assert run.summary["regions"][region]["result"] == "upgraded"
        assert run.summary["regions"][region]["analysis"].startswith("passed 5 checks"), run.summary
        assert region_tags(lab)[region] == {"v1.1.0"}


def test_a_fleet_wide_traffic_drop_does_not_fail_a_release(lab, inventory, tmp_path):
    """Every pod of every region falls from 12.5 MB/s to 2 MB/s: the peers fall with the region."""
    for c in lab.values():
        c.set_pod_metrics({BYTES: "2M"})
    try:
        wait_for(lambda: float(prometheus("/api/v1/query", query=f'max(rate({BYTES}{{namespace="icn"}}[20s]))')
                               ["result"][0]["value"][1]) < 3e6, 60, "the fleet's bandwidth to fall")
        run = upgrade(inventory, "v1.2.0", tmp_path)
        assert run.rc == 0, run.output[-6000:]
        assert all(run.summary["regions"][r]["analysis"].startswith("passed") for r in THREE)
    finally:
        for c in lab.values():
            c.set_pod_metrics({BYTES: None})


def test_a_regression_only_the_new_release_shows_is_rolled_back(lab, inventory, tmp_path):
    """Pods of v1.3.0 send 1 MB/s where their peers send 12.5 MB/s: the first region is rolled back."""
    first, later = THREE[0], THREE[1:]
    for c in lab.values():
        c.set_pod_metrics({f"{NS}.tag-v1.3.0.{BYTES}": "1M"})
    before = {r: release_revision(lab[r], r) for r in later}
    run = upgrade(inventory, "v1.3.0", tmp_path)
    assert run.rc != 0
    out = flat(run.output)
    assert f"region {first} failed its metric analysis: check bandwidth-per-pod" in out, out[-4000:]
    assert "which breaks the condition > 0.8 * baseline" in out and "median of 2 peer(s)" in out
    assert region_tags(lab)[first] == {"v1.2.0"}, "rolled back to the release it ran"
    assert {r: release_revision(lab[r], r) for r in later} == before, "later regions untouched"
    assert run.summary["regions"][first]["result"] == "rolled back"


def test_errors_only_the_second_region_shows_after_its_upgrade_roll_it_back_and_stop(lab, inventory, tmp_path):
    """The second region's pods raise 2 errors/s once on v2.3.0, while its peer, still on the old release,
    stays flat: the first region passes, the second is rolled back naming the check, the third is never
    touched."""
    first, second, third = THREE
    lab[second].set_pod_metrics({f"{NS}.tag-v2.3.0.{ERRORS}": "2"})  # this cluster only, this tag only
    second_tag, third_rev = region_tags(lab)[second], release_revision(lab[third], third)
    run = upgrade(inventory, "v2.3.0", tmp_path)
    assert run.rc != 0
    out = flat(run.output)
    assert f"region {second} failed its metric analysis: check errors-per-pod" in out, out[-4000:]
    assert "which breaks the condition <= 1.5 * baseline" in out and f"median of 1 peer(s) {third}" in out
    regions = run.summary["regions"]
    assert (regions[first]["result"], regions[second]["result"]) == ("upgraded", "rolled back"), regions
    assert regions[first]["analysis"].startswith("passed 5 checks"), regions
    assert region_tags(lab)[first] == {"v2.3.0"} and region_tags(lab)[second] == second_tag
    assert release_revision(lab[third], third) == third_rev, "the rollout stopped before the third region"


def test_errors_rising_in_every_region_at_once_do_not_fail_a_release(lab, inventory, tmp_path):
    """A traffic event: 2 errors/s in every pod of every region, old release and new alike. The peer
    check moves with it, and the release passes in every region."""
    for c in lab.values():
        c.set_pod_metrics({f"{NS}.{ERRORS}": "2"})
    try:
        wait_for(lambda: len([s for s in prometheus("/api/v1/query", query=f'rate({ERRORS}{{namespace="icn"}}[20s]) > 1')
                              ["result"]]) >= 2 * len(THREE), 60, "every pod's errors to rise")
        run = upgrade(inventory, "v2.4.0", tmp_path)
        assert run.rc == 0, run.output[-6000:]
        assert all(run.summary["regions"][r]["analysis"].startswith("passed") for r in THREE), run.summary
        assert all(region_tags(lab)[r] == {"v2.4.0"} for r in THREE)
    finally:
        for c in lab.values():
            c.set_pod_metrics({f"{NS}.{ERRORS}": None})


def test_a_firing_alert_in_another_region_stops_the_rollout_before_it_starts(lab, inventory, tmp_path):
    """A volume over 90% in the last region: the chart's alert fires, and no region is touched."""
    last = REGIONS[-1]
    c = lab[last]
    key = f"{NS}.data-icn-super-node-{last}-0.kubelet_volume_stats_used_bytes"
    c.set_pod_metrics({key: "95%"})
    try:
        wait_for(lambda: [a for a in prometheus("/api/v1/alerts")["alerts"] if a["state"] == "firing"
                          and a["labels"]["alertname"] == "SuperNodeVolumeFillingUp"], 90, "the alert to fire")
        before = {r: release_revision(lab[r], r) for r in THREE}
        run = run_playbook("upgrade.yml", inventory, "-e", "super_node_image_tag=v1.4.0", *FAST,
                           tmp_path=tmp_path)
        assert run.rc != 0
        out = flat(run.output)
        assert (f"rollout stopped before region {REGIONS[0]}: alert(s) firing: SuperNodeVolumeFillingUp in "
                f"region {last}") in out, out[-4000:]
        assert {r: release_revision(lab[r], r) for r in THREE} == before
    finally:
        c.set_pod_metrics({key: None})
    wait_for(lambda: not [a for a in prometheus("/api/v1/alerts")["alerts"]
                          if a["labels"]["alertname"] == "SuperNodeVolumeFillingUp"], 90, "the alert to resolve")


@pytest.mark.parametrize("on_error", ["stop", "pass"])
def test_an_unreachable_prometheus_stops_the_rollout_unless_told_to_pass(lab, inventory, tmp_path, on_error):
    region = THREE[0]
    before = release_revision(lab[region], region)
    tag = "v1.7.0" if on_error == "stop" else "v1.5.0"  # tags no other test rolls out
    run = run_playbook("upgrade.yml", inventory, "-e", f"super_node_image_tag={tag}", "--limit", region,
                       *FAST, "-e", "super_node_prometheus_url=http://127.0.0.1:9", "-e", "rollout_api_grace=3",
                       "-e", f"rollout_analysis_on_error={on_error}", tmp_path=tmp_path)
    out = flat(run.output)
    if on_error == "stop":
        assert run.rc != 0
        assert f"Rollout stopped before region {region}: region {region}: the metric analysis could not " \
               "read Prometheus: Prometheus http://127.0.0.1:9 did not answer" in out, out[-4000:]
        assert release_revision(lab[region], region) == before, "nothing changed"
    else:
        assert run.rc == 0, out[-4000:]
        assert "rollout_analysis_on_error=pass: the region passes unjudged" in out
        assert run.summary["regions"][region]["analysis"] == "unjudged: Prometheus unreadable (on_error=pass)"


def test_a_bad_check_is_refused_before_anything_is_touched(lab, inventory, tmp_path):
    bad = json.dumps({"rollout_analysis": [{"name": "bw", "query": "up", "condition": "> 0.8 baseline"}]})
    run = run_playbook("upgrade.yml", inventory, "-e", "super_node_image_tag=v9.9.9", *FAST, "-e", bad,
                       tmp_path=tmp_path)
    assert run.rc != 0
    out = flat(run.output)
    assert (f"region {REGIONS[0]}: rollout_analysis[bw].condition is '> 0.8 baseline'; allowed: OP NUMBER, "
            "OP baseline or OP NUMBER * baseline") in out, out[-3000:]
    assert "Take the fleet's rollout lock" not in out


def test_an_alert_that_fires_during_a_soak_rolls_the_region_back(lab, inventory, tmp_path):
    """While the first region soaks on v1.6.0, a volume of the last region fills up: the first region
    is rolled back, naming the alert, and no other region is touched."""
    first, last = THREE[0], REGIONS[-1]
    c = lab[last]
    key = f"{NS}.data-icn-super-node-{last}-0.kubelet_volume_stats_used_bytes"
    start_tag = region_tags(lab)[first]
    before = {r: release_revision(lab[r], r) for r in THREE[1:]}
    try:
        with once_upgraded(lab, first, "v1.6.0", lambda: c.set_pod_metrics({key: "95%"})):
            # 6 samples: a soak of about 55 s, well past the ~30 s an alert takes to fire here (exporter
            # snapshot, scrape, evaluation, `for: 5s`, the gate's next read of the alerts)
            run = upgrade(inventory, "v1.6.0", tmp_path, "-e", "rollout_analysis_samples=6")
    finally:
        c.set_pod_metrics({key: None})
    assert run.rc != 0
    out = flat(run.output)
    assert (f"rollout stopped during the soak of region {first}: alert(s) firing: SuperNodeVolumeFillingUp "
            f"in region {last}") in out, out[-4000:]
    assert run.summary["regions"][first]["result"] == "rolled back"
    assert region_tags(lab)[first] == start_tag
    assert {r: release_revision(lab[r], r) for r in THREE[1:]} == before
    wait_for(lambda: not [a for a in prometheus("/api/v1/alerts")["alerts"]
                          if a["labels"]["alertname"] == "SuperNodeVolumeFillingUp"], 90, "the alert to resolve")


def test_a_region_whose_soak_prometheus_cut_short_is_judged_by_the_next_run(lab, inventory, tmp_path):
    """Prometheus goes down as the region's soak begins: the rollout stops, the region keeps its new
    release, pending. The next run (Prometheus back) judges it before anything else and records the
    verdict on the revision, without a new one; the run after that has nothing to do."""
    region = THREE[0]
    start_tag, start_rev = region_tags(lab)[region], release_revision(lab[region], region)
    relay = cuttable_prometheus()
    with once_upgraded(lab, region, "v2.1.0", relay.cut):
        run = upgrade(inventory, "v2.1.0", tmp_path, "-e", f"super_node_prometheus_url=http://127.0.0.1:{relay.port}",
                      "-e", "rollout_api_grace=3", regions=[region])
    relay.cut()
    out = flat(run.output)
    assert run.rc != 0
    assert f"Rollout stopped after region {region}: region {region}: the metric analysis could not read " \
           "Prometheus" in out, out[-4000:]
    assert f"Its revision stays pending: run the same command again once Prometheus answers, and {region} is " \
           f"judged first (rolled back to {next(iter(start_tag))} if it fails)" in out
    assert region_tags(lab)[region] == {"v2.1.0"}, "not rolled back: Kubernetes found it healthy"
    pending = verdict(lab, region)
    assert release_revision(lab[region], region) == start_rev + 1
    assert (pending["verdict"], pending["revision_before"], {pending["tag_before"]}) == ("pending", start_rev, start_tag)
    assert pending["rolled_out"] >= pending["gate_at"]

    run = upgrade(inventory, "v2.1.0", tmp_path, "--check", regions=[region])
    assert run.rc == 0, run.output[-4000:]
    assert run.summary["regions"][region]["plan"] == "judge"
    assert f"judge again: revision {start_rev + 1} was rolled out but its soak was cut short" in flat(run.output)

    run = upgrade(inventory, "v2.1.0", tmp_path, regions=[region])
    assert run.rc == 0, run.output[-4000:]
    assert run.summary["regions"][region]["result"] == "judged"
    assert run.summary["regions"][region]["analysis"].startswith("passed 5 checks"), run.summary
    assert release_revision(lab[region], region) == start_rev + 1, "judged, not upgraded again"
    assert verdict(lab, region)["verdict"] == "passed"

    run = upgrade(inventory, "v2.1.0", tmp_path, regions=[region])
    assert run.rc == 0, run.output[-4000:]
    assert run.summary["regions"][region]["result"] == "skipped" and run.changed() == 0


def test_a_region_judged_after_its_soak_was_cut_short_goes_back_to_its_old_release_if_it_fails(
        lab, inventory, tmp_path):
    """The same cut, on a release whose pods alone send 1 MB/s: the next run judges the region against
    its peers, still on the old release, and rolls it back to the revision it ran before the cut run;
    the later regions are never touched."""
    first, later = THREE[0], THREE[1:]
    start_tag, start_rev = region_tags(lab)[first], release_revision(lab[first], first)
    before = {r: release_revision(lab[r], r) for r in later}
    for c in lab.values():
        c.set_pod_metrics({f"{NS}.tag-v2.2.0.{BYTES}": "1M"})
    relay = cuttable_prometheus()
    with once_upgraded(lab, first, "v2.2.0", relay.cut):
        run = upgrade(inventory, "v2.2.0", tmp_path, "-e", f"super_node_prometheus_url=http://127.0.0.1:{relay.port}",
                      "-e", "rollout_api_grace=3")
    relay.cut()
    assert run.rc != 0 and "Its revision stays pending" in flat(run.output), run.output[-4000:]
    assert region_tags(lab)[first] == {"v2.2.0"}

    run = upgrade(inventory, "v2.2.0", tmp_path)
    assert run.rc != 0
    out = flat(run.output)
    assert (f"Region {first} failed the metric analysis of its revision {start_rev + 1}, judged again (its soak "
            f"had been cut short): region {first} failed its metric analysis: check bandwidth-per-pod") in out, out[-4000:]
    assert "median of 2 peer(s)" in out
    assert f"It was rolled back to revision {start_rev} ({next(iter(start_tag))}) and is healthy again" in out
    assert run.summary["regions"][first]["result"] == "rolled back"
    assert region_tags(lab)[first] == start_tag
    assert verdict(lab, first) is None, "the rollback's revision starts without a verdict"
    assert {r: release_revision(lab[r], r) for r in later} == before, "later regions untouched"
