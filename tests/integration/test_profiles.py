"""/1.0/profiles: per-project profiles, their validation, and the instances they reach."""
import json

import pytest

from conftest import UnixHTTPConnection

ROOT = {"type": "disk", "path": "/", "pool": "default"}


def names(server, project="default"):
    return sorted(p["name"] for p in server.call("GET", f"/1.0/profiles?recursion=1&project={project}"))


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


def test_default_profile(server):
    assert server.call("GET", "/1.0/profiles") == ["/1.0/profiles/default"]
    profile = server.call("GET", "/1.0/profiles/default")
    assert profile["name"] == "default"
    assert profile["project"] == "default"
    assert profile["config"] == {} and profile["devices"] == {}
    assert profile["used_by"] == []


def test_create_show_list(server):
    body = {"name": "web", "description": "web things", "config": {"limits.memory": "256MiB", "user.x": "y"},
            "devices": {"data": {"type": "disk", "source": "/srv", "path": "/srv"}}}
    status, headers, envelope = request_with_headers(server, "POST", "/1.0/profiles", body)
    assert status == 201, envelope
    assert headers.get("Location") == "/1.0/profiles/web"
    status, headers, envelope = request_with_headers(server, "GET", "/1.0/profiles/web")
    assert status == 200 and headers.get("ETag")
    profile = envelope["metadata"]
    assert profile["description"] == "web things"
    assert profile["config"] == body["config"]
    assert profile["devices"] == body["devices"]
    assert profile["used_by"] == [] and profile["project"] == "default"
    assert sorted(server.call("GET", "/1.0/profiles")) == ["/1.0/profiles/default", "/1.0/profiles/web"]
    assert names(server) == ["default", "web"]


def test_profiles_are_per_project(server):
    server.call("POST", "/1.0/projects", {"name": "p1"})
    server.call("POST", "/1.0/profiles?project=p1", {"name": "only-here"})
    assert names(server, "p1") == ["default", "only-here"]
    assert names(server) == ["default"]
    assert server.call("GET", "/1.0/profiles?project=p1") == [
        "/1.0/profiles/default?project=p1", "/1.0/profiles/only-here?project=p1"]
    server.expect_error("GET", "/1.0/profiles/only-here", status=404, contains='Profile "only-here" not found')
    # The same name may exist in two projects.
    server.call("POST", "/1.0/profiles", {"name": "only-here"})
    assert server.call("GET", "/1.0/profiles/only-here?project=p1")["project"] == "p1"


@pytest.mark.parametrize("body,message", [
    ({"name": ""}, "No name provided"),
    ({}, "No name provided"),
    ({"name": "a/b"}, "Invalid profile name"),
    ({"name": "sp ace"}, "Invalid profile name"),
    ({"name": "."}, "Invalid profile name"),
    ({"name": ["x"]}, "must be a string"),
    ({"name": "p", "config": {"no.such.key": "1"}}, "Unknown configuration key"),
    ({"name": "p", "config": {"limits.memory": "lots"}}, "limits.memory"),
    ({"name": "p", "config": {"volatile.uuid": "x"}}, "Volatile"),
    ({"name": "p", "config": {"user.a": 1}}, "must be a string"),
    ({"name": "p", "devices": {"eth0": {"type": "nic"}}}, "not supported"),
    ({"name": "p", "devices": {"x": {"path": "/x"}}}, "Missing device type"),
    ({"name": "p", "devices": {"root": {"type": "disk", "path": "/"}}}, "needs a \"pool\""),
    ({"name": "p", "devices": {"d": {"type": "disk", "path": "/d", "source": "/s", "bogus": "1"}}}, "bogus"),
    ({"name": "p", "devices": {"d": "disk"}}, "must be an object"),
    ({"name": "p", "devices": {"d": {"type": "disk", "path": 5}}}, "must be a string"),
    ({"name": "p", "devices": []}, "must be an object"),
    ({"name": "p", "description": False}, "description"),
])
def test_create_rejects_bad_input(server, body, message):
    before = server.call("GET", "/1.0/profiles?recursion=1")
    server.expect_error("POST", "/1.0/profiles", body, status=400, contains=message)
    assert server.call("GET", "/1.0/profiles?recursion=1") == before


