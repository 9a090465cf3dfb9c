/* /1.0/projects: Incus projects. ferry keeps profiles, images and instances per project (every project has
 * its own "default" profile whatever its features say), so a project's features are recorded for clients but
 * do not change where things live. */
#include "api.h"
#include "projects.h"

#include "error.h"
#include "events.h"
#include "json.h"
#include "names.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Features a new project gets unless the request says otherwise (as Incus's defaults). */
static const char *const default_features[] = {"features.images", "features.profiles",
                                               "features.storage.volumes", NULL};
static const char *const feature_keys[] = {"features.images", "features.profiles", "features.storage.volumes",
                                           "features.networks", NULL};

gboolean ferry_project_check_exists(FerryDaemon *daemon, const char *project, GError **error)
{
    if (project != NULL && ferry_db_exists(daemon->db, FERRY_KIND_PROJECT, "", "", project))
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Project \"%s\" not found",
                project != NULL ? project : "");
    return FALSE;
}

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

static void append_urls(json_t *used_by, FerryDaemon *daemon, FerryKind kind, const char *collection,
                        const char *project)
{
    g_autoptr(GPtrArray) names = ferry_db_list_names(daemon->db, kind, project, "");
    for (guint i = 0; i < names->len; i++) {
        g_autofree char *url = project_url(collection, names->pdata[i], project);
        json_array_append_new(used_by, json_string(url));
    }
}

static json_t *project_used_by(FerryDaemon *daemon, const char *project)
{
    json_t *used_by = json_array();
    append_urls(used_by, daemon, FERRY_KIND_INSTANCE, "instances", project);
    append_urls(used_by, daemon, FERRY_KIND_IMAGE, "images", project);
    append_urls(used_by, daemon, FERRY_KIND_PROFILE, "profiles", project);
    return used_by;
}

/* Empty as Incus counts it: nothing in the project but its default profile. */
static gboolean project_is_empty(FerryDaemon *daemon, const char *project)
{
    static const FerryKind kinds[] = {FERRY_KIND_INSTANCE, FERRY_KIND_IMAGE, FERRY_KIND_VOLUME};
    for (gsize i = 0; i < G_N_ELEMENTS(kinds); i++) {
        g_autoptr(GPtrArray) names = ferry_db_list_names(daemon->db, kinds[i], project, "");
        if (names->len > 0)
            return FALSE;
    }
    g_autoptr(GPtrArray) profiles = ferry_db_list_names(daemon->db, FERRY_KIND_PROFILE, project, "");
    for (guint i = 0; i < profiles->len; i++) {
        if (!g_str_equal(profiles->pdata[i], "default"))
            return FALSE;
    }
    return TRUE;
}

static json_t *project_render(FerryDaemon *daemon, const char *name, GError **error)
{
    g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_PROJECT, "", "", name, error);
    if (doc == NULL)
        return NULL;
    const char *description = ferry_json_get_string(doc, "description");
    return json_pack("{s:s, s:s, s:o, s:o}", "name", name, "description",
                     description != NULL ? description : "", "config",
                     ferry_json_object_or_empty(doc, "config"), "used_by", project_used_by(daemon, name));
}

static json_t *project_etag_source(json_t *project)
{
    return json_pack("{s:O?, s:O?}", "description", json_object_get(project, "description"), "config",
                     json_object_get(project, "config"));
}

/* --- config validation --- */

static gboolean value_is_bool(const char *value)
{
    static const char *const spellings[] = {"true", "false", "1", "0", "yes", "no", "on", "off"};
    if (*value == '\0')
        return TRUE;
    for (gsize i = 0; i < G_N_ELEMENTS(spellings); i++) {
        if (g_ascii_strcasecmp(value, spellings[i]) == 0)
            return TRUE;
    }
    return FALSE;
}

static gboolean value_is_true(const char *value)
{
    static const char *const spellings[] = {"true", "1", "yes", "on"};
    for (gsize i = 0; value != NULL && i < G_N_ELEMENTS(spellings); i++) {
        if (g_ascii_strcasecmp(value, spellings[i]) == 0)
            return TRUE;
    }
    return FALSE;
}

static gboolean value_is_integer(const char *value)
{
    if (*value == '\0')
        return TRUE;
    char *end = NULL;
    errno = 0;
    long long number = strtoll(value, &end, 10);
    return errno == 0 && end != value && *end == '\0' && number >= 0;
}

