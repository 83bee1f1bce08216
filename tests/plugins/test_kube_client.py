"""The collection's REST client (plugins/module_utils/kube.py) in the weather, without a lab: the
retry policy as pure functions, then the client against throwaway servers on 127.0.0.1 (fakeapi)
that answer 429 and 5xx, drop connections, or are frozen with SIGSTOP; exec credential plugins
(tests/exec-plugins), proxies, tls-server-name, K8S_AUTH_* and what stays in the temp folder."""
from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3
import yaml

from fakeapi import FakeAPI
from labkit import ROOT, pump

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.module_utils import kube  # noqa: E402
from ansible_collections.icn.super_node.plugins.module_utils.kube import (  # noqa: E402
    KubeClient, KubeError, RetryPolicy, describe_context, no_proxy_matches,
    proxy_from_environment, resolve_target, retry_after, transient)

PLUGINS = ROOT / "tests" / "exec-plugins"
E = urllib3.exceptions


def write_kubeconfig(path: Path, server: str, user: dict | None = None, cluster: dict | None = None,
                     context: str = "icn-test") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": context, "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": context, "user": user or {}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
    }))
    return path


@pytest.fixture
def fake():
    with FakeAPI() as api:
        yield api


@pytest.fixture
def kubeconfig(tmp_path, fake) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", fake.url)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for var in ("K8S_AUTH_KUBECONFIG", "K8S_AUTH_CONTEXT", "KUBECONFIG", "HTTPS_PROXY",
                "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)


# --------------------------------------------------------------------------- the policy, pure

def test_backoff_doubles_to_the_cap_with_jitter_of_half_a_step():
    low, high = RetryPolicy(30, jitter=lambda: 0.0), RetryPolicy(30, jitter=lambda: 1.0)
    assert [low.delay(n, 0) for n in range(1, 8)] == [0.125, 0.25, 0.5, 1, 2, 2, 2]
    assert [high.delay(n, 0) for n in range(1, 8)] == [0.25, 0.5, 1, 2, 4, 4, 4]


def test_no_wait_goes_past_the_grace_or_the_deadline():
    policy = RetryPolicy(10, jitter=lambda: 1.0)
    assert policy.delay(6, 9.5) == 0.5  # what is left of the grace
    assert policy.delay(1, 10) is None and policy.delay(1, 12) is None
    assert policy.delay(6, 1, left=0.3) == 0.3
    assert policy.delay(1, 1, left=0) is None and policy.delay(1, 1, left=-1) is None
    assert RetryPolicy(0).delay(1, 0) is None  # grace 0: one attempt


def test_retry_after_is_honoured_up_to_the_grace():
    policy = RetryPolicy(10, jitter=lambda: 1.0)
    assert policy.delay(1, 0, retry_after=3) == 3  # not the backoff's 0.25
    assert policy.delay(1, 8, retry_after=5) == 2
    assert policy.delay(1, 0, retry_after=0) == 0


def test_retry_after_header():
    assert retry_after("3") == 3 and retry_after("0.5") == 0.5 and retry_after("-1") == 0
    assert retry_after(None) is None and retry_after("soon") is None
    now = 1_700_000_000.0
    date = email_date(now + 7)
    assert retry_after(date, now=lambda: now) == pytest.approx(7)


def email_date(when: float) -> str:
    import email.utils
    return email.utils.formatdate(when, usegmt=True)


@pytest.mark.parametrize("code, retried", [(429, True), (500, True), (502, True), (503, True),
                                           (504, True), (400, False), (401, False), (403, False),
                                           (404, False), (409, False), (422, False), (501, False)])
def test_which_statuses_are_transient(code, retried):
    assert transient(status=code) is retried


