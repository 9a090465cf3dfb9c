"""Fixtures for ferry's integration tests: real ferryd daemons on loopback, real containers.

Each `server` is a ferryd with its own FERRY_DIR under a temp dir, reached over its unix socket
(`server.api(...)`) or through the real `ferry` CLI (`server.ferry(...)`)."""
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("FERRY_BUILD_DIR", os.path.join(ROOT, "build"))
FERRYD = os.path.join(BUILD, "src", "daemon", "ferryd")
FERRY = os.path.join(BUILD, "src", "cli", "ferry")
SANITIZED = os.environ.get("FERRY_SANITIZED") == "1"


SERVER_NUMBERS = itertools.count()


def require_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: ferryd runs containers through liblxc")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=120):
        super().__init__("ferryd", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class ApiError(Exception):
    def __init__(self, status, envelope):
        super().__init__(f"{status}: {envelope.get('error') if isinstance(envelope, dict) else envelope}")
        self.status = status
        self.envelope = envelope


class Server:
    """A running ferryd."""

    def __init__(self, base, name):
        self.name = name
        self.dir = os.path.join(base, name)
        os.makedirs(self.dir, exist_ok=True)
        # The daemon directory must be traversable by the containers' shifted root (uid 1000000).
        os.chmod(base, 0o711)
        self.conf = os.path.join(base, name + "-client")
        self.log_path = os.path.join(base, name + ".log")
        self.proc = None
        self.https_port = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([FERRYD, "--dir", self.dir, "--log-level", "debug"], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        rc = subprocess.run([FERRYD, "waitready", "--dir", self.dir, "--timeout", "30"]).returncode
        if rc != 0 or self.proc.poll() is not None:
            raise RuntimeError(f"ferryd {self.name} did not start:\n{self.log()}")
        return self

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        returncode = self.proc.returncode
        self.proc = None
        if SANITIZED and sig == signal.SIGTERM:
            # Under ASan+UBSan a clean stop must also be a clean report: no leak, no UB, no memory error.
            report = self.log()
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                assert marker not in report, f"ferryd {self.name}: sanitizer report:\n{report}"
            assert returncode == 0, f"ferryd {self.name} exited with {returncode}:\n{report}"

    def kill(self):
        self.stop(signal.SIGKILL)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-8000:]
        except OSError:
            return ""

    @property
    def socket_path(self):
        return os.path.join(self.dir, "unix.socket")

    # --- REST ------------------------------------------------------------------------------------
    def request(self, method, path, body=None, raw=None, headers=None, timeout=120):
        """One request; returns (http_status, parsed JSON envelope or raw bytes)."""
        conn = UnixHTTPConnection(self.socket_path, timeout=timeout)
        hdrs = dict(headers or {})
        data = None
        if raw is not None:
            data = raw
            hdrs.setdefault("Content-Type", "application/octet-stream")
        elif body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        try:
            return resp.status, json.loads(payload)
        except ValueError:
            return resp.status, payload

    def api(self, method, path, body=None, raw=None, headers=None):
        return self.request(method, path, body=body, raw=raw, headers=headers)

    def wait(self, envelope, timeout=120):
        """Wait for an async envelope's operation; returns the final operation."""
        op = envelope["operation"]
        status, result = self.request("GET", f"{op}/wait?timeout={timeout}", timeout=timeout + 10)
        assert status == 200, result
        return result["metadata"]

    def call(self, method, path, body=None, raw=None, headers=None, timeout=120):
        """Request that must succeed; waits for async operations. Returns metadata."""
        status, envelope = self.api(method, path, body=body, raw=raw, headers=headers)
        if status >= 400 or not isinstance(envelope, dict) or envelope.get("type") == "error":
            raise ApiError(status, envelope)
        if envelope["type"] == "async":
            op = self.wait(envelope, timeout)
            if op["status"] != "Success":
                raise ApiError(op["status_code"], {"error": op["err"], "operation": op})
            return op.get("metadata")
        return envelope["metadata"]

    def expect_error(self, method, path, body=None, raw=None, status=None, contains=None):
        """Request that must fail (directly or through its operation); returns the error message."""
        code, envelope = self.api(method, path, body=body, raw=raw)
        if isinstance(envelope, dict) and envelope.get("type") == "async":
            op = self.wait(envelope)
            assert op["status"] != "Success", f"{method} {path} unexpectedly succeeded"
            message = op["err"]
        else:
            assert code >= 400, f"{method} {path} unexpectedly succeeded: {envelope}"
            if status is not None:
                assert code == status, (code, envelope)
            message = envelope.get("error", "") if isinstance(envelope, dict) else str(envelope)
        if contains is not None:
            assert contains.lower() in message.lower(), message
        return message

    # --- CLI -------------------------------------------------------------------------------------
    ferry_path = FERRY

    def env(self):
        env = dict(os.environ)
        env["FERRY_DIR"] = self.dir
        env["FERRY_CONF"] = self.conf
        return env

    def ferry(self, *args, check=True, input=None, timeout=180):
        proc = subprocess.run([FERRY, *args], env=self.env(), capture_output=True, text=True, input=input,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ferry {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc

    # --- set-up helpers --------------------------------------------------------------------------
    def init_storage(self, driver="dir", pool="default", config=None):
        """What `ferry admin init --auto` does: a pool and a root disk in the default profile."""
        self.call("POST", "/1.0/storage-pools", {"name": pool, "driver": driver, "config": config or {}})
        profile = self.call("GET", "/1.0/profiles/default")
        devices = profile.get("devices") or {}
        devices["root"] = {"type": "disk", "path": "/", "pool": pool}
        self.call("PATCH", "/1.0/profiles/default", {"devices": devices})

    def import_image(self, tarball, alias="busybox"):
        with open(tarball, "rb") as f:
            meta = self.call("POST", "/1.0/images", raw=f.read())
        fingerprint = meta["fingerprint"]
        if alias:
            self.call("POST", "/1.0/images/aliases", {"name": alias, "target": fingerprint})
        return fingerprint

    def listen_https(self):
        self.https_port = free_port()
        self.call("PATCH", "/1.0", {"config": {"core.https_address": f"127.0.0.1:{self.https_port}"}})
        return self.https_port

    def launch(self, name, image="busybox", config=None, start=True, profiles=None):
        body = {"name": name, "source": {"type": "image", "alias": image}, "config": config or {}}
        if profiles is not None:
            body["profiles"] = profiles
        self.call("POST", "/1.0/instances", body)
        if start:
            self.call("PUT", f"/1.0/instances/{name}/state", {"action": "start", "timeout": 30})

    def exec(self, name, command, env=None):
        """Run a command (record-output mode); returns (exit code, stdout, stderr)."""
        meta = self.call("POST", f"/1.0/instances/{name}/exec",
                         {"command": command, "environment": env or {}, "wait-for-websocket": False,
                          "record-output": True, "interactive": False})
        out = self.request("GET", meta["output"]["1"])[1]
        err = self.request("GET", meta["output"]["2"])[1]
        return meta["return"], out if isinstance(out, bytes) else b"", err if isinstance(err, bytes) else b""

    # --- teardown --------------------------------------------------------------------------------
    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                for project in self.call("GET", "/1.0/projects?recursion=1"):
                    p = urllib.parse.quote(project["name"])
                    for inst in self.call("GET", f"/1.0/instances?recursion=1&project={p}"):
                        n = inst["name"]
                        if inst["status"] != "Stopped":
                            self.api("PUT", f"/1.0/instances/{n}/state?project={p}",
                                     {"action": "stop", "force": True})
                            time.sleep(0.2)
                            self.call("GET", f"/1.0/instances/{n}?project={p}")
                        try:
                            self.call("DELETE", f"/1.0/instances/{n}?project={p}")
                        except ApiError:
                            pass
                for pool in self.call("GET", "/1.0/storage-pools?recursion=1"):
                    if pool["driver"] == "btrfs":
                        try:
                            self.call("DELETE", f"/1.0/storage-pools/{pool['name']}")
                        except ApiError:
                            pass
            except Exception:  # the daemon may be the thing under test; fall through to the hard cleanup
                pass
        self.stop()
        hard_cleanup(self.dir)


def hard_cleanup(directory):
    """Whatever a failed test left: running containers, mounts, loop devices."""
    lxcpath = os.path.join(directory, "containers")
    if os.path.isdir(lxcpath):
        for name in os.listdir(lxcpath):
            subprocess.run(["lxc-stop", "-P", lxcpath, "-n", name, "-k"], capture_output=True)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    for mount in sorted((m for m in mounts if m.startswith(directory + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if directory in line:
            subprocess.run(["losetup", "-d", line.split(":")[0]], capture_output=True)


@pytest.fixture(scope="session")
def workdir():
    base = tempfile.mkdtemp(prefix="ferry-test-", dir="/var/tmp")
    os.chmod(base, 0o711)
    yield base
    hard_cleanup(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_image(workdir):
    path = os.path.join(workdir, "busybox.tar.xz")
    subprocess.run([os.path.join(ROOT, "scripts", "build-busybox-image.sh"), path], check=True,
                   capture_output=True)
    return path


@pytest.fixture
def server_factory(workdir, request):
    require_root()
    started = []

    def make(name=None):
        # Unique per server: parametrized tests share a name prefix.
        name = f"{name or 's'}{next(SERVER_NUMBERS)}-{request.node.originalname[:30]}"
        srv = Server(workdir, name)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.cleanup()


@pytest.fixture
def server(server_factory):
    """A fresh ferryd (no storage yet: like Incus before `admin init`)."""
    return server_factory()


@pytest.fixture
def ready_server(server, busybox_image):
    """A ferryd with a dir pool, a default profile with a root disk, and the busybox image."""
    server.init_storage()
    server.import_image(busybox_image)
    return server
