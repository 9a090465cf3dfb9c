#!/usr/bin/env python3
"""Instance-server benchmark: ferryd vs Incus 6.0 on this machine, in the same run.

Measures, for each server:
  - idle RSS of the daemon after start-up and set-up (VmRSS from /proc/<pid>/status),
  - wall time of `list` (5 runs, median) with N instances present,
  - wall time of `launch` of a busybox container (5 runs, median), each launch a new container.
Both servers get the same set-up: a `dir` pool named default, a root disk in the default profile, and the same
busybox image (scripts/build-busybox-image.sh). Both are driven through their own CLI over the unix socket.

Usage: sudo bench/instance_server.py [--runs 5] [--instances 5] [--out bench/results/instance-server.md]
Needs: a built ferry (make build) and, for the comparison, incus-base + incus-client (scripts/install-incus.sh).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("FERRY_BUILD_DIR", os.path.join(ROOT, "build"))
FERRYD = os.path.join(BUILD, "src", "daemon", "ferryd")
FERRY = os.path.join(BUILD, "src", "cli", "ferry")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def timed(cmd, env):
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


class Ferry:
    name = "ferry"

    def __init__(self, base):
        self.dir = os.path.join(base, "ferry")
        self.env = dict(os.environ, FERRY_DIR=self.dir, FERRY_CONF=os.path.join(base, "ferry-client"))
        self.proc = None

    def start(self):
        os.makedirs(self.dir)
        self.log = open(self.dir + ".log", "wb")
        self.proc = subprocess.Popen([FERRYD, "--dir", self.dir], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        subprocess.run([FERRYD, "waitready", "--dir", self.dir, "--timeout", "60"], check=True)

    def cli(self, *args):
        return [FERRY, *args]

    def setup(self, image):
        subprocess.run(self.cli("admin", "init", "--auto"), env=self.env, check=True, capture_output=True)
        subprocess.run(self.cli("image", "import", image, "--alias", "busybox"), env=self.env, check=True,
                       capture_output=True)

    def pid(self):
        return self.proc.pid

    def stop(self):
        names = subprocess.run(self.cli("list", "-f", "csv", "-c", "n"), env=self.env, capture_output=True,
                               text=True).stdout.split()
        for n in names:
            subprocess.run(self.cli("delete", "--force", n), env=self.env, capture_output=True)
        self.proc.terminate()
        self.proc.wait(timeout=60)


class Incus:
    name = "incus 6.0"

    def __init__(self, base):
        self.dir = os.path.join(base, "incus")
        self.env = dict(os.environ, INCUS_DIR=self.dir, INCUS_CONF=os.path.join(base, "incus-client"),
                        PATH="/usr/libexec/incus:" + os.environ.get("PATH", ""))
        self.proc = None

    def start(self):
        os.makedirs(self.dir)
        self.log = open(self.dir + ".log", "wb")
        self.proc = subprocess.Popen(["incusd", "--group", "root"], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        subprocess.run(["incusd", "waitready", "--timeout=60"], env=self.env, check=True)

    def cli(self, *args):
        return ["incus", *args]

    def setup(self, image):
        preseed = ("storage_pools:\n- name: default\n  driver: dir\nprofiles:\n- name: default\n  devices:\n"
                   "    root:\n      path: /\n      pool: default\n      type: disk\n")
        subprocess.run(["incus", "admin", "init", "--preseed"], input=preseed, text=True, env=self.env, check=True,
                       capture_output=True)
        subprocess.run(self.cli("image", "import", image, "--alias", "busybox"), env=self.env, check=True,
                       capture_output=True)

    def pid(self):
        return self.proc.pid

    def stop(self):
        names = subprocess.run(self.cli("list", "-f", "csv", "-c", "n"), env=self.env, capture_output=True,
                               text=True).stdout.split()
        for n in names:
            subprocess.run(self.cli("delete", "--force", n), env=self.env, capture_output=True)
        subprocess.run(["incusd", "shutdown", "--timeout=60"], env=self.env, capture_output=True)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure(server, image, runs, instances):
    server.start()
    try:
        server.setup(image)
        time.sleep(3)  # let start-up work settle before reading the idle RSS
        idle_rss = rss_kib(server.pid())
        launches = [timed(server.cli("launch", "busybox", f"bench{i}"), server.env) for i in range(runs)]
        for i in range(runs, instances):
            subprocess.run(server.cli("launch", "busybox", f"bench{i}"), env=server.env, check=True,
                           capture_output=True)
        lists = [timed(server.cli("list"), server.env) for _ in range(runs)]
        return {"idle_rss_kib": idle_rss, "launch_s": statistics.median(launches), "list_s": statistics.median(lists),
                "launch_all": launches, "list_all": lists, "instances": max(runs, instances)}
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instances", type=int, default=5, help="instances present while timing list")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "instance-server.md"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: both daemons run containers")
    base = tempfile.mkdtemp(prefix="ferry-bench-", dir="/var/tmp")
    os.chmod(base, 0o711)
    image = os.path.join(base, "busybox.tar.xz")
    subprocess.run([os.path.join(ROOT, "scripts", "build-busybox-image.sh"), image], check=True, capture_output=True)
    servers = [Ferry(base)]
    if shutil.which("incusd") or os.path.exists("/usr/libexec/incus/incusd"):
        servers.append(Incus(base))
    else:
        print("incusd not installed: measuring ferry alone (scripts/install-incus.sh installs Incus)")
    results = {}
    try:
        for server in servers:
            print(f"measuring {server.name} ...", flush=True)
            results[server.name] = measure(server, image, args.runs, args.instances)
    finally:
        subprocess.run(["rm", "-rf", base])
    lines = [f"# Instance server: ferry vs Incus ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"Machine: {os.cpu_count()} CPUs, kernel {os.uname().release}. Median of {args.runs} runs; "
             f"`list` with {args.instances} instances present.", "",
             "| measure | " + " | ".join(results) + (" | ferry / incus |" if len(results) > 1 else " |"),
             "|---|" + "---|" * len(results) + ("---|" if len(results) > 1 else "")]
    rows = [("daemon idle RSS (MiB)", "idle_rss_kib", 1 / 1024), ("`list` wall time (ms)", "list_s", 1000),
            ("`launch` wall time (ms)", "launch_s", 1000)]
    names = list(results)
    for label, key, scale in rows:
        values = [results[n][key] * scale for n in names]
        row = f"| {label} | " + " | ".join(f"{v:.1f}" for v in values)
        if len(values) > 1:
            row += f" | {values[0] / values[1]:.2f}"
        lines.append(row + " |")
    lines.append("")
    for n in names:
        lines.append(f"- {n}: launch runs (s) {[round(x, 3) for x in results[n]['launch_all']]}, "
                     f"list runs (s) {[round(x, 3) for x in results[n]['list_all']]}")
    report = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(report)
    print(report)


if __name__ == "__main__":
    main()
