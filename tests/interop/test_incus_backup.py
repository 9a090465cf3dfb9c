"""Export and import between ferry and a real Incus 6.0 server: an Incus backup imports into ferry and a ferry
backup imports into Incus, snapshots and config intact and every file the same (owners compared as the container
sees them: Incus keeps them unshifted on disk, ferry shifted by its id map). Both CLIs against both servers."""
import os
import sys
import tarfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from test_migration import tree_digest  # noqa: E402
from test_incus_migration import fy_rootfs, sites  # noqa: E402,F401

from incus_server import incus_available  # noqa: E402

pytestmark = pytest.mark.skipif(not incus_available(),
                                reason="Incus 6.0 is not installed (scripts/install-incus.sh installs it)")

SHIFT = 1000000


def fy_snapshot_rootfs(fy, name, snapshot):
    return os.path.join(fy.dir, "storage-pools", "default", "containers-snapshots", f"default_{name}", snapshot,
                        "rootfs")


def inc_snapshot_rootfs(inc, name, snapshot):
    return os.path.join(inc.dir, "storage-pools", "default", "containers-snapshots", name, snapshot, "rootfs")


def unshifted(rows):
    """tree_digest rows with ferry's shifted owners as the container sees them."""
    out = []
    for row in rows:
        row = list(row)
        for i in (2, 3):
            value = int(row[i])
            row[i] = str(value - SHIFT if SHIFT <= value < 2 * SHIFT else value)
        out.append(tuple(row))
    return out


def same_tree(ferry_root, incus_root):
    mine, theirs = unshifted(tree_digest(ferry_root)), tree_digest(incus_root)
    assert [r[0] for r in mine] == [r[0] for r in theirs]
    for a, b in zip(mine, theirs):
        assert a == b, (a, b)


def make_source(cli, remote, name):
    cli("launch", f"{remote}:busybox", f"{remote}:{name}", "-q")
    cli("exec", f"{remote}:{name}", "--", "sh", "-c",
        "echo v1 > /root/f; chown 1000:1001 /root/f; ln /root/f /root/hard; "
        "ln -s /etc/passwd /root/link; mkdir /root/d; echo y > /root/d/y; mkfifo /root/fifo")
    cli("snapshot", "create", f"{remote}:{name}", "s0")
    cli("exec", f"{remote}:{name}", "--", "sh", "-c", "echo v2 > /root/f; rm /root/d/y; echo n > /root/new")
    cli("snapshot", "create", f"{remote}:{name}", "s1")
    # setuid last: a write clears it
    cli("exec", f"{remote}:{name}", "--", "sh", "-c", "echo v3 > /root/f; chmod 4750 /root/f")
    cli("stop", "-f", f"{remote}:{name}")


def check_instance(cli, remote, name):
    out = cli("snapshot", "list", f"{remote}:{name}", "-f", "csv").stdout
    assert [line.split(",")[0] for line in out.splitlines()] == ["s0", "s1"], out
    cli("start", f"{remote}:{name}")
    assert cli("exec", f"{remote}:{name}", "--", "cat", "/root/f").stdout == "v3\n"
    assert cli("exec", f"{remote}:{name}", "--", "stat", "-c", "%u:%g %a", "/root/f").stdout == "1000:1001 4750\n"
    assert cli("exec", f"{remote}:{name}", "--", "readlink", "/root/link").stdout == "/etc/passwd\n"
    cli("stop", "-f", f"{remote}:{name}")


