"""Same-server copy (source type "copy") and rename: what `ferry copy c1 c2` and `ferry move c1 c2` do."""
import os

import pytest


def tree_signature(root):
    """Everything a copy must keep: content, owners, modes, symlink targets, hard links, device numbers."""
    sig = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            entry = (st.st_mode, st.st_uid, st.st_gid)
            if os.path.islink(path):
                entry += (os.readlink(path),)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    entry += (hash(f.read()),)
                if st.st_nlink > 1:
                    entry += ("link-group", inodes.setdefault(st.st_ino, rel))
            elif not os.path.isdir(path):
                entry += (st.st_rdev,)
            sig[rel] = entry
    return sig


def rootfs(server, name, pool="default"):
    return os.path.join(server.dir, "storage-pools", pool, "containers", f"default_{name}", "rootfs")


def test_copy_with_snapshots_and_overrides(ready_server):
    s = ready_server
    s.launch("c1", config={"user.note": "orig", "limits.memory": "64MiB"})
    s.exec("c1", ["sh", "-c", "echo v1 > /root/f; ln /root/f /root/hard; mknod /root/null c 1 3; ln -s /etc /root/l"])
    s.call("POST", "/1.0/instances/c1/snapshots", {"name": "snap0"})
    s.exec("c1", ["sh", "-c", "echo v2 > /root/f"])
    s.call("PUT", "/1.0/instances/c1/state", {"action": "stop", "force": True})

    s.call("POST", "/1.0/instances", {"name": "c2", "source": {"type": "copy", "source": "c1"},
                                      "config": {"user.note": "copy"}})
    c1 = s.call("GET", "/1.0/instances/c1")
    c2 = s.call("GET", "/1.0/instances/c2")
    assert c2["config"]["user.note"] == "copy" and c2["config"]["limits.memory"] == "64MiB"
    assert c2["config"]["volatile.uuid"] != c1["config"]["volatile.uuid"]
    assert c2["config"]["volatile.base_image"] == c1["config"]["volatile.base_image"]
    assert [x["name"] for x in s.call("GET", "/1.0/instances/c2/snapshots?recursion=1")] == ["snap0"]
    assert tree_signature(rootfs(s, "c1")) == tree_signature(rootfs(s, "c2"))
    s.call("PUT", "/1.0/instances/c2/state", {"action": "start"})
    assert s.exec("c2", ["cat", "/root/f"])[1] == b"v2\n"
    s.call("PUT", "/1.0/instances/c2", {"restore": "snap0"})
    assert s.exec("c2", ["cat", "/root/f"])[1] == b"v1\n"
    # The source is untouched.
    s.call("PUT", "/1.0/instances/c1/state", {"action": "start"})
    assert s.exec("c1", ["cat", "/root/f"])[1] == b"v2\n"


def test_copy_instance_only_and_from_snapshot(ready_server):
    s = ready_server
    s.launch("c1", start=False)
    s.call("POST", "/1.0/instances/c1/snapshots", {"name": "s0"})
    s.call("POST", "/1.0/instances", {"name": "only", "source": {"type": "copy", "source": "c1",
                                                                  "instance_only": True}})
    assert s.call("GET", "/1.0/instances/only/snapshots") == []
    s.call("POST", "/1.0/instances", {"name": "fromsnap", "source": {"type": "copy", "source": "c1/s0"}})
    assert s.call("GET", "/1.0/instances/fromsnap/snapshots") == []
    s.call("PUT", "/1.0/instances/fromsnap/state", {"action": "start"})
    assert s.exec("fromsnap", ["hostname"])[1] == b"fromsnap\n"


def test_copy_to_another_pool(ready_server):
    s = ready_server
    s.call("POST", "/1.0/storage-pools", {"name": "second", "driver": "dir"})
    s.launch("c1", start=False)
    s.call("POST", "/1.0/instances/c1/snapshots", {"name": "s0"})
    s.call("POST", "/1.0/instances", {"name": "moved", "source": {"type": "copy", "source": "c1"},
                                      "devices": {"root": {"type": "disk", "path": "/", "pool": "second"}}})
    inst = s.call("GET", "/1.0/instances/moved")
    assert inst["expanded_devices"]["root"]["pool"] == "second"
    assert tree_signature(rootfs(s, "c1")) == tree_signature(rootfs(s, "moved", pool="second"))
    snap = os.path.join(s.dir, "storage-pools", "second", "containers-snapshots", "default_moved", "s0")
    assert os.path.isdir(snap)
    s.call("PUT", "/1.0/instances/moved/state", {"action": "start"})
    assert s.exec("moved", ["true"])[0] == 0


@pytest.mark.parametrize("body,status,message", [
    ({"name": "c2", "source": {"type": "copy", "source": "nope"}}, 404, 'Instance "nope" not found'),
    ({"name": "c2", "source": {"type": "copy", "source": "c1/nope"}}, 404, "not found"),
    ({"name": "c1", "source": {"type": "copy", "source": "c1"}}, 409, "already exists"),
    ({"name": "c2", "source": {"type": "copy", "source": "c1"}, "config": {"limits.memory": "abc"}}, 400,
     "limits.memory"),
    ({"name": "c2", "source": {"type": "copy", "source": "c1"}, "profiles": ["nope"]}, 404, 'Profile "nope"'),
    ({"name": "c2", "source": {"type": "copy", "source": "c1"},
      "devices": {"root": {"type": "disk", "path": "/", "pool": "nopool"}}}, 404, 'Storage pool "nopool"'),
    ({"name": "c2", "source": {"type": "copy", "source": "c1", "project": "nope"}}, 404, "not found"),
])
def test_copy_bad_input_changes_nothing(ready_server, body, status, message):
    s = ready_server
    s.launch("c1", start=False)
    s.expect_error("POST", "/1.0/instances", body, status=status, contains=message)
    assert s.call("GET", "/1.0/instances") == ["/1.0/instances/c1"]
    assert os.listdir(os.path.join(s.dir, "storage-pools", "default", "containers")) == ["default_c1"]
