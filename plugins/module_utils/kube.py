# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A small Kubernetes REST client for the collection's modules.

Every task of a region pays its module's start-up, and importing the kubernetes Python client
(even only its kubeconfig loader: the package imports all its typed APIs) costs about 0.35 s of
CPU. With seven regions in parallel on a small controller that is most of a no-op run. This client
reads the kubeconfig itself and speaks JSON over urllib3 (about 0.05 s to import): client
certificates, CAs, bearer tokens and token files, basic auth, exec credential plugins (the
client.authentication.k8s.io protocol that cloud logins use: aws eks get-token,
gke-gcloud-auth-plugin, kubelogin), proxy-url and the HTTPS_PROXY/NO_PROXY variables as kubectl
reads them, tls-server-name. What it cannot do (auth-provider, impersonation, SOCKS without PySocks)
it refuses, naming the kubeconfig field, rather than ignore.

The weather of a production control plane: every attempt is bounded by the request timeout, and
an idempotent request (a read, or a write the caller says is idempotent, such as a server-side
apply) that fails with a connection error, a timeout, HTTP 429 or 5xx is tried again with backoff
(honouring Retry-After) until it has failed for the grace (RetryPolicy). Other writes are never
retried. So an API server that blinks for a few seconds during its own upgrade costs a few seconds,
and one that stays away fails the task after the grace, naming the last error.

No file holding key material outlives the client's construction: client keys (from the kubeconfig
or an exec plugin) are loaded into an SSL context from a private temporary directory that is
removed at once, on every path.
"""
from __future__ import annotations

import base64
import datetime
import email.utils
import ipaddress
import json
import os
import random
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from urllib.parse import unquote, urlencode, urlsplit

import urllib3
import yaml


# libyaml's safe loader where PyYAML has it (pip's wheels do): it parses a kubeconfig holding
# several clusters' certificates about ten times faster than the pure-Python one.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(stream):
    """yaml.safe_load, through libyaml when available."""
    return yaml.load(stream, Loader=_SAFE_LOADER)  # nosec B506: a safe loader


def load_yaml_all(stream):
    """yaml.safe_load_all, through libyaml when available."""
    return yaml.load_all(stream, Loader=_SAFE_LOADER)  # nosec B506: a safe loader


# Seconds an idempotent request may keep failing before the task fails (rollout_api_grace).
DEFAULT_GRACE = 30.0

# The options every module that reaches a cluster takes (documented in doc_fragments/kube.py).
KUBE_ARGUMENT_SPEC = dict(kubeconfig=dict(type="path"), context=dict(type="str"),
                          api_grace=dict(type="float", default=DEFAULT_GRACE))


def resolve_target(kubeconfig: str | None = None, context: str | None = None) -> tuple:
    """(kubeconfig, context) with the defaults kubernetes.core reads (AWX's OpenShift/Kubernetes
    credential sets them): K8S_AUTH_KUBECONFIG and K8S_AUTH_CONTEXT when the option is not given.
    Either may stay None: then KUBECONFIG (else ~/.kube/config) and its current context apply,
    which helm and kubectl read themselves, so a caller that runs them passes on only what this
    returns (helm --kubeconfig/--kube-context)."""
    return (kubeconfig or os.environ.get("K8S_AUTH_KUBECONFIG") or None,
            context or os.environ.get("K8S_AUTH_CONTEXT") or None)


def describe_context(context: str | None) -> str:
    """How messages name the cluster a module was pointed at."""
    context = resolve_target(None, context)[1]
    return f"context {context}" if context else "the kubeconfig's current context"


class KubeError(Exception):
    """A request failed or the kubeconfig cannot be used; the message says which."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _api_message(body: bytes) -> str | None:
    try:
        return json.loads(body).get("message")
    except (ValueError, AttributeError):
        return None


# --------------------------------------------------------------------------- retries

# 429: API Priority and Fairness (or a cloud's front door) sheds load; 5xx: an apiserver behind a
# load balancer restarting, etcd leader changes, an aggregated API briefly away.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_TRANSIENT_ERRORS = (urllib3.exceptions.ConnectTimeoutError,  # NewConnectionError is one too
                     urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError)


