#!/bin/bash
# demo.sh - what `make demo` shows: two local ferry servers, each with its own FERRY_DIR and loopback HTTPS
# port, added as remotes of the CLI; a busybox container launched on the first one, moved to the second
# while stopped, and moved back while running (--stateless).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-$ROOT/build}
FERRYD=$BUILD/src/daemon/ferryd
FERRY=$BUILD/src/cli/ferry
DEMO=${FERRY_DEMO_DIR:-/var/tmp/ferry-demo}
PORT_A=${FERRY_DEMO_PORT_A:-8461}
PORT_B=${FERRY_DEMO_PORT_B:-8462}
export FERRY_CONF=$DEMO/client

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

bash scripts/setup-host.sh

stop_server() { # $1 = dir
  local pid
  [ -f "$1/ferryd.pid" ] || return 0
  pid=$(cat "$1/ferryd.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$1/ferryd.pid"
}

start_server() { # $1 = dir
  mkdir -p "$1"
  setsid "$FERRYD" --dir "$1" >"$1.log" 2>&1 </dev/null &
  echo $! >"$1/ferryd.pid"
  "$FERRYD" waitready --dir "$1" --timeout 30
}

# A fresh start each time: stop what a previous demo left, then begin again.
for d in "$DEMO/a" "$DEMO/b"; do
  if [ -S "$d/unix.socket" ]; then
    for c in $(FERRY_DIR=$d "$FERRY" list -f csv -c n 2>/dev/null); do
      FERRY_DIR=$d "$FERRY" delete --force "$c" >/dev/null 2>&1 || true
    done
  fi
  stop_server "$d"
done
rm -rf "$DEMO"
mkdir -p "$DEMO"
chmod 711 "$DEMO"

say "building a busybox image from the host's busybox-static"
bash scripts/build-busybox-image.sh "$DEMO/busybox.tar.xz"

for x in a:$PORT_A b:$PORT_B; do
  name=${x%%:*}; port=${x##*:}
  say "starting server $name (FERRY_DIR=$DEMO/$name, https 127.0.0.1:$port)"
  start_server "$DEMO/$name"
  run env FERRY_DIR="$DEMO/$name" "$FERRY" admin init --auto --network-address 127.0.0.1 --network-port "$port"
  token=$(FERRY_DIR="$DEMO/$name" "$FERRY" config trust add demo-client --quiet)
  run "$FERRY" remote add "$name" "$token"
  run "$FERRY" image import "$DEMO/busybox.tar.xz" "$name:" --alias busybox
done

run "$FERRY" remote list
run "$FERRY" launch a:busybox a:c1
run "$FERRY" exec a:c1 -- sh -c 'echo "hello from $(hostname), pid 1 is $(cat /proc/1/comm)"'
run "$FERRY" list a:
run "$FERRY" list b:

say "moving the stopped container from a to b"
run "$FERRY" stop a:c1
run "$FERRY" move a:c1 b:c1
run "$FERRY" list a:
run "$FERRY" list b:

say "moving it back while it runs (--stateless: copied while running, then stopped here and started there)"
run "$FERRY" start b:c1
run "$FERRY" move b:c1 a:c1 --stateless
run "$FERRY" list a:
run "$FERRY" exec a:c1 -- cat /proc/1/comm
cat <<MSG

The servers keep running (logs: $DEMO/a.log, $DEMO/b.log). Try:
  FERRY_CONF=$FERRY_CONF $FERRY list a:
  FERRY_CONF=$FERRY_CONF $FERRY exec a:c1 -- sh
Run 'make demo' again to start over.
MSG
