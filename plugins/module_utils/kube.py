# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A small Kubernetes REST client for the collection's modules.

Every task of a region pays its module's start-up, and importing the kubernetes Python client
(even only its kubeconfig loader: the package imports all its typed APIs) costs about 0.35 s of
CPU. With seven regions in parallel on a small controller that is most of a no-op run. This client
reads the kubeconfig itself (client certificates, CA, bearer tokens, basic auth) and speaks JSON
over urllib3 (about 0.05 s to import). Kubeconfigs that need an exec or auth-provider plugin (cloud
logins) are handed to the kubernetes client's loader, imported only then.

Every request is bounded by the client's timeout and never retried, so a frozen API server fails
the task instead of hanging it.
"""
from __future__ import annotations

import base64
import json
import os
import tempfile
from urllib.parse import urlencode

import urllib3
import yaml


# libyaml's safe loader where PyYAML has it (pip's wheels do): it parses a kubeconfig holding
# several clusters' certificates about ten times faster than the pure-Python one.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(stream):
    """yaml.safe_load, through libyaml when available."""
    return yaml.load(stream, Loader=_SAFE_LOADER)  # nosec B506: a safe loader


# The options every module that reaches a cluster takes (documented in doc_fragments/kube.py).
KUBE_ARGUMENT_SPEC = dict(kubeconfig=dict(type="path"), context=dict(type="str"))


def describe_context(context: str | None) -> str:
    """How messages name the cluster a module was pointed at."""
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


class KubeClient:
    def __init__(self, kubeconfig: str | None = None, context: str | None = None,
                 timeout: float = 10.0):
        self.context = context
        self.timeout = urllib3.Timeout(total=timeout)
        self._tempfiles: list[str] = []
        self.headers: dict[str, str] = {}
        path = os.path.expanduser(kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
                                  or "~/.kube/config")
        try:
            with open(path) as handle:
                config = load_yaml(handle) or {}
        except (OSError, yaml.YAMLError) as err:
            raise KubeError(f"cannot read kubeconfig {path}: {err}") from None
        self._base = os.path.dirname(os.path.abspath(path))
        name = context or config.get("current-context")
        ctx = self._named(config, "contexts", name, "context", path)
        cluster = self._named(config, "clusters", ctx.get("cluster"), "cluster", path)
        user = self._named(config, "users", ctx.get("user"), "user", path) if ctx.get("user") else {}
        self.host = (cluster.get("server") or "").rstrip("/")
        if not self.host:
            raise KubeError(f"cluster {ctx.get('cluster')} of {path} has no server")
        if "exec" in user or "auth-provider" in user:
            self.http = self._via_kubernetes_client(path, name)
            return
        pool = dict(timeout=self.timeout, retries=False)
        if cluster.get("insecure-skip-tls-verify"):
            pool["cert_reqs"] = "CERT_NONE"
        else:
            ca = self._file(cluster, "certificate-authority")
            if ca:
                pool.update(cert_reqs="CERT_REQUIRED", ca_certs=ca)
        cert, key = self._file(user, "client-certificate"), self._file(user, "client-key")
        if cert and key:
            pool.update(cert_file=cert, key_file=key)
        token = user.get("token")
        if not token and user.get("tokenFile"):
            with open(os.path.join(self._base, user["tokenFile"])) as handle:
                token = handle.read().strip()
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user.get("username"):
            basic = base64.b64encode(f"{user['username']}:{user.get('password', '')}".encode())
            self.headers["Authorization"] = "Basic " + basic.decode()
        self.http = urllib3.PoolManager(**pool)

    @staticmethod
    def _named(config: dict, section: str, name: str | None, key: str, path: str) -> dict:
        for entry in config.get(section) or []:
            if entry.get("name") == name:
                return entry.get(key) or {}
        names = ", ".join(e.get("name", "?") for e in config.get(section) or []) or "none"
        raise KubeError(f"{key} {name!r} is not in {path} ({section}: {names})")

    def _file(self, entry: dict, field: str) -> str | None:
        """A path to the PEM of `field`: the file it names, or its -data written to a temp file."""
        data = entry.get(f"{field}-data")
        if data:
            fd, tmp = tempfile.mkstemp(prefix="icn-kube-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(base64.b64decode(data))
            self._tempfiles.append(tmp)
            return tmp
        if entry.get(field):
            return os.path.join(self._base, entry[field])
        return None

    def _via_kubernetes_client(self, path: str, context: str | None):
        try:
            from kubernetes import config as kconfig
            from kubernetes.client import Configuration
            from kubernetes.client.rest import RESTClientObject
        except ImportError:
            raise KubeError("this kubeconfig needs an exec or auth-provider plugin, which needs the "
                            "kubernetes Python client (pip install kubernetes)") from None
        configuration = Configuration()
        try:
            kconfig.load_kube_config(config_file=path, context=context,
                                     client_configuration=configuration, persist_config=False)
        except Exception as err:  # the loader raises many types
            raise KubeError(f"cannot load {path}: {err}") from None
        self._configuration = configuration
        return RESTClientObject(configuration).pool_manager

    def _auth_headers(self) -> dict:
        headers = dict(self.headers)
        configuration = getattr(self, "_configuration", None)
        if configuration is not None:  # refreshes expiring tokens of auth plugins
            for auth in configuration.auth_settings().values():
                if auth["in"] == "header" and auth["value"]:
                    headers[auth["key"]] = auth["value"]
        return headers

    def close(self) -> None:
        self.http.clear()
        for tmp in self._tempfiles:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self._tempfiles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, method: str, path: str, what: str, query: dict | None = None,
                body: dict | None = None, content_type: str = "application/json",
                missing_ok: bool = False, accept: str = "application/json"):
        """One request; returns the decoded JSON (None for a 404 when missing_ok)."""
        url = self.host + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": accept, **self._auth_headers()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        try:
            response = self.http.request(method, url, body=data, headers=headers,
                                         timeout=self.timeout, retries=False)
        except urllib3.exceptions.HTTPError as err:
            raise KubeError(f"{what} failed: {err}") from None
        if response.status == 404 and missing_ok:
            return None
        if response.status >= 300:
            raise KubeError(f"{what} failed: HTTP {response.status}: "
                            f"{_api_message(response.data) or response.reason}", response.status)
        try:
            return json.loads(response.data)
        except ValueError:
            raise KubeError(f"{what} failed: the answer is not JSON (is {self.host} a Kubernetes "
                            "API server?)") from None

    def get(self, path: str, what: str, query: dict | None = None, missing_ok: bool = False):
        return self.request("GET", path, what, query=query, missing_ok=missing_ok)
