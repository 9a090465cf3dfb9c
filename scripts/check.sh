#!/bin/bash
# check.sh - what `make check` runs: set up, build, then every test tier, then the same suite under ASan+UBSan.
# Ends with one summary line: "check: N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RESULTS=$ROOT/build/test-results
BUILD=${BUILD:-build}
BUILD_ASAN=${BUILD_ASAN:-build-asan}
status=0

step() { printf '\n=== %s ===\n' "$*"; }

step "setup"
bash scripts/install-deps.sh || exit 1
bash scripts/setup-host.sh || exit 1
if [ -x scripts/install-incus.sh ]; then
  bash scripts/install-incus.sh || echo "check: Incus could not be installed; interop tests will skip and say why"
fi

step "build"
[ -f $BUILD/build.ninja ] || meson setup $BUILD -Dwerror=true || exit 1
ninja -C $BUILD || exit 1
rm -rf "$RESULTS"; mkdir -p "$RESULTS"

step "unit tests"
meson test -C $BUILD --print-errorlogs --no-rebuild || status=1
cp $BUILD/meson-logs/testlog.json "$RESULTS/unit.json" 2>/dev/null

step "integration tests"
/usr/bin/python3 -m pytest -q -rs tests/integration --junitxml="$RESULTS/integration.xml" || status=1

step "interop tests (stock Incus client and server)"
/usr/bin/python3 -m pytest -q -rs tests/interop --junitxml="$RESULTS/interop.xml" || status=1

step "ASan+UBSan build"
[ -f $BUILD_ASAN/build.ninja ] || meson setup $BUILD_ASAN -Dwerror=true -Db_sanitize=address,undefined \
  -Db_lundef=false -Dbuildtype=debug || exit 1
ninja -C $BUILD_ASAN || exit 1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86:suppressions=$ROOT/tests/sanitizers/asan.supp
export LSAN_OPTIONS=suppressions=$ROOT/tests/sanitizers/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
step "unit tests (ASan+UBSan)"
meson test -C $BUILD_ASAN --print-errorlogs --no-rebuild || status=1
cp $BUILD_ASAN/meson-logs/testlog.json "$RESULTS/unit-asan.json" 2>/dev/null
step "integration tests (ASan+UBSan)"
FERRY_BUILD_DIR=$ROOT/$BUILD_ASAN FERRY_SANITIZED=1 /usr/bin/python3 -m pytest -q -rs tests/integration \
  --junitxml="$RESULTS/integration-asan.xml" || status=1

step "summary"
/usr/bin/python3 scripts/summarize-tests.py "$RESULTS" || status=1
exit $status
