/* /1.0/storage-pools: global storage pools and the volumes on them.
 *
 * Creating or deleting a pool formats, mounts or removes storage, which can take seconds: the request is
 * paused and the work runs on a worker thread, so the main loop keeps serving while the client still gets
 * the synchronous answer Incus gives. Volumes are not rows of their own here: an instance's volume is on the
 * pool its document names, its snapshots with it, and an image's volume is the unpacked cache on the pool. */
#include "api.h"
#include "projects.h"

#include "error.h"
#include "events.h"
#include "instances.h"
#include "json.h"
#include "names.h"
#include "pool.h"

#include <sys/statvfs.h>

/* Config keys set when the pool is made; a change would need the storage rebuilt. */
static const char *const immutable_keys[] = {"source", "size", "btrfs.mount_options", NULL};

static const char *const volume_types[] = {"container", "virtual-machine", "image", "custom", NULL};

/* Pools being created or deleted (main thread only): a second request for the same name waits its turn. */
static GHashTable *busy_pools;

static gboolean pool_is_busy(const char *name)
{
    return busy_pools != NULL && g_hash_table_contains(busy_pools, name);
}

static void pool_set_busy(const char *name, gboolean busy)
{
    if (busy_pools == NULL)
        busy_pools = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    if (busy)
        g_hash_table_add(busy_pools, g_strdup(name));
    else
        g_hash_table_remove(busy_pools, name);
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

static char *pool_url(const char *name)
{
    g_autofree char *escaped = g_uri_escape_string(name, NULL, FALSE);
    return g_strdup_printf("/1.0/storage-pools/%s", escaped);
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

static GHashTable *string_table(json_t *object)
{
    GHashTable *table = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    const char *key;
    json_t *value;
    json_object_foreach(object, key, value) {
        if (json_is_string(value))
            g_hash_table_replace(table, g_strdup(key), g_strdup(json_string_value(value)));
    }
    return table;
}

static json_t *string_object(GHashTable *table)
{
    json_t *object = json_object();
    GHashTableIter iter;
    gpointer key, value;
    g_hash_table_iter_init(&iter, table);
    while (g_hash_table_iter_next(&iter, &key, &value))
        json_object_set_new(object, key, json_string(value != NULL ? value : ""));
    return object;
}

static gboolean devices_use_pool(json_t *devices, const char *pool)
{
    const char *name;
    json_t *device;
    json_object_foreach(devices, name, device) {
        if (g_strcmp0(ferry_json_get_string(device, "type"), "disk") == 0 &&
            g_strcmp0(ferry_json_get_string(device, "pool"), pool) == 0)
            return TRUE;
    }
    return FALSE;
}

static gboolean pool_in_use(FerryDaemon *daemon, const char *name)
{
    if (ferry_db_count_where(daemon->db, FERRY_KIND_INSTANCE, "$.pool", name) > 0 ||
        ferry_db_count_where(daemon->db, FERRY_KIND_VOLUME, "$.pool", name) > 0)
        return TRUE;
    g_autoptr(json_t) profiles = ferry_db_list(daemon->db, FERRY_KIND_PROFILE, NULL, "");
    size_t index;
    json_t *profile;
    json_array_foreach(profiles, index, profile) {
        if (devices_use_pool(json_object_get(profile, "devices"), name))
            return TRUE;
    }
    return FALSE;
}

static const char *doc_project(json_t *doc)
{
    const char *project = ferry_json_get_string(doc, "project");
    return project != NULL ? project : "default";
}

static json_t *pool_used_by(FerryDaemon *daemon, const char *name, FerryPool *pool)
{
    json_t *used_by = json_array();
    g_autoptr(json_t) instances = ferry_db_list(daemon->db, FERRY_KIND_INSTANCE, NULL, "");
    size_t index;
    json_t *doc;
    json_array_foreach(instances, index, doc) {
        if (g_strcmp0(ferry_json_get_string(doc, "pool"), name) != 0)
            continue;
        g_autofree char *url = project_url("instances", ferry_json_get_string(doc, "name"), doc_project(doc));
        json_array_append_new(used_by, json_string(url));
    }
    g_autoptr(json_t) images = ferry_db_list(daemon->db, FERRY_KIND_IMAGE, NULL, "");
    json_array_foreach(images, index, doc) {
        const char *fingerprint = ferry_json_get_string(doc, "name");
        if (pool == NULL || !ferry_pool_volume_exists(pool, FERRY_VOLUME_IMAGE, fingerprint))
            continue;
        g_autofree char *url = project_url("images", fingerprint, doc_project(doc));
        json_array_append_new(used_by, json_string(url));
    }
    g_autoptr(json_t) profiles = ferry_db_list(daemon->db, FERRY_KIND_PROFILE, NULL, "");
    json_array_foreach(profiles, index, doc) {
        if (!devices_use_pool(json_object_get(doc, "devices"), name))
            continue;
        g_autofree char *url = project_url("profiles", ferry_json_get_string(doc, "name"), doc_project(doc));
        json_array_append_new(used_by, json_string(url));
    }
    return used_by;
}

static json_t *pool_render(FerryDaemon *daemon, const char *name, GError **error)
{
    g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_POOL, "", "", name, error);
    if (doc == NULL)
        return NULL;
    FerryPool *pool = ferry_daemon_get_pool(daemon, name, NULL);
    const char *description = ferry_json_get_string(doc, "description");
    const char *driver = ferry_json_get_string(doc, "driver");
    return json_pack("{s:s, s:s, s:s, s:o, s:s, s:[s], s:o}", "name", name, "driver",
                     driver != NULL ? driver : "", "description", description != NULL ? description : "",
                     "config", ferry_json_object_or_empty(doc, "config"), "status",
                     pool != NULL ? "Created" : "Unavailable", "locations", "none", "used_by",
                     pool_used_by(daemon, name, pool));
}

static json_t *pool_etag_source(json_t *pool)
{
    return json_pack("{s:O?, s:O?}", "description", json_object_get(pool, "description"), "config",
                     json_object_get(pool, "config"));
}

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

/* --- create and delete, on a worker thread --- */

typedef enum {
    JOB_CREATE,
    JOB_DELETE,
} PoolJobKind;

typedef struct {
    FerryDaemon *daemon;
    SoupServerMessage *msg;
    PoolJobKind kind;
    char *name;
    char *driver;
    char *description;
    GHashTable *config; /* create: filled in by the driver */
    char *storage_dir;
    char *disks_dir;
    FerryPool *pool;     /* create: the new pool; delete: the pool, taken out of the daemon's table */
    gboolean was_loaded; /* delete: the pool came from the daemon's table (not a handle made for the job) */
} PoolJob;

static void pool_job_free(gpointer data)
{
    PoolJob *job = data;
    g_object_unref(job->msg);
    g_free(job->name);
    g_free(job->driver);
    g_free(job->description);
    if (job->config != NULL)
        g_hash_table_unref(job->config);
    g_free(job->storage_dir);
    g_free(job->disks_dir);
    ferry_pool_free(job->pool);
    g_free(job);
}

/* Unpacked images are caches: they go with the pool. */
static gboolean delete_image_volumes(FerryPool *pool, GError **error)
{
    if (!ferry_pool_mount(pool, NULL))
        return TRUE; /* storage gone: ferry_pool_delete decides what that means */
    g_autofree char *images = g_build_filename(ferry_pool_get_mount_path(pool), "images", NULL);
    g_autoptr(GDir) dir = g_dir_open(images, 0, NULL);
    const char *entry;
    while (dir != NULL && (entry = g_dir_read_name(dir)) != NULL) {
        if (entry[0] == '.')
            continue;
        if (!ferry_pool_delete_volume(pool, FERRY_VOLUME_IMAGE, entry, error))
            return FALSE;
    }
    return TRUE;
}

static void pool_job_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
    PoolJob *job = data;
    GError *error = NULL;
    gboolean ok;
    if (job->kind == JOB_CREATE) {
        job->pool =
            ferry_pool_create(job->name, job->driver, job->config, job->storage_dir, job->disks_dir, &error);
        ok = job->pool != NULL;
    } else {
        ok = delete_image_volumes(job->pool, &error) && ferry_pool_delete(job->pool, &error);
    }
    if (ok)
        g_task_return_boolean(task, TRUE);
    else
        g_task_return_error(task, error);
}

