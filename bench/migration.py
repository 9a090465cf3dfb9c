#!/usr/bin/env python3
"""Migration benchmark: ferry vs Incus 6.0 vs the tar-pipe limit, on this machine, in the same run.

Two ferryd servers (A, B) and two incusd servers (A, B), each with a `dir` pool, a root disk in the default
profile, the busybox image (scripts/build-busybox-image.sh) and HTTPS on a loopback port. On each A, a
stopped container c1 holds the issue's workload, written straight into its rootfs after `init`: 4 x 200 MiB
random files and 20,000 random files of 1-16 KiB (seeded: the same bytes on both systems).

Measures, for each system, each driven by its own CLI (`ferry`, `incus`) through remotes added by token:
  copy (pull, push, relay), move, refresh with nothing changed, refresh after 10 MiB changed inside one big
  file, refresh after 10 MiB of new small files, and a copy of an instance with 3 snapshots (about 5% of the
  data modified before each snapshot and after the last one).
For each: wall time of the CLI command; CPU time of each daemon and everything it ran (its own cpuacct
cgroup); peak RSS of each daemon (VmHWM, reset before each measure through /proc/<pid>/clear_refs) and of
its whole process tree (sampled); bytes on the wire (every connection to a server goes through a counting
TCP proxy in this script). The limit: `tar -C src -cf - . | tar -C dst -xf -` of the same rootfs on the
same disk. A step that fails is recorded with its error (ferry's --refresh, say, before it is implemented)
and the run goes on.

Usage: sudo bench/migration.py [--out bench/results/migration.md] [--json bench/results/migration.json]
                               [--big-mib 200] [--big-files 4] [--small-files 20000] [--systems ferry,incus]
Needs: a built ferry (make build), incus-base + incus-client (scripts/install-incus.sh), rsync, tar.
"""
import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("FERRY_BUILD_DIR", os.path.join(ROOT, "build"))
FERRYD = os.path.join(BUILD, "src", "daemon", "ferryd")
FERRY = os.path.join(BUILD, "src", "cli", "ferry")
INCUS_LIBEXEC = "/usr/libexec/incus"
CPUACCT = "/sys/fs/cgroup/cpuacct"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
CMD_TIMEOUT = 1800
FERRYD_ARGS = []
STEP_TIMEOUT = 900
QUIET_WAIT = 120


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, env=None, check=True, input=None, timeout=CMD_TIMEOUT):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- bytes on the wire: a counting TCP proxy ---------------------------------------------------------------

class CountingProxy:
    """Listens on a loopback port and forwards each connection to a server's HTTPS port, counting the bytes
    in each direction (TLS included: what the wire carries). Data moves with splice(2) through a pipe, so the
    proxy copies nothing through user space and costs little CPU."""

    def __init__(self, name, target_port):
        self.name = name
        self.target = ("127.0.0.1", target_port)
        self.lock = threading.Lock()
        self.up = 0      # client -> server (towards the daemon)
        self.down = 0    # server -> client
        self.connections = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def counters(self):
        with self.lock:
            return {"up": self.up, "down": self.down, "connections": self.connections}

    def _add(self, direction, n):
        with self.lock:
            if direction == "up":
                self.up += n
            else:
                self.down += n

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
            state = {"left": 2}
            threading.Thread(target=self._pump, args=(client, server, "up", state), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "down", state), daemon=True).start()

    def _pump(self, src, dst, direction, state):
        r, w = os.pipe()
        try:
            try:
                import fcntl
                fcntl.fcntl(w, 1031, MIB)  # F_SETPIPE_SZ
            except OSError:
                pass
            use_splice = hasattr(os, "splice")
            buf = bytearray(256 * 1024)
            while True:
                if use_splice:
                    try:
                        n = os.splice(src.fileno(), w, MIB)
                    except OSError as e:
                        if e.errno == 22:  # EINVAL: no splice from this socket, copy through user space
                            use_splice = False
                            continue
                        raise
                    if n == 0:
                        break
                    left = n
                    while left:
                        left -= os.splice(r, dst.fileno(), left)
                else:
                    n = src.recv_into(buf)
                    if n == 0:
                        break
                    dst.sendall(memoryview(buf)[:n])
                self._add(direction, n)
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except OSError:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        finally:
            os.close(r)
            os.close(w)
            with self.lock:
                state["left"] -= 1
                last = state["left"] == 0
            if last:
                src.close()
                dst.close()

    def close(self):
        self.closed = True
        self.listener.close()


# --- daemons: CPU (cpuacct cgroup), memory (VmHWM, sampled tree RSS) ---------------------------------------

