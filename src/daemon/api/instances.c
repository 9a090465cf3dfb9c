/* /1.0/instances and /1.0/instances/{name}: list, create, show, update, rename, delete. */
#include "api.h"
#include "instance_action.h"
#include "filter.h"
#include "migration/migration.h"

#include "error.h"
#include "instances.h"
#include "json.h"
#include "names.h"

#include <string.h>

#include <glib/gstdio.h>

static json_t *instance_resources(const char *project, const char *name)
{
    g_autofree char *url = g_str_equal(project, "default")
                               ? g_strdup_printf("/1.0/instances/%s", name)
                               : g_strdup_printf("/1.0/instances/%s?project=%s", name, project);
    return json_pack("{s:[s]}", "instances", url);
}

FerryResponse *api_instances_get(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *all = ferry_request_query(request, "all-projects");
    gboolean all_projects = all != NULL && g_str_equal(all, "true");
    if (!all_projects && !ferry_db_exists(daemon->db, FERRY_KIND_PROJECT, "", "", request->project))
        return ferry_response_error_new(404, "Project \"%s\" not found", request->project);
    g_autoptr(json_t) rows = ferry_db_list(daemon->db, FERRY_KIND_INSTANCE, all_projects ? NULL : request->project, "");
    int recursion = ferry_request_recursion(request);
    GError *error = NULL;
    g_autoptr(FerryFilter) filter = ferry_filter_parse(ferry_request_query(request, "filter"), &error);
    if (filter == NULL)
        return ferry_response_error(error);
    const char *filter_text = ferry_request_query(request, "filter");
    gboolean filtering = filter_text != NULL && *filter_text != '\0';
    json_t *list = json_array();
    size_t index;
    json_t *row;
    json_array_foreach(rows, index, row) {
        const char *name = ferry_json_get_string(row, "name");
        const char *project = ferry_json_get_string(row, "project");
        if (recursion == 0 && !filtering) {
            json_t *resources = instance_resources(project, name);
            json_array_append(list, json_array_get(json_object_get(resources, "instances"), 0));
            json_decref(resources);
            continue;
        }
        json_t *instance = ferry_instance_render(daemon, project, name, recursion, NULL);
        if (instance == NULL)
            continue;
        if (!ferry_filter_match(filter, instance)) {
            json_decref(instance);
            continue;
        }
        if (recursion == 0) {
            json_t *resources = instance_resources(project, name);
            json_array_append(list, json_array_get(json_object_get(resources, "instances"), 0));
            json_decref(resources);
            json_decref(instance);
            continue;
        }
        json_array_append_new(list, instance);
    }
    return ferry_response_sync(list);
}

typedef struct {
    char *project;
    char *name;
    json_t *request;
} CreateTask;

static void create_task_free(gpointer data)
{
    CreateTask *task = data;
    g_free(task->project);
    g_free(task->name);
    json_decref(task->request);
    g_free(task);
}

static gboolean run_create(FerryOperation *op, gpointer data, GError **error)
{
    CreateTask *task = data;
    FerryDaemon *daemon = ferry_operation_get_daemon(op);
    json_t *source = json_object_get(task->request, "source");
    const char *source_type = source != NULL ? ferry_json_get_string(source, "type") : NULL;
    gboolean copy = source_type != NULL && g_str_equal(source_type, "copy");
    gboolean done = copy ? ferry_instance_copy_finish(daemon, op, task->project, task->name, task->request, error)
                         : ferry_instance_create_finish(daemon, op, task->project, task->name, task->request, error);
    if (!done) {
        ferry_instance_create_abort(daemon, task->project, task->name);
        return FALSE;
    }
    return TRUE;
}

FerryResponse *api_instances_post(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    if (request->upload_path != NULL)
        return api_backup_import(request);
    if (request->body == NULL)
        return ferry_response_error_new(400, "Missing request body");
    json_t *source = json_object_get(request->body, "source");
    const char *source_type = source != NULL ? ferry_json_get_string(source, "type") : NULL;
    if (source_type != NULL && g_str_equal(source_type, "migration"))
        return ferry_migration_sink_start(request);
    gboolean copy = source_type != NULL && g_str_equal(source_type, "copy");
    g_autoptr(json_t) body = json_deep_copy(request->body);
    g_autoptr(json_t) doc = copy ? ferry_instance_copy_prepare(daemon, request->project, body, &error)
                                 : ferry_instance_create_prepare(daemon, request->project, body, &error);
    if (doc == NULL)
        return ferry_response_error(error);
    CreateTask *task = g_new0(CreateTask, 1);
    task->project = g_strdup(request->project);
    task->name = g_strdup(ferry_json_get_string(body, "name"));
    task->request = json_incref(body);
    g_autoptr(FerryOperation) op =
        ferry_operation_new(daemon, FERRY_OPERATION_TASK, request->project,
                            copy ? "Copying instance" : "Creating instance",
                            instance_resources(task->project, task->name), NULL, run_create, task, create_task_free);
    ferry_operation_start(op);
    return ferry_response_async(op);
}