static FerryResponse *finish_create(PoolJob *job)
{
    FerryDaemon *daemon = job->daemon;
    GError *error = NULL;
    g_autoptr(json_t) doc = json_pack("{s:s, s:s, s:o}", "description", job->description, "driver",
                                      job->driver, "config", string_object(job->config));
    if (!ferry_db_create(daemon->db, FERRY_KIND_POOL, "", "", job->name, doc, &error)) {
        g_autoptr(GError) cleanup_error = NULL;
        if (!ferry_pool_delete(job->pool, &cleanup_error))
            g_warning("Failed to remove storage pool \"%s\" after a database error: %s", job->name,
                      cleanup_error->message);
        return ferry_response_error(error);
    }
    ferry_daemon_add_pool(daemon, g_steal_pointer(&job->pool));
    g_autofree char *location = pool_url(job->name);
    ferry_events_lifecycle(daemon->events, NULL, "storage-pool-created", location);
    return ferry_response_created(NULL, location);
}

static FerryResponse *finish_delete(PoolJob *job)
{
    FerryDaemon *daemon = job->daemon;
    GError *error = NULL;
    if (!ferry_db_delete(daemon->db, FERRY_KIND_POOL, "", "", job->name, &error))
        return ferry_response_error(error);
    g_autofree char *source = pool_url(job->name);
    ferry_events_lifecycle(daemon->events, NULL, "storage-pool-deleted", source);
    return ferry_response_sync(NULL);
}

