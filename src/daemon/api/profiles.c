/* /1.0/profiles: per-project profiles. Instances (and their snapshots and images) name the profiles they use,
 * so a rename rewrites those names and a change is checked against every instance it reaches. */
#include "api.h"
#include "projects.h"

#include "error.h"
#include "events.h"
#include "instance_config.h"
#include "json.h"
#include "names.h"

#include <string.h>

/* "/1.0/<collection>/<name>" with "?project=<project>" outside the default project, as Incus builds URLs. */
static char *project_url(const char *collection, const char *name, const char *project)
{
    g_autofree char *escaped = g_uri_escape_string(name, NULL, FALSE);
    if (project == NULL || g_str_equal(project, "default"))
        return g_strdup_printf("/1.0/%s/%s", collection, escaped);
    g_autofree char *escaped_project = g_uri_escape_string(project, NULL, FALSE);
    return g_strdup_printf("/1.0/%s/%s?project=%s", collection, escaped, escaped_project);
}

static gboolean check_if_match(FerryRequest *request, json_t *etag_source, GError **error)
{
    if (request->msg == NULL)
        return TRUE;
    const char *wanted =
        soup_message_headers_get_one(soup_server_message_get_request_headers(request->msg), "If-Match");
    if (wanted == NULL || *wanted == '\0')
        return TRUE;
    g_autofree char *etag = ferry_response_etag_of(etag_source);
    if (!g_str_equal(wanted, etag)) {
        g_set_error(error, FERRY_ERROR, 412, "ETag doesn't match: %s vs %s", wanted, etag);
        return FALSE;
    }
    return TRUE;
}

static json_t *profile_used_by(FerryDaemon *daemon, const char *project, const char *name)
{
    json_t *used_by = json_array();
    g_autoptr(GPtrArray) instances = ferry_db_instances_using_profile(daemon->db, project, name);
    for (guint i = 0; i < instances->len; i++) {
        g_autofree char *url = project_url("instances", instances->pdata[i], project);
        json_array_append_new(used_by, json_string(url));
    }
    return used_by;
}

static json_t *profile_render(FerryDaemon *daemon, const char *project, const char *name, GError **error)
{
    g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_PROFILE, project, "", name, error);
    if (doc == NULL)
        return NULL;
    const char *description = ferry_json_get_string(doc, "description");
    return json_pack("{s:s, s:s, s:o, s:o, s:o, s:s}", "name", name, "description",
                     description != NULL ? description : "", "config",
                     ferry_json_object_or_empty(doc, "config"), "devices",
                     ferry_json_object_or_empty(doc, "devices"), "used_by",
                     profile_used_by(daemon, project, name), "project", project);
}

static json_t *profile_etag_source(json_t *profile)
{
    return json_pack("{s:O?, s:O?, s:O?}", "config", json_object_get(profile, "config"), "description",
                     json_object_get(profile, "description"), "devices", json_object_get(profile, "devices"));
}

/* description (string), config (string map), devices (map of string maps), when present. */
static gboolean check_body(json_t *body, GError **error)
{
    if (body == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid request: empty body");
        return FALSE;
    }
    json_t *description = json_object_get(body, "description");
    if (description != NULL && !json_is_string(description) && !json_is_null(description)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Field \"description\" must be a string");
        return FALSE;
    }
    if (!ferry_json_check_string_map(body, "config", error))
        return FALSE;
    json_t *devices = json_object_get(body, "devices");
    if (devices == NULL || json_is_null(devices))
        return TRUE;
    if (!json_is_object(devices)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Field \"devices\" must be an object");
        return FALSE;
    }
    const char *device_name;
    json_t *device;
    json_object_foreach(devices, device_name, device) {
        if (!json_is_object(device)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Device \"%s\" must be an object",
                        device_name);
            return FALSE;
        }
        const char *key;
        json_t *value;
        json_object_foreach(device, key, value) {
            if (!json_is_string(value)) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "Value of \"devices.%s.%s\" must be a string", device_name, key);
                return FALSE;
            }
        }
    }
    return TRUE;
}

static gboolean validate_profile_name(const char *name, GError **error)
{
    if (name == NULL || *name == '\0') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "No name provided");
        return FALSE;
    }
    return ferry_validate_entity_name("profile", name, error);
}