FerryResponse *api_instance_get(FerryRequest *request)
{
    GError *error = NULL;
    json_t *instance = ferry_instance_render(request->daemon, request->project, ferry_request_param(request, "name"),
                                             ferry_request_recursion(request) > 0 ? 2 : 1, &error);
    if (instance == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) writable = json_pack("{s:O, s:O, s:O, s:O}", "config", json_object_get(instance, "config"),
                                           "devices", json_object_get(instance, "devices"), "profiles",
                                           json_object_get(instance, "profiles"), "description",
                                           json_object_get(instance, "description"));
    g_autofree char *etag = ferry_response_etag_of(writable);
    FerryResponse *response = ferry_response_sync(instance);
    ferry_response_set_etag(response, etag);
    return response;
}

typedef struct {
    char *project;
    char *name;
    json_t *args;
    InstanceAction action;
} ActionTask;

static void action_task_free(gpointer data)
{
    ActionTask *task = data;
    g_free(task->project);
    g_free(task->name);
    json_decref(task->args);
    g_free(task);
}

static gboolean run_action(FerryOperation *op, gpointer data, GError **error)
{
    ActionTask *task = data;
    FerryDaemon *daemon = ferry_operation_get_daemon(op);
    gboolean ok = task->action(daemon, task->project, task->name, task->args, error);
    ferry_daemon_release_instance(daemon, task->project, task->name);
    return ok;
}

FerryResponse *ferry_api_instance_action(FerryRequest *request, const char *description, const char *busy_label,
                                         InstanceAction action, json_t *args)
{
    FerryDaemon *daemon = request->daemon;
    const char *name = ferry_request_param(request, "name");
    GError *error = NULL;
    if (!ferry_db_exists(daemon->db, FERRY_KIND_INSTANCE, request->project, "", name)) {
        json_decref(args);
        return ferry_response_error_new(404, "Instance \"%s\" not found", name);
    }
    if (!ferry_daemon_claim_instance(daemon, request->project, name, busy_label, &error)) {
        json_decref(args);
        return ferry_response_error(error);
    }
    ActionTask *task = g_new0(ActionTask, 1);
    task->project = g_strdup(request->project);
    task->name = g_strdup(name);
    task->args = args != NULL ? args : json_object();
    task->action = action;
    g_autoptr(FerryOperation) op = ferry_operation_new(daemon, FERRY_OPERATION_TASK, request->project, description,
                                                       instance_resources(request->project, name), NULL, run_action,
                                                       task, action_task_free);
    ferry_operation_start(op);
    return ferry_response_async(op);
}

static gboolean do_update(FerryDaemon *daemon, const char *project, const char *name, json_t *args, GError **error)
{
    const char *restore = ferry_json_get_string(args, "restore");
    if (restore != NULL && *restore != '\0')
        return ferry_snapshot_restore(daemon, project, name, restore, error);
    return ferry_instance_update(daemon, project, name, args, ferry_json_get_bool(args, "__patch", FALSE), error);
}

static FerryResponse *validate_update(FerryRequest *request, gboolean patch)
{
    if (request->body == NULL)
        return ferry_response_error_new(400, "Missing request body");
    const char *name = ferry_request_param(request, "name");
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    g_autoptr(json_t) current = ferry_db_get(daemon->db, FERRY_KIND_INSTANCE, request->project, "", name, &error);
    if (current == NULL)
        return ferry_response_error(error);
    /* If-Match guards against lost updates, as in Incus. */
    const char *if_match =
        soup_message_headers_get_one(soup_server_message_get_request_headers(request->msg), "If-Match");
    if (if_match != NULL && *if_match != '\0') {
        g_autoptr(json_t) rendered = ferry_instance_render(daemon, request->project, name, 1, NULL);
        g_autoptr(json_t) writable =
            json_pack("{s:O, s:O, s:O, s:O}", "config", json_object_get(rendered, "config"), "devices",
                      json_object_get(rendered, "devices"), "profiles", json_object_get(rendered, "profiles"),
                      "description", json_object_get(rendered, "description"));
        g_autofree char *etag = ferry_response_etag_of(writable);
        g_autofree char *quoted = g_strdup_printf("\"%s\"", etag);
        if (!g_str_equal(if_match, etag) && !g_str_equal(if_match, quoted))
            return ferry_response_error_new(412, "ETag doesn't match: the instance changed since it was read");
    }
    json_t *args = json_deep_copy(request->body);
    if (patch)
        json_object_set_new(args, "__patch", json_true());
    return ferry_api_instance_action(request, ferry_json_get_string(args, "restore") ? "Restoring snapshot"
                                                                                      : "Updating instance",
                                     "update", do_update, args);
}