static gboolean limit_takes_size(const char *key)
{
    return g_str_equal(key, "limits.memory") || g_str_equal(key, "limits.disk") ||
           g_str_has_prefix(key, "limits.disk.pool.");
}

static gboolean validate_config_entry(const char *key, const char *value, GError **error)
{
    if (g_str_has_prefix(key, "user."))
        return TRUE;
    const char *problem = NULL;
    if (g_strv_contains(feature_keys, key) || g_str_equal(key, "restricted")) {
        if (!value_is_bool(value))
            problem = "Invalid value for a boolean";
    } else if (g_str_has_prefix(key, "limits.") && key[strlen("limits.")] != '\0') {
        gint64 bytes = 0;
        if (limit_takes_size(key)) {
            if (*value != '\0' && !ferry_parse_size(value, &bytes))
                problem = "Invalid value for a size";
        } else if (!value_is_integer(value)) {
            problem = "Invalid value for an integer";
        }
    } else {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid project configuration key \"%s\"", key);
        return FALSE;
    }
    if (problem != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid project configuration key \"%s\" value: %s \"%s\"", key, problem, value);
        return FALSE;
    }
    return TRUE;
}

static gboolean validate_config(json_t *config, GError **error)
{
    const char *key;
    json_t *value;
    json_object_foreach(config, key, value) {
        if (!validate_config_entry(key, json_string_value(value), error))
            return FALSE;
    }
    return TRUE;
}

/* Projects names become part of volume names ("<project>_<instance>"), hence Incus's extra rules. */
static gboolean validate_project_name(const char *name, GError **error)
{
    if (name == NULL || *name == '\0') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "No name provided");
        return FALSE;
    }
    if (strchr(name, '_') != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Project names may not contain underscores");
        return FALSE;
    }
    if (g_str_equal(name, "*")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Reserved project name \"%s\"", name);
        return FALSE;
    }
    return ferry_validate_entity_name("project", name, error);
}

/* The writable fields of a request body: description (string) and config (string map). */
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
    return ferry_json_check_string_map(body, "config", error);
}

/* --- handlers --- */

FerryResponse *api_projects_get(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    gboolean recursive = ferry_request_recursion(request) > 0;
    g_autoptr(GPtrArray) names = ferry_db_list_names(daemon->db, FERRY_KIND_PROJECT, "", "");
    json_t *result = json_array();
    for (guint i = 0; i < names->len; i++) {
        const char *name = names->pdata[i];
        if (!recursive) {
            g_autofree char *escaped = g_uri_escape_string(name, NULL, FALSE);
            g_autofree char *url = g_strdup_printf("/1.0/projects/%s", escaped);
            json_array_append_new(result, json_string(url));
            continue;
        }
        json_t *project = project_render(daemon, name, NULL);
        if (project != NULL)
            json_array_append_new(result, project);
    }
    return ferry_response_sync(result);
}

FerryResponse *api_projects_post(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    if (!check_body(request->body, &error))
        return ferry_response_error(error);
    json_t *name_value = json_object_get(request->body, "name");
    const char *name = json_string_value(name_value);
    if (name_value != NULL && !json_is_string(name_value))
        return ferry_response_error_new(400, "Field \"name\" must be a string");
    if (!validate_project_name(name, &error))
        return ferry_response_error(error);

    g_autoptr(json_t) config = ferry_json_object_or_empty(request->body, "config");
    for (gsize i = 0; default_features[i] != NULL; i++) {
        if (json_object_get(config, default_features[i]) == NULL)
            json_object_set_new(config, default_features[i], json_string("true"));
    }
    if (!validate_config(config, &error))
        return ferry_response_error(error);

    const char *description = ferry_json_get_string(request->body, "description");
    g_autoptr(json_t) doc =
        json_pack("{s:s, s:O}", "description", description != NULL ? description : "", "config", config);
    g_autofree char *profile_description = g_strdup_printf("Default ferry profile for project %s", name);
    g_autoptr(json_t) profile =
        json_pack("{s:s, s:{}, s:{}}", "description", profile_description, "config", "devices");

    ferry_db_begin(daemon->db);
    if (!ferry_db_create(daemon->db, FERRY_KIND_PROJECT, "", "", name, doc, &error) ||
        !ferry_db_create(daemon->db, FERRY_KIND_PROFILE, name, "", "default", profile, &error)) {
        ferry_db_rollback(daemon->db);
        return ferry_response_error(error);
    }
    if (!ferry_db_commit(daemon->db, &error))
        return ferry_response_error(error);

    g_autofree char *escaped = g_uri_escape_string(name, NULL, FALSE);
    g_autofree char *location = g_strdup_printf("/1.0/projects/%s", escaped);
    ferry_events_lifecycle(daemon->events, name, "project-created", location);
    return ferry_response_created(NULL, location);
}

