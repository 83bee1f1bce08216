#!/usr/bin/env bash
# The project's own Docker engine for the kind clusters, apart from any other dockerd on the machine:
# its own socket, pidfile and exec root under $ICN_KIND_STATE (default .kind/ in the repository), its
# own data root (the built images: kept between runs, in the tools cache), no default bridge, no
# iptables rules on the host (kind's own network is a bridge that only these containers and the
# host's loopback-published ports reach), and lab/kind/runc-capbnd as its default runtime.
#
#   lab/kind/dockerd.sh start    start it (installs Debian's docker.io if dockerd is missing); idempotent
#   lab/kind/dockerd.sh stop     stop it, by its pid
#   lab/kind/dockerd.sh env      print DOCKER_HOST=... for `eval`
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
state=${ICN_KIND_STATE:-$root/.kind}
cache=${ICN_TOOLS_CACHE:-$HOME/.cache/icn-super-node/tools}
dir=$state/docker
sock=$dir/docker.sock
pidfile=$dir/dockerd.pid
data=${ICN_KIND_DOCKER_DATA:-$cache/kind-docker}
log() { printf '[kind-dockerd] %s\n' "$*" >&2; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

install_packages() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  [ -x /usr/sbin/runc ] || need+=(runc)
  command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
  [ ${#need[@]} -eq 0 ] && return 0
  log "installing Debian's ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # policy-rc.d keeps the package's own docker.service from being started (we start our own)
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
}

start() {
  install_packages
  # Debian's docker CLI (the daemon's version) first on the scenario's PATH (molecule/kind)
  mkdir -p "$state/bin"; ln -sfn /usr/bin/docker "$state/bin/docker"
  # Every kind node runs a systemd, a kubelet and a containerd, each with inotify instances: the
  # default 128 per user runs out with a few clusters ("too many open files" in kube-proxy). Raised
  # as kind's known-issues page says; never lowered.
  local key want
  for key in fs.inotify.max_user_instances=1024 fs.inotify.max_user_watches=524288; do
    want=${key#*=}
    [ "$(sysctl -n "${key%=*}")" -ge "$want" ] || sysctl -qw "$key"
  done
  if running; then log "dockerd already runs (pid $(cat "$pidfile"))"; return 0; fi
  mkdir -p "$dir" "$data"
  cat > "$dir/daemon.json" <<JSON
{
  "runtimes": {"icn-runc": {"path": "$here/runc-capbnd"}},
  "default-runtime": "icn-runc",
  "bridge": "none",
  "iptables": false,
  "ip-masq": false,
  "ip6tables": false,
  "default-address-pools": [{"base": "172.29.0.0/16", "size": 24}],
  "oom-score-adjust": 0,
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m"},
  "features": {"buildkit": false}
}
JSON
  log "starting dockerd ($sock, data root $data)"
  # setsid: its own session, so a ^C in the caller's terminal does not reach it
  setsid /usr/sbin/dockerd --config-file "$dir/daemon.json" --host "unix://$sock" --pidfile "$pidfile" \
    --exec-root "$dir/exec" --data-root "$data" >"$dir/dockerd.log" 2>&1 < /dev/null &
  local i
  for i in $(seq 1 60); do
    if DOCKER_HOST="unix://$sock" /usr/bin/docker version >/dev/null 2>&1; then
      log "dockerd ready (pid $(cat "$pidfile"))"; return 0
    fi
    sleep 0.5
  done
  log "dockerd did not answer in 30 s; the end of $dir/dockerd.log:"; tail -n 20 "$dir/dockerd.log" >&2
  return 1
}

stop() {
  running || { log "dockerd is not running"; rm -f "$pidfile"; return 0; }
  local pid; pid=$(cat "$pidfile")
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  local i
  # its exec root holds sockets (containerd's): gone with it
  for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || { rm -rf "$pidfile" "$dir/exec"; return 0; }; sleep 0.5; done
  log "dockerd (pid $pid) did not stop in 30 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  env) echo "DOCKER_HOST=unix://$sock" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
