"""Moving and copying containers between two real ferryd servers over Incus's migration protocol.

The tests drive the REST API the way the Incus client does (pull and push); relay needs a client in the middle
and is covered through the `ferry` CLI in test_cli_move.py."""
import hashlib
import os
import signal
import subprocess
import time

import pytest

from ferry_harness import ApiError


def rootfs(server, name, project="default", pool="default"):
    return os.path.join(server.dir, "storage-pools", pool, "containers", f"{project}_{name}", "rootfs")


def tree_digest(root):
    """Content, owners, modes, symlinks, hard links, sparse layout, device numbers and xattrs of a tree."""
    rows = []
    links = {}
    inodes = []  # (row, inode) of regular files: hard links are names sharing an inode within the tree
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            row = [rel, st.st_mode, st.st_uid, st.st_gid]
            if os.path.islink(path):
                row.append(os.readlink(path))
            elif os.path.isfile(path):
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                row += [h.hexdigest(), st.st_size, st.st_blocks * 512 < st.st_size]  # sparse stays sparse
                links.setdefault(st.st_ino, []).append(rel)
                inodes.append((row, st.st_ino))
            elif not os.path.isdir(path):
                row.append(st.st_rdev)
            try:
                row.append(sorted((x, os.getxattr(path, x, follow_symlinks=False))
                                  for x in os.listxattr(path, follow_symlinks=False)))
            except OSError:
                pass
            rows.append(row)
    for row, ino in inodes:
        if len(links[ino]) > 1:
            row.insert(len(row) - 1 if isinstance(row[-1], list) else len(row), links[ino][0])
    return [tuple(map(str, row)) for row in rows]


@pytest.fixture
def pair(server_factory, busybox_image):
    """Two servers on loopback HTTPS, each with a dir pool; the image only on the first."""
    a = server_factory("a")
    b = server_factory("b")
    for s in (a, b):
        s.init_storage()
        s.listen_https()
    a.import_image(busybox_image)
    return a, b


def source_cert(server):
    return server.call("GET", "/1.0")["environment"]["certificate"]


def target_body(src, name, new_name=None, **overrides):
    inst = src.call("GET", f"/1.0/instances/{name}")
    config = {k: v for k, v in inst["config"].items() if not k.startswith("volatile.") or k == "volatile.base_image"}
    config.update(overrides.pop("config", {}))
    body = {"name": new_name or name, "architecture": inst["architecture"], "config": config,
            "devices": overrides.pop("devices", inst["devices"]), "profiles": overrides.pop("profiles", inst["profiles"]),
            "ephemeral": False, "description": inst["description"], "type": "container"}
    body.update(overrides)
    return body


def migrate(src, dst, name, new_name=None, mode="pull", instance_only=False, snapshot=None, allow_inconsistent=False,
            expect_failure=False, source_refresh=False, **overrides):
    """The Incus client's copy: returns (source operation, target operation)."""
    path = f"/1.0/instances/{name}" + (f"/snapshots/{snapshot}" if snapshot else "")
    flags = {"migration": True, "live": False, "instance_only": instance_only, "allow_inconsistent": allow_inconsistent}
    if snapshot:
        flags["name"] = new_name or name
    body = target_body(src, name, new_name, **overrides)
    if mode == "pull":
        status, src_env = src.api("POST", path, flags)
        assert status == 202, src_env
        op = src_env["metadata"]
        body["source"] = {"type": "migration", "mode": "pull",
                          "operation": f"https://127.0.0.1:{src.https_port}/1.0/operations/{op['id']}",
                          "certificate": source_cert(src), "secrets": op["metadata"],
                          "instance_only": instance_only, "allow_inconsistent": allow_inconsistent,
                          "refresh": source_refresh}
        status, dst_env = dst.api("POST", "/1.0/instances", body)
        if status != 202:
            src.api("DELETE", f"/1.0/operations/{op['id']}")
            return src_env, dst_env
    else:
        body["source"] = {"type": "migration", "mode": "push", "certificate": "", "instance_only": instance_only,
                          "allow_inconsistent": allow_inconsistent, "refresh": source_refresh}
        status, dst_env = dst.api("POST", "/1.0/instances", body)
        if status != 202:
            return None, dst_env
        op = dst_env["metadata"]
        flags["target"] = {"operation": f"https://127.0.0.1:{dst.https_port}/1.0/operations/{op['id']}",
                           "secrets": op["metadata"], "certificate": source_cert(dst)}
        status, src_env = src.api("POST", path, flags)
        assert status == 202, src_env
    dst_op = dst.wait(dst_env, 120)
    src_op = src.wait(src_env, 120)
    return src_op, dst_op


