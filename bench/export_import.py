#!/usr/bin/env python3
"""Export/import benchmark: ferry vs Incus 6.0, on this machine, in the same run.

One ferryd and one incusd, each with a `dir` pool, a root disk in the default profile and the busybox image,
driven by its own CLI (`ferry`, `incus`) over its unix socket. Each holds a stopped container c1 with the
migration benchmark's workload (bench/migration.py's Workload: 4 x 200 MiB random files and 20,000 random files
of 1-16 KiB, seeded: the same bytes on both systems).

Steps, for each system:
  export --instance-only with the system's default compression (ferry: zstd, multithreaded; Incus: gzip),
  export --instance-only --compression none, import of each of these two archives;
  then 3 snapshots (about 5% of the data changed before each and after the last, the same changes on both),
  and the same four steps on the instance with its snapshots.
For each: wall time of the CLI command; CPU time of the daemon and everything it ran (its own cpuacct cgroup)
and of the CLI; the archive's size. Every import is checked against c1 (data tree: paths, sizes, mtimes and the
big files' digest) after it is timed, and deleted before the next.

Usage: sudo bench/export_import.py [--out bench/results/export-import.md] [--json ...] [--repeat 2]
                                   [--big-mib 200] [--big-files 4] [--small-files 20000] [--systems ferry,incus]
"""
import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import migration as mig  # noqa: E402  (its daemons, workload, CPU accounting and data checks)

ROOT = mig.ROOT
MIB = mig.MIB
log = mig.log


