#!/bin/bash
# install-incus.sh - install Incus 6.0 (incus-base + incus-client) from bookworm-backports, the reference
# server and client that ferry's interop tests run against (idempotent).
#
# - Adds the bookworm-backports suite as its own deb822 file, with the mirror and keyring of
#   /etc/apt/sources.list.d/debian.sources, when no apt source has it yet. Backports packages keep their
#   default (lower) pin: only packages named with -t come from there.
# - Never upgrades libc6: the install is simulated first and aborted if libc6 would change.
# - incus-base, not incus: the latter pulls QEMU >= 8 from backports; ferry's interop needs containers only.
set -euo pipefail

APT=(apt-get -o DPkg::Lock::Timeout=900)
PACKAGES=(incus-base incus-client)
SOURCES_FILE=/etc/apt/sources.list.d/bookworm-backports.sources
DEBIAN_SOURCES=/etc/apt/sources.list.d/debian.sources

installed() {
  local p
  for p in "$@"; do
    dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || return 1
  done
}

if installed "${PACKAGES[@]}"; then
  exit 0
fi

have_backports() {
  grep -rqsE '(^|[[:space:]])bookworm-backports([[:space:]]|$)' /etc/apt/sources.list /etc/apt/sources.list.d/
}

if ! have_backports; then
  mirror=http://deb.debian.org/debian
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  if [ -r "$DEBIAN_SOURCES" ]; then
    # The first stanza whose suites include plain "bookworm" names the main mirror.
    read -r m k < <(awk '
      /^[[:space:]]*$/ { if (s ~ /(^| )bookworm( |$)/ && u != "") { print u, (g == "" ? "-" : g); exit }
                          u = ""; s = ""; g = ""; next }
      /^URIs:/      { u = $2 }
      /^Suites:/    { $1 = ""; s = $0 " " }
      /^Signed-By:/ { g = $2 }
      END           { if (s ~ /(^| )bookworm( |$)/ && u != "") print u, (g == "" ? "-" : g) }
    ' "$DEBIAN_SOURCES") || true
    [ -n "${m:-}" ] && mirror=$m
    [ -n "${k:-}" ] && [ "$k" != "-" ] && keyring=$k
  fi
  echo "install-incus: adding bookworm-backports ($mirror) in $SOURCES_FILE"
  cat > "$SOURCES_FILE" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: $keyring
EOF
fi

export DEBIAN_FRONTEND=noninteractive
"${APT[@]}" update -qq

simulation=$("${APT[@]}" -s install -t bookworm-backports "${PACKAGES[@]}")
if grep -qE '^Inst libc6(:| )' <<<"$simulation"; then
  echo "install-incus: installing ${PACKAGES[*]} would change libc6; aborting" >&2
  exit 1
fi

"${APT[@]}" install -y -qq -t bookworm-backports "${PACKAGES[@]}"