def test_create_conflicts_and_unknown_project(server):
    server.call("POST", "/1.0/profiles", {"name": "p", "description": "first"})
    server.expect_error("POST", "/1.0/profiles", {"name": "p", "description": "second"}, status=409,
                        contains="already exists")
    server.expect_error("POST", "/1.0/profiles", {"name": "default"}, status=409, contains="already exists")
    server.expect_error("POST", "/1.0/profiles?project=nope", {"name": "q"}, status=404,
                        contains='Project "nope" not found')
    assert server.call("GET", "/1.0/profiles/p")["description"] == "first"
    assert names(server) == ["default", "p"]


def test_put_replaces_patch_merges(server):
    server.call("POST", "/1.0/profiles", {"name": "p", "description": "d", "config": {"user.a": "1"},
                                          "devices": {"one": {"type": "disk", "source": "/a", "path": "/a"}}})
    server.call("PATCH", "/1.0/profiles/p", {"config": {"user.b": "2"},
                                             "devices": {"two": {"type": "disk", "source": "/b", "path": "/b"}}})
    profile = server.call("GET", "/1.0/profiles/p")
    assert profile["config"] == {"user.a": "1", "user.b": "2"}
    assert sorted(profile["devices"]) == ["one", "two"]
    assert profile["description"] == "d"

    server.call("PUT", "/1.0/profiles/p", {"config": {"user.c": "3"}})
    profile = server.call("GET", "/1.0/profiles/p")
    assert profile["config"] == {"user.c": "3"}
    assert profile["devices"] == {}
    assert profile["description"] == ""


def test_update_rejects_bad_input_and_changes_nothing(server):
    server.call("POST", "/1.0/profiles", {"name": "p", "config": {"user.a": "1"}})
    before = server.call("GET", "/1.0/profiles/p")
    server.expect_error("PUT", "/1.0/profiles/p", {"config": {"bad.key": "1"}}, status=400)
    server.expect_error("PATCH", "/1.0/profiles/p", {"devices": {"x": {"type": "gpu"}}}, status=400)
    server.expect_error("PATCH", "/1.0/profiles/p", {"config": "nope"}, status=400)
    server.expect_error("PUT", "/1.0/profiles/nope", {"config": {}}, status=404)
    server.expect_error("PATCH", "/1.0/profiles/p?project=nope", {"config": {}}, status=404)
    assert server.call("GET", "/1.0/profiles/p") == before


def test_etag(server):
    server.call("POST", "/1.0/profiles", {"name": "p"})
    _, headers, _ = request_with_headers(server, "GET", "/1.0/profiles/p")
    etag = headers["ETag"]
    status, _, envelope = request_with_headers(server, "PUT", "/1.0/profiles/p", {"description": "x"},
                                               headers={"If-Match": "0" * 64})
    assert status == 412, envelope
    assert server.call("GET", "/1.0/profiles/p")["description"] == ""
    status, _, envelope = request_with_headers(server, "PUT", "/1.0/profiles/p", {"description": "x"},
                                               headers={"If-Match": etag})
    assert status == 200, envelope
    _, headers, _ = request_with_headers(server, "GET", "/1.0/profiles/p")
    assert headers["ETag"] != etag


def test_rename(server):
    server.call("POST", "/1.0/profiles", {"name": "old", "config": {"user.k": "v"}})
    status, headers, envelope = request_with_headers(server, "POST", "/1.0/profiles/old", {"name": "new"})
    assert status == 201, envelope
    assert headers.get("Location") == "/1.0/profiles/new"
    assert names(server) == ["default", "new"]
    assert server.call("GET", "/1.0/profiles/new")["config"] == {"user.k": "v"}