def assert_success(result):
    src_op, dst_op = result
    assert dst_op["status"] == "Success", dst_op
    assert src_op["status"] == "Success", src_op


def prepare_c1(a):
    a.launch("c1", config={"user.note": "hello", "limits.memory": "64MiB"})
    a.exec("c1", ["sh", "-c", "echo one > /root/f; ln /root/f /root/hard; ln -s /etc/passwd /root/link; "
                              "mknod /root/null c 1 3; dd if=/dev/zero of=/root/sparse bs=1 count=1 seek=8M 2>/dev/null"])
    a.call("POST", "/1.0/instances/c1/snapshots", {"name": "snap0"})
    a.exec("c1", ["sh", "-c", "echo two > /root/f; mkdir -p /root/d; echo x > /root/d/x"])
    a.call("POST", "/1.0/instances/c1/snapshots", {"name": "snap1"})
    a.exec("c1", ["sh", "-c", "echo three > /root/f"])
    a.call("PUT", "/1.0/instances/c1/state", {"action": "stop", "force": True})


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_copy_stopped_with_snapshots(pair, mode):
    a, b = pair
    prepare_c1(a)
    assert_success(migrate(a, b, "c1", mode=mode))
    # Same data, bit for bit, with owners (shifted ids travel as they are), modes, links and sparse files.
    assert tree_digest(rootfs(a, "c1")) == tree_digest(rootfs(b, "c1"))
    for snap in ("snap0", "snap1"):
        sa = os.path.join(a.dir, "storage-pools/default/containers-snapshots/default_c1", snap)
        sb = os.path.join(b.dir, "storage-pools/default/containers-snapshots/default_c1", snap)
        assert tree_digest(sa) == tree_digest(sb)
    snaps = b.call("GET", "/1.0/instances/c1/snapshots?recursion=1")
    assert [s["name"] for s in snaps] == ["snap0", "snap1"]
    src_snaps = a.call("GET", "/1.0/instances/c1/snapshots?recursion=1")
    assert [s["created_at"][:19] for s in snaps] == [s["created_at"][:19] for s in src_snaps]
    inst = b.call("GET", "/1.0/instances/c1")
    assert inst["config"]["user.note"] == "hello" and inst["status"] == "Stopped"
    assert inst["config"]["volatile.last_state.idmap"] == a.call("GET", "/1.0/instances/c1")["config"][
        "volatile.last_state.idmap"]
    # The copy runs, and its snapshots restore.
    b.call("PUT", "/1.0/instances/c1/state", {"action": "start"})
    assert b.exec("c1", ["cat", "/root/f"])[1] == b"three\n"
    b.call("PUT", "/1.0/instances/c1", {"restore": "snap0"})
    assert b.exec("c1", ["cat", "/root/f"])[1] == b"one\n"
    # The source is as it was.
    assert a.call("GET", "/1.0/instances/c1")["status"] == "Stopped"
    assert len(a.call("GET", "/1.0/instances/c1/snapshots")) == 2


def test_copy_instance_only_renamed(pair):
    a, b = pair
    prepare_c1(a)
    assert_success(migrate(a, b, "c1", new_name="c2", instance_only=True))
    assert b.call("GET", "/1.0/instances/c2/snapshots") == []
    assert tree_digest(rootfs(a, "c1")) == tree_digest(rootfs(b, "c2"))


def test_copy_snapshot_as_new_instance(pair):
    a, b = pair
    prepare_c1(a)
    assert_success(migrate(a, b, "c1", new_name="fromsnap", snapshot="snap0"))
    b.call("PUT", "/1.0/instances/fromsnap/state", {"action": "start"})
    assert b.exec("fromsnap", ["cat", "/root/f"])[1] == b"one\n"


def test_stateless_copy_of_running_container(pair):
    a, b = pair
    a.launch("r1")
    a.exec("r1", ["sh", "-c", "echo live > /root/f"])
    assert_success(migrate(a, b, "r1"))
    assert a.call("GET", "/1.0/instances/r1")["status"] == "Running"  # the source keeps running
    b.call("PUT", "/1.0/instances/r1/state", {"action": "start"})
    assert b.exec("r1", ["cat", "/root/f"])[1] == b"live\n"