def test_which_errors_are_transient():
    refused = E.NewConnectionError(None, "Failed to establish a new connection: [Errno 111] refused")
    assert transient(error=refused)
    assert transient(error=E.ConnectTimeoutError(None, "timed out"))
    assert transient(error=E.ReadTimeoutError(None, "/", "Read timed out."))
    assert transient(error=E.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")))
    assert transient(error=E.SSLError(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")))
    # A certificate that does not verify will not verify on the next attempt either.
    assert not transient(error=E.SSLError(ssl.SSLCertVerificationError(1, "certificate verify failed")))
    assert transient(error=E.ProxyError("Unable to connect to proxy", refused))
    assert not transient(error=E.ProxyError("Unable to connect to proxy",
                                            OSError("Tunnel connection failed: 407 Proxy Authentication Required")))
    assert not transient(error=E.LocationParseError("http://[x"))


# --------------------------------------------------------------------------- the client, served

def test_reads_are_retried_through_503_and_429(fake, kubeconfig):
    fake.fault(("status", 503), ("status", 429, {"Retry-After": "1"}), ("status", 500))
    started = time.monotonic()
    with KubeClient(str(kubeconfig), timeout=2, grace=10) as client:
        assert client.get("/version", "reading the version")["gitVersion"] == "v1.36.3"
    took = time.monotonic() - started
    assert len(fake.requests) == 4
    assert 1 <= took < 4, took  # the Retry-After second, not more
    gap = fake.requests[2]["at"] - fake.requests[1]["at"]
    assert gap >= 0.95, f"Retry-After: 1 was not honoured ({gap:.2f}s)"


def test_a_server_that_stays_broken_fails_after_the_grace_naming_the_last_error(fake, kubeconfig):
    fake.fault(*[("status", 503)] * 1000)
    started = time.monotonic()
    with KubeClient(str(kubeconfig), timeout=2, grace=1.5) as client, \
            pytest.raises(KubeError) as failed:
        client.get("/version", "reading the version")
    took = time.monotonic() - started
    assert 1.5 <= took < 3, took
    assert "reading the version failed: HTTP 503: fault 503 (tried" in str(failed.value)
    assert failed.value.status == 503
    assert 4 <= len(fake.requests) <= 12  # backoff, not a busy loop


@pytest.mark.parametrize("code", [400, 403, 404, 409, 422])
def test_other_errors_are_not_retried(fake, kubeconfig, code):
    fake.fault(("status", code))
    with KubeClient(str(kubeconfig), grace=30) as client, pytest.raises(KubeError) as failed:
        client.get("/version", "reading the version")
    assert len(fake.requests) == 1
    assert str(failed.value) == f"reading the version failed: HTTP {code}: fault {code}"


def test_writes_are_retried_only_when_idempotent(fake, kubeconfig):
    fake.routes["/apply"] = {"metadata": {"name": "x"}}
    with KubeClient(str(kubeconfig), grace=10) as client:
        fake.fault(("status", 503))
        with pytest.raises(KubeError, match="HTTP 503"):
            client.request("POST", "/apply", "creating x", body={})
        assert len(fake.requests) == 1
        fake.fault(("status", 503))
        with pytest.raises(KubeError, match="HTTP 503"):
            client.request("PATCH", "/apply", "patching x", body={})
        assert len(fake.requests) == 2
        fake.fault(("status", 503), ("drop",))
        applied = client.request("PATCH", "/apply", "applying x", body={"a": 1}, idempotent=True,
                                 content_type="application/apply-patch+yaml")
        assert applied == {"metadata": {"name": "x"}} and len(fake.requests) == 5
        assert json.loads(fake.requests[-1]["body"]) == {"a": 1}


def test_a_dropped_connection_is_retried(fake, kubeconfig):
    fake.fault(("drop",), ("drop",))
    with KubeClient(str(kubeconfig), grace=10) as client:
        assert client.get("/api", "listing the core API versions") == {"versions": ["v1"]}
    assert len(fake.requests) == 3


def test_a_slow_answer_costs_one_timeout_per_attempt(fake, kubeconfig):
    fake.fault(("sleep", 1.5))
    started = time.monotonic()
    with KubeClient(str(kubeconfig), timeout=0.5, grace=10) as client:
        assert client.get("/api", "listing")["versions"] == ["v1"]
    assert 0.5 <= time.monotonic() - started < 2.5


def test_a_refused_connection_is_retried_for_the_grace(tmp_path):
    path = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:1")
    started = time.monotonic()
    with KubeClient(str(path), timeout=1, grace=1) as client, pytest.raises(KubeError) as failed:
        client.get("/version", "reading the version")
    assert 1 <= time.monotonic() - started < 2.5
    assert "Connection refused" in str(failed.value) and "(tried " in str(failed.value)
    with KubeClient(str(path), grace=0) as client, pytest.raises(KubeError) as once:
        client.get("/version", "reading the version")
    assert "tried" not in str(once.value)


def test_no_retry_starts_past_the_callers_deadline(tmp_path):
    path = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:1")
    started = time.monotonic()
    with KubeClient(str(path), timeout=1, grace=30) as client, pytest.raises(KubeError):
        client.get("/version", "reading the version", deadline=started + 1)
    assert time.monotonic() - started < 2


@pytest.fixture
def frozen_server():
    """A fake API server in its own process, and freeze(seconds) that SIGSTOPs it meanwhile."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("fakeapi.py"))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())

    def freeze(seconds: float) -> threading.Thread:
        os.kill(proc.pid, signal.SIGSTOP)
        thaw = threading.Timer(seconds, os.kill, (proc.pid, signal.SIGCONT))
        thaw.start()
        return thaw

    try:
        yield f"http://127.0.0.1:{port}", freeze
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.close()
        proc.wait(timeout=10)


def test_an_api_server_frozen_for_less_than_the_grace_costs_only_the_pause(frozen_server, tmp_path):
    url, freeze = frozen_server
    path = write_kubeconfig(tmp_path / "kubeconfig", url)
    with KubeClient(str(path), timeout=1, grace=10) as client:
        client.get("/version", "reading the version")  # a connection in the pool, then frozen
        thaw = freeze(3)
        started = time.monotonic()
        assert client.get("/version", "reading the version")["gitVersion"] == "v1.36.3"
        took = time.monotonic() - started
        thaw.join()
    # It cannot answer before the thaw; and it did not give up, as it would have after the grace.
    # (No tighter bound: this machine is shared, and a timed test here measures the neighbours.)
    assert took >= 2.5, took


def test_an_api_server_frozen_past_the_grace_fails_the_read(frozen_server, tmp_path):
    url, freeze = frozen_server
    path = write_kubeconfig(tmp_path / "kubeconfig", url)
    thaw = freeze(5)
    started = time.monotonic()
    with KubeClient(str(path), timeout=0.5, grace=1.5) as client, pytest.raises(KubeError) as failed:
        client.get("/version", "reading the version")
    took = time.monotonic() - started
    thaw.join()
    assert "timed out" in str(failed.value) and "(tried " in str(failed.value)
    # At least the grace; well short of the 5 s freeze: it gave up at its deadline, not at the thaw.
    assert 1.5 <= took < 4.5, took


# --------------------------------------------------------------------------- exec plugins

def exec_user(plugin: str, api: str = "client.authentication.k8s.io/v1", **extra) -> dict:
    env = extra.pop("env", {})
    spec = {"apiVersion": api, "command": str(PLUGINS / plugin), "interactiveMode": "IfAvailable",
            "env": [{"name": k, "value": str(v)} for k, v in env.items()], **extra}
    return {"exec": spec}


@pytest.mark.parametrize("api", ["client.authentication.k8s.io/v1",
                                 "client.authentication.k8s.io/v1beta1"])
def test_an_exec_plugins_token_is_sent(fake, tmp_path, api):
    fake.token = "fake-token-1"
    info = tmp_path / "exec-info.json"
    user = exec_user("good", api, provideClusterInfo=True,
                     env={"ICN_FAKE_TOKEN": "fake-token-1", "ICN_FAKE_EXEC_INFO": info})
    path = write_kubeconfig(tmp_path / "kubeconfig", fake.url, user)
    with KubeClient(str(path)) as client:
        assert client.get("/version", "reading the version")["gitVersion"] == "v1.36.3"
    sent = json.loads(info.read_text())
    assert sent["apiVersion"] == api and sent["kind"] == "ExecCredential"
    assert sent["spec"]["interactive"] is False
    assert sent["spec"]["cluster"]["server"] == fake.url


def test_an_expired_credential_is_renewed_and_a_rejected_one_once(fake, tmp_path):
    runs = tmp_path / "runs"
    user = exec_user("good", env={"ICN_FAKE_TOKEN": "token-{n}", "ICN_FAKE_RUNS": runs,
                                  "ICN_FAKE_EXPIRES_IN": "-60"})
    path = write_kubeconfig(tmp_path / "kubeconfig", fake.url, user)
    with KubeClient(str(path)) as client:
        assert len(runs.read_text().split()) == 1  # run once when the client is made
        fake.token = "token-3"
        client.get("/version", "reading")  # expired: run 2, refused (401), run 3, accepted
        assert [r["headers"]["Authorization"] for r in fake.requests] == [
            "Bearer token-2", "Bearer token-3"]
        fake.token = "never"
        with pytest.raises(KubeError) as failed:
            client.get("/version", "reading the version")
    assert str(failed.value).startswith("reading the version failed: HTTP 401: Unauthorized (the "
                                        "credential of exec plugin")


@pytest.mark.parametrize("plugin, message", [
    ("fail", f"exec plugin {PLUGINS / 'fail'} of user icn-test exited with 1: Error loading SSO "
             "Token: the SSO session associated with this profile has expired or is otherwise "
             "invalid. To refresh this SSO session run aws sso login with the corresponding profile."),
    ("garbage", f"exec plugin {PLUGINS / 'garbage'} of user icn-test printed no ExecCredential: "
                "its output (84 bytes) is not JSON: Expecting value: line 1 column 1 (char 0)"),
    ("wrong-api", f"exec plugin {PLUGINS / 'wrong-api'} of user icn-test printed an ExecCredential of "
                  "apiVersion 'client.authentication.k8s.io/v1alpha1', not the "
                  "client.authentication.k8s.io/v1 the kubeconfig asks for"),
    ("interactive", f"exec plugin {PLUGINS / 'interactive'} of user icn-test exited with 2: error: a "
                    "browser login is needed and there is no terminal to ask for it (interactive: "
                    "false); run kubelogin in a terminal first"),
])
def test_a_failing_exec_plugin_fails_with_its_own_message(fake, tmp_path, plugin, message):
    path = write_kubeconfig(tmp_path / "kubeconfig", fake.url, exec_user(plugin))
    with pytest.raises(KubeError) as failed:
        KubeClient(str(path))
    assert str(failed.value) == message
    assert "not-to-be-shown" not in str(failed.value)
    assert fake.requests == []


def test_an_exec_plugin_that_hangs_is_killed_within_the_timeout(tmp_path):
    path = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:1", exec_user("hang"))
    started = time.monotonic()
    with pytest.raises(KubeError, match=r"of user icn-test did not finish within 1.5s \(killed\)"):
        KubeClient(str(path), timeout=1.5)
    assert time.monotonic() - started < 3.5  # its child, holding the output open, was killed too


def test_exec_plugins_that_cannot_run_are_refused_naming_the_field(tmp_path):
    runs = tmp_path / "runs"
    cases = [
        (exec_user("good", interactiveMode="Always", env={"ICN_FAKE_RUNS": runs}),
         f"exec plugin {PLUGINS / 'good'} of user icn-test needs an interactive login "
         "(users[icn-test].user.exec.interactiveMode: Always), and a playbook has no terminal: log "
         "in first (aws sso login, gcloud auth login, az login, kubelogin ...)"),
        (exec_user("good", "client.authentication.k8s.io/v1alpha1"),
         "users[icn-test].user.exec.apiVersion is 'client.authentication.k8s.io/v1alpha1'; allowed: "
         "client.authentication.k8s.io/v1, client.authentication.k8s.io/v1beta1"),
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "icn-no-such-login",
                   "installHint": "Install icn-login from https://example.invalid/login"}},
         "exec plugin icn-no-such-login of user icn-test was not found: Install icn-login from "
         "https://example.invalid/login"),
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "icn-no-such-login"}},
         "exec plugin icn-no-such-login of user icn-test was not found: is it installed, and on the "
         "PATH of the controller?"),
        ({"auth-provider": {"name": "gcp", "config": {"access-token": "x"}}},
         "users[icn-test].user.auth-provider (gcp) is not supported (Kubernetes removed the gcp and "
         "azure providers in 1.26): log in through an exec plugin instead (gke-gcloud-auth-plugin"),
        ({"token": "t", "as": "someone"}, "users[icn-test].user.as (impersonation) is not supported"),
    ]
    for user, message in cases:
        path = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:1", user)
        with pytest.raises(KubeError) as failed:
            KubeClient(str(path))
        assert str(failed.value).startswith(message), (str(failed.value), message)
    assert not runs.exists(), "a plugin that needs a terminal must not even be started"


def test_exec_plugin_paths_are_relative_to_the_kubeconfig(fake, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "login").symlink_to(PLUGINS / "good")
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "./bin/login",
                     "env": [{"name": "ICN_FAKE_TOKEN", "value": "relative"}]}}
    path = write_kubeconfig(tmp_path / "kubeconfig", fake.url, user)
    fake.token = "relative"
    with KubeClient(str(path)) as client:
        client.get("/version", "reading")


# --------------------------------------------------------------------------- TLS and key material

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for kube.internal (not for 127.0.0.1), a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(name, issuer=None, issuer_key=None, san=None, ca=False):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(issuer.subject if issuer else subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), False)
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        (folder / f"{name}.crt").write_bytes(pem)
        (folder / f"{name}.key").write_bytes(key_pem)
        return cert, key

    ca, ca_key = issue("icn-test-ca", ca=True)
    issue("kube.internal", ca, ca_key, san="kube.internal")
    issue("icn-admin", ca, ca_key)
    return folder


def b64(path: Path) -> str:
    import base64
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture
def tls_fake(pki):
    """A fake API server on TLS that requires a client certificate of the test CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "kube.internal.crt", pki / "kube.internal.key")
    context.load_verify_locations(pki / "icn-test-ca.crt")
    context.verify_mode = ssl.CERT_REQUIRED
    with FakeAPI(tls=context) as api:
        yield api


def test_tls_server_name_client_key_data_and_no_key_file_left(tls_fake, pki, tmp_path, monkeypatch):
    monkeypatch.setattr(kube.tempfile, "tempdir", str(tmp_path))
    user = {"client-certificate-data": b64(pki / "icn-admin.crt"),
            "client-key-data": b64(pki / "icn-admin.key")}
    cluster = {"certificate-authority-data": b64(pki / "icn-test-ca.crt"),
               "tls-server-name": "kube.internal"}
    path = write_kubeconfig(tmp_path / "kubeconfig", tls_fake.url, user, cluster)
    with KubeClient(str(path)) as client:
        assert not list(tmp_path.glob("icn-kube-*")), "the client key outlived the client's making"
        assert client.get("/version", "reading")["gitVersion"] == "v1.36.3"

    # Without tls-server-name the certificate does not match 127.0.0.1: at once, not retried.
    path = write_kubeconfig(tmp_path / "kubeconfig", tls_fake.url, user,
                            {"certificate-authority-data": cluster["certificate-authority-data"]})
    started = time.monotonic()
    with KubeClient(str(path), grace=30) as client, pytest.raises(KubeError) as failed:
        client.get("/version", "reading the version")
    assert "certificate verify failed" in str(failed.value) and "tried" not in str(failed.value)
    assert time.monotonic() - started < 5


def test_an_exec_plugins_client_certificate_is_used(tls_fake, pki, tmp_path, monkeypatch):
    monkeypatch.setattr(kube.tempfile, "tempdir", str(tmp_path))
    user = exec_user("good", env={"ICN_FAKE_CERT_FILE": pki / "icn-admin.crt",
                                  "ICN_FAKE_KEY_FILE": pki / "icn-admin.key"})
    cluster = {"certificate-authority": str(pki / "icn-test-ca.crt"), "tls-server-name": "kube.internal"}
    path = write_kubeconfig(tmp_path / "kubeconfig", tls_fake.url, user, cluster)
    with KubeClient(str(path)) as client:
        assert client.get("/version", "reading")["gitVersion"] == "v1.36.3"
    assert not list(tmp_path.glob("icn-kube-*"))


def test_a_bad_kubeconfig_leaves_no_key_material_behind(pki, tmp_path, monkeypatch):
    monkeypatch.setattr(kube.tempfile, "tempdir", str(tmp_path))
    user = {"client-certificate-data": b64(pki / "icn-admin.crt"),
            "client-key-data": b64(pki / "icn-admin.key")}
    bad = [
        # the key is good, the cluster is missing
        {"apiVersion": "v1", "kind": "Config", "current-context": "c",
         "users": [{"name": "u", "user": user}],
         "contexts": [{"name": "c", "context": {"cluster": "nowhere", "user": "u"}}]},
        # the key does not belong to the certificate
        {"apiVersion": "v1", "kind": "Config", "current-context": "c",
         "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
         "users": [{"name": "u", "user": dict(user, **{"client-key-data": b64(pki / "kube.internal.key")})}],
         "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]},
    ]
    for config, message in zip(bad, ["cluster 'nowhere' is not in",
                                     "the client certificate and key of users[u].user cannot be used"]):
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        with pytest.raises(KubeError) as failed:
            KubeClient(str(path))
        assert str(failed.value).startswith(message)
        assert not list(tmp_path.glob("icn-kube-*"))


# --------------------------------------------------------------------------- where the kubeconfig is

def test_k8s_auth_variables_are_read_as_kubernetes_core_reads_them(fake, tmp_path, monkeypatch):
    path = write_kubeconfig(tmp_path / "kubeconfig", fake.url, context="from-env")
    monkeypatch.setenv("K8S_AUTH_KUBECONFIG", str(path))
    monkeypatch.setenv("K8S_AUTH_CONTEXT", "from-env")
    assert resolve_target(None, None) == (str(path), "from-env")
    assert resolve_target("/given", "given") == ("/given", "given")
    assert describe_context(None) == "context from-env"
    with KubeClient() as client:
        assert client.context == "from-env" and client.host == fake.url
    with pytest.raises(KubeError, match="context 'other' is not in"):
        KubeClient(context="other")


def test_kubeconfig_lists_are_merged_first_file_first(fake, tmp_path, monkeypatch):
    first = write_kubeconfig(tmp_path / "first", fake.url, context="a")
    second = tmp_path / "second"
    config = yaml.safe_load(write_kubeconfig(second, "http://127.0.0.1:1", context="a").read_text())
    config["contexts"].append({"name": "b", "context": {"cluster": "a", "user": "a"}})
    config["current-context"] = "b"
    second.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)]))
    with KubeClient() as client:
        assert (client.context, client.host) == ("a", fake.url)
    with KubeClient(context="b") as client:  # b is only in the second; cluster a from the first
        assert client.host == fake.url


