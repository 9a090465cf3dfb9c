"""/1.0/projects: create, show, update, rename and delete projects, and every way to get them wrong."""
import json

import pytest

from conftest import UnixHTTPConnection


def projects(server):
    return sorted(p["name"] for p in server.call("GET", "/1.0/projects?recursion=1"))


def get_with_headers(server, path):
    conn = UnixHTTPConnection(server.socket_path)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = json.loads(resp.read())
    headers = dict(resp.getheaders())
    conn.close()
    return resp.status, headers, body


def test_default_project_exists(server):
    assert server.call("GET", "/1.0/projects") == ["/1.0/projects/default"]
    default = server.call("GET", "/1.0/projects/default")
    assert default["name"] == "default"
    assert default["config"]["features.profiles"] == "true"
    assert "/1.0/profiles/default" in default["used_by"]


def test_create_project_with_own_default_profile(server):
    status, envelope = server.api("POST", "/1.0/projects",
                                  {"name": "p1", "description": "first", "config": {"user.team": "blue"}})
    assert status == 201, envelope
    project = server.call("GET", "/1.0/projects/p1")
    assert project["description"] == "first"
    assert project["config"]["user.team"] == "blue"
    # Incus's defaults for a new project.
    for feature in ("features.images", "features.profiles", "features.storage.volumes"):
        assert project["config"][feature] == "true"
    assert project["used_by"] == ["/1.0/profiles/default?project=p1"]
    assert server.call("GET", "/1.0/profiles?project=p1") == ["/1.0/profiles/default?project=p1"]
    profile = server.call("GET", "/1.0/profiles/default?project=p1")
    assert profile["devices"] == {} and profile["project"] == "p1"
    assert projects(server) == ["default", "p1"]
    assert sorted(server.call("GET", "/1.0/projects")) == ["/1.0/projects/default", "/1.0/projects/p1"]


def test_create_with_explicit_features_and_limits(server):
    server.call("POST", "/1.0/projects", {"name": "p2", "config": {
        "features.images": "false", "limits.instances": "5", "limits.memory": "1GiB",
        "limits.disk.pool.default": "10GiB", "restricted": "true"}})
    config = server.call("GET", "/1.0/projects/p2")["config"]
    assert config["features.images"] == "false"
    assert config["limits.instances"] == "5"
    assert config["features.profiles"] == "true"


@pytest.mark.parametrize("body,status,message", [
    ({"name": ""}, 400, "No name provided"),
    ({}, 400, "No name provided"),
    ({"name": "with_underscore"}, 400, "underscores"),
    ({"name": "a/b"}, 400, "Invalid project name"),
    ({"name": "has space"}, 400, "Invalid project name"),
    ({"name": ".."}, 400, "Invalid project name"),
    ({"name": 7}, 400, "must be a string"),
    ({"name": "p", "config": {"bogus.key": "1"}}, 400, 'Invalid project configuration key "bogus.key"'),
    ({"name": "p", "config": {"features.images": "maybe"}}, 400, "features.images"),
    ({"name": "p", "config": {"restricted": "sometimes"}}, 400, "restricted"),
    ({"name": "p", "config": {"limits.instances": "many"}}, 400, "limits.instances"),
    ({"name": "p", "config": {"limits.instances": "-1"}}, 400, "limits.instances"),
    ({"name": "p", "config": {"limits.memory": "lots"}}, 400, "limits.memory"),
    ({"name": "p", "config": {"limits.": "1"}}, 400, "Invalid project configuration key"),
    ({"name": "p", "config": {"user.x": 5}}, 400, "must be a string"),
    ({"name": "p", "config": []}, 400, "must be an object"),
    ({"name": "p", "description": 3}, 400, "description"),
])
def test_create_rejects_bad_input(server, body, status, message):
    before = server.call("GET", "/1.0/projects?recursion=1")
    server.expect_error("POST", "/1.0/projects", body, status=status, contains=message)
    assert server.call("GET", "/1.0/projects?recursion=1") == before
    # No profile left behind for a project that was refused.
    server.expect_error("GET", "/1.0/profiles?project=p", status=404)


def test_create_existing_name_conflicts(server):
    server.call("POST", "/1.0/projects", {"name": "p1", "description": "original"})
    server.expect_error("POST", "/1.0/projects", {"name": "p1", "description": "second"}, status=409,
                        contains="already exists")
    server.expect_error("POST", "/1.0/projects", {"name": "default"}, status=409, contains="already exists")
    assert server.call("GET", "/1.0/projects/p1")["description"] == "original"


