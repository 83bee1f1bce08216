#!/usr/bin/env bash
# Builds the lab's tools with `go` from the Go module proxy and caches each one under
# ${ICN_TOOLS_CACHE:-~/.cache/icn-super-node/tools}/<tool>-<version>/. A cached tool is reused as is,
# so only the first run on a machine pays for the build.
#
#   lab/build-tools.sh [tool ...]     tools: every build_<tool> function below (default: all)
#
# Prints, last, one line per tool: NAME=path-to-its-bin-dir.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/versions.env"
cache=${ICN_TOOLS_CACHE:-$HOME/.cache/icn-super-node/tools}
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
mkdir -p "$cache"

log() { printf '[build-tools] %s\n' "$*" >&2; }

# What each cold build took on this project's machine (2 cores, empty Go caches, in this order:
# the lab's tools 2026-12-02 on a quiet machine, kind's 2026-12-01), printed when a build starts so
# that a newcomer knows how long to wait. The go tool's own output goes to $cache/logs/<tool>.log.
declare -A TOOK=([etcd]="37 s" [helm]="67 s" [kubernetes]="6 min 2 s" [kwok]="74 s"
                 [istio]="3 min 45 s" [prometheus]="7 min 30 s for both binaries, beside two other builds" [promcrds]="2 s"
                 [adapter]="3 min 14 s, beside a lab starting"
                 [kind]="10 s" [containerd]="2 min 54 s" [kubenode]="1 min 40 s, after kubernetes"
                 [pause]="1 s")

# build TOOL: build_TOOL unless cached_TOOL, with one line when it starts and one when it ends
# (its measured time); the go tool's output in the log file, its tail shown if the build fails.
build() {
  local tool=$1 started log="$cache/logs/$1.log"
  "cached_$tool" && return 0
  mkdir -p "$cache/logs"
  log "building $tool (took ${TOOK[$tool]} here, cold, on 2 cores); full log: $log"
  started=$SECONDS
  if ! "build_$tool" >"$log" 2>&1; then
    log "building $tool FAILED after $((SECONDS - started)) s; the end of $log:"
    tail -n 20 "$log" >&2
    return 1
  fi
  log "$tool ready in $((SECONDS - started)) s"
}

# scratch_module DIR: a throwaway Go module to build another project's commands from, so that the
# replace directives of that project's own go.mod do not apply and published versions are used.
scratch_module() {
  rm -rf "$1" && mkdir -p "$1"
  (cd "$1" && go mod init icn.local/toolbuild >/dev/null 2>&1)
}

# finish NAME DIR: an atomic rename, so a half-built tool is never taken for a cached one.
finish() { rm -rf "$2" && mv "$2.tmp" "$2"; log "$1 ready in $2"; }