# --------------------------------------------------------------------------- proxies

@pytest.mark.parametrize("url, env, expected", [
    ("https://kube.example.com", {"HTTPS_PROXY": "proxy:3128"}, "http://proxy:3128"),
    ("https://kube.example.com", {"https_proxy": "http://p:1"}, "http://p:1"),
    ("https://kube.example.com", {"HTTPS_PROXY": "http://A:1", "https_proxy": "http://b:1"}, "http://A:1"),
    ("https://kube.example.com", {"HTTP_PROXY": "http://p:1"}, None),
    ("http://kube.example.com", {"HTTP_PROXY": "http://p:1"}, "http://p:1"),
    ("https://127.0.0.1:6443", {"HTTPS_PROXY": "http://p:1"}, None),
    ("https://localhost:6443", {"HTTPS_PROXY": "http://p:1"}, None),
    ("https://[::1]:6443", {"HTTPS_PROXY": "http://p:1"}, None),
    ("https://kube.example.com", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, None),
    ("https://kube.example.com", {"HTTPS_PROXY": "http://p:1", "no_proxy": "*"}, None),
    ("https://10.1.2.3:6443", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, None),
    ("https://11.1.2.3:6443", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, "http://p:1"),
])
def test_proxy_from_the_environment_as_go_decides(url, env, expected):
    assert proxy_from_environment(url, env)[0] == expected