FerryResponse *api_project_get(FerryRequest *request)
{
    GError *error = NULL;
    json_t *project = project_render(request->daemon, ferry_request_param(request, "name"), &error);
    if (project == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) etag_source = project_etag_source(project);
    g_autofree char *etag = ferry_response_etag_of(etag_source);
    FerryResponse *response = ferry_response_sync(project);
    ferry_response_set_etag(response, etag);
    return response;
}

static GPtrArray *changed_features(json_t *old_config, json_t *new_config)
{
    GPtrArray *changed = g_ptr_array_new();
    for (gsize i = 0; feature_keys[i] != NULL; i++) {
        const char *before = ferry_json_get_string(old_config, feature_keys[i]);
        const char *after = ferry_json_get_string(new_config, feature_keys[i]);
        if (g_strcmp0(before, after) != 0)
            g_ptr_array_add(changed, (gpointer)feature_keys[i]);
    }
    return changed;
}

/* PUT and PATCH: new_config and description are the full new values. */
static FerryResponse *project_update(FerryRequest *request, gboolean patch)
{
    FerryDaemon *daemon = request->daemon;
    const char *name = ferry_request_param(request, "name");
    GError *error = NULL;
    g_autoptr(json_t) current = project_render(daemon, name, &error);
    if (current == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) etag_source = project_etag_source(current);
    if (!check_if_match(request, etag_source, &error) || !check_body(request->body, &error))
        return ferry_response_error(error);

    json_t *old_config = json_object_get(current, "config");
    g_autoptr(json_t) config = NULL;
    json_t *requested_config = json_object_get(request->body, "config");
    if (patch) {
        config = json_deep_copy(old_config);
        if (json_is_object(requested_config))
            json_object_update(config, requested_config);
    } else {
        config = json_is_object(requested_config) ? json_deep_copy(requested_config) : json_object();
    }
    const char *description = ferry_json_get_string(request->body, "description");
    if (description == NULL && patch)
        description = ferry_json_get_string(current, "description");

    g_autoptr(GPtrArray) changed = changed_features(old_config, config);
    if (changed->len > 0) {
        if (g_str_equal(name, "default"))
            return ferry_response_error_new(400, "You can't change the features of the default project");
        if (!project_is_empty(daemon, name)) {
            const char *feature = changed->pdata[0];
            return ferry_response_error_new(
                400, "Project feature \"%s\" cannot be %s on non-empty projects", feature,
                value_is_true(ferry_json_get_string(old_config, feature)) ? "disabled" : "enabled");
        }
    }
    if (!validate_config(config, &error))
        return ferry_response_error(error);

    g_autoptr(json_t) doc =
        json_pack("{s:s, s:O}", "description", description != NULL ? description : "", "config", config);
    if (!ferry_db_update(daemon->db, FERRY_KIND_PROJECT, "", "", name, doc, &error))
        return ferry_response_error(error);
    g_autofree char *escaped = g_uri_escape_string(name, NULL, FALSE);
    g_autofree char *source = g_strdup_printf("/1.0/projects/%s", escaped);
    ferry_events_lifecycle(daemon->events, name, "project-updated", source);
    return ferry_response_sync(NULL);
}

FerryResponse *api_project_put(FerryRequest *request)
{
    return project_update(request, FALSE);
}

FerryResponse *api_project_patch(FerryRequest *request)
{
    return project_update(request, TRUE);
}

/* Everything that makes a rename impossible; run before the operation starts and again inside it. */
static gboolean check_rename(FerryDaemon *daemon, const char *name, const char *new_name, GError **error)
{
    if (g_str_equal(name, "default")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_FORBIDDEN, "The 'default' project cannot be renamed");
        return FALSE;
    }
    if (!ferry_project_check_exists(daemon, name, error))
        return FALSE;
    if (!validate_project_name(new_name, error))
        return FALSE;
    if (ferry_db_exists(daemon->db, FERRY_KIND_PROJECT, "", "", new_name)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "A project named \"%s\" already exists",
                    new_name);
        return FALSE;
    }
    if (!project_is_empty(daemon, name)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Only empty projects can be renamed");
        return FALSE;
    }
    return TRUE;
}

typedef struct {
    char *name;
    char *new_name;
} RenameData;