def test_incus_backup_into_ferry(sites, tmp_path):
    fy, inc, incus, ferry = sites
    make_source(incus, "inc", "i1")
    archive = str(tmp_path / "i1.tar.gz")
    incus("export", "inc:i1", archive)  # Incus's own default: gzip
    ferry("import", "fy:", archive, "-q")
    check_instance(ferry, "fy", "i1")
    same_tree(fy_rootfs(fy, "i1"), inc.rootfs("i1"))
    for snap in ("s0", "s1"):
        same_tree(fy_snapshot_rootfs(fy, "i1", snap), inc_snapshot_rootfs(inc, "i1", snap))
    config = ferry("config", "show", "fy:i1").stdout
    assert "volatile.base_image" in config


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_ferry_backup_into_incus(sites, tmp_path, compression):
    fy, inc, incus, ferry = sites
    make_source(ferry, "fy", "f1")
    archive = str(tmp_path / "f1.backup")
    ferry("export", "fy:f1", archive, "--compression", compression, "-q")
    incus("import", "inc:", archive, "f1")
    check_instance(incus, "inc", "f1")
    same_tree(fy_rootfs(fy, "f1"), inc.rootfs("f1"))
    for snap in ("s0", "s1"):
        same_tree(fy_snapshot_rootfs(fy, "f1", snap), inc_snapshot_rootfs(inc, "f1", snap))


def test_stock_incus_client_against_ferry(sites, tmp_path):
    """The incus CLI's export and import (POST backups, GET export, DELETE; octet-stream POST) on a ferry server."""
    fy, inc, incus, ferry = sites
    make_source(incus, "fy", "c1")
    archive = str(tmp_path / "c1.tar.gz")
    incus("export", "fy:c1", archive)
    incus("import", "fy:", archive, "c2")
    check_instance(incus, "fy", "c2")
    assert tree_digest(fy_rootfs(fy, "c1")) == tree_digest(fy_rootfs(fy, "c2"))
    assert fy.call("GET", "/1.0/instances/c1/backups") == []  # the incus client deleted its backup


def test_ferry_client_against_incus(sites, tmp_path):
    fy, inc, incus, ferry = sites
    make_source(ferry, "inc", "i2")
    archive = str(tmp_path / "i2.tar.zst")
    ferry("export", "inc:i2", archive, "-q")
    ferry("import", "inc:", archive, "i3", "-q")
    check_instance(ferry, "inc", "i3")
    assert tree_digest(inc.rootfs("i2")) == tree_digest(inc.rootfs("i3"))


def optimized_pools(fy, incus):
    """A btrfs pool "bt" on each server (loop files)."""
    fy.call("POST", "/1.0/storage-pools", {"name": "bt", "driver": "btrfs", "config": {"size": "512MiB"}})
    incus("storage", "create", "inc:bt", "btrfs", "size=512MiB")


@pytest.mark.parametrize("direction", ["ferry-to-incus", "incus-to-ferry"])
def test_optimized_btrfs_backup(sites, tmp_path, direction):
    """--optimized-storage between btrfs pools: btrfs send streams (backup/container.bin,
    backup/snapshots/<name>.bin) written by one server and received by the other."""
    fy, inc, incus, ferry = sites
    optimized_pools(fy, incus)
    src, dst, src_cli, dst_cli = ("fy", "inc", ferry, incus) if direction == "ferry-to-incus" else \
        ("inc", "fy", incus, ferry)
    src_cli("launch", f"{src}:busybox", f"{src}:o1", "-s", "bt", "-q")
    src_cli("exec", f"{src}:o1", "--", "sh", "-c",
            "echo v1 > /root/f; chown 1000:1001 /root/f; ln -s /etc/passwd /root/link")
    src_cli("snapshot", "create", f"{src}:o1", "s0")
    src_cli("exec", f"{src}:o1", "--", "sh", "-c", "echo v2 > /root/f")
    src_cli("snapshot", "create", f"{src}:o1", "s1")
    src_cli("exec", f"{src}:o1", "--", "sh", "-c", "echo v3 > /root/f; chmod 4750 /root/f")
    src_cli("stop", "-f", f"{src}:o1")
    archive = str(tmp_path / "o1.tar.gz")
    src_cli("export", f"{src}:o1", archive, "--optimized-storage", "--compression", "gzip")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "backup/container.bin" in names and "backup/snapshots/s0.bin" in names, names
    dst_cli("import", f"{dst}:", archive, "o1", "--storage", "bt")
    check_instance(dst_cli, dst, "o1")
