/* /1.0/instances/{name}/snapshots: list, create, show, rename, delete. Restore is PUT on the instance. */
#include "api.h"
#include "instance_action.h"

#include "error.h"
#include "instances.h"
#include "json.h"
#include "names.h"
#include "migration/migration.h"

FerryResponse *api_snapshots_get(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *name = ferry_request_param(request, "name");
    if (!ferry_db_exists(daemon->db, FERRY_KIND_INSTANCE, request->project, "", name))
        return ferry_response_error_new(404, "Instance \"%s\" not found", name);
    g_autoptr(GPtrArray) names = ferry_db_list_names(daemon->db, FERRY_KIND_SNAPSHOT, request->project, name);
    json_t *list = json_array();
    for (guint i = 0; i < names->len; i++) {
        if (ferry_request_recursion(request) > 0) {
            json_t *snapshot = ferry_snapshot_render(daemon, request->project, name, names->pdata[i], NULL);
            if (snapshot != NULL)
                json_array_append_new(list, snapshot);
        } else {
            json_array_append_new(list, json_sprintf("/1.0/instances/%s/snapshots/%s", name, (char *)names->pdata[i]));
        }
    }
    return ferry_response_sync(list);
}

static gboolean do_create(FerryDaemon *daemon, const char *project, const char *name, json_t *args, GError **error)
{
    return ferry_snapshot_create(daemon, project, name, ferry_json_get_string(args, "name"), error);
}

FerryResponse *api_snapshots_post(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *name = ferry_request_param(request, "name");
    GError *error = NULL;
    if (!ferry_db_exists(daemon->db, FERRY_KIND_INSTANCE, request->project, "", name))
        return ferry_response_error_new(404, "Instance \"%s\" not found", name);
    if (request->body != NULL && ferry_json_get_bool(request->body, "stateful", FALSE))
        return ferry_response_error_new(501, "Stateful snapshots are not supported yet");
    g_autoptr(json_t) args = request->body != NULL ? json_deep_copy(request->body) : json_object();
    const char *snapshot = ferry_json_get_string(args, "name");
    if (snapshot == NULL || *snapshot == '\0') {
        g_autofree char *generated = ferry_snapshot_next_name(daemon, request->project, name);
        json_object_set_new(args, "name", json_string(generated));
        snapshot = ferry_json_get_string(args, "name");
    }
    if (!ferry_validate_snapshot_name(snapshot, &error))
        return ferry_response_error(error);
    if (ferry_db_exists(daemon->db, FERRY_KIND_SNAPSHOT, request->project, name, snapshot))
        return ferry_response_error_new(409, "Snapshot \"%s\" already exists", snapshot);
    return ferry_api_instance_action(request, "Snapshotting instance", "snapshot", do_create,
                                     json_incref(args));
}

FerryResponse *api_snapshot_get(FerryRequest *request)
{
    GError *error = NULL;
    json_t *snapshot = ferry_snapshot_render(request->daemon, request->project, ferry_request_param(request, "name"),
                                             ferry_request_param(request, "snapshot"), &error);
    return snapshot != NULL ? ferry_response_sync(snapshot) : ferry_response_error(error);
}

FerryResponse *api_snapshot_put(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *name = ferry_request_param(request, "name");
    const char *snapshot = ferry_request_param(request, "snapshot");
    GError *error = NULL;
    g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_SNAPSHOT, request->project, name, snapshot, &error);
    if (doc == NULL)
        return ferry_response_error(error);
    /* Only the description and expiry of a snapshot can change. */
    const char *description = request->body != NULL ? ferry_json_get_string(request->body, "description") : NULL;
    if (description != NULL)
        json_object_set_new(doc, "description", json_string(description));
    const char *expires = request->body != NULL ? ferry_json_get_string(request->body, "expires_at") : NULL;
    if (expires != NULL)
        json_object_set_new(doc, "expires_at", json_string(expires));
    if (!ferry_db_update(daemon->db, FERRY_KIND_SNAPSHOT, request->project, name, snapshot, doc, &error))
        return ferry_response_error(error);
    return ferry_response_sync(NULL);
}

static gboolean do_rename(FerryDaemon *daemon, const char *project, const char *name, json_t *args, GError **error)
{
    return ferry_snapshot_rename(daemon, project, name, ferry_json_get_string(args, "snapshot"),
                                 ferry_json_get_string(args, "name"), error);
}

FerryResponse *api_snapshot_post(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *name = ferry_request_param(request, "name");
    const char *snapshot = ferry_request_param(request, "snapshot");
    GError *error = NULL;
    if (request->body == NULL)
        return ferry_response_error_new(400, "Missing request body");
    if (ferry_json_get_bool(request->body, "migration", FALSE)) {
        const char *target_name = ferry_json_get_string(request->body, "name");
        if (target_name == NULL || *target_name == '\0')
            return ferry_response_error_new(400, "A new name for the instance must be provided");
        return ferry_migration_source_start(request, snapshot);
    }
    const char *new_name = ferry_json_get_string(request->body, "name");
    if (!ferry_db_exists(daemon->db, FERRY_KIND_SNAPSHOT, request->project, name, snapshot))
        return ferry_response_error_new(404, "Snapshot \"%s/%s\" not found", name, snapshot);
    if (new_name == NULL || !ferry_validate_snapshot_name(new_name, &error))
        return error != NULL ? ferry_response_error(error) : ferry_response_error_new(400, "Missing new name");
    if (ferry_db_exists(daemon->db, FERRY_KIND_SNAPSHOT, request->project, name, new_name))
        return ferry_response_error_new(409, "Name \"%s\" already in use", new_name);
    json_t *args = json_pack("{s:s, s:s}", "snapshot", snapshot, "name", new_name);
    return ferry_api_instance_action(request, "Renaming snapshot", "rename-snapshot", do_rename, args);
}

static gboolean do_delete(FerryDaemon *daemon, const char *project, const char *name, json_t *args, GError **error)
{
    return ferry_snapshot_delete(daemon, project, name, ferry_json_get_string(args, "snapshot"), error);
}

FerryResponse *api_snapshot_delete(FerryRequest *request)
{
    const char *name = ferry_request_param(request, "name");
    const char *snapshot = ferry_request_param(request, "snapshot");
    if (!ferry_db_exists(request->daemon->db, FERRY_KIND_SNAPSHOT, request->project, name, snapshot))
        return ferry_response_error_new(404, "Snapshot \"%s/%s\" not found", name, snapshot);
    return ferry_api_instance_action(request, "Deleting snapshot", "delete-snapshot", do_delete,
                                     json_pack("{s:s}", "snapshot", snapshot));
}