static void rename_data_free(gpointer data)
{
    RenameData *rename = data;
    g_free(rename->name);
    g_free(rename->new_name);
    g_free(rename);
}

static gboolean move_profiles(FerryDb *db, const char *from, const char *to, GError **error)
{
    g_autoptr(GPtrArray) names = ferry_db_list_names(db, FERRY_KIND_PROFILE, from, "");
    for (guint i = 0; i < names->len; i++) {
        g_autoptr(json_t) doc = ferry_db_get(db, FERRY_KIND_PROFILE, from, "", names->pdata[i], error);
        if (doc == NULL || !ferry_db_create(db, FERRY_KIND_PROFILE, to, "", names->pdata[i], doc, error) ||
            !ferry_db_delete(db, FERRY_KIND_PROFILE, from, "", names->pdata[i], error))
            return FALSE;
    }
    return TRUE;
}

static gboolean run_rename(FerryOperation *op, gpointer data, GError **error)
{
    RenameData *rename = data;
    FerryDaemon *daemon = ferry_operation_get_daemon(op);
    ferry_db_begin(daemon->db);
    if (!check_rename(daemon, rename->name, rename->new_name, error) ||
        !ferry_db_rename(daemon->db, FERRY_KIND_PROJECT, "", "", rename->name, rename->new_name, error) ||
        !move_profiles(daemon->db, rename->name, rename->new_name, error)) {
        ferry_db_rollback(daemon->db);
        return FALSE;
    }
    if (!ferry_db_commit(daemon->db, error))
        return FALSE;
    g_autofree char *escaped = g_uri_escape_string(rename->new_name, NULL, FALSE);
    g_autofree char *source = g_strdup_printf("/1.0/projects/%s", escaped);
    ferry_events_lifecycle(daemon->events, rename->new_name, "project-renamed", source);
    return TRUE;
}

/* A rename is an operation in Incus, and its client waits on one. */
FerryResponse *api_project_post(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *name = ferry_request_param(request, "name");
    GError *error = NULL;
    if (request->body == NULL)
        return ferry_response_error_new(400, "Invalid request: empty body");
    json_t *new_name_value = json_object_get(request->body, "name");
    if (new_name_value != NULL && !json_is_string(new_name_value))
        return ferry_response_error_new(400, "Field \"name\" must be a string");
    const char *new_name = json_string_value(new_name_value);
    if (!check_rename(daemon, name, new_name, &error))
        return ferry_response_error(error);

    RenameData *rename = g_new0(RenameData, 1);
    rename->name = g_strdup(name);
    rename->new_name = g_strdup(new_name);
    g_autoptr(FerryOperation) op = ferry_operation_new(daemon, FERRY_OPERATION_TASK, NULL, "Renaming project",
                                                       NULL, NULL, run_rename, rename, rename_data_free);
    ferry_operation_start(op);
    return ferry_response_async(op);
}

FerryResponse *api_project_delete(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *name = ferry_request_param(request, "name");
    GError *error = NULL;
    if (g_str_equal(name, "default"))
        return ferry_response_error_new(403, "The 'default' project cannot be deleted");

    ferry_db_begin(daemon->db);
    if (!ferry_project_check_exists(daemon, name, &error)) {
        ferry_db_rollback(daemon->db);
        return ferry_response_error(error);
    }
    if (!project_is_empty(daemon, name)) {
        ferry_db_rollback(daemon->db);
        return ferry_response_error_new(409, "Only empty projects can be removed");
    }
    g_autoptr(GPtrArray) profiles = ferry_db_list_names(daemon->db, FERRY_KIND_PROFILE, name, "");
    for (guint i = 0; i < profiles->len; i++) {
        if (!ferry_db_delete(daemon->db, FERRY_KIND_PROFILE, name, "", profiles->pdata[i], &error)) {
            ferry_db_rollback(daemon->db);
            return ferry_response_error(error);
        }
    }
    if (!ferry_db_delete(daemon->db, FERRY_KIND_PROJECT, "", "", name, &error)) {
        ferry_db_rollback(daemon->db);
        return ferry_response_error(error);
    }
    if (!ferry_db_commit(daemon->db, &error))
        return ferry_response_error(error);

    g_autofree char *escaped = g_uri_escape_string(name, NULL, FALSE);
    g_autofree char *source = g_strdup_printf("/1.0/projects/%s", escaped);
    ferry_events_lifecycle(daemon->events, name, "project-deleted", source);
    return ferry_response_sync(NULL);
}