def _causes(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__ or next(
            (a for a in getattr(error, "args", ()) if isinstance(a, BaseException)), None)


def transient(status: int | None = None, error: BaseException | None = None) -> bool:
    """Whether a failure may pass by itself: a refused, reset or timed-out connection, a TLS
    handshake cut short, a proxy that did not answer, HTTP 429 or 5xx. Never a certificate that
    fails verification, a proxy's refusal, or a 4xx other than 429 (the request itself is wrong)."""
    if error is None:
        return status in RETRY_STATUSES
    if isinstance(error, urllib3.exceptions.SSLError):
        return not any(isinstance(e, ssl.SSLCertVerificationError) for e in _causes(error))
    if isinstance(error, urllib3.exceptions.ProxyError):
        # The proxy could not be reached (transient), or it answered the tunnel with an error
        # (a plain OSError "Tunnel connection failed: 407 ..."; not transient).
        inner = next((a for a in error.args if isinstance(a, BaseException)), None)
        return inner is not None and (isinstance(inner, _TRANSIENT_ERRORS)
                                      or isinstance(inner, (ConnectionError, TimeoutError)))
    return isinstance(error, _TRANSIENT_ERRORS)


def retry_after(value: str | None, now=time.time) -> float | None:
    """Seconds of a Retry-After header (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now(), 0.0)


class RetryPolicy:
    """How long to wait before trying a failed request again, or None to give up.

    Exponential backoff from `base` doubling to `cap` seconds, with jitter (half the step plus a
    random part of the other half, so parallel regions do not retry in step), or the server's
    Retry-After; never past the grace (measured from the start of the request's first attempt)
    nor past the caller's deadline. grace=0 never retries."""

    def __init__(self, grace: float = DEFAULT_GRACE, base: float = 0.25, cap: float = 4.0,
                 jitter=random.random):
        self.grace, self.base, self.cap, self.jitter = grace, base, cap, jitter

    def delay(self, attempt: int, failing_for: float, retry_after: float | None = None,
              left: float | None = None) -> float | None:
        """attempt: how many attempts failed so far (1 after the first); failing_for: seconds
        since the first attempt started; left: seconds to the caller's deadline, if any."""
        remaining = self.grace - failing_for
        if left is not None:
            remaining = min(remaining, left)
        if remaining <= 0:
            return None
        if retry_after is None:
            step = min(self.cap, self.base * 2 ** (attempt - 1))
            wait = step / 2 + self.jitter() * step / 2
        else:
            wait = retry_after
        return min(wait, remaining)


# --------------------------------------------------------------------------- kubeconfig

# Fields that name files, relative to the kubeconfig that holds them (as client-go resolves them).
_FILE_FIELDS = {"clusters": ("certificate-authority",),
                "users": ("client-certificate", "client-key", "tokenFile")}
# User fields this client does not implement: refused, never silently ignored (impersonation
# ignored would act as the kubeconfig's own identity).
_UNSUPPORTED_USER_FIELDS = ("as", "as-uid", "as-groups", "as-user-extra")


def kubeconfig_paths(kubeconfig: str | None) -> list:
    """The kubeconfig files to read, as kubectl picks them: the given one, else every file of
    KUBECONFIG (os.pathsep-separated, merged; the first to name an entry wins), else
    ~/.kube/config."""
    if kubeconfig:
        return [os.path.expanduser(kubeconfig)]
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return [os.path.expanduser(p) for p in listed] or [os.path.expanduser("~/.kube/config")]


def _with_paths_resolved(section: str, body: dict, base: str) -> dict:
    body = dict(body)
    for field in _FILE_FIELDS.get(section, ()):
        if body.get(field):
            body[field] = os.path.join(base, os.path.expanduser(body[field]))
    command = (body.get("exec") or {}).get("command")
    if command and os.sep in command:  # a bare name is looked up on the PATH
        body["exec"] = dict(body["exec"], command=os.path.join(base, command))
    return body


def load_kubeconfig(paths: list) -> dict:
    """{clusters, users, contexts: {name: body}, current-context, where} of the files merged."""
    merged = {"clusters": {}, "users": {}, "contexts": {}, "current-context": None}
    read = []
    for path in paths:
        try:
            with open(path) as handle:
                config = load_yaml(handle) or {}
        except FileNotFoundError as err:
            if len(paths) == 1:
                raise KubeError(f"cannot read kubeconfig {path}: {err}") from None
            continue  # kubectl skips the missing files of a KUBECONFIG list
        except (OSError, yaml.YAMLError) as err:
            raise KubeError(f"cannot read kubeconfig {path}: {err}") from None
        if not isinstance(config, dict):
            raise KubeError(f"kubeconfig {path} is not a mapping of clusters, users and contexts")
        read.append(path)
        base = os.path.dirname(os.path.abspath(path))
        for section, key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for entry in config.get(section) or []:
                if isinstance(entry, dict) and entry.get("name") not in merged[section]:
                    merged[section][entry.get("name")] = _with_paths_resolved(
                        section, entry.get(key) or {}, base)
        merged["current-context"] = merged["current-context"] or config.get("current-context")
    if not read:
        raise KubeError(f"cannot read kubeconfig: none of {os.pathsep.join(paths)} (KUBECONFIG) exists")
    merged["where"] = os.pathsep.join(read)
    return merged


def _named(config: dict, section: str, name: str | None, key: str) -> dict:
    if name in config[section]:
        return config[section][name]
    names = ", ".join(str(n) for n in config[section]) or "none"
    raise KubeError(f"{key} {name!r} is not in {config['where']} ({section}: {names})")


def _decode(data: str, field: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (ValueError, TypeError):
        raise KubeError(f"{field} is not base64") from None


# --------------------------------------------------------------------------- proxies

def _canonical_port(parts) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def no_proxy_matches(host: str, port: int, no_proxy: str) -> bool:
    """Whether NO_PROXY exempts host:port, as Go's httpproxy reads it (which kubectl and helm use):
    `*`; IPs and CIDRs; `example.com` (it and its subdomains), `.example.com` and `*.example.com`
    (subdomains only); any entry may end in :port."""
    host = host.lower().strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in no_proxy.split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        try:
            network = ipaddress.ip_network(entry, strict=False)  # an IP or a CIDR
        except ValueError:
            pass
        else:
            if ip is not None and ip in network:
                return True
            continue
        name, want_port = entry, None
        if entry.startswith("["):  # [v6]:port or [v6]
            name, _, rest = entry[1:].partition("]")
            want_port = rest[1:] or None
        elif entry.count(":") == 1:
            name, want_port = entry.split(":")
        if want_port is not None and want_port != str(port):
            continue
        try:
            address = ipaddress.ip_address(name)  # an IP with a port
        except ValueError:
            pass
        else:
            if ip is not None and ip == address:
                return True
            continue
        if name.startswith("*."):
            name = name[1:]
        if name.startswith("."):
            if host.endswith(name):
                return True
        elif host == name or host.endswith("." + name):
            return True
    return False


def proxy_from_environment(url: str, environ=None) -> tuple:
    """(proxy URL, the variable it came from) for a request to `url` when the kubeconfig names no
    proxy-url, as Go's http.ProxyFromEnvironment decides: HTTPS_PROXY (https) or HTTP_PROXY
    (http), upper case first; never for localhost or a loopback address; not for NO_PROXY's
    hosts; a proxy without a scheme is http://. (None, None) for a direct connection."""
    environ = os.environ if environ is None else environ

    def first(name: str) -> tuple:
        for var in (name, name.lower()):
            if environ.get(var):
                return environ[var], var
        return None, None

    parts = urlsplit(url)
    proxy, var = first("HTTPS_PROXY" if parts.scheme == "https" else "HTTP_PROXY")
    host = (parts.hostname or "").lower()
    if not proxy or host == "localhost":
        return None, None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None, None
    except ValueError:
        pass
    if no_proxy_matches(host, _canonical_port(parts), first("NO_PROXY")[0] or ""):
        return None, None
    return (proxy if "://" in proxy else "http://" + proxy), var


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def proxy_manager(proxy_url: str, field: str, **pool):
    """A urllib3 pool manager through the proxy; `field` names where the proxy came from."""
    parts = urlsplit(proxy_url)
    if parts.scheme in ("socks5", "socks5h"):
        try:
            with warnings.catch_warnings():  # urllib3 warns before it fails without PySocks
                warnings.simplefilter("ignore", urllib3.exceptions.DependencyWarning)
                from urllib3.contrib.socks import SOCKSProxyManager
        except ImportError:
            raise KubeError(f"{field} is the SOCKS proxy {_redacted(proxy_url)}, which needs PySocks "
                            "on the controller (pip install 'urllib3[socks]')") from None
        # Go's socks5 (kubectl's) resolves names at the proxy, as urllib3's socks5h does.
        return SOCKSProxyManager(proxy_url.replace("socks5://", "socks5h://", 1), **pool)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KubeError(f"{field} {_redacted(proxy_url)!r} is not a proxy URL this client can use; "
                        "allowed: http://, https://, socks5://")
    headers = None
    if parts.username is not None:
        headers = urllib3.util.make_headers(
            proxy_basic_auth=f"{unquote(parts.username)}:{unquote(parts.password or '')}")
    port = f":{parts.port}" if parts.port else ""
    return urllib3.ProxyManager(f"{parts.scheme}://{parts.hostname}{port}", proxy_headers=headers,
                                **pool)


# --------------------------------------------------------------------------- TLS

def _load_client_pair(context: ssl.SSLContext, cert: bytes, key: bytes, what: str) -> None:
    """Loads a client certificate and key given as PEM bytes. ssl reads them only from files:
    they are written to a private directory (0700, files 0600) that is removed before returning,
    whatever happens."""
    folder = tempfile.mkdtemp(prefix="icn-kube-")
    try:
        paths = []
        for name, data in (("client.crt", cert), ("client.key", key)):
            path = os.path.join(folder, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            paths.append(path)
        context.load_cert_chain(*paths)
    except (ssl.SSLError, ValueError) as err:
        raise KubeError(f"{what} cannot be used: {err}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tls_context(cluster: dict, cluster_field: str, client_pair: tuple | None,
                pair_what: str) -> ssl.SSLContext:
    """The SSL context of a cluster: its CA only (or the system's when it names none), or no
    verification with insecure-skip-tls-verify; and the user's client certificate if any."""
    if cluster.get("insecure-skip-tls-verify"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        ca = dict(cafile=cluster.get("certificate-authority"))
        if cluster.get("certificate-authority-data"):
            field = f"{cluster_field}.certificate-authority-data"
            ca = dict(cadata=_decode(cluster["certificate-authority-data"], field).decode("ascii", "replace"))
        try:
            context = ssl.create_default_context(**ca)
        except (ssl.SSLError, OSError, ValueError) as err:
            raise KubeError(f"the CA of {cluster_field} cannot be used: {err}") from None
    if client_pair:
        _load_client_pair(context, *client_pair, pair_what)
    return context


# --------------------------------------------------------------------------- exec plugins

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
LOGIN_HINT = ("log in first (aws sso login, gcloud auth login, az login, kubelogin ...) so the "
              "plugin finds a valid session, then run again")
# Renewed this long before its expirationTimestamp, so it does not expire in flight.
EXPIRY_MARGIN = 10.0


@dataclass
class Credential:
    token: str | None = None
    client_pair: tuple | None = None  # (certificate PEM, key PEM) as bytes
    expires: float | None = None  # time.time() after which the plugin must run again


def _tail(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[-limit:]


class ExecPlugin:
    """A kubeconfig user's exec credential plugin (client.authentication.k8s.io v1 or v1beta1),
    run without a terminal and bounded in time. Every failure says what the plugin said."""

    def __init__(self, spec: dict, user: str, cluster: dict, timeout: float):
        self.version = spec.get("apiVersion")
        self.command = spec.get("command")
        self.what = f"exec plugin {self.command} of user {user}"
        field = f"users[{user}].user.exec"
        if self.version not in EXEC_API_VERSIONS:
            raise KubeError(f"{field}.apiVersion is {self.version!r}; allowed: "
                            f"{', '.join(EXEC_API_VERSIONS)} (v1alpha1 was removed in Kubernetes 1.24)")
        if not self.command:
            raise KubeError(f"{field} has no command")
        mode = spec.get("interactiveMode") or "IfAvailable"
        if mode == "Always":
            raise KubeError(f"{self.what} needs an interactive login ({field}.interactiveMode: "
                            f"Always), and a playbook has no terminal: {LOGIN_HINT}")
        if mode not in ("Never", "IfAvailable"):
            raise KubeError(f"{field}.interactiveMode is {mode!r}; allowed: Never, IfAvailable, Always")
        self.argv = [self.command] + [str(a) for a in spec.get("args") or []]
        self.env = {str(e.get("name")): str(e.get("value", "")) for e in spec.get("env") or []}
        self.install_hint = spec.get("installHint")
        self.timeout = timeout
        info = {"interactive": False}
        if spec.get("provideClusterInfo"):
            info["cluster"] = self._cluster_info(cluster)
        self.exec_info = json.dumps({"apiVersion": self.version, "kind": "ExecCredential",
                                     "spec": info})

    @staticmethod
    def _cluster_info(cluster: dict) -> dict:
        info = {k: cluster[k] for k in ("server", "tls-server-name", "insecure-skip-tls-verify",
                                        "proxy-url", "disable-compression") if k in cluster}
        ca = cluster.get("certificate-authority-data")
        if not ca and cluster.get("certificate-authority"):
            try:
                with open(cluster["certificate-authority"], "rb") as handle:
                    ca = base64.b64encode(handle.read()).decode()
            except OSError:
                ca = None
        if ca:
            info["certificate-authority-data"] = ca
        for extension in cluster.get("extensions") or []:
            if extension.get("name") == "client.authentication.k8s.io/exec":
                info["config"] = extension.get("extension")
        return info

    def run(self) -> Credential:
        env = dict(os.environ, **self.env, KUBERNETES_EXEC_INFO=self.exec_info)
        try:
            # No stdin and a new session (no controlling terminal): a plugin that would prompt
            # fails instead of waiting for an answer; the whole group is killed on a timeout.
            proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, start_new_session=True)
        except FileNotFoundError:
            hint = self.install_hint or "is it installed, and on the PATH of the controller?"
            raise KubeError(f"{self.what} was not found: {_tail(hint)}") from None
        except OSError as err:
            raise KubeError(f"{self.what} cannot run: {err}") from None
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except BaseException as exc:  # the timeout, or the task's own (raised in the worker)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.communicate()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise KubeError(f"{self.what} did not finish within {self.timeout:g}s (killed); "
                                f"a plugin that waits for a login cannot run here: {LOGIN_HINT}") from None
            raise
        said = _tail(err.decode(errors="replace"))
        if proc.returncode != 0:
            raise KubeError(f"{self.what} exited with {proc.returncode}: {said or '(no message)'}")
        return self._parse(out, said)

    def _parse(self, out: bytes, said: str) -> Credential:
        # The output holds the credential: it never goes into a message.
        also = f" (it said: {said})" if said else ""
        try:
            doc = json.loads(out)
        except ValueError as err:
            raise KubeError(f"{self.what} printed no ExecCredential: its output ({len(out)} bytes) "
                            f"is not JSON: {err}{also}") from None
        if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
            raise KubeError(f"{self.what} printed JSON that is not an ExecCredential{also}")
        if doc.get("apiVersion") != self.version:
            raise KubeError(f"{self.what} printed an ExecCredential of apiVersion "
                            f"{doc.get('apiVersion')!r}, not the {self.version} the kubeconfig asks for")
        status = doc.get("status") or {}
        cred = Credential(token=status.get("token") or None)
        cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if bool(cert) != bool(key):
            raise KubeError(f"{self.what} returned a client certificate or key, not both")
        if cert:
            cred.client_pair = (cert.encode(), key.encode())
        if not cred.token and not cred.client_pair:
            raise KubeError(f"{self.what} returned neither a token nor a client certificate{also}")
        stamp = status.get("expirationTimestamp")
        if stamp:
            try:
                when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            except (ValueError, AttributeError):
                raise KubeError(f"{self.what} returned a bad expirationTimestamp {stamp!r}") from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.timezone.utc)
            cred.expires = when.timestamp()
        return cred


# --------------------------------------------------------------------------- the client

class KubeClient:
    """One cluster of a kubeconfig. kubeconfig and context default as resolve_target() says;
    timeout bounds each attempt of a request (and an exec plugin's run); grace is how long an
    idempotent request is retried (RetryPolicy)."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None,
                 timeout: float = 10.0, grace: float = DEFAULT_GRACE):
        if grace < 0:
            raise KubeError("api_grace must be 0 or more seconds")
        kubeconfig, context = resolve_target(kubeconfig, context)
        self.timeout = urllib3.Timeout(total=timeout)
        self.retry = RetryPolicy(grace)
        self.headers: dict[str, str] = {}
        self.http = None
        self._exec: ExecPlugin | None = None
        self._expires: float | None = None
        config = load_kubeconfig(kubeconfig_paths(kubeconfig))
        name = context or config["current-context"]
        if not name:
            raise KubeError(f"{config['where']} has no current-context; name the context to use")
        self.context = name
        ctx = _named(config, "contexts", name, "context")
        self._cluster_name = ctx.get("cluster")
        self._cluster = _named(config, "clusters", self._cluster_name, "cluster")
        user_name = ctx.get("user")
        user = _named(config, "users", user_name, "user") if user_name else {}
        self.host = (self._cluster.get("server") or "").rstrip("/")
        if not self.host:
            raise KubeError(f"cluster {self._cluster_name} of {config['where']} has no server")
        user_field = f"users[{user_name}].user"
        if user.get("auth-provider"):
            provider = (user["auth-provider"] or {}).get("name", "?")
            raise KubeError(f"{user_field}.auth-provider ({provider}) is not supported (Kubernetes "
                            "removed the gcp and azure providers in 1.26): log in through an exec "
                            "plugin instead (gke-gcloud-auth-plugin for GKE, kubelogin for AKS and "
                            "OIDC, aws eks get-token for EKS)")
        for field in _UNSUPPORTED_USER_FIELDS:
            if user.get(field):
                raise KubeError(f"{user_field}.{field} (impersonation) is not supported by this "
                                "client; use a user that is the identity itself")

        self._client_pair = None
        cert, key = user.get("client-certificate-data"), user.get("client-key-data")
        if bool(cert or user.get("client-certificate")) != bool(key or user.get("client-key")):
            raise KubeError(f"{user_field} has a client certificate or a client key, not both")
        if cert or key or user.get("client-certificate"):
            self._client_pair = (
                _decode(cert, f"{user_field}.client-certificate-data") if cert
                else self._read(user["client-certificate"], f"{user_field}.client-certificate"),
                _decode(key, f"{user_field}.client-key-data") if key
                else self._read(user["client-key"], f"{user_field}.client-key"))
        self._pair_what = f"the client certificate and key of {user_field}"
        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = self._read(user["tokenFile"], f"{user_field}.tokenFile").decode().strip()
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user.get("username"):
            basic = base64.b64encode(f"{user['username']}:{user.get('password', '')}".encode())
            self.headers["Authorization"] = "Basic " + basic.decode()
        if user.get("exec"):
            self._exec = ExecPlugin(user["exec"], user_name, self._cluster, timeout)
            self._use(self._exec.run())
        self.http = self._pool()

    @staticmethod
    def _read(path: str, field: str) -> bytes:
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as err:
            raise KubeError(f"{field}: cannot read {path}: {err}") from None

    def _use(self, cred: Credential) -> None:
        """Takes an exec plugin's credential (its token wins over the kubeconfig's)."""
        if cred.token:
            self.headers["Authorization"] = f"Bearer {cred.token}"
        if cred.client_pair:
            self._client_pair = cred.client_pair
            self._pair_what = f"the client certificate and key from {self._exec.what}"
        self._expires = cred.expires

    def _pool(self):
        pool = dict(timeout=self.timeout, retries=False)
        field = f"clusters[{self._cluster_name}].cluster"
        if self.host.startswith("https:"):
            pool["ssl_context"] = tls_context(self._cluster, field, self._client_pair,
                                              self._pair_what)
            if self._cluster.get("insecure-skip-tls-verify"):
                pool["cert_reqs"] = "CERT_NONE"
            if self._cluster.get("tls-server-name"):
                # The name sent (SNI) and verified instead of the server URL's host.
                pool["server_hostname"] = self._cluster["tls-server-name"]
        proxy, source = self._cluster.get("proxy-url"), f"{field}.proxy-url"
        if not proxy:
            proxy, source = proxy_from_environment(self.host)
        return proxy_manager(proxy, source, **pool) if proxy else urllib3.PoolManager(**pool)

    def _refresh(self) -> None:
        """Runs the exec plugin again (an expired or rejected credential)."""
        had_pair = self._client_pair
        self._use(self._exec.run())
        if self._client_pair is not had_pair:  # a new certificate: new connections
            self.http.clear()
            self.http = self._pool()

    def close(self) -> None:
        if self.http is not None:
            self.http.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, method: str, path: str, what: str, query: dict | None = None,
                body: dict | None = None, content_type: str = "application/json",
                missing_ok: bool = False, accept: str = "application/json",
                idempotent: bool | None = None, deadline: float | None = None):
        """One request; returns the decoded JSON (None for a 404 when missing_ok).

        GET and HEAD are retried as RetryPolicy says; other methods only with idempotent=True
        (a server-side apply). deadline: a time.monotonic() after which no retry starts."""
        url = self.host + path + (f"?{urlencode(query)}" if query else "")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
        may_retry = method in ("GET", "HEAD") if idempotent is None else idempotent
        started, attempts, rejected = time.monotonic(), 0, False
        fresh = False  # the plugin ran for this very attempt
        while True:
            if (self._exec and not fresh and self._expires
                    and time.time() > self._expires - EXPIRY_MARGIN):
                self._refresh()  # expired, also in the middle of a long retry
            fresh = False
            headers = {"Accept": accept, **self.headers}
            if data is not None:
                headers["Content-Type"] = content_type
            after = None
            try:
                response = self.http.request(method, url, body=data, headers=headers,
                                             timeout=self.timeout, retries=False)
            except urllib3.exceptions.HTTPError as err:
                failure, status, retry = str(err), None, may_retry and transient(error=err)
            else:
                status = response.status
                if status == 401 and self._exec and attempts == 0 and not rejected:
                    # The plugin's credential was refused (revoked, or expired early): the plugin
                    # runs again once, as client-go does; the request was not carried out.
                    rejected = fresh = True
                    self._refresh()
                    continue
                if status == 404 and missing_ok:
                    return None
                if status < 300:
                    try:
                        return json.loads(response.data)
                    except ValueError:
                        raise KubeError(f"{what} failed: the answer is not JSON (is {self.host} a "
                                        "Kubernetes API server?)") from None
                failure = f"HTTP {status}: {_api_message(response.data) or response.reason}"
                if status == 401 and self._exec:
                    failure += f" (the credential of {self._exec.what}, run again, was refused)"
                retry = may_retry and transient(status=status)
                if retry:
                    after = retry_after(response.headers.get("Retry-After"))
            attempts += 1
            wait = None
            if retry:
                left = None if deadline is None else deadline - time.monotonic()
                wait = self.retry.delay(attempts, time.monotonic() - started, after, left)
            if wait is None:
                tried = (f" (tried {attempts} times in {time.monotonic() - started:.0f}s)"
                         if attempts > 1 else "")
                raise KubeError(f"{what} failed: {failure}{tried}", status)
            time.sleep(wait)

    def get(self, path: str, what: str, query: dict | None = None, missing_ok: bool = False,
            deadline: float | None = None):
        return self.request("GET", path, what, query=query, missing_ok=missing_ok,
                            deadline=deadline)
