#!/usr/bin/env bash
# Builds, offline, every image the kind clusters need, into the project's own dockerd
# (lab/kind/dockerd.sh; started here if it is not running):
#
#   icn/kind-node:v<K8S_VERSION>-<rev>     the node image, as kind's base image + `kind build node-image`
#                                          make it, from Debian's packages and the tools built here
#   icn/super-node-standin:<tag>           the Super-Node STAND-IN (images/super-node-standin), one image
#                                          per tag of STANDIN_TAGS; a tag ending in -broken is never Ready
#
#   lab/kind/build-images.sh            build what is missing; prints NODE_IMAGE=... last
#   lab/kind/build-images.sh --print    only print NODE_IMAGE=... (the name the current sources give)
#
# An image already in the dockerd's data root (the tools cache) is reused: <rev> is a hash of the
# functions that build it, its package list and versions.env (so also kind's node files, which come
# with KIND_VERSION); the stand-in's images carry a hash of their sources as a label.
#
# Why not `kind build node-image`: it pulls its base image and `ctr content fetch`es every image
# kubeadm needs, and nothing can be pulled here. So this does what its buildImage() does by hand:
#  1. a Debian bookworm rootfs (mmdebstrap; bookworm's systemd 252 still boots under cgroup v1) with
#     the packages of kind's base image that Kubernetes uses, Debian's runc and CNI plugins;
#  2. kind's node files (images/base/files of the kind module): entrypoint, systemd units, containerd
#     config; containerd 2.x, kubelet, kubeadm, kubectl built by lab/build-tools.sh;
#  3. the images `kubeadm config images list` names, built here from the same binaries: kube-apiserver,
#     kube-controller-manager, kube-scheduler (FROM scratch), kube-proxy (with iptables from the rootfs),
#     etcd (the lab's etcd), pause (Kubernetes' pause.c); CoreDNS is not built (the clusters skip
#     kubeadm's addon/coredns phase: nothing here resolves in-cluster names; see docs/kind.md);
#  4. those images imported into the node's containerd (ctr import --no-unpack, as kind does), and the
#     container committed with kind's entrypoint.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=/dev/null
. "$root/lab/versions.env"
cache=${ICN_TOOLS_CACHE:-$HOME/.cache/icn-super-node/tools}
STANDIN_TAGS=${STANDIN_TAGS:-"v1.0.0 v1.1.0 v1.1.0-broken"}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
# What the node needs of kind's base image package list (no NFS/iSCSI, fuse-overlayfs or curl here).
NODE_PACKAGES=systemd,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2
NODE_PACKAGES=$NODE_PACKAGES,bash,ca-certificates,procps,runc,containernetworking-plugins,jq,less
log() { printf '[kind-images] %s\n' "$*" >&2; }
docker() { /usr/bin/docker "$@"; }   # Debian's CLI, the same version as the daemon

