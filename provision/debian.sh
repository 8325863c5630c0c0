#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# The one script that sets up a Debian 12 (bookworm) or 13 (trixie) machine for kprobegen.
# Every place a machine is set up runs it, so the package lists and install steps live here
# only:
#
#   setup.sh                 --role dev    this checkout's .venv, and everything the tests need
#   Vagrantfile              --role host   a Vagrant VM in host mode (its running kernel)
#   kprobegen image build    --role image  the full guest image, in its debootstrap root (chroot)
#   kprobegen image box      --role box    the image as a Vagrant box
#
#   provision/debian.sh --role ROLE [--src DIR]   install (as root, or a user with sudo)
#   provision/debian.sh --role ROLE --list        print the role's Debian packages and exit
#
# Roles, each a superset of the one before it where it says so:
#   dev    Debian packages for developing and testing kprobegen (qemu, the cloud kernel and its
#          headers, Kbuild, SystemTap, bpftrace, debootstrap, vagrant, the box tools), then
#          DIR/.venv with kprobegen installed editable with its test extra.
#   host   a machine that loads modules itself: the Kbuild toolchain, kmod, python3, libudev,
#          the headers of the running kernel (linux-headers-$(uname -r)); kprobegen into
#          /opt/kprobegen (a venv) with /usr/local/bin/kprobegen; the service's systemd unit
#          (contrib/systemd/kprobegen.service) installed and enabled, and started where systemd
#          runs (in a chroot: enabled by symlink, not started).
#   image  host's packages and install steps, plus Debian's cloud kernel and its headers (the
#          kernel the guest boots, instead of the running kernel's headers) and the guest's init
#          (/usr/local/sbin/kpg-guest-init). The unit is installed but not enabled: the guest's
#          tests enable it themselves (tests/vm/test_service_systemd.py).
#   box    image, plus what Vagrant expects in a box: openssh-server, sudo, rsync, systemd as
#          /sbin/init, DHCP on the first NIC (systemd-networkd), a `vagrant` user with Vagrant's
#          well-known insecure public key and passwordless sudo; the unit enabled.
#
# DIR (default: the folder above this script) is the kprobegen source tree to install.
set -euo pipefail

role=""
src=""
list=0
while [ $# -gt 0 ]; do
  case "$1" in
    --role) role=${2:-}; shift 2 ;;
    --role=*) role=${1#--role=}; shift ;;
    --src) src=${2:-}; shift 2 ;;
    --src=*) src=${1#--src=}; shift ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "provision: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$role" in
  dev|host|image|box) ;;
  "") echo "provision: say which machine this is: --role dev|host|image|box" >&2; exit 2 ;;
  *) echo "provision: unknown role '$role': use dev, host, image or box" >&2; exit 2 ;;
esac

# -- the packages ------------------------------------------------------------------------------
# What builds, loads and serves modules, on any machine: Kbuild (make, gcc, libc6-dev; pahole
# from dwarves for module BTF; zstd for compressed modules), kmod (insmod, modinfo), procps,
# python3 with venv and headers (pip builds kprobegen's C report scanner with gcc), libudev1
# (pyudev, the service's module watcher, loads it with ctypes), systemd (the service's unit).
BASE_PACKAGES=(
  make gcc libc6-dev dwarves kmod procps zstd
  python3 python3-venv python3-dev ca-certificates
  libudev1 systemd
)
# The development machine (setup.sh): the kernel kprobegen builds for and boots by default, and
# its headers; the VM (qemu, busybox-static for the initramfs, lz4 to unpack the cloud kernels
# once for a faster boot); the rest of Kbuild for older kernels (bc, flex, bison, libelf);
# SystemTap and bpftrace to check the equivalent scripts; debootstrap and e2fsprogs for the
# full guest image (kprobegen image build); syslinux, mtools, dosfstools, qemu-utils and fdisk (sfdisk) for
# its Vagrant box (kprobegen image box); graphviz to draw docs/import-graph.svg; shellcheck for
# this script's test.
DEV_PACKAGES=(
  linux-image-cloud-amd64 linux-headers-cloud-amd64
  qemu-system-x86 busybox-static cpio lz4
  bc flex bison libelf-dev xz-utils
  systemtap bpftrace
  python3-pip
  debootstrap e2fsprogs graphviz
  syslinux syslinux-common mtools dosfstools qemu-utils fdisk
  shellcheck
)
# Installed on the development machine where the archive has them (tests/test_vagrant.py runs
# `vagrant validate`, which skips without them): vagrant and its libvirt provider (no libvirt
# daemon: --no-install-recommends).
DEV_OPTIONAL_PACKAGES=(vagrant vagrant-libvirt)
# The image: the kernel it boots and that kernel's headers (a chroot's `uname -r` is the build
# host's kernel, not the guest's).
IMAGE_PACKAGES=(linux-image-cloud-amd64 linux-headers-cloud-amd64)
# The box: what Vagrant needs in the guest.
BOX_PACKAGES=(openssh-server sudo rsync systemd-sysv)

