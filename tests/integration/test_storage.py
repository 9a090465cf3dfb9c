"""/1.0/storage-pools: pools (dir and btrfs), their resources and the volumes on them."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import UnixHTTPConnection


def pool_names(server):
    return sorted(p["name"] for p in server.call("GET", "/1.0/storage-pools?recursion=1"))


def pools_dir(server):
    return sorted(os.listdir(os.path.join(server.dir, "storage-pools")))


def request_with_headers(server, method, path, body=None, headers=None):
    conn = UnixHTTPConnection(server.socket_path)
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body)
        hdrs["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    result = resp.status, dict(resp.getheaders()), payload
    conn.close()
    return result


def have_btrfs():
    return shutil.which("mkfs.btrfs") is not None and os.path.exists("/dev/loop-control")


def test_no_pools_at_first(server):
    assert server.call("GET", "/1.0/storage-pools") == []
    assert server.call("GET", "/1.0/storage-pools?recursion=1") == []


def test_create_dir_pool(server):
    status, headers, envelope = request_with_headers(server, "POST", "/1.0/storage-pools",
                                                     {"name": "p1", "driver": "dir", "description": "mine",
                                                      "config": {"user.k": "v"}})
    assert status == 201, envelope
    assert headers.get("Location") == "/1.0/storage-pools/p1"
    assert server.call("GET", "/1.0/storage-pools") == ["/1.0/storage-pools/p1"]
    status, headers, envelope = request_with_headers(server, "GET", "/1.0/storage-pools/p1")
    assert status == 200 and headers.get("ETag")
    pool = envelope["metadata"]
    assert pool["name"] == "p1" and pool["driver"] == "dir" and pool["description"] == "mine"
    assert pool["status"] == "Created" and pool["locations"] == ["none"]
    assert pool["config"]["user.k"] == "v"
    assert pool["used_by"] == []
    assert os.path.isdir(os.path.join(server.dir, "storage-pools", "p1", "containers"))
    resources = server.call("GET", "/1.0/storage-pools/p1/resources")
    assert resources["space"]["total"] > 0
    assert 0 <= resources["space"]["used"] <= resources["space"]["total"]
    assert resources["inodes"]["total"] >= resources["inodes"]["used"]


def test_create_dir_pool_on_source(server, workdir):
    source = tempfile.mkdtemp(prefix="pool-source-", dir=workdir)
    server.call("POST", "/1.0/storage-pools", {"name": "ext", "driver": "dir", "config": {"source": source}})
    config = server.call("GET", "/1.0/storage-pools/ext")["config"]
    assert config["source"] == source
    assert os.path.isdir(os.path.join(source, "containers"))
    server.call("DELETE", "/1.0/storage-pools/ext")
    assert pool_names(server) == []
    # The source directory is the user's: it stays.
    assert os.path.isdir(source)


@pytest.mark.parametrize("body,status,message", [
    ({"driver": "dir"}, 400, "No name provided"),
    ({"name": "", "driver": "dir"}, 400, "No name provided"),
    ({"name": "a/b", "driver": "dir"}, 400, "Invalid storage pool name"),
    ({"name": "white space", "driver": "dir"}, 400, "Invalid storage pool name"),
    ({"name": "..", "driver": "dir"}, 400, "Invalid storage pool name"),
    ({"name": "p"}, 400, "No driver provided"),
    ({"name": "p", "driver": "zfs"}, 400, 'Unknown storage pool driver "zfs"'),
    ({"name": "p", "driver": 1}, 400, "must be strings"),
    ({"name": "p", "driver": "dir", "config": {"bogus": "1"}}, 400, 'Invalid pool configuration key "bogus"'),
    ({"name": "p", "driver": "dir", "config": {"size": "1GiB"}}, 400, '"size"'),
    ({"name": "p", "driver": "dir", "config": {"volume.size": "huge"}}, 400, "volume.size"),
    ({"name": "p", "driver": "dir", "config": {"rsync.compression": "perhaps"}}, 400, "rsync.compression"),
    ({"name": "p", "driver": "dir", "config": {"source": "relative/dir"}}, 400, "source"),
    ({"name": "p", "driver": "dir", "config": {"user.x": 3}}, 400, "must be a string"),
    ({"name": "p", "driver": "dir", "config": "x"}, 400, "must be an object"),
    ({"name": "p", "driver": "btrfs", "config": {"size": "a lot"}}, 400, "size"),
    ({"name": "p", "driver": "dir", "config": {"source": "/nonexistent/ferry-test-source"}}, None, None),
])
def test_create_rejects_bad_input(server, body, status, message):
    server.call("POST", "/1.0/storage-pools", {"name": "keep", "driver": "dir"})
    before = server.call("GET", "/1.0/storage-pools?recursion=1")
    before_dirs = pools_dir(server)
    server.expect_error("POST", "/1.0/storage-pools", body, status=status, contains=message)
    assert server.call("GET", "/1.0/storage-pools?recursion=1") == before
    assert pools_dir(server) == before_dirs


def test_create_existing_name_conflicts(server):
    server.call("POST", "/1.0/storage-pools", {"name": "p1", "driver": "dir", "description": "first"})
    server.expect_error("POST", "/1.0/storage-pools", {"name": "p1", "driver": "dir"}, status=409,
                        contains="already exists")
    pool = server.call("GET", "/1.0/storage-pools/p1")
    assert pool["description"] == "first" and pool["status"] == "Created"


def test_unknown_pool(server):
    for method, path in (("GET", ""), ("GET", "/resources"), ("GET", "/volumes"), ("GET", "/volumes/container"),
                         ("GET", "/volumes/container/c1"), ("DELETE", "")):
        server.expect_error(method, f"/1.0/storage-pools/nope{path}", status=404,
                            contains='Storage pool "nope" not found')
    server.expect_error("PATCH", "/1.0/storage-pools/nope", {"config": {}}, status=404)
    server.expect_error("PUT", "/1.0/storage-pools/nope", {"config": {}}, status=404)


def test_update(server):
    server.call("POST", "/1.0/storage-pools", {"name": "p1", "driver": "dir"})
    original = server.call("GET", "/1.0/storage-pools/p1")["config"]
    server.call("PATCH", "/1.0/storage-pools/p1", {"description": "d", "config": {"user.a": "1",
                                                                                  "volume.size": "1GiB"}})
    pool = server.call("GET", "/1.0/storage-pools/p1")
    assert pool["description"] == "d"
    assert pool["config"] == dict(original, **{"user.a": "1", "volume.size": "1GiB"})
    # PUT replaces the user's keys; what the driver set stays as long as it is sent back unchanged.
    server.call("PUT", "/1.0/storage-pools/p1", {"config": dict(original, **{"user.b": "2"})})
    pool = server.call("GET", "/1.0/storage-pools/p1")
    assert pool["config"] == dict(original, **{"user.b": "2"})
    assert pool["description"] == ""


def test_update_rejects_bad_input_and_changes_nothing(server, workdir):
    server.call("POST", "/1.0/storage-pools", {"name": "p1", "driver": "dir", "config": {"user.a": "1"}})
    before = server.call("GET", "/1.0/storage-pools/p1")
    elsewhere = tempfile.mkdtemp(prefix="other-source-", dir=workdir)
    server.expect_error("PATCH", "/1.0/storage-pools/p1", {"config": {"source": elsewhere}}, status=400,
                        contains='"source" cannot be changed')
    server.expect_error("PATCH", "/1.0/storage-pools/p1", {"config": {"nope": "1"}}, status=400,
                        contains="nope")
    server.expect_error("PATCH", "/1.0/storage-pools/p1", {"config": {"volume.size": "big"}}, status=400)
    server.expect_error("PATCH", "/1.0/storage-pools/p1", {"config": {"volatile.initial_source": "/x"}},
                        status=400, contains="cannot be changed")
    server.expect_error("PATCH", "/1.0/storage-pools/p1", {"description": 5}, status=400)
    # Leaving the driver's "source" out of a PUT would change it too.
    server.expect_error("PUT", "/1.0/storage-pools/p1", {"config": {"user.a": "2"}}, status=400,
                        contains="cannot be changed")
    status, _, envelope = request_with_headers(server, "PATCH", "/1.0/storage-pools/p1", {"description": "x"},
                                               headers={"If-Match": "stale"})
    assert status == 412, envelope
    assert server.call("GET", "/1.0/storage-pools/p1") == before


def test_delete(server):
    server.call("POST", "/1.0/storage-pools", {"name": "p1", "driver": "dir"})
    server.call("DELETE", "/1.0/storage-pools/p1")
    assert pool_names(server) == []
    assert "p1" not in pools_dir(server)
    server.expect_error("DELETE", "/1.0/storage-pools/p1", status=404)
    # The name can be used again.
    server.call("POST", "/1.0/storage-pools", {"name": "p1", "driver": "dir"})
    assert pool_names(server) == ["p1"]


def test_delete_pool_used_by_profile(server):
    server.init_storage()
    assert server.call("GET", "/1.0/storage-pools/default")["used_by"] == ["/1.0/profiles/default"]
    server.expect_error("DELETE", "/1.0/storage-pools/default", status=409, contains="currently in use")
    assert pool_names(server) == ["default"]
    assert server.call("GET", "/1.0/storage-pools/default")["status"] == "Created"
    # A profile in another project counts too.
    server.call("POST", "/1.0/projects", {"name": "p1"})
    server.call("POST", "/1.0/profiles?project=p1",
                {"name": "r", "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}}})
    server.call("PUT", "/1.0/profiles/default", {"config": {}, "devices": {}})
    assert server.call("GET", "/1.0/storage-pools/default")["used_by"] == ["/1.0/profiles/r?project=p1"]
    server.expect_error("DELETE", "/1.0/storage-pools/default", status=409, contains="currently in use")
    server.call("DELETE", "/1.0/profiles/r?project=p1")
    server.call("DELETE", "/1.0/storage-pools/default")
    assert pool_names(server) == []


def test_pools_survive_restart(server):
    server.call("POST", "/1.0/storage-pools", {"name": "p1", "driver": "dir", "config": {"user.a": "1"}})
    before = server.call("GET", "/1.0/storage-pools/p1")
    server.stop()
    server.start()
    assert server.call("GET", "/1.0/storage-pools/p1") == before


def test_volumes_of_instances(ready_server):
    server = ready_server
    assert server.call("GET", "/1.0/storage-pools/default/volumes") == []
    server.launch("c1", start=False)
    server.call("POST", "/1.0/instances/c1/snapshots", {"name": "snap0"})
    urls = server.call("GET", "/1.0/storage-pools/default/volumes")
    assert urls == ["/1.0/storage-pools/default/volumes/container/c1",
                    "/1.0/storage-pools/default/volumes/container/c1/snapshots/snap0"]
    volumes = server.call("GET", "/1.0/storage-pools/default/volumes?recursion=1")
    by_name = {v["name"]: v for v in volumes}
    assert sorted(by_name) == ["c1", "c1/snap0"]
    c1 = by_name["c1"]
    assert c1["type"] == "container" and c1["content_type"] == "filesystem"
    assert c1["project"] == "default" and c1["location"] == "none"
    assert c1["used_by"] == ["/1.0/instances/c1"]
    assert c1["created_at"].startswith("20")
    assert server.call("GET", "/1.0/storage-pools/default/volumes/container") == urls
    assert server.call("GET", "/1.0/storage-pools/default/volumes/custom") == []
    assert server.call("GET", "/1.0/storage-pools/default/volumes/image") == []
    assert server.call("GET", "/1.0/storage-pools/default/volumes/container/c1")["name"] == "c1"
    server.expect_error("GET", "/1.0/storage-pools/default/volumes/container/c2", status=404)
    server.expect_error("GET", "/1.0/storage-pools/default/volumes/bogus", status=400,
                        contains='Invalid storage volume type "bogus"')
    server.expect_error("GET", "/1.0/storage-pools/default/volumes?project=nope", status=404)
    # Other projects' volumes show only when asked for.
    server.call("POST", "/1.0/projects", {"name": "p1"})
    assert server.call("GET", "/1.0/storage-pools/default/volumes?project=p1") == []
    everything = server.call("GET", "/1.0/storage-pools/default/volumes?all-projects=true&recursion=1")
    assert sorted(v["name"] for v in everything) == ["c1", "c1/snap0"]

    pool = server.call("GET", "/1.0/storage-pools/default")
    assert "/1.0/instances/c1" in pool["used_by"]
    server.expect_error("DELETE", "/1.0/storage-pools/default", status=409, contains="currently in use")
    server.call("DELETE", "/1.0/instances/c1")
    assert server.call("GET", "/1.0/storage-pools/default/volumes") == []


@pytest.mark.skipif(not have_btrfs(), reason="mkfs.btrfs or loop devices missing")
def test_btrfs_loop_pool(server):
    server.call("POST", "/1.0/storage-pools", {"name": "bt", "driver": "btrfs", "config": {"size": "1GiB"}})
    pool = server.call("GET", "/1.0/storage-pools/bt")
    assert pool["driver"] == "btrfs" and pool["status"] == "Created"
    assert pool["config"]["size"] == "1GiB"
    loop_file = pool["config"]["source"]
    assert os.path.isfile(loop_file)
    resources = server.call("GET", "/1.0/storage-pools/bt/resources")
    assert 0 < resources["space"]["total"] <= 1 << 30
    server.expect_error("PATCH", "/1.0/storage-pools/bt", {"config": {"size": "2GiB"}}, status=400,
                        contains='"size" cannot be changed')
    server.call("DELETE", "/1.0/storage-pools/bt")
    assert not os.path.exists(loop_file)
    assert "bt" not in pools_dir(server)
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert loop_file not in out


@pytest.mark.skipif(not have_btrfs(), reason="mkfs.btrfs or loop devices missing")
def test_btrfs_image_volumes_go_with_the_pool(server, busybox_image):
    server.init_storage(driver="btrfs", pool="bt", config={"size": "1GiB"})
    fingerprint = server.import_image(busybox_image)
    server.launch("c1", start=False)
    volumes = server.call("GET", "/1.0/storage-pools/bt/volumes?recursion=1")
    image_volumes = [v for v in volumes if v["type"] == "image"]
    assert [v["name"] for v in image_volumes] == [fingerprint]
    assert image_volumes[0]["used_by"] == [f"/1.0/images/{fingerprint}"]
    assert server.call("GET", "/1.0/storage-pools/bt/volumes/image") == [
        f"/1.0/storage-pools/bt/volumes/image/{fingerprint}"]
    server.call("DELETE", "/1.0/instances/c1")
    server.call("PUT", "/1.0/profiles/default", {"config": {}, "devices": {}})
    # The unpacked image is a cache: it does not keep the pool alive.
    server.call("DELETE", "/1.0/storage-pools/bt")
    assert pool_names(server) == []
    # The image itself is still there.
    assert server.call("GET", f"/1.0/images/{fingerprint}")["fingerprint"] == fingerprint