@pytest.mark.parametrize("host, port, no_proxy, exempt", [
    ("example.com", 443, "example.com", True),
    ("kube.example.com", 443, "example.com", True),
    ("notexample.com", 443, "example.com", False),
    ("example.com", 443, ".example.com", False),
    ("kube.example.com", 443, ".example.com", True),
    ("kube.example.com", 443, "*.example.com", True),
    ("kube.example.com", 443, "example.com:6443", False),
    ("kube.example.com", 6443, " other.org , example.com:6443", True),
    ("10.0.0.5", 443, "10.0.0.5", True),
    ("10.0.0.5", 443, "10.0.0.6,192.168.0.0/16", False),
    ("fd00::5", 443, "fd00::/8", True),
    ("fd00::5", 6443, "[fd00::5]:6443", True),
    ("kube.example.com", 443, "", False),
])
def test_no_proxy_entries(host, port, no_proxy, exempt):
    assert no_proxy_matches(host, port, no_proxy) is exempt


class RecordingProxy:
    """An HTTP forward proxy that answers requests itself, as the API server would."""

    def __init__(self):
        self.seen = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                seen.append((self.path, self.headers.get("Proxy-Authorization")))
                body = b'{"gitVersion": "v1.36.3-proxied"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_kubeconfigs_proxy_url_is_used(tmp_path):
    proxy = RecordingProxy()
    try:
        port = proxy.server.server_address[1]
        path = write_kubeconfig(tmp_path / "kubeconfig", "http://kube.invalid:8080",
                                cluster={"proxy-url": f"http://icn:s%40cret@127.0.0.1:{port}"})
        with KubeClient(str(path)) as client:
            assert client.get("/version", "reading")["gitVersion"] == "v1.36.3-proxied"
        assert proxy.seen == [("http://kube.invalid:8080/version", "Basic aWNuOnNAY3JldA==")]
    finally:
        proxy.close()