static void pool_job_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
    PoolJob *job = g_task_get_task_data(G_TASK(result));
    GError *error = NULL;
    FerryResponse *response;
    if (g_task_propagate_boolean(G_TASK(result), &error)) {
        response = job->kind == JOB_CREATE ? finish_create(job) : finish_delete(job);
    } else {
        response = ferry_response_error(error);
        /* The pool is still there: give it back. */
        if (job->kind == JOB_DELETE && job->was_loaded)
            ferry_daemon_add_pool(job->daemon, g_steal_pointer(&job->pool));
    }
    pool_set_busy(job->name, FALSE);
    ferry_response_send(response, job->msg);
    soup_server_message_unpause(job->msg);
}

static FerryResponse *run_job(FerryRequest *request, PoolJob *job)
{
    job->daemon = request->daemon;
    job->msg = g_object_ref(request->msg);
    pool_set_busy(job->name, TRUE);
    soup_server_message_pause(request->msg);
    GTask *task = g_task_new(NULL, NULL, pool_job_done, NULL);
    g_task_set_task_data(task, job, pool_job_free);
    g_task_run_in_thread(task, pool_job_thread);
    g_object_unref(task);
    return ferry_response_handled();
}

/* --- handlers --- */

FerryResponse *api_pools_get(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    gboolean recursive = ferry_request_recursion(request) > 0;
    g_autoptr(GPtrArray) names = ferry_db_list_names(daemon->db, FERRY_KIND_POOL, "", "");
    json_t *result = json_array();
    for (guint i = 0; i < names->len; i++) {
        if (!recursive) {
            g_autofree char *url = pool_url(names->pdata[i]);
            json_array_append_new(result, json_string(url));
            continue;
        }
        json_t *pool = pool_render(daemon, names->pdata[i], NULL);
        if (pool != NULL)
            json_array_append_new(result, pool);
    }
    return ferry_response_sync(result);
}

FerryResponse *api_pools_post(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    if (!check_body(request->body, &error))
        return ferry_response_error(error);
    json_t *name_value = json_object_get(request->body, "name");
    json_t *driver_value = json_object_get(request->body, "driver");
    if ((name_value != NULL && !json_is_string(name_value)) ||
        (driver_value != NULL && !json_is_string(driver_value)))
        return ferry_response_error_new(400, "Fields \"name\" and \"driver\" must be strings");
    const char *name = json_string_value(name_value);
    const char *driver = json_string_value(driver_value);
    if (name == NULL || *name == '\0')
        return ferry_response_error_new(400, "No name provided");
    if (!ferry_validate_entity_name("storage pool", name, &error))
        return ferry_response_error(error);
    if (driver == NULL || *driver == '\0')
        return ferry_response_error_new(400, "No driver provided");
    if (!g_strv_contains(ferry_pool_driver_names(), driver))
        return ferry_response_error_new(400, "Unknown storage pool driver \"%s\"", driver);

    g_autoptr(GHashTable) config = string_table(json_object_get(request->body, "config"));
    if (!ferry_pool_validate_config(driver, config, &error))
        return ferry_response_error(error);
    if (pool_is_busy(name) || ferry_db_exists(daemon->db, FERRY_KIND_POOL, "", "", name))
        return ferry_response_error_new(409, "Storage pool \"%s\" already exists", name);

    PoolJob *job = g_new0(PoolJob, 1);
    job->kind = JOB_CREATE;
    job->name = g_strdup(name);
    job->driver = g_strdup(driver);
    job->description = g_strdup(ferry_json_get_string(request->body, "description") ?: "");
    job->config = g_steal_pointer(&config);
    job->storage_dir = ferry_daemon_path(daemon, "storage-pools", name, NULL);
    job->disks_dir = ferry_daemon_path(daemon, "disks", NULL);
    return run_job(request, job);
}

