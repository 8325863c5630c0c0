#!/usr/bin/env bash
# Make sure a Docker daemon answers, for the container tests (tests/container) and
# container/build.py: install Debian's docker.io and docker-compose if they are missing, and
# start dockerd unless one already answers. Run as root; .ci/run calls it.
#
# The daemon it starts has no network of its own: no docker0 bridge, no iptables rules, no
# NAT, no ip_forward (container/dockerd.json). Every container of this project runs with
# network_mode: none and every build with --network=none, so none is needed.
#
#   container/dockerd.sh          start (or find) the daemon; prints how it was found
#   container/dockerd.sh --stop   stop the daemon this script started (by its pid file)
set -euo pipefail
cd "$(dirname "$0")"
RUN_DIR=/run/kprobegen-dockerd
PIDFILE=$RUN_DIR/dockerd.pid
LOG=/var/log/kprobegen-dockerd.log
export DEBIAN_FRONTEND=noninteractive PATH="$PATH:/usr/sbin:/sbin"

if [ "${1:-}" = "--stop" ]; then
  if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill -TERM "$(cat "$PIDFILE")"
    for _ in $(seq 60); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.5; done
    echo "dockerd.sh: stopped dockerd (pid $(cat "$PIDFILE"))"
    rm -f "$PIDFILE"
  fi
  exit 0
fi

if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null; then
  # Written before the package is installed: should its maintainer script start a daemon
  # (under systemd), that daemon reads this too and makes no bridge.
  if [ ! -e /etc/docker/daemon.json ]; then
    mkdir -p /etc/docker
    cp dockerd.json /etc/docker/daemon.json
  fi
  apt-get install -y -q --no-install-recommends docker.io docker-compose >/dev/null || {
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends docker.io docker-compose >/dev/null
  }
fi

if docker info >/dev/null 2>&1; then
  echo "dockerd.sh: a Docker daemon answers already ($(docker info --format '{{.ServerVersion}}, {{.Driver}}'))"
  exit 0
fi

mkdir -p "$RUN_DIR"
# setsid: its own session, so that the caller's Ctrl-C does not reach it.
setsid dockerd --config-file "$PWD/dockerd.json" --pidfile "$RUN_DIR/docker.pid" >>"$LOG" 2>&1 < /dev/null &
echo $! > "$PIDFILE"
for _ in $(seq 120); do
  if docker info >/dev/null 2>&1; then
    echo "dockerd.sh: started dockerd (pid $(cat "$PIDFILE"); $(docker info --format '{{.ServerVersion}}, storage {{.Driver}}, cgroup {{.CgroupVersion}}'); log $LOG)"
    exit 0
  fi
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "dockerd.sh: dockerd exited at start; the end of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  sleep 0.5
done
echo "dockerd.sh: dockerd did not answer within 60 s; the end of $LOG:" >&2
tail -n 20 "$LOG" >&2
exit 1
