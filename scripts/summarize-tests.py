#!/usr/bin/env python3
"""Sum up meson (testlog.json) and pytest (JUnit XML) results of `make check` into one closing line."""
import json
import os
import sys
import xml.etree.ElementTree as ET


def tap_counts(stdout):
    """Subtests of a TAP test program: "ok N", "ok N # SKIP ...", "not ok N"."""
    passed = failed = skipped = 0
    for line in stdout.splitlines():
        if line.startswith("not ok"):
            failed += 1
        elif line.startswith("ok"):
            if "# SKIP" in line.upper():
                skipped += 1
            else:
                passed += 1
    return passed, failed, skipped


def meson_counts(path):
    """Each test program counts its TAP subtests; a program without TAP output counts once."""
    passed = failed = skipped = 0
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            result = entry.get("result")
            sub = tap_counts(entry.get("stdout") or "")
            if sum(sub) and result in ("OK", "EXPECTEDFAIL", "SKIP"):
                passed, failed, skipped = passed + sub[0], failed + sub[1], skipped + sub[2]
            elif result in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif result == "SKIP":
                skipped += 1
            else:
                failed += 1 + sub[1]
    return passed, failed, skipped


def junit_counts(path):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = failed = skipped = 0
    for s in suites:
        total += int(s.get("tests", 0))
        failed += int(s.get("failures", 0)) + int(s.get("errors", 0))
        skipped += int(s.get("skipped", 0))
    return total - failed - skipped, failed, skipped


def main(results):
    tiers = [("unit", "unit.json"), ("integration", "integration.xml"), ("interop", "interop.xml"),
             ("unit (asan)", "unit-asan.json"), ("integration (asan)", "integration-asan.xml")]
    totals = [0, 0, 0]
    missing = False
    for label, name in tiers:
        path = os.path.join(results, name)
        if not os.path.exists(path):
            print(f"{label:20s} did not run")
            missing = True
            continue
        counts = meson_counts(path) if name.endswith(".json") else junit_counts(path)
        print(f"{label:20s} {counts[0]} passed, {counts[1]} failed, {counts[2]} skipped")
        totals = [a + b for a, b in zip(totals, counts)]
    print(f"check: {totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return 1 if totals[1] or missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