FerryResponse *api_pool_get(FerryRequest *request)
{
    GError *error = NULL;
    json_t *pool = pool_render(request->daemon, ferry_request_param(request, "pool"), &error);
    if (pool == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) etag_source = pool_etag_source(pool);
    g_autofree char *etag = ferry_response_etag_of(etag_source);
    FerryResponse *response = ferry_response_sync(pool);
    ferry_response_set_etag(response, etag);
    return response;
}

static gboolean check_immutable(json_t *old_config, json_t *new_config, GError **error)
{
    g_autoptr(GHashTable) keys = g_hash_table_new(g_str_hash, g_str_equal);
    const char *key;
    json_t *value;
    json_object_foreach(old_config, key, value) {
        g_hash_table_add(keys, (gpointer)key);
    }
    json_object_foreach(new_config, key, value) {
        g_hash_table_add(keys, (gpointer)key);
    }
    GHashTableIter iter;
    gpointer candidate;
    g_hash_table_iter_init(&iter, keys);
    while (g_hash_table_iter_next(&iter, &candidate, NULL)) {
        const char *name = candidate;
        if (!g_strv_contains(immutable_keys, name) && !g_str_has_prefix(name, "volatile."))
            continue;
        if (g_strcmp0(ferry_json_get_string(old_config, name), ferry_json_get_string(new_config, name)) !=
            0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Storage pool configuration key \"%s\" cannot be changed", name);
            return FALSE;
        }
    }
    return TRUE;
}

/* PUT replaces the user's keys (the driver's volatile.* keys stay); PATCH merges. */
static FerryResponse *pool_update(FerryRequest *request, gboolean patch)
{
    FerryDaemon *daemon = request->daemon;
    const char *name = ferry_request_param(request, "pool");
    GError *error = NULL;
    g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_POOL, "", "", name, &error);
    if (doc == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) current = pool_render(daemon, name, &error);
    if (current == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) etag_source = pool_etag_source(current);
    if (!check_if_match(request, etag_source, &error) || !check_body(request->body, &error))
        return ferry_response_error(error);
    if (pool_is_busy(name))
        return ferry_response_error_new(409, "Storage pool \"%s\" is being created or deleted", name);

    json_t *old_config = json_object_get(current, "config");
    json_t *requested = json_object_get(request->body, "config");
    g_autoptr(json_t) config = NULL;
    if (patch) {
        config = json_deep_copy(old_config);
        if (json_is_object(requested))
            json_object_update(config, requested);
    } else {
        config = json_is_object(requested) ? json_deep_copy(requested) : json_object();
        const char *key;
        json_t *value;
        json_object_foreach(old_config, key, value) {
            if (g_str_has_prefix(key, "volatile.") && json_object_get(config, key) == NULL)
                json_object_set(config, key, value);
        }
    }
    if (!check_immutable(old_config, config, &error))
        return ferry_response_error(error);
    const char *driver = ferry_json_get_string(doc, "driver");
    g_autoptr(GHashTable) table = string_table(config);
    if (!ferry_pool_validate_config(driver, table, &error))
        return ferry_response_error(error);

    const char *description = ferry_json_get_string(request->body, "description");
    if (description == NULL && patch)
        description = ferry_json_get_string(current, "description");
    json_object_set_new(doc, "description", json_string(description != NULL ? description : ""));
    json_object_set(doc, "config", config);
    if (!ferry_db_update(daemon->db, FERRY_KIND_POOL, "", "", name, doc, &error))
        return ferry_response_error(error);
    g_autofree char *source = pool_url(name);
    ferry_events_lifecycle(daemon->events, NULL, "storage-pool-updated", source);
    return ferry_response_sync(NULL);
}