def test_empty_body_is_rejected(server):
    status, envelope = server.api("POST", "/1.0/projects")
    assert status == 400, envelope


def test_get_unknown_project(server):
    server.expect_error("GET", "/1.0/projects/nope", status=404, contains='Project "nope" not found')


def test_other_resources_check_the_project(server):
    for path in ("/1.0/profiles", "/1.0/images", "/1.0/images/aliases", "/1.0/profiles/default"):
        server.expect_error("GET", f"{path}?project=nope", status=404, contains='Project "nope" not found')
    server.expect_error("POST", "/1.0/profiles?project=nope", {"name": "x"}, status=404)


def test_patch_merges_and_put_replaces(server):
    server.call("POST", "/1.0/projects", {"name": "p1", "config": {"user.a": "1", "user.b": "2"}})
    server.call("PATCH", "/1.0/projects/p1", {"config": {"user.b": "3", "user.c": "4"}})
    project = server.call("GET", "/1.0/projects/p1")
    assert project["config"]["user.a"] == "1"
    assert project["config"]["user.b"] == "3"
    assert project["config"]["user.c"] == "4"
    assert project["description"] == ""
    server.call("PATCH", "/1.0/projects/p1", {"description": "patched"})
    assert server.call("GET", "/1.0/projects/p1")["description"] == "patched"

    config = dict(project["config"])
    del config["user.a"]
    server.call("PUT", "/1.0/projects/p1", {"description": "put", "config": config})
    project = server.call("GET", "/1.0/projects/p1")
    assert "user.a" not in project["config"]
    assert project["description"] == "put"


def test_update_rejects_bad_config_and_changes_nothing(server):
    server.call("POST", "/1.0/projects", {"name": "p1", "config": {"user.a": "1"}})
    before = server.call("GET", "/1.0/projects/p1")
    server.expect_error("PATCH", "/1.0/projects/p1", {"config": {"nope": "1"}}, status=400)
    server.expect_error("PUT", "/1.0/projects/p1", {"config": {"limits.cpu": "x"}}, status=400)
    server.expect_error("PATCH", "/1.0/projects/p1", {"config": {"user.a": 1}}, status=400)
    server.expect_error("PATCH", "/1.0/projects/nope", {"config": {}}, status=404)
    assert server.call("GET", "/1.0/projects/p1") == before


def test_etag(server):
    server.call("POST", "/1.0/projects", {"name": "p1"})
    status, headers, _ = get_with_headers(server, "/1.0/projects/p1")
    etag = headers.get("ETag")
    assert status == 200 and etag
    code, envelope = server.api("PATCH", "/1.0/projects/p1", {"description": "x"}, headers={"If-Match": "bogus"})
    assert code == 412, envelope
    assert server.call("GET", "/1.0/projects/p1")["description"] == ""
    code, envelope = server.api("PATCH", "/1.0/projects/p1", {"description": "y"}, headers={"If-Match": etag})
    assert code == 200, envelope
    assert server.call("GET", "/1.0/projects/p1")["description"] == "y"


def test_features_of_default_project_are_fixed(server):
    config = server.call("GET", "/1.0/projects/default")["config"]
    server.expect_error("PATCH", "/1.0/projects/default", {"config": {"features.images": "false"}}, status=400,
                        contains="features of the default project")
    # Other keys can change.
    server.call("PATCH", "/1.0/projects/default", {"config": {"user.note": "hi"}})
    assert server.call("GET", "/1.0/projects/default")["config"] == dict(config, **{"user.note": "hi"})


def test_features_change_only_on_empty_projects(server):
    server.call("POST", "/1.0/projects", {"name": "p1"})
    server.call("PATCH", "/1.0/projects/p1", {"config": {"features.images": "false"}})
    assert server.call("GET", "/1.0/projects/p1")["config"]["features.images"] == "false"
    server.call("POST", "/1.0/profiles?project=p1", {"name": "extra"})
    server.expect_error("PATCH", "/1.0/projects/p1", {"config": {"features.images": "true"}}, status=400,
                        contains="non-empty")
    assert server.call("GET", "/1.0/projects/p1")["config"]["features.images"] == "false"


def test_rename(server):
    server.call("POST", "/1.0/projects", {"name": "p1", "config": {"user.a": "1"}})
    status, envelope = server.api("POST", "/1.0/projects/p1", {"name": "p2"})
    assert status == 202 and envelope["type"] == "async", envelope
    op = server.wait(envelope)
    assert op["status"] == "Success", op
    assert projects(server) == ["default", "p2"]
    assert server.call("GET", "/1.0/projects/p2")["config"]["user.a"] == "1"
    assert server.call("GET", "/1.0/profiles?project=p2") == ["/1.0/profiles/default?project=p2"]
    server.expect_error("GET", "/1.0/profiles?project=p1", status=404)