static gboolean validate_content(json_t *config, json_t *devices, GError **error)
{
    return ferry_config_validate(config, TRUE, FALSE, error) && ferry_devices_validate(devices, TRUE, error);
}

/* After a change to a profile (already written in the current transaction): every instance using it must
 * still expand to a valid configuration with a root disk on an existing pool. */
static gboolean check_instances(FerryDaemon *daemon, const char *project, const char *profile, GError **error)
{
    g_autoptr(GPtrArray) instances = ferry_db_instances_using_profile(daemon->db, project, profile);
    for (guint i = 0; i < instances->len; i++) {
        const char *instance = instances->pdata[i];
        g_autoptr(GError) local_error = NULL;
        g_autoptr(json_t) doc =
            ferry_db_get(daemon->db, FERRY_KIND_INSTANCE, project, "", instance, &local_error);
        g_autoptr(json_t) expanded_config = NULL;
        g_autoptr(json_t) expanded_devices = NULL;
        const char *root_name = NULL;
        json_t *root = NULL;
        gboolean ok = doc != NULL &&
                      ferry_config_expand(daemon->db, project, json_object_get(doc, "profiles"),
                                          json_object_get(doc, "config"), json_object_get(doc, "devices"),
                                          &expanded_config, &expanded_devices, &local_error) &&
                      ferry_config_validate(expanded_config, FALSE, TRUE, &local_error) &&
                      ferry_devices_validate(expanded_devices, FALSE, &local_error) &&
                      ferry_devices_find_root(expanded_devices, &root_name, &root, &local_error);
        if (ok) {
            /* The instance's volume stays where it is: the root disk cannot move pools under it. */
            const char *pool = ferry_json_get_string(root, "pool");
            const char *current_pool = ferry_json_get_string(doc, "pool");
            if (pool != NULL && !ferry_db_exists(daemon->db, FERRY_KIND_POOL, "", "", pool)) {
                g_set_error(&local_error, FERRY_ERROR, FERRY_ERROR_INVALID, "Storage pool \"%s\" not found",
                            pool);
                ok = FALSE;
            } else if (current_pool != NULL && g_strcmp0(pool, current_pool) != 0) {
                g_set_error(&local_error, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "Cannot update root disk device pool name to \"%s\"", pool != NULL ? pool : "");
                ok = FALSE;
            }
        }
        if (!ok) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid profile for instance \"%s\": %s",
                        instance, local_error != NULL ? local_error->message : "unknown error");
            return FALSE;
        }
    }
    return TRUE;
}

/* Replace (new_name) or drop (new_name NULL) name in a JSON array of strings; TRUE if it was there. */
static gboolean rewrite_name_list(json_t *list, const char *name, const char *new_name)
{
    gboolean changed = FALSE;
    for (size_t i = 0; json_is_array(list) && i < json_array_size(list);) {
        if (g_strcmp0(json_string_value(json_array_get(list, i)), name) != 0) {
            i++;
            continue;
        }
        changed = TRUE;
        if (new_name != NULL) {
            json_array_set_new(list, i, json_string(new_name));
            i++;
        } else {
            json_array_remove(list, i);
        }
    }
    return changed;
}

static gboolean rewrite_documents(FerryDb *db, FerryKind kind, const char *project, const char *parent,
                                  const char *name, const char *new_name, GError **error)
{
    g_autoptr(GPtrArray) names = ferry_db_list_names(db, kind, project, parent);
    for (guint i = 0; i < names->len; i++) {
        g_autoptr(json_t) doc = ferry_db_get(db, kind, project, parent, names->pdata[i], error);
        if (doc == NULL)
            return FALSE;
        if (rewrite_name_list(json_object_get(doc, "profiles"), name, new_name) &&
            !ferry_db_update(db, kind, project, parent, names->pdata[i], doc, error))
            return FALSE;
    }
    return TRUE;
}

/* Instances, their snapshots and images list profiles by name. */
static gboolean rewrite_profile_references(FerryDb *db, const char *project, const char *name,
                                           const char *new_name, GError **error)
{
    if (!rewrite_documents(db, FERRY_KIND_INSTANCE, project, "", name, new_name, error) ||
        !rewrite_documents(db, FERRY_KIND_IMAGE, project, "", name, new_name, error))
        return FALSE;
    g_autoptr(GPtrArray) instances = ferry_db_list_names(db, FERRY_KIND_INSTANCE, project, "");
    for (guint i = 0; i < instances->len; i++) {
        if (!rewrite_documents(db, FERRY_KIND_SNAPSHOT, project, instances->pdata[i], name, new_name, error))
            return FALSE;
    }
    return TRUE;
}