FerryResponse *api_pool_put(FerryRequest *request)
{
    return pool_update(request, FALSE);
}

FerryResponse *api_pool_patch(FerryRequest *request)
{
    return pool_update(request, TRUE);
}

FerryResponse *api_pool_delete(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *name = ferry_request_param(request, "pool");
    GError *error = NULL;
    g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_POOL, "", "", name, &error);
    if (doc == NULL)
        return ferry_response_error(error);
    if (pool_is_busy(name))
        return ferry_response_error_new(409, "Storage pool \"%s\" is being created or deleted", name);
    if (pool_in_use(daemon, name))
        return ferry_response_error_new(409, "The storage pool is currently in use");

    /* Out of the daemon's table while it is deleted, so nothing starts using it meanwhile. */
    g_mutex_lock(&daemon->pools_lock);
    gpointer stolen_key = NULL;
    gpointer stolen_pool = NULL;
    if (g_hash_table_steal_extended(daemon->pools, name, &stolen_key, &stolen_pool))
        g_free(stolen_key);
    g_mutex_unlock(&daemon->pools_lock);
    FerryPool *pool = stolen_pool;
    gboolean was_loaded = pool != NULL;
    if (pool == NULL) {
        /* Not mounted at start (its storage may be gone): a handle from the stored config will do. */
        g_autoptr(GHashTable) config = string_table(json_object_get(doc, "config"));
        g_autofree char *storage_dir = ferry_daemon_path(daemon, "storage-pools", name, NULL);
        pool = ferry_pool_load(name, ferry_json_get_string(doc, "driver"), config, storage_dir, &error);
        if (pool == NULL)
            return ferry_response_error(error);
    }

    PoolJob *job = g_new0(PoolJob, 1);
    job->kind = JOB_DELETE;
    job->name = g_strdup(name);
    job->pool = pool;
    job->was_loaded = was_loaded;
    return run_job(request, job);
}

FerryResponse *api_pool_resources_get(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *name = ferry_request_param(request, "pool");
    GError *error = NULL;
    if (!ferry_db_exists(daemon->db, FERRY_KIND_POOL, "", "", name))
        return ferry_response_error_new(404, "Storage pool \"%s\" not found", name);
    FerryPool *pool = ferry_daemon_get_pool(daemon, name, &error);
    if (pool == NULL)
        return ferry_response_error(error);
    guint64 used = 0, total = 0;
    if (!ferry_pool_usage(pool, &used, &total, &error))
        return ferry_response_error(error);
    struct statvfs fs;
    guint64 inodes_total = 0, inodes_used = 0;
    if (statvfs(ferry_pool_get_mount_path(pool), &fs) == 0) {
        inodes_total = fs.f_files;
        inodes_used = fs.f_files >= fs.f_ffree ? fs.f_files - fs.f_ffree : 0;
    }
    return ferry_response_sync(json_pack("{s:{s:I, s:I}, s:{s:I, s:I}}", "space", "used", (json_int_t)used,
                                         "total", (json_int_t)total, "inodes", "used",
                                         (json_int_t)inodes_used, "total", (json_int_t)inodes_total));
}

/* --- volumes --- */

static json_t *volume_new(const char *pool, const char *type, const char *name, const char *project,
                          json_t *used_by /* stolen */, gint64 created_at, json_t *config /* stolen */,
                          const char *description)
{
    g_autofree char *created = ferry_json_timestamp(created_at);
    return json_pack("{s:s, s:s, s:o, s:s, s:s, s:s, s:s, s:o, s:s, s:s}", "name", name, "type", type,
                     "config", config != NULL ? config : json_object(), "description",
                     description != NULL ? description : "", "content_type", "filesystem", "project", project,
                     "location", "none", "used_by", used_by != NULL ? used_by : json_array(), "created_at",
                     created, "pool", pool);
}