def measure(daemon, exe, args, label, archive=None, timeout=1800):
    """Run one CLI command against the daemon over its unix socket and measure it."""
    mig.sync_and_settle()
    daemon.settle()
    waited, busy = mig.wait_quiet(mig.QUIET_WAIT)
    cpu0 = daemon.cpu()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        proc = subprocess.run([exe, *args], env=daemon.env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        proc = subprocess.CompletedProcess(e.cmd, -9, "", f"timed out after {timeout} s (killed)")
    wall = time.perf_counter() - start
    daemon.settle()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = daemon.cpu()
    result = {"label": label, "command": [os.path.basename(exe), *args], "ok": proc.returncode == 0,
              "wall_s": wall, "quiet_wait_s": waited, "machine_busy_cpus_before": busy,
              "cli_cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)}
    if cpu0["cgroup"] and cpu1["cgroup"]:
        result["daemon_cpu_s"] = cpu1["cgroup"]["total_s"] - cpu0["cgroup"]["total_s"]
    elif cpu0["proc"] and cpu1["proc"]:
        result["daemon_cpu_s"] = (cpu1["proc"]["self_s"] + cpu1["proc"]["children_s"]
                                  - cpu0["proc"]["self_s"] - cpu0["proc"]["children_s"])
    result["cpu_s"] = result.get("daemon_cpu_s", 0) + result["cli_cpu_s"]
    if archive is not None and os.path.exists(archive):
        result["archive_bytes"] = os.path.getsize(archive)
    if proc.returncode != 0:
        result["error"] = mig.error_text(proc)
    log(f"  {daemon.kind:6s} {label:34s} {wall:7.2f} s  cpu {result['cpu_s']:6.2f} s"
        + (f"  archive {result['archive_bytes'] / MIB:8.1f} MiB" if "archive_bytes" in result else "")
        + ("" if result["ok"] else f"  FAILED: {result['error']}"))
    return result


def best(runs):
    ok = [r for r in runs if r["ok"]]
    chosen = dict(min(ok, key=lambda r: r["wall_s"]) if ok else runs[-1])
    chosen["runs"] = runs
    return chosen


def run_system(daemon, workload, base, repeat, results):
    exe = mig.FERRY if daemon.kind == "ferry" else "incus"
    default = "zstd" if daemon.kind == "ferry" else "gzip"
    ext = {"zstd": ".tar.zst", "gzip": ".tar.gz", "none": ".tar"}
    steps = results.setdefault(daemon.kind, {})
    out_dir = os.path.join(base, f"archives-{daemon.kind}")
    os.makedirs(out_dir, exist_ok=True)

    def export_import(tag, extra):
        for compression in (default, "none"):
            archive = os.path.join(out_dir, f"c1-{tag}-{compression}{ext[compression]}")
            runs = []
            for _ in range(repeat):
                if os.path.exists(archive):
                    os.unlink(archive)
                args = ["export", "c1", archive, *extra, "-q"]
                if compression == "none":
                    args[4:4] = ["--compression", "none"]
                runs.append(measure(daemon, exe, args, f"export {tag} {compression}", archive))
            steps[f"export {tag} {compression}"] = best(runs)
            runs = []
            for i in range(repeat):
                name = f"imp-{tag.replace(' ', '-')}-{compression}-{i}"
                r = measure(daemon, exe, ["import", archive, name, "-q"], f"import {tag} {compression}")
                if r["ok"]:
                    r["check"] = mig.verify(daemon.rootfs("c1"), daemon.rootfs(name))
                    snaps = daemon.local("snapshot", "list", name, "-f", "csv", check=False).stdout.split()
                    r["snapshots"] = len(snaps)
                daemon.local("delete", name, "--force", check=False)
                runs.append(r)
            steps[f"import {tag} {compression}"] = best(runs)
            os.unlink(archive)

    export_import("instance-only", ["--instance-only"])
    for i in range(1, 4):
        workload.modify_share(daemon.rootfs("c1"), seed=1000 + i)
        daemon.local("snapshot", "create", "c1", f"s{i}")
    workload.modify_share(daemon.rootfs("c1"), seed=2000)
    export_import("3 snapshots", [])


def fmt(value, spec="{:.2f}"):
    return "—" if value is None else spec.format(value)


def report(results, meta):
    lines = [f"# Export and import: ferry vs Incus 6.0", "",
             f"Run {meta['date']} on {meta['cpus']} CPUs, {meta['mem_gib']:.0f} GiB, kernel {meta['kernel']}; "
             f"{meta['incus_version']}, ferry {meta['ferry_version']} ({meta['git']}). Workload: "
             f"{meta['data_mib']:.0f} MiB in {meta['data_files']} files (bench/migration.py's), `dir` pools, one "
             f"server each over its unix socket, data on {meta.get('fs', '/var/tmp')}, fastest of {meta['repeat']} runs. CPU = daemon (cpuacct cgroup, "
             "helpers included) + CLI. Default compression: ferry zstd (multithreaded), Incus gzip.", "",
             "| step | ferry wall s | Incus wall s | wall ratio | ferry CPU s | Incus CPU s | ferry archive MiB | "
             "Incus archive MiB | check |",
             "|---|---|---|---|---|---|---|---|---|"]
    ferry, incus = results.get("ferry", {}), results.get("incus", {})

    def label(step):
        return step.replace("zstd", "default").replace("gzip", "default")

    rows = {}
    for system, steps in (("ferry", ferry), ("incus", incus)):
        for step, r in steps.items():
            rows.setdefault(label(step), {})[system] = r
    for step, pair in rows.items():
        f, i = pair.get("ferry"), pair.get("incus")
        fw = f["wall_s"] if f and f["ok"] else None
        iw = i["wall_s"] if i and i["ok"] else None
        ratio = f"{fw / iw:.3f}" if fw and iw else "—"
        check = ", ".join(f"{s}: {p[s].get('check', 'ok' if p[s]['ok'] else 'FAILED')}"
                          for s, p in ((s, pair) for s in ("ferry", "incus") if s in pair) if "import" in step)
        lines.append(f"| {step} | {fmt(fw)} | {fmt(iw)} | {ratio} | {fmt(f and f.get('cpu_s'))} | "
                     f"{fmt(i and i.get('cpu_s'))} | {fmt(f and f.get('archive_bytes') and f['archive_bytes'] / MIB, '{:.1f}')} | "
                     f"{fmt(i and i.get('archive_bytes') and i['archive_bytes'] / MIB, '{:.1f}')} | {check} |")
    lines += ["", "## Against the targets (each system's default compression)", ""]
    for tag in ("instance-only", "3 snapshots"):
        for kind, target in (("export", 0.2), ("import", 0.5)):
            f = ferry.get(f"{kind} {tag} zstd")
            i = incus.get(f"{kind} {tag} gzip")
            if f and i and f["ok"] and i["ok"]:
                r = f["wall_s"] / i["wall_s"]
                lines.append(f"- {kind} {tag}: ferry {f['wall_s']:.2f} s / Incus {i['wall_s']:.2f} s = **{r:.3f}×** "
                             f"(target ≤ {target}×: {'met' if r <= target else 'NOT met'})")
    every = []
    for system, steps in results.items():
        for step, r in steps.items():
            walls = ", ".join("{:.2f}".format(x["wall_s"]) for x in r["runs"])
            every.append(f"{system} {step}: {walls}")
    lines += ["", "Every run (wall s): " + "; ".join(every)]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "export-import.md"))
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "export-import.json"))
    parser.add_argument("--big-files", type=int, default=4)
    parser.add_argument("--big-mib", type=int, default=200)
    parser.add_argument("--small-files", type=int, default=20000)
    parser.add_argument("--systems", default="ferry,incus")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quiet-wait", type=int, default=60)
    parser.add_argument("--from-json", metavar="JSON", help="measure nothing: write the report of a saved run")
    parser.add_argument("--fs-gib", type=int, default=40, help="size of the scratch ext4 (0: use /var/tmp as is)")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        text = report(saved["systems"], saved["meta"])
        with open(args.out, "w") as f:
            f.write(text)
        print(text)
        return
    if os.geteuid() != 0:
        sys.exit("run as root: the daemons need it")
    mig.QUIET_WAIT = args.quiet_wait
    kinds = [k for k in args.systems.split(",") if k]
    base = tempfile.mkdtemp(prefix="ferry-bench-exp-", dir="/var/tmp")
    os.chmod(base, 0o711)
    # Both systems on a fresh, journaled ext4 in a loop file: this machine's root ext4 has no journal, and there
    # ext4 will not reuse an inode freed in the last 5 minutes, so creating 20,000 files right after deleting
    # 20,000 (each import follows the deletion of the previous one) costs seconds in the inode allocator.
    loop_file = None
    if args.fs_gib > 0:
        loop_file = base + ".ext4"
        mig.run(["truncate", "-s", f"{args.fs_gib}G", loop_file])
        mig.run(["mkfs.ext4", "-q", "-F", loop_file])
        mig.run(["mount", "-o", "loop", loop_file, base])
        os.chmod(base, 0o711)

    def on_term(*_):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)
    cgroup_parent = None
    if os.path.isdir(mig.CPUACCT):
        try:
            cgroup_parent = os.path.join(mig.CPUACCT, os.path.basename(base))
            os.mkdir(cgroup_parent)
        except OSError as e:
            log(f"no cpuacct cgroup ({e})")
            cgroup_parent = None
    os.makedirs(os.path.join(base, "bin"))
    for name in ("FERRYD", "FERRY"):
        dst = os.path.join(base, "bin", os.path.basename(getattr(mig, name)))
        shutil.copy2(getattr(mig, name), dst)
        setattr(mig, name, dst)
    workload = mig.Workload(args.big_files, args.big_mib, args.small_files)
    ferry_version = mig.version([mig.FERRY, "--version"]) or "?"
    daemons, results = [], {}
    try:
        image = os.path.join(base, "busybox.tar.xz")
        mig.run([os.path.join(ROOT, "scripts", "build-busybox-image.sh"), image])
        for kind in kinds:
            d = mig.Daemon(kind, base, "a", cgroup_parent)
            daemons.append(d)
            d.start()
            d.setup(image)
            d.local("init", "busybox", "c1", "-q")
            workload.populate(d.rootfs("c1"))
        data_bytes, data_files = mig.tree_bytes(os.path.join(daemons[0].rootfs("c1"), "data"))
        log(f"workload: {data_bytes / MIB:.0f} MiB in {data_files} files")
        for d in daemons:
            run_system(d, workload, base, args.repeat, results)
    finally:
        for d in daemons:
            try:
                d.stop()
            except Exception as e:
                log(f"stopping {d.key}: {e}")
        if cgroup_parent:
            try:
                os.rmdir(cgroup_parent)
            except OSError:
                pass
        mig.hard_cleanup(base)
        if loop_file:
            subprocess.run(["umount", base], capture_output=True)
            os.unlink(loop_file)
            os.rmdir(base)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
            "mem_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3,
            "kernel": os.uname().release, "incus_version": "Incus " + mig.version(["incus", "--version"]),
            "ferry_version": ferry_version,
            "git": mig.version(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
            "data_mib": data_bytes / MIB, "data_files": data_files, "repeat": args.repeat,
            "fs": f"ext4 (journaled) in a {args.fs_gib} GiB loop file" if loop_file else "/var/tmp"}
    text = report(results, meta)
    with open(args.out, "w") as f:
        f.write(text)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "systems": results}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