@pytest.mark.parametrize("overrides,status,message", [
    ({"config": {"limits.memory": "abc"}}, 400, "limits.memory"),
    ({"config": {"nope.key": "1"}}, 400, "Unknown configuration key"),
    ({"profiles": ["nope"]}, 404, 'Profile "nope" not found'),
    ({"devices": {"root": {"type": "disk", "path": "/", "pool": "nopool"}}}, 404, 'Storage pool "nopool" not found'),
])
def test_preflight_rejects_before_any_data(pair, overrides, status, message):
    a, b = pair
    a.launch("c1", start=False)
    src_env, dst_env = migrate(a, b, "c1", **overrides)
    assert dst_env["error_code"] == status and message in dst_env["error"], dst_env
    assert b.call("GET", "/1.0/instances") == []
    assert os.listdir(os.path.join(b.dir, "storage-pools", "default", "containers")) == []
    assert a.call("GET", "/1.0/instances/c1")["status"] == "Stopped"


def test_taken_name_and_bad_mode(pair):
    a, b = pair
    a.launch("c1", start=False)
    b.call("POST", "/1.0/instances", {"name": "c1", "source": {"type": "none"}})
    _, dst_env = migrate(a, b, "c1")
    assert dst_env["error_code"] == 409 and "already exists" in dst_env["error"]
    status, env = b.api("POST", "/1.0/instances", {"name": "x", "source": {"type": "migration", "mode": "foo"}})
    assert status == 501 and 'Mode "foo" not implemented' in env["error"]


def test_unreachable_source_leaves_nothing(pair):
    a, b = pair
    a.launch("c1", start=False)
    body = target_body(a, "c1")
    body["source"] = {"type": "migration", "mode": "pull", "certificate": source_cert(a),
                      "operation": "https://127.0.0.1:1/1.0/operations/00000000-0000-0000-0000-000000000000",
                      "secrets": {"control": "0" * 64, "fs": "0" * 64}}
    message = b.expect_error("POST", "/1.0/instances", body)
    assert "127.0.0.1:1" in message
    assert b.call("GET", "/1.0/instances") == []
    assert os.listdir(os.path.join(b.dir, "storage-pools", "default", "containers")) == []


def test_killed_source_leaves_target_unchanged(pair):
    """kill -9 of the source daemon mid-transfer: the target removes its partial copy."""
    a, b = pair
    a.launch("big", start=False)
    # 64 MiB of random bytes make the transfer last long enough to interrupt.
    with open(os.path.join(rootfs(a, "big"), "root", "blob"), "wb") as f:
        f.write(os.urandom(64 << 20))
    # Slow enough that the kill lands mid-transfer however fast the transport is.
    a.call("PATCH", "/1.0", {"config": {"migration.bandwidth": "16MiB"}})
    status, src_env = a.api("POST", "/1.0/instances/big", {"migration": True, "live": False})
    op = src_env["metadata"]
    body = target_body(a, "big")
    body["source"] = {"type": "migration", "mode": "pull", "certificate": source_cert(a),
                      "operation": f"https://127.0.0.1:{a.https_port}/1.0/operations/{op['id']}",
                      "secrets": op["metadata"]}
    status, dst_env = b.api("POST", "/1.0/instances", body)
    assert status == 202
    time.sleep(0.3)
    a.kill()
    dst_op = b.wait(dst_env, 120)
    assert dst_op["status"] == "Failure"
    assert b.call("GET", "/1.0/instances") == []
    assert os.listdir(os.path.join(b.dir, "storage-pools", "default", "containers")) == []
    a.start()
    assert a.call("GET", "/1.0/instances/big")["status"] == "Stopped"