/* --- handlers --- */

FerryResponse *api_profiles_get(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, request->project, &error))
        return ferry_response_error(error);
    gboolean recursive = ferry_request_recursion(request) > 0;
    g_autoptr(GPtrArray) names = ferry_db_list_names(daemon->db, FERRY_KIND_PROFILE, request->project, "");
    json_t *result = json_array();
    for (guint i = 0; i < names->len; i++) {
        if (!recursive) {
            g_autofree char *url = project_url("profiles", names->pdata[i], request->project);
            json_array_append_new(result, json_string(url));
            continue;
        }
        json_t *profile = profile_render(daemon, request->project, names->pdata[i], NULL);
        if (profile != NULL)
            json_array_append_new(result, profile);
    }
    return ferry_response_sync(result);
}

FerryResponse *api_profiles_post(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *project = request->project;
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, project, &error) || !check_body(request->body, &error))
        return ferry_response_error(error);
    json_t *name_value = json_object_get(request->body, "name");
    if (name_value != NULL && !json_is_string(name_value))
        return ferry_response_error_new(400, "Field \"name\" must be a string");
    const char *name = json_string_value(name_value);
    if (!validate_profile_name(name, &error))
        return ferry_response_error(error);

    g_autoptr(json_t) config = ferry_json_object_or_empty(request->body, "config");
    g_autoptr(json_t) devices = ferry_json_object_or_empty(request->body, "devices");
    if (!validate_content(config, devices, &error))
        return ferry_response_error(error);
    const char *description = ferry_json_get_string(request->body, "description");
    g_autoptr(json_t) doc =
        json_pack("{s:s, s:O, s:O}", "description", description != NULL ? description : "", "config", config,
                  "devices", devices);
    if (!ferry_db_create(daemon->db, FERRY_KIND_PROFILE, project, "", name, doc, &error))
        return ferry_response_error(error);

    g_autofree char *location = project_url("profiles", name, project);
    ferry_events_lifecycle(daemon->events, project, "profile-created", location);
    return ferry_response_created(NULL, location);
}

FerryResponse *api_profile_get(FerryRequest *request)
{
    GError *error = NULL;
    if (!ferry_project_check_exists(request->daemon, request->project, &error))
        return ferry_response_error(error);
    json_t *profile =
        profile_render(request->daemon, request->project, ferry_request_param(request, "name"), &error);
    if (profile == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) etag_source = profile_etag_source(profile);
    g_autofree char *etag = ferry_response_etag_of(etag_source);
    FerryResponse *response = ferry_response_sync(profile);
    ferry_response_set_etag(response, etag);
    return response;
}

/* PATCH merges config keys and whole devices into the current ones; PUT replaces. */
static FerryResponse *profile_update(FerryRequest *request, gboolean patch)
{
    FerryDaemon *daemon = request->daemon;
    const char *project = request->project;
    const char *name = ferry_request_param(request, "name");
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, project, &error))
        return ferry_response_error(error);
    g_autoptr(json_t) current = profile_render(daemon, project, name, &error);
    if (current == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) etag_source = profile_etag_source(current);
    if (!check_if_match(request, etag_source, &error) || !check_body(request->body, &error))
        return ferry_response_error(error);

    json_t *requested_config = json_object_get(request->body, "config");
    json_t *requested_devices = json_object_get(request->body, "devices");
    g_autoptr(json_t) config = NULL;
    g_autoptr(json_t) devices = NULL;
    if (patch) {
        config = json_deep_copy(json_object_get(current, "config"));
        devices = json_deep_copy(json_object_get(current, "devices"));
        if (json_is_object(requested_config))
            json_object_update(config, requested_config);
        if (json_is_object(requested_devices))
            json_object_update(devices, requested_devices);
    } else {
        config = json_is_object(requested_config) ? json_deep_copy(requested_config) : json_object();
        devices = json_is_object(requested_devices) ? json_deep_copy(requested_devices) : json_object();
    }
    const char *description = ferry_json_get_string(request->body, "description");
    if (description == NULL && patch)
        description = ferry_json_get_string(current, "description");
    if (!validate_content(config, devices, &error))
        return ferry_response_error(error);

    g_autoptr(json_t) doc =
        json_pack("{s:s, s:O, s:O}", "description", description != NULL ? description : "", "config", config,
                  "devices", devices);
    ferry_db_begin(daemon->db);
    if (!ferry_db_update(daemon->db, FERRY_KIND_PROFILE, project, "", name, doc, &error) ||
        !check_instances(daemon, project, name, &error)) {
        ferry_db_rollback(daemon->db);
        return ferry_response_error(error);
    }
    if (!ferry_db_commit(daemon->db, &error))
        return ferry_response_error(error);

    g_autofree char *source = project_url("profiles", name, project);
    ferry_events_lifecycle(daemon->events, project, "profile-updated", source);
    return ferry_response_sync(NULL);
}