FerryResponse *api_instance_put(FerryRequest *request)
{
    return validate_update(request, FALSE);
}

FerryResponse *api_instance_patch(FerryRequest *request)
{
    return validate_update(request, TRUE);
}

static gboolean do_delete(FerryDaemon *daemon, const char *project, const char *name, json_t *args, GError **error)
{
    return ferry_instance_delete(daemon, project, name, error);
}

FerryResponse *api_instance_delete(FerryRequest *request)
{
    /* Refuse a running instance before creating an operation, so the client gets the error directly. */
    const char *name = ferry_request_param(request, "name");
    int code = 0;
    if (ferry_db_exists(request->daemon->db, FERRY_KIND_INSTANCE, request->project, "", name)) {
        ferry_instance_status(request->daemon, request->project, name, &code);
        if (code != 102)
            return ferry_response_error_new(400, "The instance is currently running, stop it first");
    }
    return ferry_api_instance_action(request, "Deleting instance", "delete", do_delete, NULL);
}

static gboolean do_rename(FerryDaemon *daemon, const char *project, const char *name, json_t *args, GError **error)
{
    return ferry_instance_rename(daemon, project, name, ferry_json_get_string(args, "name"), error);
}

FerryResponse *api_instance_post(FerryRequest *request)
{
    if (request->body == NULL)
        return ferry_response_error_new(400, "Missing request body");
    if (ferry_json_get_bool(request->body, "migration", FALSE)) {
        /* Moves inside one server across pools or projects are the client's copy + delete. */
        const char *pool = ferry_json_get_string(request->body, "pool");
        const char *project = ferry_json_get_string(request->body, "project");
        if ((pool != NULL && *pool != '\0') || (project != NULL && *project != '\0') ||
            ferry_request_query(request, "target") != NULL)
            return ferry_response_error_new(400, "Target only allowed when clustered: ferry moves between pools "
                                                 "and projects with copy and delete");
        return ferry_migration_source_start(request, NULL);
    }
    const char *new_name = ferry_json_get_string(request->body, "name");
    if (new_name == NULL || *new_name == '\0')
        return ferry_response_error_new(400, "Missing new instance name");
    GError *error = NULL;
    const char *name = ferry_request_param(request, "name");
    if (!ferry_db_exists(request->daemon->db, FERRY_KIND_INSTANCE, request->project, "", name))
        return ferry_response_error_new(404, "Instance \"%s\" not found", name);
    if (ferry_db_exists(request->daemon->db, FERRY_KIND_INSTANCE, request->project, "", new_name))
        return ferry_response_error_new(409, "Name \"%s\" already in use", new_name);
    if (!ferry_validate_instance_name(new_name, &error))
        return ferry_response_error(error);
    return ferry_api_instance_action(request, "Renaming instance", "rename", do_rename,
                                     json_deep_copy(request->body));
}

FerryResponse *api_instance_logs_get(FerryRequest *request)
{
    const char *name = ferry_request_param(request, "name");
    if (!ferry_db_exists(request->daemon->db, FERRY_KIND_INSTANCE, request->project, "", name))
        return ferry_response_error_new(404, "Instance \"%s\" not found", name);
    g_autofree char *volume = ferry_instance_volume_name(request->project, name);
    g_autofree char *dir = ferry_daemon_path(request->daemon, "logs", volume, NULL);
    json_t *list = json_array();
    g_autoptr(GDir) listing = g_dir_open(dir, 0, NULL);
    const char *entry;
    while (listing != NULL && (entry = g_dir_read_name(listing)) != NULL)
        json_array_append_new(list, json_sprintf("/1.0/instances/%s/logs/%s", name, entry));
    return ferry_response_sync(list);
}

FerryResponse *api_instance_log_get(FerryRequest *request)
{
    const char *name = ferry_request_param(request, "name");
    const char *file = ferry_request_param(request, "file");
    if (!ferry_db_exists(request->daemon->db, FERRY_KIND_INSTANCE, request->project, "", name))
        return ferry_response_error_new(404, "Instance \"%s\" not found", name);
    /* Only plain names inside the log directory. */
    if (strchr(file, '/') != NULL || g_str_equal(file, "..") || g_str_equal(file, "."))
        return ferry_response_error_new(400, "Invalid log file name");
    g_autofree char *volume = ferry_instance_volume_name(request->project, name);
    g_autofree char *path = ferry_daemon_path(request->daemon, "logs", volume, file, NULL);
    char *contents = NULL;
    gsize length = 0;
    if (!g_file_get_contents(path, &contents, &length, NULL))
        return ferry_response_error_new(404, "Log file \"%s\" not found", file);
    return ferry_response_raw("text/plain", g_bytes_new_take(contents, length));
}