packages=("${BASE_PACKAGES[@]}")
case "$role" in
  dev) packages+=("${DEV_PACKAGES[@]}") ;;
  image) packages+=("${IMAGE_PACKAGES[@]}") ;;
  box) packages+=("${IMAGE_PACKAGES[@]}" "${BOX_PACKAGES[@]}") ;;
esac

if [ "$list" = 1 ]; then
  printf '%s\n' "${packages[@]}"
  [ "$role" != dev ] || printf '%s (optional)\n' "${DEV_OPTIONAL_PACKAGES[@]}"
  exit 0
fi

[ -n "$src" ] || src=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$src/pyproject.toml" ] || [ ! -f "$src/setup.py" ]; then
  echo "provision: $src is not a kprobegen source tree (no pyproject.toml/setup.py): pass --src DIR" >&2
  exit 2
fi

export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
say() { echo "provision ($role): $*"; }
# Is a package in the archive (the lists apt-get update fetched)?
in_archive() { apt-cache show "$1" >/dev/null 2>&1; }

# -- Debian packages ---------------------------------------------------------------------------
say "apt-get install ${#packages[@]} packages"
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"

if [ "$role" = dev ]; then
  optional=()
  for p in "${DEV_OPTIONAL_PACKAGES[@]}"; do
    if in_archive "$p"; then optional+=("$p"); else say "note: $p is not in this Debian's archive (the Vagrant tests will skip)"; fi
  done
  [ ${#optional[@]} = 0 ] || $SUDO apt-get install -y -q --no-install-recommends "${optional[@]}"
fi

# The headers of the running kernel (host role): a VM built from a box runs the box's kernel.
# When the archive no longer has that exact one (the box is older than the archive's kernel
# ABI) or never had it (a chroot on a non-Debian kernel), install the flavour's newest kernel
# and headers and say to boot into it.
if [ "$role" = host ]; then
  release=$(uname -r)
  if [ -d "/lib/modules/$release/build" ]; then
    say "headers of the running kernel $release: installed already"
  elif in_archive "linux-headers-$release"; then
    say "installing linux-headers-$release (the running kernel's headers)"
    $SUDO apt-get install -y -q --no-install-recommends "linux-headers-$release"
  else
    flavour=$(printf '%s\n' "$release" | sed -n 's/^[0-9][0-9.]*-[0-9][0-9]*-\(.*\)$/\1/p')
    if [ -z "$flavour" ] || ! in_archive "linux-headers-$flavour"; then flavour=amd64; fi
    say "note: linux-headers-$release is not in the archive (running kernel $release);" \
        "installing linux-image-$flavour and linux-headers-$flavour instead:" \
        "reboot into that kernel (vagrant reload) before kprobegen load"
    $SUDO apt-get install -y -q --no-install-recommends "linux-image-$flavour" "linux-headers-$flavour"
  fi
fi

# -- kprobegen ---------------------------------------------------------------------------------
# pip's own certificate bundle does not know the CAs this machine's network may need; the
# system's bundle (ca-certificates, with update-ca-certificates' local additions) does.
if [ -z "${PIP_CERT:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ "$role" = dev ]; then
  say "kprobegen into $src/.venv (editable, with the test extra)"
  python3 -m venv "$src/.venv"
  # -qq: errors only (pip's -q still prints the build backend's notes about editable installs).
  "$src/.venv/bin/pip" install -qq --upgrade pip
  "$src/.venv/bin/pip" install -qq -e "${src}[test]"
  exit 0
fi

say "kprobegen into /opt/kprobegen (a venv), /usr/local/bin/kprobegen"
# From a copy: pip builds a source folder in place, and the source may be read-only (a synced
# folder) or a checkout whose build/ and .egg-info should stay as they are.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
tar -C "$src" --exclude=./.venv --exclude=./.cache --exclude=./.git --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$build" -xf -
$SUDO python3 -m venv /opt/kprobegen
# The pytest extra: the kprobes fixture (docs/pytest.md) runs in such a machine too.
$SUDO /opt/kprobegen/bin/pip install -q "${build}[pytest]"
$SUDO ln -sfn /opt/kprobegen/bin/kprobegen /usr/local/bin/kprobegen

# -- the service -------------------------------------------------------------------------------
# As README.md ("Running the service") says: the unit, the read-only socket's group, enabled.
say "the service's unit: /etc/systemd/system/kprobegen.service"
$SUDO install -m 0644 "$src/contrib/systemd/kprobegen.service" /etc/systemd/system/kprobegen.service
if [ "$role" != image ]; then
  getent group kprobegen >/dev/null || $SUDO groupadd --system kprobegen
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl daemon-reload
    $SUDO systemctl enable --now kprobegen.service
    say "kprobegen.service enabled and started"
  else
    # Not booted with systemd (a chroot): systemctl enable only makes the symlink, offline.
    $SUDO systemctl enable kprobegen.service 2>/dev/null \
      || $SUDO ln -sfn /etc/systemd/system/kprobegen.service /etc/systemd/system/multi-user.target.wants/kprobegen.service
    say "kprobegen.service enabled (systemd is not running here: not started)"
  fi
fi

# -- the image: the guest's init ---------------------------------------------------------------
if [ "$role" = image ] || [ "$role" = box ]; then
  say "the guest's init: /usr/local/sbin/kpg-guest-init"
  install -D -m 0755 "$src/templates/guest-init.sh" /usr/local/sbin/kpg-guest-init
fi

# -- the box: what Vagrant expects ---------------------------------------------------------------
if [ "$role" = box ]; then
  say "Vagrant's user, key, sudo and DHCP"
  # Vagrant's well-known insecure public key (github.com/hashicorp/vagrant, keys/vagrant.pub):
  # vagrant replaces it with a key of its own at the first `vagrant up`.
  key="ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure public key"
  id vagrant >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --user-group vagrant
  # a password login is not how Vagrant comes in; the account is unlocked for ssh keys only
  usermod -p '*' vagrant
  install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
  printf '%s\n' "$key" > /home/vagrant/.ssh/authorized_keys
  chown vagrant:vagrant /home/vagrant/.ssh/authorized_keys
  chmod 0600 /home/vagrant/.ssh/authorized_keys
  printf 'vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n' > /etc/sudoers.d/vagrant
  chmod 0440 /etc/sudoers.d/vagrant
  # ssh -o UseDNS: no reverse look-ups that stall a login without DNS
  printf 'UseDNS no\n' > /etc/ssh/sshd_config.d/vagrant.conf
  # DHCP on the first NIC, whatever the kernel names it (ens*, enp*s*, eth*)
  install -d /etc/systemd/network
  printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' > /etc/systemd/network/50-dhcp.network
  systemctl enable systemd-networkd.service ssh.service
  # nothing in the box waits for the network to be online; this would hold the boot 2 minutes
  systemctl disable systemd-networkd-wait-online.service 2>/dev/null || true
  # each VM made from the box gets its own ssh host keys and machine id (DHCP's client id) at
  # its first boot, not the ones made here
  rm -f /etc/ssh/ssh_host_*
  install -d /etc/systemd/system/ssh.service.d
  printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    > /etc/systemd/system/ssh.service.d/host-keys.conf
  : > /etc/machine-id
  rm -f /var/lib/dbus/machine-id
  echo kprobegen-box > /etc/hostname
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tkprobegen-box\n' > /etc/hosts
  # the root file system by label (kprobegen image box: partition 2 of the box's disk)
  printf 'LABEL=kpgroot / ext4 defaults,errors=remount-ro 0 1\n' > /etc/fstab
fi
say "done"