def migrate_refresh(src, dst, name, mode="pull", instance_only=False):
    """The Incus client's `copy --refresh`: the same requests with source.refresh set."""
    return migrate(src, dst, name, mode=mode, instance_only=instance_only, source_refresh=True)


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_refresh_sends_changes_and_prunes_snapshots(pair, mode):
    a, b = pair
    prepare_c1(a)
    assert_success(migrate(a, b, "c1", mode=mode))
    b_snap0_created = b.call("GET", "/1.0/instances/c1/snapshots/snap0")["created_at"]
    # Change the source: new content, one snapshot gone, one new.
    a.call("PUT", "/1.0/instances/c1/state", {"action": "start"})
    a.exec("c1", ["sh", "-c", "echo four > /root/f; rm -r /root/d; echo new > /root/new"])
    a.call("DELETE", "/1.0/instances/c1/snapshots/snap1")
    a.call("POST", "/1.0/instances/c1/snapshots", {"name": "snap2"})
    a.call("PUT", "/1.0/instances/c1/state", {"action": "stop", "force": True})
    # A file only on the target disappears (rsync --delete), as the source does not have it.
    open(os.path.join(rootfs(b, "c1"), "root", "target-only"), "w").write("x")
    assert_success(migrate_refresh(a, b, "c1", mode=mode))
    assert tree_digest(rootfs(a, "c1")) == tree_digest(rootfs(b, "c1"))
    assert [s["name"] for s in b.call("GET", "/1.0/instances/c1/snapshots?recursion=1")] == ["snap0", "snap2"]
    # The unchanged snapshot was kept, not sent again.
    assert b.call("GET", "/1.0/instances/c1/snapshots/snap0")["created_at"] == b_snap0_created
    snap2 = os.path.join(b.dir, "storage-pools/default/containers-snapshots/default_c1/snap2")
    assert tree_digest(snap2) == tree_digest(os.path.join(a.dir,
                                                          "storage-pools/default/containers-snapshots/default_c1/snap2"))
    # The replaced data is deleted in the background: it goes, and nothing else is left.
    deadline = time.monotonic() + 30
    while True:
        leftovers = [n for n in os.listdir(os.path.join(b.dir, "storage-pools/default/containers"))
                     if n != "default_c1"]
        if not leftovers or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert leftovers == []


def test_refresh_failure_keeps_old_target(pair):
    """The source dies mid-refresh: the target keeps its previous, complete copy."""
    a, b = pair
    prepare_c1(a)
    assert_success(migrate(a, b, "c1"))
    before = tree_digest(rootfs(b, "c1"))
    with open(os.path.join(rootfs(a, "c1"), "root", "blob"), "wb") as f:
        f.write(os.urandom(64 << 20))
    # Slow enough that the kill lands mid-transfer however fast the transport is.
    a.call("PATCH", "/1.0", {"config": {"migration.bandwidth": "16MiB"}})
    status, src_env = a.api("POST", "/1.0/instances/c1", {"migration": True, "live": False})
    op = src_env["metadata"]
    body = target_body(a, "c1")
    body["source"] = {"type": "migration", "mode": "pull", "certificate": source_cert(a), "refresh": True,
                      "operation": f"https://127.0.0.1:{a.https_port}/1.0/operations/{op['id']}",
                      "secrets": op["metadata"]}
    status, dst_env = b.api("POST", "/1.0/instances", body)
    assert status == 202, dst_env
    time.sleep(0.3)
    a.kill()
    assert b.wait(dst_env, 120)["status"] == "Failure"
    assert tree_digest(rootfs(b, "c1")) == before
    assert [s["name"] for s in b.call("GET", "/1.0/instances/c1/snapshots?recursion=1")] == ["snap0", "snap1"]
    assert os.listdir(os.path.join(b.dir, "storage-pools/default/containers")) == ["default_c1"]
    b.call("PUT", "/1.0/instances/c1/state", {"action": "start"})
    assert b.exec("c1", ["cat", "/root/f"])[1] == b"three\n"


def test_refresh_of_running_target_is_refused(pair):
    a, b = pair
    prepare_c1(a)
    assert_success(migrate(a, b, "c1"))
    b.call("PUT", "/1.0/instances/c1/state", {"action": "start"})
    src_env, dst_env = migrate_refresh(a, b, "c1")
    assert dst_env.get("error_code") == 400 and "running" in dst_env["error"], dst_env


