#!/usr/bin/env bash
# Set up kprobegen on Debian 12 (bookworm) or 13 (trixie) and run the main job on an example:
# build modules/sync_counter.yaml for the machine's Debian cloud kernel (6.1 on Debian 12,
# 6.12 on Debian 13), boot it in a disposable qemu VM, load the module, run `sync` three
# times, and print the exact counts.
#
#   ./setup.sh              everything, then the example run
#   ./setup.sh --no-demo    everything but the example run
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

# The kernel kprobegen builds for and boots by default, and its headers; the VM (qemu,
# busybox-static for the initramfs, lz4 to unpack the cloud kernels once for a faster boot);
# Kbuild's needs (make, gcc, bc, flex, bison, libelf, pahole for module BTF); kmod for
# modinfo; SystemTap and bpftrace to check the equivalent scripts; python3-venv for the
# virtual environment; python3-dev (Python.h) for the report parser's C line scanner, which
# pip builds with gcc when it installs kprobegen; debootstrap and e2fsprogs for the full
# Debian guest image (kprobegen image build); graphviz to draw docs/import-graph.svg
# (tools/import_graph.py --write); systemd for systemd-analyze, which checks the service's unit.
PACKAGES=(
  linux-image-cloud-amd64 linux-headers-cloud-amd64
  qemu-system-x86 busybox-static cpio kmod lz4
  make gcc bc flex bison libelf-dev dwarves zstd xz-utils
  systemtap bpftrace
  python3 python3-venv python3-pip python3-dev ca-certificates
  debootstrap e2fsprogs graphviz
  systemd
)
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"

python3 -m venv .venv
# -qq: errors only (pip's -q still prints the build backend's notes about editable installs).
.venv/bin/pip install -qq --upgrade pip
.venv/bin/pip install -qq -e '.[test]'

if [ "${1:-}" != "--no-demo" ]; then
  echo "+ .venv/bin/kprobegen run modules/sync_counter.yaml -- sh -c 'sync; sync; sync'"
  .venv/bin/kprobegen run modules/sync_counter.yaml -- sh -c 'sync; sync; sync'
fi