# --- the stand-in ------------------------------------------------------------------------------------
build_standin() {
  local missing=() t rev
  rev=$(cat "$root"/images/super-node-standin/* | sha256sum | cut -c1-10)
  for t in $STANDIN_TAGS; do
    [ "$(docker image inspect -f '{{index .Config.Labels "icn.standin.rev"}}' "icn/super-node-standin:$t" 2>/dev/null)" = "$rev" ] ||
      missing+=("$t")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  log "building the Super-Node stand-in (${missing[*]})"
  mkdir -p "$work/standin"
  cp "$root/images/super-node-standin/Dockerfile" "$work/standin/"
  (cd "$root/images/super-node-standin" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    go build -trimpath -ldflags "-s -w" -o "$work/standin/super-node-standin" .)
  for t in "${missing[@]}"; do
    docker build -q --build-arg "TAG=$t" --label "icn.standin.rev=$rev" -t "icn/super-node-standin:$t" "$work/standin" >/dev/null
  done
}

# --- the control-plane images ------------------------------------------------------------------------
# scratch_image TAG DIR: an image FROM scratch with DIR's files, PATH set (kubeadm's static pods name
# their command without a path).
scratch_image() {
  local tag=$1 dir=$2
  printf 'FROM scratch\nCOPY . /\nENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n' > "$dir/Dockerfile"
  docker build -q -t "$tag" "$dir" >/dev/null
}

# with_libs ROOTFS DEST FILE...: copy FILE... (paths inside ROOTFS) and the shared libraries they load
# (ldd, run in the rootfs) from ROOTFS to DEST.
with_libs() {
  local rootfs=$1 dest=$2; shift 2
  local f
  for f in "$@" $(chroot "$rootfs" ldd "$@" 2>/dev/null | awk '/=>/ {print $3} /^\t\// {print $1}' | sort -u); do
    mkdir -p "$dest$(dirname "$f")"
    cp -aL "$rootfs$f" "$dest$f"
  done
}

build_k8s_images() {
  local rootfs=$1 images=$2 img name tag
  mkdir -p "$images"
  for img in $3; do
    name=${img%:*}; name=${name##*/}; tag=${img##*:}
    local dir="$work/img-$name"; mkdir -p "$dir/usr/local/bin"
    case $name in
      kube-apiserver|kube-controller-manager|kube-scheduler)
        cp "$KUBE_BIN/$name" "$dir/usr/local/bin/" ;;
      kube-proxy)
        # kube-proxy runs iptables(-restore): Debian's, with its libraries and extensions, from the rootfs
        cp "$KUBENODE_BIN/kube-proxy" "$dir/usr/local/bin/"
        with_libs "$rootfs" "$dir" /usr/sbin/xtables-nft-multi \
          $(cd "$rootfs" && ls usr/lib/x86_64-linux-gnu/xtables/*.so | sed 's#^#/#')
        local l
        for l in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
          ln -sf xtables-nft-multi "$dir/usr/sbin/$l"
        done
        mkdir -p "$dir/etc" "$dir/run" "$dir/tmp" "$dir/var/lib/kube-proxy"
        cp "$rootfs/etc/protocols" "$rootfs/etc/services" "$dir/etc/" 2>/dev/null || true ;;
      etcd)
        cp "$ETCD_BIN/etcd" "$ETCD_BIN/etcdctl" "$dir/usr/local/bin/" ;;
      pause)
        cp "$PAUSE_BIN/pause" "$dir/pause"
        printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' > "$dir/Dockerfile"
        rm -rf "$dir/usr"
        docker build -q -t "$img" "$dir" >/dev/null
        docker save -o "$images/$name.tar" "$img"; docker rmi "$img" >/dev/null
        continue ;;
      coredns) continue ;;  # not built: addon/coredns is skipped (docs/kind.md)
      *) log "no recipe for image $img"; return 1 ;;
    esac
    scratch_image "$img" "$dir"
    docker save -o "$images/$name.tar" "$img"; docker rmi "$img" >/dev/null
  done
}

# --- the node image ----------------------------------------------------------------------------------
build_node() {
  have "$NODE_IMAGE" && { log "node image $NODE_IMAGE is there"; return 0; }
  local started=$SECONDS rootfs="$work/rootfs" files="$KIND_BIN/../base-files"
  log "building the node image $NODE_IMAGE (mmdebstrap bookworm, then the images kubeadm needs)"
  if ! wait "$debootstrap_pid"; then
    debootstrap_pid=""; log "mmdebstrap failed:"; tail -n 20 "$work/mmdebstrap.log" >&2; return 1
  fi
  debootstrap_pid=""
  log "rootfs ready after $((SECONDS - script_started)) s (since the script started)"

  # kind's base image (images/base/Dockerfile): its files, and its systemd clean-up
  cp -a "$files/." "$rootfs/"
  chmod 0755 "$rootfs"/usr/local/bin/* "$rootfs"/kind/bin/*
  find "$rootfs/lib/systemd/system/sysinit.target.wants/" -name "systemd-tmpfiles-setup.service" -delete
  rm -f "$rootfs"/lib/systemd/system/multi-user.target.wants/* "$rootfs"/etc/systemd/system/*.wants/* \
    "$rootfs"/lib/systemd/system/local-fs.target.wants/* "$rootfs"/lib/systemd/system/sockets.target.wants/*udev* \
    "$rootfs"/lib/systemd/system/sockets.target.wants/*initctl* "$rootfs"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >> "$rootfs/etc/systemd/journald.conf"
  ln -sf /usr/lib/systemd/systemd "$rootfs/sbin/init"
  chroot "$rootfs" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >&2
  chroot "$rootfs" systemctl mask systemd-binfmt.service >&2
  mkdir -p "$rootfs/etc/kubernetes/manifests" "$rootfs/opt/cni" "$rootfs/etc/cni/net.d"
  # Debian's CNI plugins live in /usr/lib/cni; containerd looks in /opt/cni/bin
  ln -sfn /usr/lib/cni "$rootfs/opt/cni/bin"

  # the binaries (kind's node image puts kubelet, kubeadm and kubectl in /usr/bin)
  cp "$CONTAINERD_BIN/containerd" "$CONTAINERD_BIN/ctr" "$CONTAINERD_BIN/containerd-shim-runc-v2" "$rootfs/usr/local/bin/"
  cp "$KUBENODE_BIN/kubelet" "$KUBENODE_BIN/kubeadm" "$KUBE_BIN/kubectl" "$rootfs/usr/bin/"
  "$CONTAINERD_BIN/ctr" oci spec \
    | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
    | jq 'del(.process.rlimits)' > "$rootfs/etc/containerd/cri-base.json"
  echo "v$K8S_VERSION" > "$rootfs/kind/version"
  mkdir -p "$rootfs/kind/manifests"
  # kind applies this at create; the old host-path class, no provisioner image to run
  cat > "$rootfs/kind/manifests/default-storage.yaml" <<'YAML'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
YAML

  local required pause
  required=$(chroot "$rootfs" kubeadm config images list --kubernetes-version "v$K8S_VERSION")
  log "kubeadm asks for: $(echo "$required" | tr '\n' ' ')"
  pause=$(echo "$required" | grep /pause:)
  # This machine's bounding set lacks CAP_SYS_RESOURCE (lab/kind/runc-capbnd): containerd must not
  # ask runc for an oom_score_adj below its own (it would fail), as kind does for rootless nodes.
  sed -i -e "s#^\(\s*sandbox_image = \).*#\1\"$pause\"#" \
    -e 's#^\(\s*restrict_oom_score_adj = \).*#\1true#' "$rootfs/etc/containerd/config.toml"
  grep -q "sandbox_image = \"$pause\"" "$rootfs/etc/containerd/config.toml"

  build_k8s_images "$rootfs" "$work/images" "$required"
  log "control-plane images built after $((SECONDS - started)) s"

  # the rootfs as an image, then kind's import of the images into the node's containerd
  local base=icn/kind-node-base:build
  tar -C "$rootfs" --numeric-owner -c . | docker import - "$base" >/dev/null
  rm -rf "$rootfs"
  build_container=icn-kind-build-$$
  docker run -d --name "$build_container" --network none --entrypoint sleep \
    --security-opt seccomp=unconfined "$base" infinity >/dev/null
  docker exec "$build_container" bash -c 'nohup containerd >/var/log/containerd-build.log 2>&1 & echo $! > /run/containerd-build.pid'
  docker exec "$build_container" bash -c 'for i in $(seq 1 50); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; cat /var/log/containerd-build.log; exit 1'
  local tar
  for tar in "$work"/images/*.tar; do
    docker exec -i "$build_container" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
      --all-platforms --no-unpack --digests - < "$tar" >/dev/null
  done
  docker exec "$build_container" ctr --namespace=k8s.io images list -q | grep -v '^sha256:' | sed 's/^/[kind-images]   /' >&2
  docker exec "$build_container" bash -c 'kill $(cat /run/containerd-build.pid); for i in $(seq 1 50); do kill -0 $(cat /run/containerd-build.pid) 2>/dev/null || break; sleep 0.2; done; rm -f /run/containerd-build.pid /var/log/containerd-build.log'
  docker commit "$build_container" "$base-committed" >/dev/null
  docker rm -f -v "$build_container" >/dev/null; build_container=""
  # kind's base image's metadata (its Dockerfile) and what kind's buildImage() commits with
  printf 'FROM %s\nENV container=docker HTTP_PROXY="" HTTPS_PROXY="" NO_PROXY=""\nSTOPSIGNAL SIGRTMIN+3\nENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]\n' \
    "$base-committed" | docker build -q -t "$NODE_IMAGE" - >/dev/null
  docker rmi "$base-committed" "$base" >/dev/null
  log "node image $NODE_IMAGE built in $((SECONDS - started)) s"
}

# --- main ---------------------------------------------------------------------------------------------
have() { docker image inspect "$1" >/dev/null 2>&1; }
# the node image's revision: what makes it (its functions below, the packages, the versions)
rev=$({ declare -f build_node build_k8s_images with_libs scratch_image; echo "$NODE_PACKAGES"
        cat "$root/lab/versions.env"; } | sha256sum | cut -c1-10)
NODE_IMAGE=icn/kind-node:v$K8S_VERSION-$rev
if [ "${1:-}" = --print ]; then echo "NODE_IMAGE=$NODE_IMAGE"; exit 0; fi

script_started=$SECONDS
bash "$here/dockerd.sh" start
eval "export $(bash "$here/dockerd.sh" env)"

work=$(mktemp -d "${TMPDIR:-/tmp}/icn-kind-build.XXXXXX")
build_container="" debootstrap_pid=""
cleanup() {
  [ -z "$debootstrap_pid" ] || kill "$debootstrap_pid" 2>/dev/null || true
  [ -z "$build_container" ] || docker rm -f -v "$build_container" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The node's Debian rootfs (network and dpkg, little CPU) is made while the Go tools build.
if ! have "$NODE_IMAGE"; then
  log "making the node's Debian bookworm rootfs (mmdebstrap, in the background; log: $work/mmdebstrap.log)"
  mmdebstrap --quiet --variant=minbase --include="$NODE_PACKAGES" bookworm "$work/rootfs" \
    "deb $DEBIAN_MIRROR bookworm main" "deb $DEBIAN_MIRROR bookworm-updates main" \
    "deb $DEBIAN_SECURITY bookworm-security main" > "$work/mmdebstrap.log" 2>&1 &
  debootstrap_pid=$!
fi

# The tools (cached by version; each build prints its start and end).
eval "$(bash "$root/lab/build-tools.sh" kubernetes etcd kind containerd kubenode pause | sed 's/^/export /')"
mkdir -p "${ICN_KIND_STATE:-$root/.kind}/bin"; ln -sfn "$KIND_BIN/kind" "${ICN_KIND_STATE:-$root/.kind}/bin/kind"

build_standin
build_node
log "images ready in $((SECONDS - script_started)) s"
echo "NODE_IMAGE=$NODE_IMAGE"