@pytest.mark.parametrize("setting", ["server", "pool"])
def test_bandwidth_limit_is_honoured(pair, setting):
    """migration.bandwidth (ferry, every stream) and rsync.bwlimit (Incus's pool key) slow the transfer down.
    A behaviour check with a generous bound: 4 MiB at 1 MiB/s cannot take under 2.5 s."""
    a, b = pair
    a.launch("bw", start=False)
    with open(os.path.join(rootfs(a, "bw"), "root", "blob"), "wb") as f:
        f.write(os.urandom(4 << 20))
    if setting == "server":
        a.call("PATCH", "/1.0", {"config": {"migration.bandwidth": "1MiB"}})
    else:
        a.call("PATCH", "/1.0/storage-pools/default", {"config": {"rsync.bwlimit": "1024"}})
        a.stop()  # pool config is read when the pool is loaded
        a.start()
    start = time.monotonic()
    assert_success(migrate(a, b, "bw"))
    assert time.monotonic() - start >= 2.5


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_btrfs_to_btrfs_uses_btrfs_streams(server_factory, busybox_image, mode):
    """Between two btrfs pools the data goes as btrfs send/receive streams: snapshots arrive as read-only
    subvolumes and the copy is identical."""
    a = server_factory("a")
    b = server_factory("b")
    for s in (a, b):
        s.init_storage(driver="btrfs", config={"size": "512MiB"})
        s.listen_https()
    a.import_image(busybox_image)
    prepare_c1(a)
    assert_success(migrate(a, b, "c1", mode=mode))
    assert tree_digest(rootfs(a, "c1")) == tree_digest(rootfs(b, "c1"))
    snap0 = os.path.join(b.dir, "storage-pools/default/containers-snapshots/default_c1/snap0")
    # A subvolume made by `btrfs receive` carries the UUID it was received from; an rsynced one does not.
    show = subprocess.run(["btrfs", "subvolume", "show", snap0], capture_output=True, text=True, check=True).stdout
    received = [line.split(":", 1)[1].strip() for line in show.splitlines() if "Received UUID" in line]
    assert received and received[0] not in ("-", ""), show
    assert [s["name"] for s in b.call("GET", "/1.0/instances/c1/snapshots?recursion=1")] == ["snap0", "snap1"]
    b.call("PUT", "/1.0/instances/c1/state", {"action": "start"})
    assert b.exec("c1", ["cat", "/root/f"])[1] == b"three\n"
    b.call("PUT", "/1.0/instances/c1", {"restore": "snap0"})
    assert b.exec("c1", ["cat", "/root/f"])[1] == b"one\n"


# --- ferry's native transport (both ends ferry) ---------------------------------------------------------------
@pytest.mark.parametrize("transport", ["native", "rsync"])
def test_transport_between_ferry_servers(pair, transport):
    """Between ferry servers the native transport is the default; migration.transport=rsync (on either side)
    keeps rsync. Either way the copy is exact, hard links included."""
    a, b = pair
    if transport == "rsync":
        b.call("PATCH", "/1.0", {"config": {"migration.transport": "rsync"}})
    prepare_c1(a)
    assert_success(migrate(a, b, "c1"))
    assert tree_digest(rootfs(a, "c1")) == tree_digest(rootfs(b, "c1"))
    hard = os.stat(os.path.join(rootfs(b, "c1"), "root", "hard"))
    assert hard.st_ino == os.stat(os.path.join(rootfs(b, "c1"), "root", "f")).st_ino
    expected = "ferry's native transport (zstd)" if transport == "native" else "rsync"
    assert f'Migrating "c1" to the target with {expected}' in a.log()


def test_migration_transport_bad_value(pair):
    a, _ = pair
    status, env = a.api("PATCH", "/1.0", {"config": {"migration.transport": "carrier-pigeon"}})
    assert status == 400, env
    assert 'Invalid value for "migration.transport": "carrier-pigeon"' in env["error"]
    assert "migration.transport" not in a.call("GET", "/1.0")["config"]


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_native_refresh_sends_only_changed_blocks(pair, mode):
    """A refresh after 64 KiB changed inside a 16 MiB file sends that block, not the file; the result is exact
    and the live copy was never written in place (its old inode keeps the old bytes until the swap)."""
    a, b = pair
    a.launch("c1")
    a.call("PUT", "/1.0/instances/c1/state", {"action": "stop", "force": True})
    big = os.path.join(rootfs(a, "c1"), "root", "big")
    with open(big, "wb") as f:
        f.write(os.urandom(16 << 20))
    assert_success(migrate(a, b, "c1", mode=mode))
    with open(big, "r+b") as f:
        f.seek(5 << 20)
        f.write(os.urandom(64 << 10))
    os.chmod(os.path.join(rootfs(a, "c1"), "root"), 0o750)
    old_target = open(os.path.join(rootfs(b, "c1"), "root", "big"), "rb")  # the live file before the refresh
    old_bytes = old_target.read()
    src_op, dst_op = migrate_refresh(a, b, "c1", mode=mode)
    assert_success((src_op, dst_op))
    assert tree_digest(rootfs(a, "c1")) == tree_digest(rootfs(b, "c1"))
    old_target.seek(0)
    assert old_target.read() == old_bytes
    old_target.close()
    sent = src_op["metadata"]["progress"]["done"]
    assert sent < (1 << 20), f"{sent} bytes of file data sent for a 64 KiB change"
