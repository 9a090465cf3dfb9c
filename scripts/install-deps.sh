#!/bin/bash
# install-deps.sh - install the Debian packages ferry builds, runs and tests with (idempotent).
# Only bookworm packages; nothing here upgrades libc6.
set -euo pipefail

packages=(
  build-essential meson ninja-build pkg-config
  libglib2.0-dev libsoup-3.0-dev glib-networking libjansson-dev libyaml-dev libsqlite3-dev
  lxc lxc-dev libprotobuf-c-dev protobuf-c-compiler libarchive-dev libgnutls28-dev libzstd-dev libxxhash-dev
  busybox-static rsync btrfs-progs uidmap xz-utils zstd sqlite3 util-linux
  python3 python3-pytest python3-yaml
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