class TunnelProxy:
    """A CONNECT proxy that resolves every name to 127.0.0.1, and records the CONNECT lines."""

    def __init__(self):
        import socketserver
        self.seen = []
        seen = self.seen

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline().decode()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                seen.append(line.strip())
                host_port = line.split()[1]
                upstream = socket.create_connection(("127.0.0.1", int(host_port.rsplit(":", 1)[1])))
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.wfile.flush()
                back = threading.Thread(target=pump, args=(upstream, self.connection), daemon=True)
                back.start()
                pump(self.connection, upstream)
                back.join(5)
                upstream.close()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_an_https_api_server_is_reached_through_the_proxys_tunnel(tls_fake, pki, tmp_path):
    proxy = TunnelProxy()
    try:
        user = {"client-certificate-data": b64(pki / "icn-admin.crt"),
                "client-key-data": b64(pki / "icn-admin.key")}
        cluster = {"certificate-authority-data": b64(pki / "icn-test-ca.crt"),
                   "proxy-url": f"http://127.0.0.1:{proxy.server.server_address[1]}"}
        # kube.internal resolves nowhere but at the proxy; its certificate is verified end to end.
        path = write_kubeconfig(tmp_path / "kubeconfig", f"https://kube.internal:{tls_fake.port}",
                                user, cluster)
        with KubeClient(str(path)) as client:
            assert client.get("/version", "reading")["gitVersion"] == "v1.36.3"
        assert [line.rsplit(" ", 1)[0] for line in proxy.seen] == [f"CONNECT kube.internal:{tls_fake.port}"]
    finally:
        proxy.close()


