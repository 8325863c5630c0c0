#!/usr/bin/env bash
# Set up kprobegen on Debian 12 (bookworm) or 13 (trixie) and run the main job on an example:
# build modules/sync_counter.yaml for the machine's Debian cloud kernel (6.1 on Debian 12,
# 6.12 on Debian 13), boot it in a disposable qemu VM, load the module, run `sync` three
# times, and print the exact counts.
#
#   ./setup.sh              everything, then the example run
#   ./setup.sh --no-demo    everything but the example run
#
# The Debian packages and the .venv come from provision/debian.sh --role dev: the one script
# that also provisions a Vagrant VM (Vagrantfile) and the full guest image (kprobegen image
# build), so that the package lists live in one place. It says what each package is for.
set -euo pipefail
cd "$(dirname "$0")"

provision/debian.sh --role dev --src "$PWD"

if [ "${1:-}" != "--no-demo" ]; then
  echo "+ .venv/bin/kprobegen run modules/sync_counter.yaml -- sh -c 'sync; sync; sync'"
  .venv/bin/kprobegen run modules/sync_counter.yaml -- sh -c 'sync; sync; sync'
fi