def test_rename_refusals(server):
    server.call("POST", "/1.0/projects", {"name": "p1"})
    server.call("POST", "/1.0/projects", {"name": "p2"})
    server.expect_error("POST", "/1.0/projects/default", {"name": "other"}, status=403, contains="default")
    server.expect_error("POST", "/1.0/projects/p1", {"name": "p2"}, status=409, contains="already exists")
    server.expect_error("POST", "/1.0/projects/nope", {"name": "p3"}, status=404)
    server.expect_error("POST", "/1.0/projects/p1", {"name": "bad_name"}, status=400)
    server.expect_error("POST", "/1.0/projects/p1", {"name": ""}, status=400)
    server.expect_error("POST", "/1.0/projects/p1", {}, status=400)
    server.call("POST", "/1.0/profiles?project=p1", {"name": "extra"})
    server.expect_error("POST", "/1.0/projects/p1", {"name": "p3"}, status=409, contains="Only empty projects")
    assert projects(server) == ["default", "p1", "p2"]
    assert sorted(server.call("GET", "/1.0/profiles?project=p1")) == [
        "/1.0/profiles/default?project=p1", "/1.0/profiles/extra?project=p1"]


def test_delete(server):
    server.call("POST", "/1.0/projects", {"name": "p1"})
    server.call("DELETE", "/1.0/projects/p1")
    assert projects(server) == ["default"]
    server.expect_error("GET", "/1.0/profiles?project=p1", status=404)
    # The name is free again, with a fresh default profile.
    server.call("POST", "/1.0/projects", {"name": "p1"})
    assert server.call("GET", "/1.0/profiles?project=p1") == ["/1.0/profiles/default?project=p1"]


def test_delete_refusals(server):
    server.expect_error("DELETE", "/1.0/projects/default", status=403, contains="cannot be deleted")
    server.expect_error("DELETE", "/1.0/projects/nope", status=404, contains='Project "nope" not found')
    server.call("POST", "/1.0/projects", {"name": "p1"})
    server.call("POST", "/1.0/profiles?project=p1", {"name": "extra"})
    server.expect_error("DELETE", "/1.0/projects/p1", status=409, contains="Only empty projects can be removed")
    assert projects(server) == ["default", "p1"]
    assert len(server.call("GET", "/1.0/profiles?project=p1")) == 2
    server.call("DELETE", "/1.0/profiles/extra?project=p1")
    server.call("DELETE", "/1.0/projects/p1")
    assert projects(server) == ["default"]


def test_project_with_image_is_not_empty(server, busybox_image):
    server.call("POST", "/1.0/projects", {"name": "p1"})
    with open(busybox_image, "rb") as f:
        meta = server.call("POST", "/1.0/images?project=p1", raw=f.read())
    project = server.call("GET", "/1.0/projects/p1")
    assert f"/1.0/images/{meta['fingerprint']}?project=p1" in project["used_by"]
    server.expect_error("DELETE", "/1.0/projects/p1", status=409, contains="Only empty projects")
    server.call("DELETE", f"/1.0/images/{meta['fingerprint']}?project=p1")
    server.call("DELETE", "/1.0/projects/p1")


def test_project_with_instance_is_not_empty(ready_server, busybox_image):
    server = ready_server
    server.call("POST", "/1.0/projects", {"name": "p1"})
    server.call("PATCH", "/1.0/profiles/default?project=p1",
                {"devices": {"root": {"type": "disk", "path": "/", "pool": "default"}}})
    with open(busybox_image, "rb") as f:
        fingerprint = server.call("POST", "/1.0/images?project=p1", raw=f.read())["fingerprint"]
    server.call("POST", "/1.0/instances?project=p1",
                {"name": "c1", "source": {"type": "image", "fingerprint": fingerprint}})
    assert "/1.0/instances/c1?project=p1" in server.call("GET", "/1.0/projects/p1")["used_by"]
    server.expect_error("DELETE", "/1.0/projects/p1", status=409, contains="Only empty projects")
    server.expect_error("POST", "/1.0/projects/p1", {"name": "p2"}, status=409, contains="Only empty projects")
    server.call("DELETE", "/1.0/instances/c1?project=p1")
    server.call("DELETE", f"/1.0/images/{fingerprint}?project=p1")
    server.call("DELETE", "/1.0/projects/p1")
