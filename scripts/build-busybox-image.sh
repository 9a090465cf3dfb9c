#!/bin/bash
# build-busybox-image.sh OUT.tar.xz - build an Incus "unified" image (metadata.yaml + rootfs/) from the
# host's static busybox, for tests: no image server is reachable here.
#
# Offline and idempotent: the same busybox gives a byte-identical tarball (fixed mtimes, sorted names,
# numeric root ownership), written atomically so a concurrent reader never sees half an archive.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUT.tar.xz" >&2
  exit 2
fi
out=$1
busybox=${BUSYBOX:-/bin/busybox}

if ! [ -x "$busybox" ]; then
  echo "$0: $busybox not found (install busybox-static)" >&2
  exit 1
fi
# A dynamically linked busybox would need the host's libc inside the rootfs.
if LC_ALL=C ldd "$busybox" >/dev/null 2>&1; then
  echo "$0: $busybox is dynamically linked; install busybox-static" >&2
  exit 1
fi

arch=$(uname -m)
release=$("$busybox" 2>/dev/null | sed -n '1s/^BusyBox v\([^ ]*\).*/\1/p')
release=${release%%-*}
: "${release:=unknown}"
# The image date is that of the busybox binary, so rebuilding gives the same bytes.
epoch=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$busybox")}

work=$(mktemp -d "${TMPDIR:-/tmp}/busybox-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
umask 022

cat >"$work/metadata.yaml" <<EOF
architecture: $arch
creation_date: $epoch
properties:
  description: BusyBox $release $arch (ferry test image)
  os: busybox
  release: "$release"
templates: {}
EOF

rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,run,var/log,home}
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"
cp "$busybox" "$rootfs/bin/busybox"
chmod 0755 "$rootfs/bin/busybox"

# --list-full names each applet with its usual directory (bin/sh, sbin/init, usr/bin/awk...).
"$busybox" --list-full | sed 's,/[^/]*$,,' | sort -u | (cd "$rootfs" && xargs mkdir -p)
"$busybox" --list-full | while read -r applet; do
  [ "$applet" = bin/busybox ] && continue
  ln -sfn /bin/busybox "$rootfs/$applet"
done
# The runtime starts /sbin/init; make sure it is there even if the applet list ever changes.
ln -sfn /bin/busybox "$rootfs/sbin/init"

cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
nogroup:x:65534:
EOF
echo busybox >"$rootfs/etc/hostname"
: >"$rootfs/etc/fstab"
# An explicit inittab: without one busybox init spawns shells on tty1-4, which do not exist in a container.
# No respawned getty either, so init has nothing to do but reap, and it stays up until it is signalled.
# Halting: busybox (1.35) init takes SIGPWR - liblxc's default lxc.signal.halt - like SIGUSR1 as "halt" (SIGUSR2:
# poweroff). It runs the shutdown actions, SIGTERMs then SIGKILLs everything (a second apart) and calls
# reboot(2), which in a pid namespace ends the container as halted: a clean stop takes about 2 seconds.
# SIGTERM would be "reboot", and liblxc would start the container again.
cat >"$rootfs/etc/inittab" <<'EOF'
::sysinit:/bin/mkdir -p /run /tmp /var/log
::shutdown:/bin/sync
EOF

# Fixed mtimes everywhere so the archive does not depend on when it was built.
find "$work" -exec touch -h -d "@$epoch" {} +

tmp_out=$(mktemp "$(dirname "$out")/.$(basename "$out").XXXXXX")
trap 'rm -rf "$work"; rm -f "$tmp_out"' EXIT
tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
  --format=gnu -cf - metadata.yaml rootfs | xz -T1 -3 >"$tmp_out"
chmod 0644 "$tmp_out"
mv -f "$tmp_out" "$out"