def test_rename_refusals(server):
    server.call("POST", "/1.0/profiles", {"name": "a"})
    server.call("POST", "/1.0/profiles", {"name": "b"})
    server.expect_error("POST", "/1.0/profiles/default", {"name": "x"}, status=403,
                        contains='The "default" profile cannot be renamed')
    server.expect_error("POST", "/1.0/profiles/a", {"name": "b"}, status=409, contains="already exists")
    server.expect_error("POST", "/1.0/profiles/nope", {"name": "c"}, status=404)
    server.expect_error("POST", "/1.0/profiles/a", {"name": "c/d"}, status=400)
    server.expect_error("POST", "/1.0/profiles/a", {"name": ""}, status=400)
    server.expect_error("POST", "/1.0/profiles/a", {}, status=400)
    assert names(server) == ["a", "b", "default"]


def test_delete(server):
    server.call("POST", "/1.0/profiles", {"name": "p"})
    server.call("DELETE", "/1.0/profiles/p")
    assert names(server) == ["default"]
    server.expect_error("DELETE", "/1.0/profiles/p", status=404, contains='Profile "p" not found')
    server.expect_error("DELETE", "/1.0/profiles/default", status=403,
                        contains='The "default" profile cannot be deleted')
    server.expect_error("DELETE", "/1.0/profiles/p?project=nope", status=404)
    assert names(server) == ["default"]


# --- profiles in use by instances ---------------------------------------------------------------------

@pytest.fixture
def with_instance(ready_server):
    server = ready_server
    server.call("POST", "/1.0/profiles", {"name": "extra", "config": {"user.extra": "1"}})
    server.launch("c1", start=False, profiles=["default", "extra"])
    return server


def test_used_by_and_delete_in_use(with_instance):
    server = with_instance
    assert server.call("GET", "/1.0/profiles/extra")["used_by"] == ["/1.0/instances/c1"]
    assert server.call("GET", "/1.0/profiles/default")["used_by"] == ["/1.0/instances/c1"]
    server.expect_error("DELETE", "/1.0/profiles/extra", status=409, contains="Profile is currently in use")
    assert "extra" in names(server)
    assert server.call("GET", "/1.0/instances/c1")["expanded_config"]["user.extra"] == "1"


def test_update_that_breaks_an_instance_is_refused(with_instance):
    server = with_instance
    before = server.call("GET", "/1.0/profiles/default")
    # Dropping the root disk would leave c1 without one.
    server.expect_error("PUT", "/1.0/profiles/default", {"config": {}, "devices": {}}, status=400,
                        contains='instance "c1"')
    # Moving the root disk to a pool that does not exist.
    server.expect_error("PATCH", "/1.0/profiles/default",
                        {"devices": {"root": {"type": "disk", "path": "/", "pool": "missing"}}}, status=400,
                        contains="missing")
    # A second root disk.
    server.expect_error("PATCH", "/1.0/profiles/extra", {"devices": {"root2": dict(ROOT)}}, status=400,
                        contains="More than one root")
    assert server.call("GET", "/1.0/profiles/default") == before
    assert server.call("GET", "/1.0/profiles/extra")["devices"] == {}
    # Changes that keep c1 valid go through and show in its expanded config.
    server.call("PATCH", "/1.0/profiles/extra", {"config": {"user.extra": "2"}})
    assert server.call("GET", "/1.0/instances/c1")["expanded_config"]["user.extra"] == "2"


def test_root_disk_cannot_move_to_another_pool(with_instance):
    server = with_instance
    server.call("POST", "/1.0/storage-pools", {"name": "second", "driver": "dir"})
    server.expect_error("PATCH", "/1.0/profiles/default",
                        {"devices": {"root": {"type": "disk", "path": "/", "pool": "second"}}}, status=400,
                        contains="root disk device pool")
    assert server.call("GET", "/1.0/profiles/default")["devices"]["root"]["pool"] == "default"


def test_rename_updates_instances(with_instance):
    server = with_instance
    server.call("POST", "/1.0/profiles/extra", {"name": "renamed"})
    instance = server.call("GET", "/1.0/instances/c1")
    assert instance["profiles"] == ["default", "renamed"]
    assert instance["expanded_config"]["user.extra"] == "1"
    assert server.call("GET", "/1.0/profiles/renamed")["used_by"] == ["/1.0/instances/c1"]
    server.call("DELETE", "/1.0/instances/c1")
    server.call("DELETE", "/1.0/profiles/renamed")