static void collect_instance_volumes(FerryDaemon *daemon, json_t *out, const char *pool, const char *project)
{
    g_autoptr(json_t) instances = ferry_db_list(daemon->db, FERRY_KIND_INSTANCE, project, "");
    size_t index;
    json_t *doc;
    json_array_foreach(instances, index, doc) {
        if (g_strcmp0(ferry_json_get_string(doc, "pool"), pool) != 0)
            continue;
        const char *name = ferry_json_get_string(doc, "name");
        const char *instance_project = doc_project(doc);
        g_autofree char *url = project_url("instances", name, instance_project);
        gint64 created = ferry_db_created_at(daemon->db, FERRY_KIND_INSTANCE, instance_project, "", name);
        json_array_append_new(out, volume_new(pool, "container", name, instance_project,
                                              json_pack("[s]", url), created, NULL, NULL));
        g_autoptr(GPtrArray) snapshots =
            ferry_db_list_names(daemon->db, FERRY_KIND_SNAPSHOT, instance_project, name);
        for (guint i = 0; i < snapshots->len; i++) {
            g_autofree char *volume = g_strdup_printf("%s/%s", name, (char *)snapshots->pdata[i]);
            gint64 snapshot_created = ferry_db_created_at(daemon->db, FERRY_KIND_SNAPSHOT, instance_project,
                                                          name, snapshots->pdata[i]);
            json_array_append_new(out, volume_new(pool, "container", volume, instance_project, NULL,
                                                  snapshot_created, NULL, NULL));
        }
    }
}

static void collect_image_volumes(FerryDaemon *daemon, json_t *out, const char *pool_name,
                                  const char *project)
{
    FerryPool *pool = ferry_daemon_get_pool(daemon, pool_name, NULL);
    if (pool == NULL)
        return;
    g_autoptr(json_t) images = ferry_db_list(daemon->db, FERRY_KIND_IMAGE, project, "");
    size_t index;
    json_t *doc;
    json_array_foreach(images, index, doc) {
        const char *fingerprint = ferry_json_get_string(doc, "name");
        const char *image_project = doc_project(doc);
        if (!ferry_pool_volume_exists(pool, FERRY_VOLUME_IMAGE, fingerprint))
            continue;
        g_autofree char *url = project_url("images", fingerprint, image_project);
        gint64 created = ferry_db_created_at(daemon->db, FERRY_KIND_IMAGE, image_project, "", fingerprint);
        json_array_append_new(out, volume_new(pool_name, "image", fingerprint, image_project,
                                              json_pack("[s]", url), created, NULL, NULL));
    }
}

static void collect_custom_volumes(FerryDaemon *daemon, json_t *out, const char *pool, const char *project)
{
    g_autoptr(json_t) volumes = ferry_db_list(daemon->db, FERRY_KIND_VOLUME, project, "");
    size_t index;
    json_t *doc;
    json_array_foreach(volumes, index, doc) {
        if (g_strcmp0(ferry_json_get_string(doc, "pool"), pool) != 0)
            continue;
        const char *name = ferry_json_get_string(doc, "name");
        const char *volume_project = doc_project(doc);
        gint64 created = ferry_db_created_at(daemon->db, FERRY_KIND_VOLUME, volume_project, "", name);
        json_array_append_new(out, volume_new(pool, "custom", name, volume_project, NULL, created,
                                              ferry_json_object_or_empty(doc, "config"),
                                              ferry_json_get_string(doc, "description")));
    }
}

/* The volumes on pool in project (NULL: every project), of one type or (type NULL) all. */
static json_t *collect_volumes(FerryDaemon *daemon, const char *pool, const char *project, const char *type)
{
    json_t *volumes = json_array();
    if (type == NULL || g_str_equal(type, "container"))
        collect_instance_volumes(daemon, volumes, pool, project);
    if (type == NULL || g_str_equal(type, "image"))
        collect_image_volumes(daemon, volumes, pool, project);
    if (type == NULL || g_str_equal(type, "custom"))
        collect_custom_volumes(daemon, volumes, pool, project);
    return volumes;
}