def proc_status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_cpu_ticks(pid):
    """utime+stime of the process and cutime+cstime of its reaped children, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the comm: state is fields[0]; utime=14th field overall -> index 11 here
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return {"self_s": (utime + stime) / CLK_TCK, "children_s": (cutime + cstime) / CLK_TCK}


class CpuGroup:
    """A cpuacct cgroup (v1) of its own for one daemon: it counts the CPU of the daemon and of everything it
    starts (rsync, helpers), including processes that have exited, whoever reaped them."""

    def __init__(self, parent, name):
        self.path = os.path.join(parent, name) if parent else None
        if self.path:
            os.mkdir(self.path)

    def enter(self):
        """For preexec_fn: put the child (about to exec the daemon) into the group."""
        if self.path:
            with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def pids(self):
        if not self.path:
            return []
        with open(os.path.join(self.path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]

    def usage(self):
        if not self.path:
            return None
        with open(os.path.join(self.path, "cpuacct.usage")) as f:
            total = int(f.read()) / 1e9
        stat = {}
        with open(os.path.join(self.path, "cpuacct.stat")) as f:
            for line in f:
                k, v = line.split()
                stat[k] = int(v) / CLK_TCK
        return {"total_s": total, "user_s": stat.get("user", 0.0), "system_s": stat.get("system", 0.0)}

    def remove(self):
        if self.path and os.path.isdir(self.path):
            try:
                os.rmdir(self.path)
            except OSError as e:
                log(f"could not remove cgroup {self.path}: {e}")


class TreeSampler:
    """Samples, every 100 ms, the RSS of every process in each daemon's cgroup: the peak of their sum, and the
    largest VmHWM of any helper process (rsync...) seen."""

    def __init__(self, daemons, interval=0.1):
        self.daemons = daemons
        self.interval = interval
        self.peak_tree_kib = {d.key: 0 for d in daemons}
        self.peak_helper_kib = {d.key: 0 for d in daemons}
        self.max_procs = {d.key: 0 for d in daemons}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        for d in self.daemons:
            pids = d.group.pids() or [d.pid]
            total = 0
            for pid in pids:
                total += proc_status(pid, "VmRSS")
                if pid != d.pid:
                    self.peak_helper_kib[d.key] = max(self.peak_helper_kib[d.key], proc_status(pid, "VmHWM"))
            self.peak_tree_kib[d.key] = max(self.peak_tree_kib[d.key], total)
            self.max_procs[d.key] = max(self.max_procs[d.key], len(pids))

    def _run(self):
        while not self.stop_event.is_set():
            self._sample()
            self.stop_event.wait(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join()
        self._sample()


class Daemon:
    """One ferryd or incusd, in a temp dir, with a cpuacct cgroup of its own."""

    def __init__(self, kind, base, side, cgroup_parent):
        self.kind = kind
        self.side = side
        self.key = f"{kind}-{side}"
        self.dir = os.path.join(base, self.key)
        os.makedirs(self.dir)
        self.https_port = free_port()
        self.group = CpuGroup(cgroup_parent, self.key)
        if kind == "ferry":
            self.env = dict(os.environ, FERRY_DIR=self.dir, FERRY_CONF=os.path.join(base, self.key + "-local"))
        else:
            self.env = dict(os.environ, INCUS_DIR=self.dir, INCUS_CONF=os.path.join(base, self.key + "-local"),
                            PATH=INCUS_LIBEXEC + ":" + os.environ.get("PATH", ""))
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def local(self, *args, check=True, input=None):
        return run([self.kind if self.kind == "incus" else FERRY, *args], env=self.env, check=check, input=input)

    def start(self):
        self.log = open(self.dir + ".log", "wb")
        if self.kind == "ferry":
            cmd = [FERRYD, "--dir", self.dir, *FERRYD_ARGS]
        else:
            cmd = ["incusd", "--group", "root", "--logfile", self.dir + "/incusd.log"]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=self.group.enter)
        if self.kind == "ferry":
            run([FERRYD, "waitready", "--dir", self.dir, "--timeout", "60"])
        else:
            run(["incusd", "waitready", "--timeout=60"], env=self.env)

    def setup(self, image):
        if self.kind == "ferry":
            self.local("admin", "init", "--auto", "--network-address", "127.0.0.1",
                       "--network-port", str(self.https_port))
        else:
            preseed = (f"config:\n  core.https_address: 127.0.0.1:{self.https_port}\nstorage_pools:\n"
                       "- name: default\n  driver: dir\nprofiles:\n- name: default\n  devices:\n    root:\n"
                       "      path: /\n      pool: default\n      type: disk\n")
            self.local("admin", "init", "--preseed", input=preseed)
        self.local("image", "import", image, "--alias", "busybox")

    def token(self, client_name):
        return self.local("config", "trust", "add", client_name, "-q").stdout.strip()

    def rootfs(self, name):
        inst = f"default_{name}" if self.kind == "ferry" else name
        return os.path.join(self.dir, "storage-pools", "default", "containers", inst, "rootfs")

    def instances(self):
        out = self.local("list", "-f", "csv", "-c", "n", check=False).stdout
        return [n for n in out.split() if n]

    def cpu(self):
        out = {"cgroup": self.group.usage()}
        try:
            out["proc"] = proc_cpu_ticks(self.pid)
        except OSError:
            out["proc"] = None
        return out

    def reset_hwm(self):
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def settle(self, timeout=15):
        """Wait until the daemon has no helper process left (rsync...), so that their CPU is counted."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            pids = self.group.pids()
            if not pids or pids == [self.pid]:
                return True
            time.sleep(0.1)
        return False

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for n in self.instances():
                self.local("delete", "--force", n, check=False)
            if self.kind == "incus":
                run(["incusd", "shutdown", "--timeout=60"], env=self.env, check=False, timeout=120)
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()
        # Helpers the daemon left behind (none expected) would keep the cgroup busy.
        for pid in self.group.pids():
            log(f"{self.key}: process {pid} still in the daemon's cgroup, killing it")
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)
        self.group.remove()


class System:
    """Two servers of one kind, a client config with remotes a: and b: that reach them through proxies."""

    def __init__(self, kind, base, cgroup_parent):
        self.kind = kind
        self.name = "ferry" if kind == "ferry" else "incus 6.0"
        self.a = Daemon(kind, base, "a", cgroup_parent)
        self.b = Daemon(kind, base, "b", cgroup_parent)
        conf = os.path.join(base, kind + "-client")
        if kind == "ferry":
            self.env = dict(os.environ, FERRY_CONF=conf, HOME=base)
            self.exe = FERRY
        else:
            self.env = dict(os.environ, INCUS_CONF=conf, HOME=base)
            self.exe = "incus"
        self.proxies = {}

    def daemons(self):
        return [self.a, self.b]

    def cli(self, *args, check=True):
        return run([self.exe, *args], env=self.env, check=check)

    def start(self, image):
        for d in self.daemons():
            d.start()
            d.setup(image)
        for d in self.daemons():
            proxy = CountingProxy(d.key, d.https_port)
            self.proxies[d.side] = proxy
            token = d.token(f"bench-{self.kind}-client")
            self.cli("remote", "add", d.side, f"https://127.0.0.1:{proxy.port}", "--token", token,
                     "--accept-certificate")

    def wire(self):
        return {side: p.counters() for side, p in self.proxies.items()}

    def stop(self):
        for d in self.daemons():
            try:
                d.stop()
            except Exception as e:  # keep stopping the others
                log(f"stopping {d.key}: {e}")
        for p in self.proxies.values():
            p.close()


