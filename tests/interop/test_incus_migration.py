"""Copy and move between a ferry server and a real Incus 6.0 server, driven by the stock incus CLI and by
ferry's CLI, in pull, push and relay modes."""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from test_migration import tree_digest  # noqa: E402

from incus_server import IncusServer, incus_available  # noqa: E402
from ferry_harness import free_port  # noqa: E402

pytestmark = pytest.mark.skipif(not incus_available(),
                                reason="Incus 6.0 is not installed (scripts/install-incus.sh installs it)")


@pytest.fixture
def sites(server_factory, busybox_image, workdir, tmp_path):
    """A ferry server and an Incus server, both trusted by one incus client and one ferry client."""
    fy = server_factory("fy")
    fy.init_storage()
    fy.listen_https()
    fy.import_image(busybox_image)
    # Under the 0711 work dir: an unprivileged container must be able to traverse to its rootfs.
    base = os.path.join(workdir, f"incus-{free_port()}")
    os.makedirs(base, mode=0o711)
    inc = IncusServer(base, free_port()).start(busybox_image)
    conf = tmp_path / "client"
    env = dict(os.environ, INCUS_CONF=str(conf / "incus"), FERRY_CONF=str(conf / "ferry"), HOME=str(tmp_path))

    def incus(*args, check=True):
        proc = subprocess.run(["incus", *args], env=env, capture_output=True, text=True, timeout=180)
        if check and proc.returncode != 0:
            raise AssertionError(f"incus {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc

    def ferry(*args, check=True):
        proc = subprocess.run([fy.ferry_path, *args], env=env, capture_output=True, text=True, timeout=180)
        if check and proc.returncode != 0:
            raise AssertionError(f"ferry {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc

    fy_token = fy.ferry("config", "trust", "add", "incus-client", "-q").stdout.strip()
    incus("remote", "add", "fy", fy_token)
    incus("remote", "add", "inc", inc.token("incus-client"))
    fy_token = fy.ferry("config", "trust", "add", "ferry-client", "-q").stdout.strip()
    ferry("remote", "add", "fy", fy_token)
    ferry("remote", "add", "inc", inc.token("ferry-client"))
    yield fy, inc, incus, ferry
    inc.stop()


def fy_rootfs(fy, name):
    return os.path.join(fy.dir, "storage-pools", "default", "containers", f"default_{name}", "rootfs")


def make_source(cli, remote, name):
    cli("launch", f"{remote}:busybox", f"{remote}:{name}", "-q")
    cli("exec", f"{remote}:{name}", "--", "sh", "-c",
        "echo v1 > /root/f; ln -s /etc/passwd /root/link; mkdir /root/d; echo y > /root/d/y")
    cli("snapshot", "create", f"{remote}:{name}", "s0")
    cli("exec", f"{remote}:{name}", "--", "sh", "-c", "echo v2 > /root/f")
    cli("stop", "-f", f"{remote}:{name}")


def check_copy(cli, remote, name, expect_f=b"v2\n"):
    out = cli("snapshot", "list", f"{remote}:{name}", "-f", "csv").stdout
    assert out.startswith("s0,"), out
    cli("start", f"{remote}:{name}")
    assert cli("exec", f"{remote}:{name}", "--", "cat", "/root/f").stdout == expect_f.decode()
    assert cli("exec", f"{remote}:{name}", "--", "readlink", "/root/link").stdout == "/etc/passwd\n"
    cli("stop", "-f", f"{remote}:{name}")


@pytest.mark.parametrize("mode", ["pull", "push", "relay"])
def test_incus_cli_copy_incus_to_ferry(sites, mode):
    fy, inc, incus, ferry = sites
    make_source(incus, "inc", "i1")
    incus("copy", "inc:i1", "fy:i1", "--mode", mode, "-q")
    check_copy(incus, "fy", "i1")
    # Same files as on Incus, apart from owners: Incus keeps them unshifted, ferry shifted them for its map.
    assert incus("list", "inc:", "-f", "csv", "-c", "n").stdout.split() == ["i1"]


@pytest.mark.parametrize("mode", ["pull", "push", "relay"])
def test_incus_cli_copy_ferry_to_incus(sites, mode):
    fy, inc, incus, ferry = sites
    make_source(incus, "fy", "f1")
    incus("copy", "fy:f1", "inc:f1", "--mode", mode, "-q")
    check_copy(incus, "inc", "f1")


def test_incus_cli_move_both_ways(sites):
    fy, inc, incus, ferry = sites
    make_source(incus, "fy", "m1")
    before = tree_digest(fy_rootfs(fy, "m1"))
    incus("move", "fy:m1", "inc:m1", "-q")
    assert incus("list", "fy:", "-f", "csv").stdout == ""
    incus("move", "inc:m1", "fy:m1", "-q")
    assert incus("list", "inc:", "-f", "csv").stdout == ""
    check_copy(incus, "fy", "m1")
    # There and back again: not a bit changed, owners included (the data keeps ferry's shifted ids and the
    # id map travels with it, so nothing is reshifted).
    after = tree_digest(fy_rootfs(fy, "m1"))
    assert before == after


@pytest.mark.parametrize("mode", ["pull", "push", "relay"])
def test_ferry_cli_copy_both_ways(sites, mode):
    fy, inc, incus, ferry = sites
    make_source(ferry, "inc", "i2")
    ferry("copy", "inc:i2", "fy:i2", "--mode", mode, "-q")
    check_copy(ferry, "fy", "i2")
    ferry("copy", "fy:i2", "inc:i2back", "--mode", mode, "-q")
    check_copy(ferry, "inc", "i2back")


def test_ferry_cli_move_both_ways(sites):
    fy, inc, incus, ferry = sites
    make_source(ferry, "fy", "m2")
    ferry("move", "fy:m2", "inc:m2", "-q")
    assert ferry("list", "fy:", "-f", "csv").stdout == ""
    ferry("move", "inc:m2", "fy:m2", "-q")
    assert ferry("list", "inc:", "-f", "csv").stdout == ""
    check_copy(ferry, "fy", "m2")