cached_kwok() { local out="$cache/kwok-$KWOK_VERSION"; [ -x "$out/bin/kwokctl" ] && [ -x "$out/bin/kwok" ]; }
build_kwok() {
  local out="$cache/kwok-$KWOK_VERSION"
  log "building kwok and kwokctl $KWOK_VERSION"
  local m="$out.tmp/src"; scratch_module "$m"
  (cd "$m" && go get "sigs.k8s.io/kwok@v$KWOK_VERSION" >&2 &&
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/bin/" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl >&2)
  rm -rf "$m"; finish kwok "$out"
}

cached_etcd() { [ -x "$cache/etcd-$ETCD_VERSION/bin/etcd" ]; }
build_etcd() {
  local out="$cache/etcd-$ETCD_VERSION"
  log "building etcd $ETCD_VERSION"
  local m="$out.tmp/src"; scratch_module "$m"
  (cd "$m" && go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@v$ETCD_VERSION" >&2 &&
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/bin/etcd" go.etcd.io/etcd/server/v3 >&2 &&
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/bin/etcdctl" go.etcd.io/etcd/etcdctl/v3 >&2)
  rm -rf "$m"; finish etcd "$out"
}

# Kubernetes: k8s.io/kubernetes replaces every k8s.io/<staging> module with ./staging/src/...; a scratch
# module that requires it replaces each of them with the published v0.<minor>.<patch> instead.
cached_kubernetes() {
  local out="$cache/kubernetes-$K8S_VERSION"
  [ -x "$out/bin/kube-apiserver" ] && [ -x "$out/bin/kube-controller-manager" ] &&
    [ -x "$out/bin/kube-scheduler" ] && [ -x "$out/bin/kubectl" ]
}
build_kubernetes() {
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $K8S_VERSION"
  kube_build "$cache/kubernetes-$K8S_VERSION" kube-apiserver kube-controller-manager kube-scheduler kubectl
  finish kubernetes "$cache/kubernetes-$K8S_VERSION"
}

# kube_build OUT CMD...: k8s.io/kubernetes/cmd/CMD... into OUT.tmp/bin, version-stamped (kubeadm reads it).
kube_build() {
  local out=$1; shift
  local m="$out.tmp/src"; scratch_module "$m"
  local staging="v0.${K8S_VERSION#1.}"
  (
    cd "$m"
    local kdir
    kdir=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    [ -n "$kdir" ] || { log "cannot download k8s.io/kubernetes@v$K8S_VERSION"; exit 1; }
    # Every staging module that k8s.io/kubernetes replaces with a local path.
    local mods
    mods=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$kdir/go.mod")
    [ -n "$mods" ] || { log "no staging replaces found in $kdir/go.mod"; exit 1; }
    local args=()
    for mod in $mods; do args+=("-replace=$mod=$mod@$staging"); done
    go mod edit "${args[@]}" -require="k8s.io/kubernetes@v$K8S_VERSION"
    # The kubernetes go.mod pins its own dependency versions; copy its requires so the build uses them.
    go mod edit $(sed -n '/^require (/,/^)/p' "$kdir/go.mod" | grep -v '^require\|^)' | grep -v '^\s*k8s.io/' |
      awk '{print "-require=" $1 "@" $2}')
    { printf '//go:build tools\n\npackage tools\n\nimport (\n'
      for c in "$@"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
      printf ')\n'; } > tools.go
    go mod tidy >&2
    local minor=${K8S_VERSION#1.}; minor=${minor%%.*}
    local ld="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    go build -trimpath -ldflags "$ld" -o "$out.tmp/bin/" "${@/#/k8s.io/kubernetes/cmd/}" >&2
  ) || { rm -rf "$m"; return 1; }
  rm -rf "$m"
}

# .k8s-version marks a build that knows its Kubernetes version (older builds here did not).
cached_helm() { [ -x "$cache/helm-$HELM_VERSION/bin/helm" ] && [ -f "$cache/helm-$HELM_VERSION/.k8s-version" ]; }
build_helm() {
  local out="$cache/helm-$HELM_VERSION"
  log "building helm $HELM_VERSION"
  local m="$out.tmp/src"; scratch_module "$m"
  (
    cd "$m"
    go get "helm.sh/helm/v3@v$HELM_VERSION" >&2
    # As Helm's Makefile does: the Kubernetes version that `helm template` and `helm lint`
    # assume comes from the client-go it is built with (v0.X.Y -> 1.X).
    local kv major minor
    kv=$(go list -f '{{.Version}}' -m k8s.io/client-go); kv=${kv#v}
    major=$(( ${kv%%.*} + 1 )); minor=${kv#*.}; minor=${minor%%.*}
    local ld="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
    ld="$ld -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ld="$ld -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
    done
    go build -trimpath -ldflags "$ld" -o "$out.tmp/bin/helm" helm.sh/helm/v3/cmd/helm >&2
    echo "$major.$minor" > "$out.tmp/.k8s-version"
  )
  rm -rf "$m"; finish helm "$out"
}

# Istio: the proxy serves only pseudo-versions of istio.io/istio (no release tag), so istioctl is built
# from one and the Helm charts (base, istiod, gateway) are copied from the same module's manifests/charts.
# The release it corresponds to is in $out/RELEASE (from the module's VERSION file).
cached_istio() {
  local out="$cache/istio-$ISTIO_MODULE_VERSION"
  [ -x "$out/bin/istioctl" ] && [ -f "$out/charts/base/Chart.yaml" ]
}
build_istio() {
  local out="$cache/istio-$ISTIO_MODULE_VERSION"
  log "building istioctl $ISTIO_MODULE_VERSION"
  local m="$out.tmp/src"; scratch_module "$m"
  (
    cd "$m"
    local dir
    dir=$(go mod download -json "istio.io/istio@$ISTIO_MODULE_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    [ -n "$dir" ] || { log "cannot download istio.io/istio@$ISTIO_MODULE_VERSION"; exit 1; }
    mkdir -p "$out.tmp/charts"
    cp -r "$dir/manifests/charts/base" "$dir/manifests/charts/istio-control/istio-discovery" \
      "$dir/manifests/charts/gateway" "$out.tmp/charts/"
    chmod -R u+w "$out.tmp/charts"
    # The module's VERSION file names the minor release its branch is building (Makefile.core.mk adds -dev).
    local release
    release="$(cat "$dir/VERSION")-dev"
    echo "$release" > "$out.tmp/RELEASE"
    go get "istio.io/istio@$ISTIO_MODULE_VERSION" >&2
    local ld="-s -w -X istio.io/istio/pkg/version.buildVersion=$release+$ISTIO_MODULE_VERSION"
    ld="$ld -X istio.io/istio/pkg/version.buildStatus=Clean -X istio.io/istio/pkg/version.buildTag=$ISTIO_MODULE_VERSION"
    go build -trimpath -ldflags "$ld" -o "$out.tmp/bin/istioctl" istio.io/istio/istioctl/cmd/istioctl >&2
  )
  rm -rf "$m"; finish istio "$out"
}

# promtool (the alert rules' checks and unit tests) and the Prometheus server (the lab's, started by
# `icnlab.py up --prometheus`), from one module: v0.316.0 is Prometheus v3.16.0 (v0.3XX.Y = v3.XX.Y).
# Tags as Prometheus' .promu.yml (netgo) plus remove_all_sd, which drops the service-discovery plugins:
# the lab's Prometheus finds its targets in files (file_sd, which stays) and rule checks use none. No
# builtinassets tag: the server's web UI is left out, its HTTP API is all the lab and the tests use.
cached_prometheus() {
  local out="$cache/prometheus-$PROMETHEUS_VERSION"
  [ -x "$out/bin/promtool" ] && [ -x "$out/bin/prometheus" ]
}
build_prometheus() {
  local out="$cache/prometheus-$PROMETHEUS_VERSION"
  log "building promtool and prometheus $PROMETHEUS_VERSION"
  local m="$out.tmp/src"; scratch_module "$m"
  local v=github.com/prometheus/common/version
  (cd "$m" && go get "github.com/prometheus/prometheus@v$PROMETHEUS_VERSION" >&2 &&
    go build -trimpath -tags "netgo remove_all_sd" \
      -ldflags "-s -w -X $v.Version=$PROMETHEUS_VERSION -X $v.Branch=HEAD -X $v.BuildUser=icn-lab" \
      -o "$out.tmp/bin/" github.com/prometheus/prometheus/cmd/promtool \
      github.com/prometheus/prometheus/cmd/prometheus >&2)
  rm -rf "$m"; finish prometheus "$out"
}

# prometheus-adapter (sigs.k8s.io/prometheus-adapter, cmd/adapter): in a lab with Prometheus it serves
# custom.metrics.k8s.io from the lab's Prometheus with the rule the monitoring role writes, so the HPA
# scales on PromQL over the pods' byte counters. v0.12.0 is the newest the proxy serves here (v0.13.0
# refused on 2026-12-03).
cached_adapter() { [ -x "$cache/prometheus-adapter-$PROMETHEUS_ADAPTER_VERSION/bin/prometheus-adapter" ]; }
build_adapter() {
  local out="$cache/prometheus-adapter-$PROMETHEUS_ADAPTER_VERSION"
  local m="$out.tmp/src"; scratch_module "$m"
  (cd "$m" && go get "sigs.k8s.io/prometheus-adapter@v$PROMETHEUS_ADAPTER_VERSION" >&2 &&
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/bin/prometheus-adapter" \
      sigs.k8s.io/prometheus-adapter/cmd/adapter >&2)
  rm -rf "$m"; finish adapter "$out"
}

# The CustomResourceDefinitions of prometheus-operator that the chart renders objects of (ServiceMonitor,
# PrometheusRule, and PodMonitor beside them), from its Go module (example/prometheus-operator-crd): the
# lab started with --prometheus installs them, as kube-prometheus-stack would. Nothing is built.
cached_promcrds() { [ -f "$cache/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION/servicemonitors.yaml" ]; }
build_promcrds() {
  local out="$cache/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION" dir kind
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  dir=$(cd /tmp && go mod download -json \
        "github.com/prometheus-operator/prometheus-operator@v$PROMETHEUS_OPERATOR_VERSION" |
        sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -n "$dir" ] || return 1
  for kind in servicemonitors podmonitors prometheusrules; do
    cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$out.tmp/$kind.yaml"
  done
  chmod -R u+w "$out.tmp"
  finish promcrds "$out"
}

# The kind clusters' tools (lab/kind, docs/kind.md): kind itself, and what goes into the node image
# (containerd, kubelet/kubeadm/kube-proxy, pause). Built only when named (lab/kind/build-images.sh does).
ON_REQUEST="kind containerd kubenode pause"
cached_kind() { [ -x "$cache/kind-$KIND_VERSION/bin/kind" ]; }
build_kind() {
  local out="$cache/kind-$KIND_VERSION"
  log "building kind $KIND_VERSION"
  local m="$out.tmp/src"; scratch_module "$m"
  (cd "$m" && go get "sigs.k8s.io/kind@v$KIND_VERSION" >&2 &&
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/bin/kind" sigs.k8s.io/kind >&2) || return 1
  # kind's node files (entrypoint, systemd units, containerd config) for the node image
  local dir; dir=$(cd "$m" && go list -m -f '{{.Dir}}' sigs.k8s.io/kind)
  cp -r "$dir/images/base/files" "$out.tmp/base-files" && chmod -R u+w "$out.tmp/base-files"
  rm -rf "$m"; finish kind "$out"
}

# containerd 2.x for the node image, with the build tags kind's base image uses (no cgo needed then).
cached_containerd() { [ -x "$cache/containerd-$CONTAINERD_VERSION/bin/containerd" ]; }
build_containerd() {
  local out="$cache/containerd-$CONTAINERD_VERSION"
  log "building containerd, ctr, containerd-shim-runc-v2 $CONTAINERD_VERSION"
  local m="$out.tmp/src"; scratch_module "$m"
  local c=github.com/containerd/containerd/v2
  (cd "$m" && go get "$c@v$CONTAINERD_VERSION" >&2 &&
    go build -trimpath -tags "no_aufs no_zfs no_btrfs no_devmapper" \
      -ldflags "-s -w -X $c/version.Version=v$CONTAINERD_VERSION -X $c/version.Package=$c" \
      -o "$out.tmp/bin/" "$c/cmd/containerd" "$c/cmd/ctr" "$c/cmd/containerd-shim-runc-v2" >&2) || return 1
  rm -rf "$m"; finish containerd "$out"
}

# kubelet, kubeadm, kube-proxy for the node image, from the same module and version as the lab's tools.
cached_kubenode() {
  local out="$cache/kubenode-$K8S_VERSION"
  [ -x "$out/bin/kubelet" ] && [ -x "$out/bin/kubeadm" ] && [ -x "$out/bin/kube-proxy" ]
}
build_kubenode() {
  log "building kubelet, kubeadm, kube-proxy $K8S_VERSION"
  kube_build "$cache/kubenode-$K8S_VERSION" kubelet kubeadm kube-proxy || return 1
  finish kubenode "$cache/kubenode-$K8S_VERSION"
}

# pause, the sandbox image's one binary: Kubernetes' build/pause/linux/pause.c, static, with gcc.
cached_pause() { [ -x "$cache/pause-$K8S_VERSION/bin/pause" ]; }
build_pause() {
  local out="$cache/pause-$K8S_VERSION" kdir
  kdir=$(cd /tmp && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  mkdir -p "$out.tmp/bin"
  gcc -Os -Wall -Werror -static -DVERSION="v$K8S_VERSION-icn" -o "$out.tmp/bin/pause" \
    "$kdir/build/pause/linux/pause.c" || return 1
  strip "$out.tmp/bin/pause"
  finish pause "$out"
}

# Every tool is a build_<tool> function and a bin_<tool> line; the default is all of them.
bin_kwok() { echo "KWOK_BIN=$cache/kwok-$KWOK_VERSION/bin"; }
bin_etcd() { echo "ETCD_BIN=$cache/etcd-$ETCD_VERSION/bin"; }
bin_kubernetes() { echo "KUBE_BIN=$cache/kubernetes-$K8S_VERSION/bin"; }
bin_helm() { echo "HELM_BIN=$cache/helm-$HELM_VERSION/bin"; }
bin_prometheus() { echo "PROMETHEUS_BIN=$cache/prometheus-$PROMETHEUS_VERSION/bin"; }
bin_adapter() { echo "PROMETHEUS_ADAPTER_BIN=$cache/prometheus-adapter-$PROMETHEUS_ADAPTER_VERSION/bin"; }
bin_promcrds() { echo "PROMETHEUS_CRDS=$cache/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION"; }
bin_istio() { echo "ISTIO_BIN=$cache/istio-$ISTIO_MODULE_VERSION/bin"; }
bin_kind() { echo "KIND_BIN=$cache/kind-$KIND_VERSION/bin"; }
bin_containerd() { echo "CONTAINERD_BIN=$cache/containerd-$CONTAINERD_VERSION/bin"; }
bin_kubenode() { echo "KUBENODE_BIN=$cache/kubenode-$K8S_VERSION/bin"; }
bin_pause() { echo "PAUSE_BIN=$cache/pause-$K8S_VERSION/bin"; }

known=$(compgen -A function build_ | sed 's/^build_//' | tr '\n' ' ')
default=$(for t in $known; do [[ " $ON_REQUEST " == *" $t "* ]] || printf '%s ' "$t"; done)
tools=("$@"); [ ${#tools[@]} -gt 0 ] || read -r -a tools <<< "$default"
for t in "${tools[@]}"; do
  declare -F "build_$t" >/dev/null || { log "unknown tool '$t' (allowed: $known)"; exit 2; }
done
for t in "${tools[@]}"; do build "$t"; done
for t in "${tools[@]}"; do "bin_$t"; done
