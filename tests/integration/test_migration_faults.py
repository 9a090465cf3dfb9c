"""Migration under faults: no data lost, nothing left behind.

Whatever goes wrong mid-transfer -- kill -9 of either daemon, a dropped or stalled connection, a full target
disk, a cancel -- the source stays as it was, the target is complete or unchanged, neither side keeps a volume,
a DB row, an rsync, `ferryd netcat` or `btrfs send|receive` process, a mount, a temp directory or a running
operation, and the error says what happened on which server. A restarted daemon cleans up what an interrupted
transfer left.

Every migration goes through `FaultProxy`, a loopback TCP proxy between the two daemons: the target dials it
instead of the source (pull) or the source dials it instead of the target (push). TLS passes through untouched.
The proxy throttles the transfer so that "mid-transfer" is a state the tests wait for (progress reported by the
receiving operation), not a sleep."""
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

from test_migration import pair, rootfs, source_cert, target_body, tree_digest  # noqa: F401 (pair: fixture)

MiB = 1 << 20
# Bounds for things that should take a second or two: generous, so only a hang fails them.
END_TIMEOUT = 60
PROCESS_TIMEOUT = 20


# --- the proxy ------------------------------------------------------------------------------------------------------
class FaultProxy:
    """127.0.0.1:<port> -> upstream. Modes: pass (optionally throttled), stall (stop forwarding, keep the
    sockets open; all connections or one), cut (close both sides of every connection now). Connections are
    numbered in the order they were accepted: a migration dials "control" first (0), then "fs" (1)."""

    CHUNK = 64 * 1024

    def __init__(self, upstream_port, upstream_host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.cond = threading.Condition()
        self.stalled = False
        self.stalled_ids = set()
        self.rate = 0  # bytes per second and direction of each connection, 0: unlimited
        self.closed = False
        self.connections = {}  # id -> (client socket, upstream socket)
        self.cut_ids = set()
        self.accepted = 0
        self.threads = []
        self._spawn(self._accept_loop)

    def _spawn(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    # control
    def throttle(self, bytes_per_s):
        with self.cond:
            self.rate = bytes_per_s
            self.cond.notify_all()

    def stall(self, connection_id=None):
        with self.cond:
            if connection_id is None:
                self.stalled = True
            else:
                self.stalled_ids.add(connection_id)

    def resume(self):
        with self.cond:
            self.stalled = False
            self.stalled_ids.clear()
            self.cond.notify_all()

    def cut(self):
        """Drop every connection: RST both ways, stalled or not."""
        with self.cond:
            connections = list(self.connections.values())
            self.cut_ids.update(self.connections)
            self.cond.notify_all()
        for pair_ in connections:
            for s in pair_:
                self._reset(s)

    def close(self):
        with self.cond:
            self.closed = True
            self.stalled = False
            self.cond.notify_all()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.cut()
        for thread in self.threads:
            thread.join(timeout=5)

    @staticmethod
    def _reset(s):
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked on it; its close then sends the RST
        except OSError:
            pass

    # forwarding
    def _accept_loop(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.cond:
                if self.closed:
                    client.close()
                    return
                connection_id = self.accepted
                self.accepted += 1
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                self._reset(client)
                client.close()
                continue
            with self.cond:
                self.connections[connection_id] = (client, upstream)
            state = {"open": 2}
            self._spawn(self._pump, client, upstream, connection_id, state)
            self._spawn(self._pump, upstream, client, connection_id, state)

    def _wait_unstalled(self, connection_id):
        with self.cond:
            while ((self.stalled or connection_id in self.stalled_ids) and not self.closed
                   and connection_id not in self.cut_ids):
                self.cond.wait()

    def _pump(self, src, dst, connection_id, state):
        next_at = time.monotonic()
        try:
            while True:
                self._wait_unstalled(connection_id)
                rate = self.rate
                size = self.CHUNK if rate == 0 else max(1024, min(self.CHUNK, rate // 20))
                data = src.recv(size)
                if not data:
                    self._wait_unstalled(connection_id)  # a stalled connection passes nothing on, not even this
                    dst.shutdown(socket.SHUT_WR)  # pass the end on, as TCP would
                    break
                # Data read just as a stall began is held until it ends, like everything after it.
                self._wait_unstalled(connection_id)
                dst.sendall(data)
                if rate:
                    next_at = max(next_at, time.monotonic() - 0.5) + len(data) / rate
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        except OSError:
            # One side failed: the other sees the connection drop (reset) too, unless stalled.
            self._wait_unstalled(connection_id)
            self._reset(dst)
            self._reset(src)
        finally:
            with self.cond:
                state["open"] -= 1
                last = state["open"] == 0
                if last:
                    self.connections.pop(connection_id, None)
            if last:
                src.close()
                dst.close()


@pytest.fixture
def proxies():
    made = []

    def make(port):
        proxy = FaultProxy(port)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


# --- what a server has --------------------------------------------------------------------------------------------
def session_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def track(*servers):
    """Remember the session of each server's current ferryd (its children stay in it after it died) and, the
    first time, the mounts it has before the migration."""
    for server in servers:
        server.sessions = getattr(server, "sessions", set()) | {server.proc.pid}
        if not hasattr(server, "mounts_before"):
            server.mounts_before = mounts_under(server.dir)


def transfer_processes(server):
    """rsync, `ferryd netcat` and `btrfs send|receive` processes of a server: in the session of one of its
    ferryd processes (see track()), or naming its directory or HTTPS port."""
    found = []
    markers = [server.dir + "/"]
    if server.https_port:
        markers.append(f":{server.https_port}")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if not argv:
            continue
        program, verb = os.path.basename(argv[0]), argv[1] if len(argv) > 1 else ""
        is_transfer = program == "rsync" or verb == "netcat" or (program == "btrfs" and verb in ("send", "receive"))
        if not is_transfer:
            continue
        cmdline = " ".join(argv)
        if session_of(entry) in getattr(server, "sessions", ()) or any(m in cmdline for m in markers):
            found.append((int(entry), cmdline))
    return found


def assert_no_transfer_processes(*servers, timeout=PROCESS_TIMEOUT):
    deadline = time.monotonic() + timeout
    for server in servers:
        while True:
            left = transfer_processes(server)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not left, f"{server.name}: transfer processes left behind: {left}"


def pool_path(server, pool="default"):
    return os.path.join(server.dir, "storage-pools", pool)


def staging_leftovers(server):
    """".ferry-tmp-*" entries anywhere in the pools' first levels (where volumes and snapshots live)."""
    found = []
    base = os.path.join(server.dir, "storage-pools")
    for pool in os.listdir(base) if os.path.isdir(base) else []:
        for dirpath, dirnames, filenames in os.walk(os.path.join(base, pool)):
            depth = os.path.relpath(dirpath, base).count(os.sep)
            found += [os.path.join(dirpath, n) for n in dirnames + filenames if n.startswith(".ferry-tmp-")]
            if depth >= 2:
                dirnames[:] = []
    return found


def mounts_under(directory):
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f if line.split()[4].startswith(directory + "/"))


def assert_no_leftovers(server):
    """Nothing of an interrupted operation: no staging entry, no new mount, no operation still running."""
    assert staging_leftovers(server) == [], f"{server.name}: staging leftovers"
    assert mounts_under(server.dir) == server.mounts_before, f"{server.name}: mounts changed"
    running = server.call("GET", "/1.0/operations?recursion=1").get("running") or []
    assert running == [], f"{server.name}: operations still running: {running}"


def assert_target_clean(server, name, pools=("default",)):
    """No trace of instance `name`: no row, no volume or snapshot, no lxc config, and no leftovers."""
    assert server.call("GET", "/1.0/instances") == []
    for pool in pools:
        for sub in ("containers", "containers-snapshots"):
            path = os.path.join(pool_path(server, pool), sub)
            left = os.listdir(path) if os.path.isdir(path) else []
            assert left == [], f"{server.name}: left in pool {pool}/{sub}: {left}"
    assert not os.path.exists(os.path.join(server.dir, "containers", f"default_{name}"))
    assert_no_leftovers(server)


def assert_source_intact(server, name, digest, pool="default"):
    """The instance as it was (bit for bit), the only one, free to be used, and no leftovers."""
    assert server.call("GET", "/1.0/instances") == [f"/1.0/instances/{name}"]
    assert server.call("GET", f"/1.0/instances/{name}")["status"] == "Stopped"
    assert tree_digest(rootfs(server, name, pool=pool)) == digest
    assert_no_leftovers(server)
    # Nothing holds the instance any more: it can be changed again.
    server.call("PATCH", f"/1.0/instances/{name}", {"config": {"user.after": "fault"}})


# --- driving a migration ------------------------------------------------------------------------------------------
class Migration:
    """A migration between src and dst with the connection through a proxy, not waited for."""

    def __init__(self, src, dst, name, mode, proxy, refresh=False, **overrides):
        self.src, self.dst, self.name, self.mode = src, dst, name, mode
        body = target_body(src, name, **overrides)
        flags = {"migration": True, "live": False, "instance_only": False, "allow_inconsistent": False}
        if mode == "pull":
            status, self.src_env = src.api("POST", f"/1.0/instances/{name}", flags)
            assert status == 202, self.src_env
            op = self.src_env["metadata"]
            body["source"] = {"type": "migration", "mode": "pull",
                              "operation": f"https://127.0.0.1:{proxy.port}/1.0/operations/{op['id']}",
                              "certificate": source_cert(src), "secrets": op["metadata"], "refresh": refresh}
            status, self.dst_env = dst.api("POST", "/1.0/instances", body)
            assert status == 202, self.dst_env
        else:
            body["source"] = {"type": "migration", "mode": "push", "certificate": "", "refresh": refresh}
            status, self.dst_env = dst.api("POST", "/1.0/instances", body)
            assert status == 202, self.dst_env
            op = self.dst_env["metadata"]
            flags["target"] = {"operation": f"https://127.0.0.1:{proxy.port}/1.0/operations/{op['id']}",
                               "secrets": op["metadata"], "certificate": source_cert(dst)}
            status, self.src_env = src.api("POST", f"/1.0/instances/{name}", flags)
            assert status == 202, self.src_env
        self.src_op_id = self.src_env["metadata"]["id"]
        self.dst_op_id = self.dst_env["metadata"]["id"]

    def op(self, server, op_id):
        status, env = server.api("GET", f"/1.0/operations/{op_id}")
        assert status == 200, env
        return env["metadata"]

    def wait_received(self, min_bytes, timeout=END_TIMEOUT, stage="instance"):
        """Until the target has received min_bytes of the main volume (rsync's instance pass). A btrfs stream
        is followed on the source (stage "btrfs send": every stream, snapshots first)."""
        server, op_id = (self.src, self.src_op_id) if stage == "btrfs send" else (self.dst, self.dst_op_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            op = self.op(server, op_id)
            assert op["status"] == "Running", f"{server.name}: ended before the fault: {op}"
            progress = (op.get("metadata") or {}).get("progress") or {}
            if progress.get("stage") == stage and progress.get("done", 0) >= min_bytes:
                return
            time.sleep(0.05)
        pytest.fail("the transfer did not get going")

    def wait_end(self, server, env, timeout=END_TIMEOUT):
        started = time.monotonic()
        op = server.wait(env, timeout)
        assert op["status"] != "Running", f"{server.name}: operation still running after {timeout} s: {op}"
        return op, time.monotonic() - started

    def wait_src(self, timeout=END_TIMEOUT):
        return self.wait_end(self.src, self.src_env, timeout)[0]

    def wait_dst(self, timeout=END_TIMEOUT):
        return self.wait_end(self.dst, self.dst_env, timeout)[0]


def make_big(server, name="big", size=64 * MiB, snapshot=False, pool="default"):
    """A stopped container with `size` bytes of random data (incompressible: rsync moves all of it)."""
    server.call("POST", "/1.0/instances", {"name": name, "source": {"type": "image", "alias": "busybox"},
                                           "devices": {"root": {"type": "disk", "path": "/", "pool": pool}}})
    root = rootfs(server, name, pool=pool)
    if snapshot:
        with open(os.path.join(root, "root", "small"), "wb") as f:
            f.write(os.urandom(MiB))
        server.call("POST", f"/1.0/instances/{name}/snapshots", {"name": "snap0"})
    with open(os.path.join(root, "root", "blob"), "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
    return tree_digest(root)


def throttled(proxies, port, rate=8 * MiB):
    proxy = proxies(port)
    proxy.throttle(rate)
    return proxy


def upstream_port(src, dst, mode):
    """The proxy stands where the dialling side goes: the source (pull) or the target (push)."""
    return src.https_port if mode == "pull" else dst.https_port


# --- (a) kill -9 of the target ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["pull", "push"])
def test_target_killed_mid_transfer(pair, proxies, mode):
    a, b = pair
    digest = make_big(a)
    proxy = throttled(proxies, upstream_port(a, b, mode))
    track(a, b)
    m = Migration(a, b, "big", mode, proxy)
    m.wait_received(4 * MiB)
    b.kill()

    src_op = m.wait_src()
    assert src_op["status"] == "Failure", src_op
    assert src_op["err"].startswith("Failed migration on source: ")
    assert "target" in src_op["err"] and "connection" in src_op["err"].lower(), src_op["err"]
    assert_no_transfer_processes(a, b)  # b's rsync died with its daemon
    assert_source_intact(a, "big", digest)

    # The restarted target forgot the half-made instance.
    b.start()
    track(b)
    assert_target_clean(b, "big")
    assert "left half-created by an interrupted operation" in b.log()


# --- kill -9 of the source ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["pull", "push"])
def test_source_killed_mid_transfer(pair, proxies, mode):
    a, b = pair
    digest = make_big(a)
    proxy = throttled(proxies, upstream_port(a, b, mode))
    track(a, b)
    m = Migration(a, b, "big", mode, proxy)
    m.wait_received(4 * MiB)
    a.kill()

    dst_op = m.wait_dst()
    assert dst_op["status"] == "Failure", dst_op
    assert dst_op["err"].startswith("Error transferring instance data: ")
    assert "source" in dst_op["err"] and "connection" in dst_op["err"].lower(), dst_op["err"]
    assert_target_clean(b, "big")
    assert_no_transfer_processes(a, b)
    a.start()
    track(a)
    assert_source_intact(a, "big", digest)


# --- (b) the connection drops -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["pull", "push"])
def test_connection_cut_mid_transfer(pair, proxies, mode):
    a, b = pair
    digest = make_big(a)
    proxy = throttled(proxies, upstream_port(a, b, mode))
    track(a, b)
    m = Migration(a, b, "big", mode, proxy)
    m.wait_received(4 * MiB)
    proxy.cut()

    dst_op = m.wait_dst()
    src_op = m.wait_src()
    assert dst_op["status"] == "Failure", dst_op
    assert src_op["status"] == "Failure", src_op
    # Each side says the other went away, and that it was the connection.
    assert "source" in dst_op["err"] and "connection" in dst_op["err"].lower(), dst_op["err"]
    assert "target" in src_op["err"] and "connection" in src_op["err"].lower(), src_op["err"]
    assert_target_clean(b, "big")
    assert_source_intact(a, "big", digest)
    assert_no_transfer_processes(a, b)


# --- (c) the connection stalls ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["pull", "push"])
def test_stalled_connection_cancelled(pair, proxies, mode):
    """A stalled peer (its kernel still acknowledges, nothing moves) is not detectable by TCP keepalive, and
    Incus's protocol has no read deadline on data (transfers take hours): the migration waits. Cancelling the
    operations must end both promptly and leave nothing behind."""
    a, b = pair
    digest = make_big(a)
    proxy = throttled(proxies, upstream_port(a, b, mode))
    track(a, b)
    m = Migration(a, b, "big", mode, proxy)
    m.wait_received(4 * MiB)
    proxy.stall()
    time.sleep(3)
    assert m.op(a, m.src_op_id)["status"] == "Running"
    assert m.op(b, m.dst_op_id)["status"] == "Running"

    # What the Incus client does when it gives up: cancel what it waits on and the other side's operation.
    started = time.monotonic()
    for server, op_id in ((b, m.dst_op_id), (a, m.src_op_id)):
        status, env = server.api("DELETE", f"/1.0/operations/{op_id}")
        assert status == 200, env
    dst_op = m.wait_dst()
    src_op = m.wait_src()
    elapsed = time.monotonic() - started
    assert dst_op["status"] == "Cancelled", dst_op
    assert src_op["status"] == "Cancelled", src_op
    assert elapsed < 30, f"cancelling took {elapsed:.1f} s"
    assert_target_clean(b, "big")
    assert_source_intact(a, "big", digest)
    assert_no_transfer_processes(a, b)


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_stalled_control_after_data_cancelled(pair, proxies, mode):
    """All data arrives, then the target's verdict does not: control is stalled. The target keeps its complete
    copy after waiting for the source's close; the source waits for a verdict that never comes, until it is
    cancelled."""
    a, b = pair
    digest = make_big(a, size=16 * MiB)
    proxy = throttled(proxies, upstream_port(a, b, mode))
    track(a, b)
    m = Migration(a, b, "big", mode, proxy)
    m.wait_received(MiB)
    proxy.stall(0)  # control; fs carries on
    dst_op = m.wait_dst()
    assert dst_op["status"] == "Success", dst_op
    assert tree_digest(rootfs(b, "big")) == digest
    assert m.op(a, m.src_op_id)["status"] == "Running"

    started = time.monotonic()
    status, env = a.api("DELETE", f"/1.0/operations/{m.src_op_id}")
    assert status == 200, env
    src_op = m.wait_src()
    assert src_op["status"] == "Cancelled", src_op
    assert time.monotonic() - started < 30
    assert_source_intact(a, "big", digest)
    assert_no_leftovers(b)
    assert_no_transfer_processes(a, b)


# --- (d) the target's disk is full --------------------------------------------------------------------------------
def used_bytes(path):
    subprocess.run(["sync", "-f", path], check=False)
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@pytest.mark.parametrize("mode,transport", [("pull", "rsync"), ("push", "rsync"), ("pull", "btrfs")])
def test_full_target_disk(pair, proxies, mode, transport):
    """400 MiB for a 300 MiB btrfs pool: rsync from a dir pool, or btrfs streams from a btrfs pool."""
    a, b = pair
    source_pool = "default"
    if transport == "btrfs":
        source_pool = "bt"
        a.call("POST", "/1.0/storage-pools", {"name": source_pool, "driver": "btrfs", "config": {"size": "1GiB"}})
    b.call("POST", "/1.0/storage-pools", {"name": "small", "driver": "btrfs", "config": {"size": "300MiB"}})
    small = pool_path(b, "small")
    baseline = used_bytes(small)
    digest = make_big(a, size=400 * MiB, pool=source_pool)
    proxy = proxies(upstream_port(a, b, mode))
    track(a, b)
    m = Migration(a, b, "big", mode, proxy, devices={"root": {"type": "disk", "path": "/", "pool": "small"}})

    dst_op = m.wait_dst(120)
    src_op = m.wait_src(120)
    assert dst_op["status"] == "Failure", dst_op
    assert src_op["status"] == "Failure", src_op
    # The target says what happened, and the source passes on the target's words.
    assert "No space left on device" in dst_op["err"], dst_op["err"]
    assert "target" in src_op["err"] and "No space left on device" in src_op["err"], src_op["err"]
    assert_target_clean(b, "big", pools=("default", "small"))
    out = subprocess.run(["btrfs", "subvolume", "list", small], capture_output=True, text=True, check=True).stdout
    assert "default_big" not in out, out
    # The space comes back (btrfs frees a deleted subvolume's extents in the background).
    deadline = time.monotonic() + 30
    while used_bytes(small) > baseline + 16 * MiB and time.monotonic() < deadline:
        subprocess.run(["btrfs", "filesystem", "sync", small], capture_output=True)  # wakes the cleaner
        time.sleep(0.5)
    assert used_bytes(small) <= baseline + 16 * MiB, (used_bytes(small), baseline)
    assert_source_intact(a, "big", digest, pool=source_pool)
    assert_no_transfer_processes(a, b)


# --- (e) a restarted target cleans up --------------------------------------------------------------------------------
@pytest.mark.parametrize("driver", ["dir", "btrfs"])
def test_restart_cleans_interrupted_transfer(pair, proxies, driver):
    """kill -9 of the target after it made a snapshot volume and while it writes the instance: on disk there
    are a half-filled volume, a snapshot and a row marked "creating"; the restarted daemon removes them."""
    a, b = pair
    pool = "default"
    overrides = {}
    if driver == "btrfs":
        pool = "bt"
        b.call("POST", "/1.0/storage-pools", {"name": pool, "driver": "btrfs", "config": {"size": "1GiB"}})
        overrides["devices"] = {"root": {"type": "disk", "path": "/", "pool": pool}}
    digest = make_big(a, snapshot=True)
    proxy = throttled(proxies, upstream_port(a, b, "pull"))
    track(a, b)
    m = Migration(a, b, "big", "pull", proxy, **overrides)
    m.wait_received(4 * MiB)
    b.kill()
    # What the crash left.
    assert os.listdir(os.path.join(pool_path(b, pool), "containers")) == ["default_big"]
    assert os.listdir(os.path.join(pool_path(b, pool), "containers-snapshots", "default_big")) == ["snap0"]
    assert m.wait_src()["status"] == "Failure"
    assert_no_transfer_processes(b)

    b.start()
    track(b)
    assert "left half-created by an interrupted operation" in b.log()
    assert_target_clean(b, "big", pools=("default", pool))
    if driver == "btrfs":
        out = subprocess.run(["btrfs", "subvolume", "list", pool_path(b, pool)], capture_output=True, text=True,
                             check=True).stdout
        assert "default_big" not in out, out
    assert_source_intact(a, "big", digest)
    assert_no_transfer_processes(a)
    # The name is free again: the same migration now succeeds.
    proxy.throttle(0)
    m = Migration(a, b, "big", "pull", proxy, **overrides)
    assert m.wait_dst()["status"] == "Success"
    assert m.wait_src()["status"] == "Success"
    assert tree_digest(rootfs(b, "big", pool=pool)) == digest


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_refresh_interrupted_by_target_crash(pair, proxies, mode):
    """kill -9 of the target in the middle of a refresh: after its restart the target has its previous copy,
    whole, and nothing of the staged one."""
    a, b = pair
    make_big(a, size=4 * MiB)
    proxy = proxies(upstream_port(a, b, mode))
    m = Migration(a, b, "big", mode, proxy)
    assert m.wait_dst()["status"] == "Success" and m.wait_src()["status"] == "Success"
    previous = tree_digest(rootfs(b, "big"))
    with open(os.path.join(rootfs(a, "big"), "root", "more"), "wb") as f:
        f.write(os.urandom(64 * MiB))
    digest = tree_digest(rootfs(a, "big"))
    proxy.throttle(8 * MiB)
    track(a, b)
    m = Migration(a, b, "big", mode, proxy, refresh=True)
    m.wait_received(4 * MiB)
    b.kill()
    assert m.wait_src()["status"] == "Failure"
    assert_no_transfer_processes(a, b)
    assert_source_intact(a, "big", digest)

    b.start()
    track(b)
    assert b.call("GET", "/1.0/instances") == ["/1.0/instances/big"]
    assert tree_digest(rootfs(b, "big")) == previous
    assert_no_leftovers(b)
    # The restart removed the staging copy of the interrupted refresh.
    assert os.listdir(os.path.join(pool_path(b), "containers")) == ["default_big"]


# --- the BTRFS transport (btrfs pool to btrfs pool) ---------------------------------------------------------------
def btrfs_subvolumes(server, pool):
    out = subprocess.run(["btrfs", "subvolume", "list", "-o", pool_path(server, pool)], capture_output=True,
                         text=True, check=True).stdout
    return sorted(line.split(" path ", 1)[1] for line in out.splitlines())


@pytest.mark.parametrize("fault", ["kill-target", "cut", "kill-source"])
def test_btrfs_transport_fault(pair, proxies, fault):
    """The same faults while `btrfs send` streams move the instance and its snapshot: received subvolumes
    never outlive the failure (nor a restart), the source keeps its own and no `.migration-send` snapshot."""
    a, b = pair
    for server in (a, b):
        server.call("POST", "/1.0/storage-pools", {"name": "bt", "driver": "btrfs", "config": {"size": "1GiB"}})
    digest = make_big(a, snapshot=True, pool="bt")
    source_subvolumes = btrfs_subvolumes(a, "bt")
    target_subvolumes = btrfs_subvolumes(b, "bt")
    mode = "push" if fault == "cut" else "pull"
    proxy = throttled(proxies, upstream_port(a, b, mode))
    track(a, b)
    m = Migration(a, b, "big", mode, proxy, devices={"root": {"type": "disk", "path": "/", "pool": "bt"}})
    m.wait_received(16 * MiB, stage="btrfs send")  # past the image and the snapshot: inside the instance
    for server in (a, b):  # the check below sees them
        assert [p for p in transfer_processes(server) if "btrfs " in p[1]], transfer_processes(server)
    if fault == "kill-target":
        b.kill()
        src_op = m.wait_src()
        assert src_op["status"] == "Failure" and "target" in src_op["err"], src_op
        b.start()
        track(b)
    elif fault == "cut":
        proxy.cut()
        dst_op, src_op = m.wait_dst(), m.wait_src()
        assert dst_op["status"] == "Failure" and "source" in dst_op["err"], dst_op
        assert src_op["status"] == "Failure" and "target" in src_op["err"], src_op
    else:
        a.kill()
        dst_op = m.wait_dst()
        assert dst_op["status"] == "Failure" and "source" in dst_op["err"], dst_op
        a.start()
        track(a)
    assert_target_clean(b, "big", pools=("default", "bt"))
    assert btrfs_subvolumes(b, "bt") == target_subvolumes
    assert_source_intact(a, "big", digest, pool="bt")
    assert btrfs_subvolumes(a, "bt") == source_subvolumes
    assert_no_transfer_processes(a, b)


# --- (f) the client cancels ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["pull", "push"])
def test_client_cancels_target_operation(pair, proxies, mode):
    a, b = pair
    digest = make_big(a)
    proxy = throttled(proxies, upstream_port(a, b, mode))
    track(a, b)
    m = Migration(a, b, "big", mode, proxy)
    m.wait_received(4 * MiB)
    status, env = b.api("DELETE", f"/1.0/operations/{m.dst_op_id}")
    assert status == 200, env

    dst_op = m.wait_dst()
    src_op = m.wait_src()
    assert dst_op["status"] == "Cancelled", dst_op
    assert src_op["status"] == "Failure", src_op
    # The source learns why from the target.
    assert "target" in src_op["err"] and "cancel" in src_op["err"].lower(), src_op["err"]
    assert_target_clean(b, "big")
    assert_source_intact(a, "big", digest)
    assert_no_transfer_processes(a, b)