/* Incus's URL of a volume; a snapshot "c1/snap0" is ".../volumes/container/c1/snapshots/snap0". */
static char *volume_url(const char *pool, json_t *volume)
{
    const char *name = ferry_json_get_string(volume, "name");
    const char *project = ferry_json_get_string(volume, "project");
    g_autofree char *escaped_pool = g_uri_escape_string(pool, NULL, FALSE);
    g_auto(GStrv) parts = g_strsplit(name, "/", 2);
    g_autofree char *escaped = g_uri_escape_string(parts[0], NULL, FALSE);
    g_autofree char *path = NULL;
    if (parts[1] != NULL) {
        g_autofree char *escaped_snapshot = g_uri_escape_string(parts[1], NULL, FALSE);
        path = g_strdup_printf("/1.0/storage-pools/%s/volumes/%s/%s/snapshots/%s", escaped_pool,
                               ferry_json_get_string(volume, "type"), escaped, escaped_snapshot);
    } else {
        path = g_strdup_printf("/1.0/storage-pools/%s/volumes/%s/%s", escaped_pool,
                               ferry_json_get_string(volume, "type"), escaped);
    }
    if (project == NULL || g_str_equal(project, "default"))
        return g_steal_pointer(&path);
    g_autofree char *escaped_project = g_uri_escape_string(project, NULL, FALSE);
    return g_strdup_printf("%s?project=%s", path, escaped_project);
}

/* The pool and project of a volume request; NULL project with ?all-projects=true. */
static gboolean volume_scope(FerryRequest *request, const char **project_out, GError **error)
{
    const char *pool = ferry_request_param(request, "pool");
    if (!ferry_db_exists(request->daemon->db, FERRY_KIND_POOL, "", "", pool)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Storage pool \"%s\" not found", pool);
        return FALSE;
    }
    const char *all = ferry_request_query(request, "all-projects");
    if (all != NULL && (g_str_equal(all, "true") || g_str_equal(all, "1"))) {
        *project_out = NULL;
        return TRUE;
    }
    *project_out = request->project;
    return ferry_project_check_exists(request->daemon, request->project, error);
}

static gboolean check_volume_type(const char *type, GError **error)
{
    if (g_strv_contains(volume_types, type))
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid storage volume type \"%s\"", type);
    return FALSE;
}

static FerryResponse *volumes_list(FerryRequest *request, const char *type)
{
    const char *pool = ferry_request_param(request, "pool");
    const char *project = NULL;
    GError *error = NULL;
    if (!volume_scope(request, &project, &error) || (type != NULL && !check_volume_type(type, &error)))
        return ferry_response_error(error);
    json_t *volumes = collect_volumes(request->daemon, pool, project, type);
    if (ferry_request_recursion(request) > 0)
        return ferry_response_sync(volumes);
    json_t *urls = json_array();
    size_t index;
    json_t *volume;
    json_array_foreach(volumes, index, volume) {
        g_autofree char *url = volume_url(pool, volume);
        json_array_append_new(urls, json_string(url));
    }
    json_decref(volumes);
    return ferry_response_sync(urls);
}

FerryResponse *api_volumes_get(FerryRequest *request)
{
    return volumes_list(request, NULL);
}

FerryResponse *api_volumes_type_get(FerryRequest *request)
{
    return volumes_list(request, ferry_request_param(request, "type"));
}

FerryResponse *api_volume_get(FerryRequest *request)
{
    const char *pool = ferry_request_param(request, "pool");
    const char *type = ferry_request_param(request, "type");
    const char *volume_name = ferry_request_param(request, "volume");
    const char *snapshot = ferry_request_param(request, "snapshot");
    /* A snapshot is the volume "<volume>/<snapshot>" (route
     * .../volumes/{type}/{volume}/snapshots/{snapshot}). */
    g_autofree char *name =
        snapshot != NULL ? g_strdup_printf("%s/%s", volume_name, snapshot) : g_strdup(volume_name);
    const char *project = NULL;
    GError *error = NULL;
    if (!volume_scope(request, &project, &error) || !check_volume_type(type, &error))
        return ferry_response_error(error);
    g_autoptr(json_t) volumes = collect_volumes(request->daemon, pool, project, type);
    size_t index;
    json_t *volume;
    json_array_foreach(volumes, index, volume) {
        if (g_strcmp0(ferry_json_get_string(volume, "name"), name) == 0)
            return ferry_response_sync(json_incref(volume));
    }
    return ferry_response_error_new(404, "Storage volume \"%s\" not found", name);
}