# --- the workload ------------------------------------------------------------------------------------------

class Workload:
    """Seeded data, so both systems get the same bytes and the same changes."""

    def __init__(self, big_files, big_mib, small_files):
        self.big_files = big_files
        self.big_mib = big_mib
        self.small_files = small_files

    @staticmethod
    def _owner(rootfs):
        st = os.stat(rootfs)
        return st.st_uid, st.st_gid

    @staticmethod
    def _chown_tree(path, uid, gid):
        for dirpath, dirnames, filenames in os.walk(path):
            os.chown(dirpath, uid, gid)
            for n in filenames:
                os.chown(os.path.join(dirpath, n), uid, gid)

    def populate(self, rootfs):
        """The issue's workload, like incus-two-servers.sh's phase_c1 (there from /dev/urandom; here seeded)."""
        rng = random.Random(42)
        big = os.path.join(rootfs, "data", "big")
        small = os.path.join(rootfs, "data", "small")
        os.makedirs(big)
        os.makedirs(small)
        for i in range(1, self.big_files + 1):
            with open(os.path.join(big, f"big{i}.bin"), "wb") as f:
                for _ in range(self.big_mib // 8):
                    f.write(rng.randbytes(8 * MIB))
                if self.big_mib % 8:
                    f.write(rng.randbytes((self.big_mib % 8) * MIB))
        for n in range(self.small_files):
            d = os.path.join(small, f"d{n // 200:03d}")
            if n % 200 == 0:
                os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{n % 200:04d}"), "wb") as f:
                f.write(rng.randbytes(rng.randint(1024, 16384)))
        self._chown_tree(os.path.join(rootfs, "data"), *self._owner(rootfs))

    def change_big(self, rootfs, mib, seed, file_index=1):
        """Overwrite `mib` MiB in place inside one big file (same size, new mtime)."""
        rng = random.Random(seed)
        path = os.path.join(rootfs, "data", "big", f"big{file_index}.bin")
        size = os.path.getsize(path)
        offset = rng.randrange(0, max(1, size - mib * MIB)) // 4096 * 4096
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(rng.randbytes(mib * MIB))
        return mib * MIB

    def add_small(self, rootfs, mib, seed, tag):
        """New files of 1-16 KiB, `mib` MiB in all, in a new directory."""
        rng = random.Random(seed)
        d = os.path.join(rootfs, "data", "small", f"added-{tag}")
        os.makedirs(d)
        total, n = 0, 0
        while total < mib * MIB:
            size = min(rng.randint(1024, 16384), mib * MIB - total)
            with open(os.path.join(d, f"f{n:05d}"), "wb") as f:
                f.write(rng.randbytes(size))
            total += size
            n += 1
        self._chown_tree(d, *self._owner(rootfs))
        return total

    def modify_share(self, rootfs, seed, share=0.05):
        """About `share` of the data changed: the same share of each big file rewritten in place (one region
        per file) and the same share of the small files rewritten with new random content of a new size."""
        rng = random.Random(seed)
        changed = 0
        chunk = max(1, int(self.big_mib * share)) * MIB
        for i in range(1, self.big_files + 1):
            path = os.path.join(rootfs, "data", "big", f"big{i}.bin")
            size = os.path.getsize(path)
            offset = rng.randrange(0, max(1, size - chunk)) // 4096 * 4096
            with open(path, "r+b") as f:
                f.seek(offset)
                f.write(rng.randbytes(chunk))
            changed += chunk
        for n in rng.sample(range(self.small_files), int(self.small_files * share)):
            path = os.path.join(rootfs, "data", "small", f"d{n // 200:03d}", f"f{n % 200:04d}")
            st = os.stat(path)
            data = rng.randbytes(rng.randint(1024, 16384))
            with open(path, "wb") as f:
                f.write(data)
            os.chown(path, st.st_uid, st.st_gid)
            changed += len(data)
        return changed


def data_listing(rootfs):
    """(path, size, mtime) of every file under data/, and the digest of the big files: what a correct copy
    or refresh must reproduce."""
    entries = []
    top = os.path.join(rootfs, "data")
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for n in sorted(filenames):
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            entries.append((os.path.relpath(p, top), st.st_size, st.st_mtime_ns))
    digest = hashlib.sha256()
    big = os.path.join(top, "big")
    for n in sorted(os.listdir(big)) if os.path.isdir(big) else []:
        with open(os.path.join(big, n), "rb") as f:
            while True:
                chunk = f.read(8 * MIB)
                if not chunk:
                    break
                digest.update(chunk)
    return entries, digest.hexdigest()


def verify(src_rootfs, dst_rootfs):
    if not os.path.isdir(dst_rootfs):
        return "target rootfs missing"
    src, src_digest = data_listing(src_rootfs)
    dst, dst_digest = data_listing(dst_rootfs)
    if [e[:2] for e in src] != [e[:2] for e in dst]:
        return f"files differ ({len(src)} at source, {len(dst)} at target)"
    if src_digest != dst_digest:
        return "big files' contents differ"
    if [e[2] for e in src] != [e[2] for e in dst]:
        return "ok (mtimes differ)"
    return "ok"


def tree_bytes(path):
    total, files = 0, 0
    for dirpath, dirnames, filenames in os.walk(path):
        for n in filenames:
            total += os.lstat(os.path.join(dirpath, n)).st_size
            files += 1
    return total, files


def machine_busy_s():
    """CPU seconds the whole machine has spent busy (not idle, not waiting for I/O) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def wait_quiet(max_wait, threshold=0.2):
    """Wait (up to max_wait seconds) for a second in which the rest of the machine uses less than `threshold`
    of a CPU: other work on a 2-CPU machine would be charged to the step. Returns (waited_s, busy CPUs)."""
    start = time.time()
    while True:
        b0 = machine_busy_s()
        time.sleep(1)
        busy = machine_busy_s() - b0
        if busy < threshold or time.time() - start >= max_wait:
            return time.time() - start, busy


def sync_and_settle():
    """Write back what the last step left dirty, so it is not charged to the next one."""
    subprocess.run(["sync"], check=False)
    time.sleep(1)


# --- measuring -----------------------------------------------------------------------------------------------

def error_text(proc):
    text = (proc.stderr or proc.stdout or "").strip().splitlines()
    text = " / ".join(line.strip() for line in text[-3:] if line.strip())
    return text[:400] or f"exit status {proc.returncode}"


def measure(system, args, label):
    """Run one CLI command and measure it. Returns a result dict (never raises for a failed command)."""
    daemons = system.daemons()
    sync_and_settle()
    for d in daemons:
        d.settle()
    waited, busy_before = wait_quiet(QUIET_WAIT)
    loadavg = open("/proc/loadavg").read().split()[:3]
    wire0 = system.wire()
    machine0 = machine_busy_s()
    cpu0 = {d.key: d.cpu() for d in daemons}
    rss0 = {d.key: proc_status(d.pid, "VmRSS") for d in daemons}
    hwm_reset = all(d.reset_hwm() for d in daemons)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    bench0 = time.process_time()
    with TreeSampler(daemons) as sampler:
        start = time.perf_counter()
        try:
            proc = subprocess.run([system.exe, *args], env=system.env, capture_output=True, text=True,
                                  timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            proc = subprocess.CompletedProcess(e.cmd, -9, "", f"timed out after {STEP_TIMEOUT} s (killed)")
        wall = time.perf_counter() - start
        settled = all(d.settle() for d in daemons)
    bench_cpu = time.process_time() - bench0
    machine = machine_busy_s() - machine0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = {d.key: d.cpu() for d in daemons}
    wire1 = system.wire()
    result = {"label": label, "command": [os.path.basename(system.exe), *args], "ok": proc.returncode == 0,
              "wall_s": wall, "loadavg_before": loadavg, "helpers_exited": settled,
              "quiet_wait_s": waited, "machine_busy_cpus_before": busy_before, "machine_busy_cpu_s": machine,
              "cli_cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
              "bench_process_cpu_s": bench_cpu, "daemons": {}, "wire": {}}
    if proc.returncode != 0:
        err = error_text(proc)
        result["error"] = err
        unsupported = any(m in err.lower() for m in ("not supported", "not implemented", "missing the required"))
        result["status"] = ("not supported" if unsupported else "failed") + f" ({err})"
    for d in daemons:
        c0, c1 = cpu0[d.key], cpu1[d.key]
        entry = {"rss_before_kib": rss0[d.key], "vmhwm_kib": proc_status(d.pid, "VmHWM") if hwm_reset else None,
                 "tree_peak_rss_kib": sampler.peak_tree_kib[d.key],
                 "helper_peak_vmhwm_kib": sampler.peak_helper_kib[d.key], "max_processes": sampler.max_procs[d.key]}
        if c0["cgroup"] and c1["cgroup"]:
            entry["cpu_s"] = c1["cgroup"]["total_s"] - c0["cgroup"]["total_s"]
            entry["cpu_user_s"] = c1["cgroup"]["user_s"] - c0["cgroup"]["user_s"]
            entry["cpu_system_s"] = c1["cgroup"]["system_s"] - c0["cgroup"]["system_s"]
            entry["cpu_method"] = "cpuacct cgroup"
        if c0["proc"] and c1["proc"]:
            entry["proc_self_cpu_s"] = c1["proc"]["self_s"] - c0["proc"]["self_s"]
            entry["proc_children_cpu_s"] = c1["proc"]["children_s"] - c0["proc"]["children_s"]
            if "cpu_s" not in entry:
                entry["cpu_s"] = entry["proc_self_cpu_s"] + entry["proc_children_cpu_s"]
                entry["cpu_method"] = "/proc/<pid>/stat utime+stime+cutime+cstime"
        result["daemons"][d.side] = entry
    ours = result["cli_cpu_s"] + bench_cpu + sum(e.get("cpu_s", 0) for e in result["daemons"].values())
    result["other_cpu_s"] = max(0.0, machine - ours)
    total = 0
    for side in wire1:
        up = wire1[side]["up"] - wire0[side]["up"]
        down = wire1[side]["down"] - wire0[side]["down"]
        result["wire"][side] = {"to_server": up, "from_server": down,
                                "connections": wire1[side]["connections"] - wire0[side]["connections"]}
        total += up + down
    result["wire_bytes"] = total
    state = "ok" if result["ok"] else result["status"]
    log(f"  {system.name:9s} {label:28s} {wall:7.2f} s  cpu A {result['daemons']['a'].get('cpu_s', 0):6.2f} "
        f"B {result['daemons']['b'].get('cpu_s', 0):6.2f}  wire {total / MIB:8.1f} MiB  "
        f"others' cpu {result['other_cpu_s']:5.2f} s  {state}")
    return result


def measure_tar(src, dst):
    sync_and_settle()
    waited, busy_before = wait_quiet(QUIET_WAIT)
    os.makedirs(dst, mode=0o755)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine0 = machine_busy_s()
    bench0 = time.process_time()
    start = time.perf_counter()
    subprocess.run(["bash", "-c", 'set -o pipefail; tar -C "$1" -cf - . | tar -C "$2" -xf -', "tar", src, dst],
                   check=True)
    wall = time.perf_counter() - start
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine = machine_busy_s() - machine0
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    cpu_system = ru1.ru_stime - ru0.ru_stime
    other = max(0.0, machine - cpu - (time.process_time() - bench0))
    check = verify(src, dst)
    log(f"  tar pipe {wall:.2f} s, cpu {cpu:.2f} s, others' cpu {other:.2f} s ({check})")
    return {"wall_s": wall, "cpu_s": cpu, "cpu_system_s": cpu_system, "peak_rss_kib": ru1.ru_maxrss, "verified": check,
            "quiet_wait_s": waited, "machine_busy_cpus_before": busy_before, "other_cpu_s": other}


STEPS = [
    ("copy_pull", "copy (pull)"),
    ("copy_push", "copy (push)"),
    ("copy_relay", "copy (relay)"),
    ("move", "move (pull)"),
    ("refresh_nochange", "refresh, nothing changed"),
    ("refresh_big10", "refresh, 10 MiB changed in a big file"),
    ("refresh_small10", "refresh, 10 MiB of new small files"),
    ("copy_snapshots", "copy with 3 snapshots (pull)"),
]


def run_steps(systems, workload, results, repeat):
    """Each step `repeat` times; within a repetition, the systems one after the other (interleaved, so a change
    in the machine's load hits both). A step's result is its fastest successful run (all runs are kept in
    "runs"); a system whose run fails is not asked again for that step."""

    def each(fn):
        for s in systems:
            try:
                fn(s)
            except Exception as e:  # a set-up step failed: note it, go on with the others
                log(f"  {s.name}: {e}")
                results[s.kind].setdefault("setup_errors", []).append(str(e)[:400])

    def step(key, one_run, after=None):
        """one_run(system, i) -> result of measure(), with extra fields."""
        runs = {s.kind: [] for s in systems}
        for i in range(repeat):
            for s in systems:
                if runs[s.kind] and not runs[s.kind][-1]["ok"]:
                    continue
                try:
                    runs[s.kind].append(one_run(s, i))
                except Exception as e:  # the preparation failed, not the measured command
                    log(f"  {s.name} {key}: {e}")
                    results[s.kind].setdefault("setup_errors", []).append(f"{key}: {str(e)[:400]}")
                    break
        for s in systems:
            if not runs[s.kind]:
                continue
            ok = [r for r in runs[s.kind] if r["ok"]]
            best = dict(min(ok, key=lambda r: r["wall_s"]) if ok else runs[s.kind][-1])
            best["runs"] = [{k: r.get(k) for k in ("ok", "wall_s", "other_cpu_s", "wire_bytes", "verified",
                                                    "status", "changed_bytes")}
                            | {"cpu_s": {side: d.get("cpu_s") for side, d in r["daemons"].items()}}
                            for r in runs[s.kind]]
            if ok:
                walls = sorted(r["wall_s"] for r in ok)
                best["wall_median_s"] = walls[len(walls) // 2] if len(walls) % 2 else \
                    (walls[len(walls) // 2 - 1] + walls[len(walls) // 2]) / 2
            results[s.kind]["steps"][key] = best
        if after:
            each(after)

    def checked(s, key, args, dst, src="c1"):
        r = measure(s, args, key)
        if r["ok"]:
            r["verified"] = verify(s.a.rootfs(src), s.b.rootfs(dst))
        return r

    log("copy, each mode")
    for mode in ("pull", "push", "relay"):
        dst = f"c-{mode}"

        def copy_once(s, i, mode=mode, dst=dst):
            s.cli("delete", f"b:{dst}", "--force", check=False)  # the previous repetition's
            return checked(s, f"copy_{mode}", ["copy", "a:c1", f"b:{dst}", "--mode", mode, "-q"], dst)
        # c-pull stays: the refreshes update it.
        step(f"copy_{mode}", copy_once,
             after=None if mode == "pull" else lambda s, dst=dst: s.cli("delete", f"b:{dst}", "--force", check=False))

    log("move (each time of a fresh local copy of c1, made first and not measured)")

    def move_once(s, i):
        s.cli("copy", "a:c1", "a:c-move", "-q")
        r = checked(s, "move", ["move", "a:c-move", "b:c-move", "-q"], "c-move", src="c1")
        r["source_gone"] = not os.path.exists(s.a.rootfs("c-move"))
        s.cli("delete", "b:c-move", "--force", check=False)
        s.cli("delete", "a:c-move", "--force", check=False)
        return r
    step("move", move_once)

    refresh_args = ["copy", "a:c1", "b:c-pull", "--refresh", "-q"]
    log("refresh, nothing changed")
    step("refresh_nochange", lambda s, i: checked(s, "refresh_nochange", refresh_args, "c-pull"))

    log("refresh after 10 MiB changed inside big1.bin (another region each repetition)")

    def refresh_big(s, i):
        changed = workload.change_big(s.a.rootfs("c1"), 10, seed=1001 + i)
        return checked(s, "refresh_big10", refresh_args, "c-pull") | {"changed_bytes": changed}
    step("refresh_big10", refresh_big)

    log("refresh after 10 MiB of new small files (another 10 MiB each repetition)")

    def refresh_small(s, i):
        changed = workload.add_small(s.a.rootfs("c1"), 10, seed=1101 + i, tag=f"r{i}")
        return checked(s, "refresh_small10", refresh_args, "c-pull") | {"changed_bytes": changed}
    step("refresh_small10", refresh_small)

    log("copy with 3 snapshots (~5% of the data changed before each snapshot and after the last)")

    def snapshots(s):
        changed = []
        for i in range(1, 4):
            changed.append(workload.modify_share(s.a.rootfs("c1"), seed=2000 + i))
            s.cli("snapshot", "create", "a:c1", f"s{i}")
        changed.append(workload.modify_share(s.a.rootfs("c1"), seed=2004))
        results[s.kind]["snapshot_changed_bytes"] = changed
    each(snapshots)

    def copy_snapshots(s, i):
        s.cli("delete", "b:c-snap", "--force", check=False)
        r = checked(s, "copy_snapshots", ["copy", "a:c1", "b:c-snap", "-q"], "c-snap")
        if r["ok"]:
            out = s.cli("snapshot", "list", "b:c-snap", "-f", "csv", check=False).stdout
            r["target_snapshots"] = len([line for line in out.splitlines() if line.strip()])
        return r
    step("copy_snapshots", copy_snapshots, after=lambda s: s.cli("delete", "b:c-snap", "--force", check=False))


# --- the report ----------------------------------------------------------------------------------------------

def fmt(value, spec):
    return "–" if value is None else format(value, spec)


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def report(results, tar, meta):
    kinds = [k for k in ("ferry", "incus") if k in results]
    names = {"ferry": "ferry", "incus": "incus 6.0"}

    def step(kind, key):
        return results.get(kind, {}).get("steps", {}).get(key)

    def wall(kind, key):
        r = step(kind, key)
        return r["wall_s"] if r and r["ok"] else None

    def cell_wall(kind, key):
        r = step(kind, key)
        if r is None:
            return "not run"
        if not r["ok"]:
            return r["status"].split(" (")[0]
        return f"{r['wall_s']:.2f}"

    lines = [f"# Migration: ferry vs Incus vs the tar pipe ({meta['date']})", "",
             f"Machine: {meta['cpus']} CPUs, {meta['mem_gib']:.0f} GiB RAM, kernel {meta['kernel']}; "
             f"{meta['incus_version']}; ferry {meta['ferry_version']} (binaries of "
             f"{meta.get('ferry_binaries', {}).get('ferryd', {}).get('built', '?')}, tree {meta['git']}). Each step run "
             f"{meta['repeat']} times, systems interleaved; the tables give the fastest run (every run is listed at "
             f"the end and kept in the JSON). Method: `bench/README.md`.", "",
             f"Workload: a stopped container whose rootfs holds {meta['data_mib']:.0f} MiB in {meta['data_files']} "
             f"files ({meta['big_files']} × {meta['big_mib']} MiB random files, {meta['small_files']} random files of "
             f"1–16 KiB), plus the busybox image. Both servers of a system on this machine, "
             f"HTTPS over loopback, `dir` pools on the same filesystem as the tar pipe "
             f"({meta.get('fs', '/var/tmp')}). Page cache warm for all.", "",
             "## Wall time (s)", "",
             "| step | " + " | ".join(names[k] for k in kinds) + " | ferry / incus | ferry / tar |",
             "|---|" + "---:|" * len(kinds) + "---:|---:|"]
    lines.append(f"| tar pipe (the limit) | " + " | ".join(f"{tar['wall_s']:.2f}" if tar else "–" for _ in kinds)
                 + " | | |")
    for key, label in STEPS:
        row = f"| {label} | " + " | ".join(cell_wall(k, key) for k in kinds)
        fi = ratio(wall("ferry", key), wall("incus", key))
        full_copy = key in ("copy_pull", "copy_push", "copy_relay", "move")
        ft = ratio(wall("ferry", key), tar["wall_s"]) if tar and full_copy else None
        row += f" | {fmt(fi, '.2f')} | {fmt(ft, '.2f')} |"
        lines.append(row)
    lines += ["", "The tar pipe's wall time is the same run for both columns; ferry / tar is shown for the full "
              "copies only (a refresh or a copy with snapshots moves a different amount of data)."]

    lines += ["", "## CPU time (s): source daemon A + target daemon B, each with everything it ran", "",
              "| step | " + " | ".join(f"{names[k]} A | {names[k]} B | {names[k]} total" for k in kinds)
              + " | ferry / incus (total) |",
              "|---|" + "---:|---:|---:|" * len(kinds) + "---:|"]
    tar_cpu = f"{tar['cpu_s']:.2f}" if tar else "–"
    lines.append("| tar pipe (both tars) | " + " | ".join(" | ".join(["", "", tar_cpu]) for _ in kinds) + " | |")

    def cpu(kind, key):
        r = step(kind, key)
        if not r or not r["ok"]:
            return None, None, None
        a = r["daemons"]["a"].get("cpu_s")
        b = r["daemons"]["b"].get("cpu_s")
        return a, b, (a or 0) + (b or 0) + (r["cli_cpu_s"] if key == "copy_relay" else 0)

    for key, label in STEPS:
        cells, totals = [], {}
        for k in kinds:
            a, b, t = cpu(k, key)
            totals[k] = t
            cells.append(f"{fmt(a, '.2f')} | {fmt(b, '.2f')} | {fmt(t, '.2f')}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {fmt(ratio(totals.get('ferry'), totals.get('incus')), '.2f')} |")
    lines += ["", "For relay, the total also counts the CLI, which carries the data there. Daemon CPU is the "
              "delta of `cpuacct.usage` of a cgroup each daemon was started in (rsync and the other helpers "
              "included, whoever reaped them)."]

    lines += ["", "## Peak memory (MiB): daemon VmHWM during the step / whole process tree, sampled", "",
              "| step | " + " | ".join(f"{names[k]} A | {names[k]} B" for k in kinds) + " |",
              "|---|" + "---:|---:|" * len(kinds)]

    def mem(r, side):
        if not r or not r["ok"]:
            return "–"
        d = r["daemons"][side]
        hwm = d["vmhwm_kib"]
        return f"{fmt(hwm / 1024 if hwm else None, '.0f')} / {d['tree_peak_rss_kib'] / 1024:.0f}"

    for key, label in STEPS:
        lines.append(f"| {label} | " + " | ".join(f"{mem(step(k, key), 'a')} | {mem(step(k, key), 'b')}"
                                                  for k in kinds) + " |")
    lines += ["", "VmHWM of the daemon process alone, reset through `/proc/<pid>/clear_refs` before each step (so "
              "it is the peak during the step, not since start). The tree figure sums VmRSS over every process in "
              "the daemon's cgroup (the daemon, rsync, helpers), sampled every 100 ms: a short spike can be missed."]

    lines += ["", "## Bytes on the wire (MiB, both directions, TLS included)", "",
              "| step | " + " | ".join(names[k] for k in kinds) + " | ferry / incus |",
              "|---|" + "---:|" * len(kinds) + "---:|"]

    def wire(kind, key):
        r = step(kind, key)
        return r["wire_bytes"] / MIB if r and r["ok"] else None

    for key, label in STEPS:
        lines.append(f"| {label} | " + " | ".join(fmt(wire(k, key), '.1f') for k in kinds)
                     + f" | {fmt(ratio(wire('ferry', key), wire('incus', key)), '.2f')} |")
    lines += ["", "Every connection to a server (the CLI's, and the one a daemon opens to the other) goes through "
              "a counting TCP proxy in the script; relay carries the data twice (source → CLI → target)."]

    lines += ["", "## Noise: CPU used by other processes on the machine during each step (s)", "",
              "| step | " + " | ".join(names[k] for k in kinds) + " |", "|---|" + "---:|" * len(kinds)]
    if tar:
        lines.append("| tar pipe | " + " | ".join(f"{tar['other_cpu_s']:.2f}" for _ in kinds) + " |")

    def other(kind, key):
        r = step(kind, key)
        return r.get("other_cpu_s") if r and r["ok"] else None

    for key, label in STEPS:
        lines.append(f"| {label} | " + " | ".join(fmt(other(k, key), '.2f') for k in kinds) + " |")
    lines += ["", "Machine-wide busy time (`/proc/stat`) during the step, less the CPU of the two daemons' cgroups, "
              "the CLI and this script. Before each step the script waits (up to `--quiet-wait` seconds) for a "
              "second in which the machine is idle; other work on this shared machine can still start during a "
              "step and slow it."]

    targets = [("full copy ≤ 0.25× Incus's default (pull) copy", ratio(wall("ferry", "copy_pull"),
                                                                       wall("incus", "copy_pull")), 0.25),
               ("full copy ≤ 1.3× the tar pipe", ratio(wall("ferry", "copy_pull"), tar["wall_s"] if tar else None),
                1.3),
               ("refresh after a 10 MiB change in a big file ≤ 0.15× Incus",
                ratio(wall("ferry", "refresh_big10"), wall("incus", "refresh_big10")), 0.15)]
    lines += ["", "## The issue's targets (reported, not asserted)", "", "| target | measured | |", "|---|---:|---|"]
    for label, value, limit in targets:
        verdict = "–" if value is None else ("met" if value <= limit else "not met")
        lines.append(f"| {label} | {fmt(value, '.2f')} | {verdict if value is not None else 'no measure'} |")

    notes, perturbed = [], []
    for k in kinds:
        for key, label in STEPS:
            r = step(k, key)
            if r is None:
                notes.append(f"{names[k]}, {label}: not run")
            elif not r["ok"]:
                notes.append(f"{names[k]}, {label}: {r['status']}")
            elif r.get("verified") and not r["verified"].startswith("ok"):
                notes.append(f"{names[k]}, {label}: target differs from source: {r['verified']}")
            if r and r["ok"] and key == "copy_snapshots" and r.get("target_snapshots") != 3:
                notes.append(f"{names[k]}, {label}: {r.get('target_snapshots')} snapshots on the target")
            if r and r["ok"] and r.get("other_cpu_s", 0) > 0.25 * r["wall_s"]:
                perturbed.append(f"{names[k]} {label} ({r['other_cpu_s']:.1f} s in {r['wall_s']:.1f} s)")
            if r and r["ok"] and r["wire_bytes"] < meta["data_mib"] * MIB * 0.9 and key.startswith(("copy", "move")):
                notes.append(f"{names[k]}, {label}: fewer bytes on the wire than the data: did it bypass the proxy?")
        for e in results[k].get("setup_errors", []):
            notes.append(f"{names[k]}: set-up error: {e}")
    tar_walls = [r["wall_s"] for r in (tar or {}).get("runs", [])]
    if len(tar_walls) > 1 and max(tar_walls) > 1.5 * min(tar_walls):
        own = ", ".join(f"{r['cpu_s']:.2f}" for r in tar["runs"])
        others = ", ".join(f"{r.get('other_cpu_s', 0):.2f}" for r in tar["runs"])
        notes.append(f"The tar pipe's runs took {', '.join(f'{w:.2f}' for w in tar_walls)} s for the same data, "
                     f"with the tars' own CPU at {own} s and other processes' at {others} s: the cost of "
                     "writing the copy (kernel time in the writer) was not steady on this machine. "
                     "ferry / tar uses the fastest run.")
    if tar and tar.get("other_cpu_s", 0) > 0.25 * tar["wall_s"]:
        perturbed.insert(0, f"tar pipe ({tar['other_cpu_s']:.1f} s in {tar['wall_s']:.1f} s)")
    if perturbed:
        notes.append("Other processes used more than a quarter of a CPU during (the reported run of) these steps, "
                     "whose times are therefore inflated: " + "; ".join(perturbed))
    if notes:
        lines += ["", "## Failures and notes", ""] + [f"- {n}" for n in notes]
    lines += ["", "## Every run (wall time, s; * = failed)", ""]
    if tar:
        lines.append("- tar pipe: " + ", ".join(f"{r['wall_s']:.2f}" for r in tar.get("runs", [tar])))
    for k in kinds:
        for key, label in STEPS:
            r = step(k, key)
            if r:
                lines.append(f"- {names[k]}, {label}: " + ", ".join(
                    f"{x['wall_s']:.2f}" + ("" if x["ok"] else "*") for x in r.get("runs", [r])))
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------------------

def hard_cleanup(base):
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    for mount in sorted((m for m in mounts if m.startswith(base + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    subprocess.run(["rm", "-rf", base])


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "migration.md"))
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "migration.json"))
    parser.add_argument("--big-files", type=int, default=4)
    parser.add_argument("--big-mib", type=int, default=200)
    parser.add_argument("--small-files", type=int, default=20000)
    parser.add_argument("--systems", default="ferry,incus")
    parser.add_argument("--fs-gib", type=int, default=60, help="size of the scratch ext4 everything runs on "
                        "(0: /var/tmp as it is)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each step; the fastest is reported")
    parser.add_argument("--from-json", metavar="JSON", help="measure nothing: write the report of a saved run")
    parser.add_argument("--step-timeout", type=int, default=600, help="seconds before a measured command is "
                        "killed and recorded as failed")
    parser.add_argument("--quiet-wait", type=int, default=120, help="before each step, wait up to this many "
                        "seconds for the rest of the machine to be idle")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        text = report(saved["systems"], saved["tar_pipe"], saved["meta"])
        with open(args.out, "w") as f:
            f.write(text)
        print(text)
        return
    if os.geteuid() != 0:
        sys.exit("run as root: both daemons need it")
    kinds = [k for k in args.systems.split(",") if k]
    if "incus" in kinds and not (shutil.which("incusd") or os.path.exists(os.path.join(INCUS_LIBEXEC, "incusd"))):
        print("incusd not installed: measuring ferry alone (scripts/install-incus.sh installs Incus)")
        kinds.remove("incus")

    base = tempfile.mkdtemp(prefix="ferry-bench-mig-", dir="/var/tmp")
    os.chmod(base, 0o711)
    # Everything (both systems and the tar pipe) on a fresh, journaled ext4 in a loop file: this machine's root
    # ext4 has no journal, and there ext4 will not reuse an inode freed in the last minutes, so creating 20,000
    # files after deleting as many (each step deletes the previous repetition's copy) spends seconds, growing
    # from one repetition to the next, in the inode allocator (recently_deleted() in perf), whoever does it.
    loop_file = None
    if args.fs_gib > 0:
        loop_file = base + ".ext4"
        run(["truncate", "-s", f"{args.fs_gib}G", loop_file])
        run(["mkfs.ext4", "-q", "-F", loop_file])
        run(["mount", "-o", "loop", loop_file, base])
        os.chmod(base, 0o711)
    cgroup_parent = None
    if os.path.isdir(CPUACCT):
        try:
            cgroup_parent = os.path.join(CPUACCT, os.path.basename(base))
            os.mkdir(cgroup_parent)
        except OSError as e:
            log(f"no cpuacct cgroup ({e}): daemon CPU from /proc/<pid>/stat (reaped children only)")
            cgroup_parent = None
    # A private copy of ferry's binaries: a rebuild of build/ during the run must not change what is measured.
    global FERRYD, FERRY, STEP_TIMEOUT, QUIET_WAIT
    STEP_TIMEOUT = args.step_timeout
    QUIET_WAIT = args.quiet_wait
    binaries = {}
    if "ferry" in kinds:
        os.makedirs(os.path.join(base, "bin"))
        for name in ("FERRYD", "FERRY"):
            src = globals()[name]
            dst = os.path.join(base, "bin", os.path.basename(src))
            shutil.copy2(src, dst)
            with open(dst, "rb") as f:
                binaries[os.path.basename(src)] = {
                    "sha256": hashlib.sha256(f.read()).hexdigest()[:16],
                    "built": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(os.stat(src).st_mtime))}
            globals()[name] = dst
    ferry_version = version([FERRY, "--version"]) or "?"
    git_tree = version(["git", "-C", ROOT, "describe", "--always", "--dirty"])  # what the binaries came from
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    workload = Workload(args.big_files, args.big_mib, args.small_files)
    systems = []
    results = {}
    tar = None
    interrupted = []

    def on_term(*_):
        interrupted.append(1)
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)
    try:
        image = os.path.join(base, "busybox.tar.xz")
        run([os.path.join(ROOT, "scripts", "build-busybox-image.sh"), image])
        for kind in kinds:
            log(f"starting two {kind} servers")
            s = System(kind, base, cgroup_parent)
            systems.append(s)
            s.start(image)
            results[kind] = {"steps": {}}
        for s in systems:
            log(f"{s.name}: init a:c1 and write the workload into its rootfs")
            s.cli("init", "a:busybox", "a:c1", "-q")
            workload.populate(s.a.rootfs("c1"))
        data_bytes, data_files = tree_bytes(os.path.join(systems[0].a.rootfs("c1"), "data"))
        log(f"workload: {data_bytes / MIB:.0f} MiB in {data_files} files")
        log("the limit: tar pipe of the same rootfs, same disk")
        tar_runs = []
        for _ in range(args.repeat):
            tar_runs.append(measure_tar(systems[0].a.rootfs("c1"), os.path.join(base, "tar-dst")))
            subprocess.run(["rm", "-rf", os.path.join(base, "tar-dst")])
        tar = dict(min(tar_runs, key=lambda r: r["wall_s"]), runs=tar_runs)
        run_steps(systems, workload, results, args.repeat)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
    finally:
        for s in systems:
            s.stop()
        if cgroup_parent:
            try:
                os.rmdir(cgroup_parent)
            except OSError as e:
                log(f"could not remove {cgroup_parent}: {e}")
        hard_cleanup(base)
        if loop_file:
            subprocess.run(["umount", base], capture_output=True)
            os.unlink(loop_file)
            os.rmdir(base)
    if interrupted or not results:
        sys.exit(1)

    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
            "mem_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3,
            "kernel": os.uname().release, "incus_version": "Incus " + version(["incus", "--version"]),
            "ferry_version": ferry_version, "ferry_binaries": binaries,
            "git": git_tree, "started": started,
            "data_mib": data_bytes / MIB, "data_files": data_files, "big_files": args.big_files,
            "big_mib": args.big_mib, "small_files": args.small_files, "repeat": args.repeat,
            "cpu_method": "cpuacct cgroup per daemon" if cgroup_parent else "/proc/<pid>/stat with cutime/cstime",
            "fs": f"ext4 (journaled) in a {args.fs_gib} GiB loop file" if loop_file else "/var/tmp"}
    text = report(results, tar, meta)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "tar_pipe": tar, "systems": results}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