FerryResponse *api_profile_put(FerryRequest *request)
{
    return profile_update(request, FALSE);
}

FerryResponse *api_profile_patch(FerryRequest *request)
{
    return profile_update(request, TRUE);
}

FerryResponse *api_profile_post(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *project = request->project;
    const char *name = ferry_request_param(request, "name");
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, project, &error))
        return ferry_response_error(error);
    if (g_str_equal(name, "default"))
        return ferry_response_error_new(403, "The \"default\" profile cannot be renamed");
    if (request->body == NULL)
        return ferry_response_error_new(400, "Invalid request: empty body");
    json_t *new_name_value = json_object_get(request->body, "name");
    if (new_name_value != NULL && !json_is_string(new_name_value))
        return ferry_response_error_new(400, "Field \"name\" must be a string");
    const char *new_name = json_string_value(new_name_value);
    if (!validate_profile_name(new_name, &error))
        return ferry_response_error(error);

    ferry_db_begin(daemon->db);
    if (!ferry_db_exists(daemon->db, FERRY_KIND_PROFILE, project, "", name)) {
        ferry_db_rollback(daemon->db);
        return ferry_response_error_new(404, "Profile \"%s\" not found", name);
    }
    if (ferry_db_exists(daemon->db, FERRY_KIND_PROFILE, project, "", new_name)) {
        ferry_db_rollback(daemon->db);
        return ferry_response_error_new(409, "Profile \"%s\" already exists", new_name);
    }
    if (!ferry_db_rename(daemon->db, FERRY_KIND_PROFILE, project, "", name, new_name, &error) ||
        !rewrite_profile_references(daemon->db, project, name, new_name, &error)) {
        ferry_db_rollback(daemon->db);
        return ferry_response_error(error);
    }
    if (!ferry_db_commit(daemon->db, &error))
        return ferry_response_error(error);

    g_autofree char *location = project_url("profiles", new_name, project);
    ferry_events_lifecycle(daemon->events, project, "profile-renamed", location);
    return ferry_response_created(NULL, location);
}

FerryResponse *api_profile_delete(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *project = request->project;
    const char *name = ferry_request_param(request, "name");
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, project, &error))
        return ferry_response_error(error);
    if (g_str_equal(name, "default"))
        return ferry_response_error_new(403, "The \"default\" profile cannot be deleted");

    ferry_db_begin(daemon->db);
    if (!ferry_db_exists(daemon->db, FERRY_KIND_PROFILE, project, "", name)) {
        ferry_db_rollback(daemon->db);
        return ferry_response_error_new(404, "Profile \"%s\" not found", name);
    }
    g_autoptr(GPtrArray) users = ferry_db_instances_using_profile(daemon->db, project, name);
    if (users->len > 0) {
        ferry_db_rollback(daemon->db);
        return ferry_response_error_new(409, "Profile is currently in use");
    }
    if (!ferry_db_delete(daemon->db, FERRY_KIND_PROFILE, project, "", name, &error) ||
        !rewrite_documents(daemon->db, FERRY_KIND_IMAGE, project, "", name, NULL, &error)) {
        ferry_db_rollback(daemon->db);
        return ferry_response_error(error);
    }
    if (!ferry_db_commit(daemon->db, &error))
        return ferry_response_error(error);

    g_autofree char *source = project_url("profiles", name, project);
    ferry_events_lifecycle(daemon->events, project, "profile-deleted", source);
    return ferry_response_sync(NULL);
}
