#!/usr/bin/env bash
# The newcomer test: README's two commands on a fresh Debian machine, as a new user meets them.
#
#   tests/newcomer.sh [SUITE] [WORKDIR]      SUITE: bookworm (Debian 12, default) or trixie (13)
#
# Makes a fresh Debian root with debootstrap (minbase, plus git and sudo as a person's machine
# has them, and the suite's -updates and -security pockets in its apt sources), clones this
# repository's committed HEAD into it, and runs there, as root:
#
#   ./setup.sh                              README: set up + the example run
#   .venv/bin/python -m pytest -ra          README: the tests
#
# Nothing of this machine's own setup reaches the root: not its packages, not its venv, not
# its kprobegen cache. It prints what failed and exits non-zero if either command did. It takes
# minutes (debootstrap, ~600 MB of packages, the whole test suite), so it is not part of the
# test run; run it before claiming that README works on a fresh machine. Needs root, the
# network to Debian's mirror and PyPI, and ~4 GB in WORKDIR (default /var/tmp/kpg-newcomer-SUITE).
set -euo pipefail

suite=${1:-bookworm}
case "$suite" in bookworm|trixie) ;; *) echo "newcomer: SUITE must be bookworm or trixie" >&2; exit 2 ;; esac
root=${2:-/var/tmp/kpg-newcomer-$suite}
repo=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "newcomer: run as root (debootstrap, chroot)" >&2; exit 2; }

# The mirror this machine's apt uses (no address is written here), and its security mirror.
mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Created-By: Packages' 2>/dev/null \
         | grep -v security | head -n1)
security=$(apt-get indextargets --format '$(REPO_URI)' 'Created-By: Packages' 2>/dev/null \
           | grep security | head -n1)
[ -n "$mirror" ] || { echo "newcomer: no Debian mirror in this machine's apt sources (apt-get update?)" >&2; exit 2; }
mirror=${mirror%/}; security=${security%/}

command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }

SECONDS=0
echo "newcomer: fresh Debian $suite root in $root"
rm -rf "$root"
mkdir -p "$root"
debootstrap --variant=minbase --include=git,sudo,ca-certificates "$suite" "$root" "$mirror" \
  > "$root.debootstrap.log" 2>&1 || { tail -n 20 "$root.debootstrap.log"; exit 1; }
{
  echo "Types: deb"
  echo "URIs: $mirror"
  echo "Suites: $suite $suite-updates"
  echo "Components: main"
  echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  if [ -n "$security" ]; then
    echo
    echo "Types: deb"
    echo "URIs: $security"
    echo "Suites: $suite-security"
    echo "Components: main"
    echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  fi
} > "$root/etc/apt/sources.list.d/debian.sources"
rm -f "$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# A machine of this workplace trusts the local CAs its network needs: so does the new root.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1 || true
fi
git clone -q --no-local "$repo" "$root/root/kprobegen"
echo "newcomer: root ready after ${SECONDS}s; running README's commands in it"

# The mounts live in a private mount namespace: they go when this script ends, however it ends.
status=0
unshare --mount --propagation private bash -s "$root" <<'INNER' || status=$?
set -u
root=$1
mount --bind "$root" "$root"                  # / is a mount point in the root, as on a machine
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"                 # /dev/kvm, /dev/null, ptys
mount -t tmpfs tmpfs "$root/tmp"
# A clean environment, but for the variables that point TLS clients (pip's vendored certifi
# among them) at the system's CA bundle, as this workplace's machines have them.
tls=()
for v in PIP_CERT SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE CURL_CA_BUNDLE; do
  [ -n "${!v:-}" ] && tls+=("$v=${!v}")
done
in_root() { chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            LANG=C.UTF-8 TERM=dumb "${tls[@]}" bash -c "cd /root/kprobegen && $1"; }
rc=0
echo "+ ./setup.sh"
in_root "./setup.sh" || { rc=$?; echo "newcomer: FAILED: ./setup.sh exited $rc"; exit 1; }
echo "+ .venv/bin/python -m pytest -ra"
in_root ".venv/bin/python -m pytest -ra -p no:cacheprovider" || { rc=$?; echo "newcomer: FAILED: the tests exited $rc"; exit 1; }
exit 0
INNER
echo "newcomer: Debian $suite: $([ "$status" = 0 ] && echo 'both commands passed' || echo 'FAILED') after ${SECONDS}s"
exit "$status"