def test_proxies_that_cannot_be_used_are_refused_naming_the_field(tmp_path, monkeypatch):
    path = write_kubeconfig(tmp_path / "kubeconfig", "https://kube.example.com",
                            cluster={"proxy-url": "socks5://u:pw@127.0.0.1:1080"})
    try:
        import socks  # noqa: F401
    except ImportError:
        with pytest.raises(KubeError) as failed:
            KubeClient(str(path))
        assert str(failed.value) == (
            "clusters[icn-test].cluster.proxy-url is the SOCKS proxy socks5://u:***@127.0.0.1:1080, "
            "which needs PySocks on the controller (pip install 'urllib3[socks]')")
    path = write_kubeconfig(tmp_path / "kubeconfig", "https://kube.example.com",
                            cluster={"proxy-url": "ftp://127.0.0.1:21"})
    with pytest.raises(KubeError, match=r"clusters\[icn-test\].cluster.proxy-url 'ftp://127.0.0.1:21' "
                                        "is not a proxy URL this client can use"):
        KubeClient(str(path))
    monkeypatch.setenv("https_proxy", "gopher://p:70")
    path = write_kubeconfig(tmp_path / "kubeconfig", "https://kube.example.com")
    with pytest.raises(KubeError, match="^https_proxy 'gopher://p:70' is not a proxy URL"):
        KubeClient(str(path))
