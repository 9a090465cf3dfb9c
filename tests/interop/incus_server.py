"""A real Incus 6.0 daemon for interop tests, started and stopped by the tests (no systemd)."""
import os
import shutil
import socket
import subprocess
import time

INCUS_LIBEXEC = "/usr/libexec/incus"


def incus_available():
    return shutil.which("incus") is not None and (shutil.which("incusd") or os.path.exists(
        os.path.join(INCUS_LIBEXEC, "incusd")))


class IncusServer:
    def __init__(self, base, port):
        self.dir = os.path.join(base, "incus-server")
        self.port = port
        self.env = dict(os.environ, INCUS_DIR=self.dir, PATH=INCUS_LIBEXEC + ":" + os.environ.get("PATH", ""))
        self.proc = None

    def start(self, image):
        os.makedirs(self.dir, exist_ok=True)
        log = open(self.dir + ".log", "ab")
        self.proc = subprocess.Popen(["incusd", "--group", "root", "--logfile", self.dir + "/incusd.log"],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        subprocess.run(["incusd", "waitready", "--timeout=60"], env=self.env, check=True)
        preseed = (f"config:\n  core.https_address: 127.0.0.1:{self.port}\nstorage_pools:\n- name: default\n"
                   "  driver: dir\nprofiles:\n- name: default\n  devices:\n    root:\n      path: /\n"
                   "      pool: default\n      type: disk\n")
        subprocess.run(["incus", "admin", "init", "--preseed"], input=preseed, text=True, env=self.env, check=True,
                       capture_output=True)
        subprocess.run(["incus", "image", "import", image, "--alias", "busybox"], env=self.env, check=True,
                       capture_output=True)
        return self

    def token(self, name):
        return subprocess.run(["incus", "config", "trust", "add", name, "-q"], env=self.env, check=True,
                              capture_output=True, text=True).stdout.strip()

    def incus(self, *args, check=True):
        proc = subprocess.run(["incus", *args], env=self.env, capture_output=True, text=True, timeout=180)
        if check and proc.returncode != 0:
            raise AssertionError(f"incus {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc

    def rootfs(self, name):
        return os.path.join(self.dir, "storage-pools", "default", "containers", name, "rootfs")

    def stop(self):
        if self.proc is None:
            return
        names = self.incus("list", "-f", "csv", "-c", "n", check=False).stdout.split()
        for n in names:
            self.incus("delete", "--force", n, check=False)
        subprocess.run(["incusd", "shutdown", "--timeout=60"], env=self.env, capture_output=True)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
