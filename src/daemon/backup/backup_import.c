#include "backup_import.h"

#include "backup_btrfs.h"
#include "backup_reader.h"
#include "error.h"
#include "idmap.h"
#include "instance_config.h"
#include "instances.h"
#include "json.h"
#include "names.h"
#include "pool.h"

#include <errno.h>
#include <glib/gstdio.h>

typedef struct {
    FerryDaemon *daemon;
    FerryOperation *op;
    const char *project;
    const char *name_override;
    const char *pool_override;
    char *name;
    FerryPool *pool;
    char *volume;
    char *staging;     /* btrfs: the subvolume a snapshot is extracted into before it becomes one */
    gboolean prepared; /* the "creating" row exists */
    gboolean volume_created;
    gboolean instance_done;
    gboolean privileged;
    FerryBackupBtrfsImport *optimized; /* an optimized backup: its streams, received into staging */
    json_t *snapshot_docs;             /* name -> snapshot row */
    json_t *config_updates;
} ImportState;

static json_t *find_root_device(json_t *devices)
{
    const char *key;
    json_t *device;
    json_object_foreach(devices, key, device)
    {
        if (g_strcmp0(ferry_json_get_string(device, "type"), "disk") == 0 &&
            g_strcmp0(ferry_json_get_string(device, "path"), "/") == 0)
            return device;
    }
    return NULL;
}

/* The root disk of the record's own devices goes to pool; without one, a root device is added when the
 * profiles would put the instance elsewhere. */
static void retarget_root(FerryDaemon *daemon, const char *project, json_t *record, const char *pool)
{
    json_t *devices = json_object_get(record, "devices");
    if (!json_is_object(devices)) {
        devices = json_object();
        json_object_set_new(record, "devices", devices);
    }
    json_t *root = find_root_device(devices);
    if (root != NULL) {
        json_object_set_new(root, "pool", json_string(pool));
        return;
    }
    g_autoptr(json_t) expanded = NULL;
    json_t *profile_root = NULL;
    if (ferry_config_expand(daemon->db, project, json_object_get(record, "profiles"), NULL, devices, NULL,
                            &expanded, NULL) &&
        ferry_devices_find_root(expanded, NULL, &profile_root, NULL) &&
        g_strcmp0(ferry_json_get_string(profile_root, "pool"), pool) == 0)
        return;
    json_object_set_new(devices, "root",
                        json_pack("{s:s, s:s, s:s}", "path", "/", "pool", pool, "type", "disk"));
}

/* Storage streams only go back into the driver that wrote them, as with Incus. */
static gboolean prepare_optimized(ImportState *state, FerryBackupIndex *index, GError **error)
{
    const char *driver = ferry_pool_get_driver(state->pool);
    if (g_strcmp0(index->backend, driver) != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Optimized backups can only be restored on a pool of the same type (the backup's is %s, "
                    "pool \"%s\" is %s)",
                    index->backend != NULL ? index->backend : "unknown", ferry_pool_get_name(state->pool),
                    driver);
        return FALSE;
    }
    if (!g_str_equal(driver, "btrfs")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                    "Optimized backups of %s pools are not supported: export without --optimized-storage",
                    driver);
        return FALSE;
    }
    g_autofree char *work = g_build_filename(ferry_pool_get_mount_path(state->pool), "containers", NULL);
    state->optimized = ferry_backup_btrfs_import_new(work, index->snapshots, error);
    return state->optimized != NULL;
}

static gboolean on_optimized_header(json_t *header, gpointer user_data, GError **error)
{
    ImportState *state = user_data;
    return ferry_backup_btrfs_import_header(state->optimized, header, error);
}

static gboolean on_optimized_stream(const char *snapshot, FerryBackupStreamRead read, gpointer stream,
                                    gpointer user_data, GError **error)
{
    ImportState *state = user_data;
    return ferry_backup_btrfs_import_stream(
        state->optimized, snapshot, read, stream,
        state->op != NULL ? ferry_operation_get_cancellable(state->op) : NULL, error);
}

/* The received subvolumes become the instance's volume and snapshots. */
static gboolean commit_optimized(ImportState *state, GError **error)
{
    if (state->optimized == NULL)
        return TRUE;
    g_autofree char *volume_path = ferry_pool_volume_path(state->pool, FERRY_VOLUME_CONTAINER, state->volume);
    g_autofree char *any_snapshot =
        ferry_pool_snapshot_path(state->pool, FERRY_VOLUME_CONTAINER, state->volume, "snapshot");
    g_autofree char *snapshots_dir = g_path_get_dirname(any_snapshot);
    return ferry_backup_btrfs_import_commit(state->optimized, volume_path, snapshots_dir, error);
}

static gboolean on_index(FerryBackupIndex *index, gpointer user_data, GError **error)
{
    ImportState *state = user_data;
    FerryDaemon *daemon = state->daemon;
    state->name = g_strdup(state->name_override != NULL ? state->name_override : index->name);
    if (!ferry_validate_instance_name(state->name, error))
        return FALSE;
    if (ferry_db_exists(daemon->db, FERRY_KIND_INSTANCE, state->project, "", state->name)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Instance \"%s\" already exists", state->name);
        return FALSE;
    }
    const char *pool = state->pool_override;
    if (pool == NULL && index->pool != NULL && ferry_daemon_get_pool(daemon, index->pool, NULL) != NULL)
        pool = index->pool;
    if (pool != NULL && ferry_daemon_get_pool(daemon, pool, error) == NULL)
        return FALSE;

    json_t *container = json_object_get(index->config, "container");
    g_autoptr(json_t) request = json_object();
    json_object_set_new(request, "name", json_string(state->name));
    json_object_set_new(request, "type", json_string("container"));
    const char *architecture = ferry_json_get_string(container, "architecture");
    if (architecture != NULL)
        json_object_set_new(request, "architecture", json_string(architecture));
    json_object_set_new(request, "config",
                        ferry_instance_config_for_copy(json_object_get(container, "config")));
    json_object_set_new(request, "devices", ferry_json_object_or_empty(container, "devices"));
    if (json_is_array(json_object_get(container, "profiles")))
        json_object_set(request, "profiles", json_object_get(container, "profiles"));
    json_object_set_new(request, "description",
                        json_string(ferry_json_get_string(container, "description") ?: ""));
    json_object_set_new(request, "ephemeral",
                        json_boolean(ferry_json_get_bool(container, "ephemeral", FALSE)));
    if (pool != NULL)
        retarget_root(daemon, state->project, request, pool);

    g_autoptr(json_t) doc = ferry_instance_prepare_new(daemon, state->project, request, error);
    if (doc == NULL)
        return FALSE;
    state->prepared = TRUE;
    state->pool = ferry_daemon_get_pool(daemon, ferry_json_get_string(doc, "pool"), error);
    if (state->pool == NULL)
        return FALSE;
    state->volume = ferry_instance_volume_name(state->project, state->name);
    if (index->optimized && !prepare_optimized(state, index, error))
        return FALSE;
    g_autoptr(json_t) expanded_config = NULL;
    if (!ferry_config_expand(daemon->db, state->project, json_object_get(doc, "profiles"),
                             json_object_get(doc, "config"), NULL, &expanded_config, NULL, error))
        return FALSE;
    state->privileged = ferry_config_bool(expanded_config, "security.privileged");
    FerryIdmap map = {FERRY_IDMAP_DEFAULT_BASE, FERRY_IDMAP_DEFAULT_RANGE};
    g_autofree char *idmap_json = ferry_idmap_to_json(state->privileged ? NULL : &map);
    if (index->optimized) {
        /* The streams keep the owners the data had on the source's disk ("[]": unshifted); a first start
         * remaps them when that is not what the instance needs, as after a migration. */
        const char *source_map =
            ferry_json_get_string(json_object_get(container, "config"), "volatile.last_state.idmap");
        g_free(idmap_json);
        idmap_json = g_strdup(source_map != NULL ? source_map : "[]");
    }
    state->config_updates = json_pack("{s:s, s:s}", "volatile.last_state.idmap", idmap_json,
                                      "volatile.idmap.base", state->privileged ? "0" : "1000000");

    /* The snapshot rows, ready for the end: same root pool, the owners they now have on disk. */
    state->snapshot_docs = json_object();
    for (guint i = 0; i < index->snapshots->len; i++) {
        const char *snapshot = index->snapshots->pdata[i];
        json_t *source = ferry_backup_index_snapshot_config(index, snapshot);
        json_t *snap = json_object();
        const char *snapshot_architecture = ferry_json_get_string(source, "architecture");
        if (snapshot_architecture == NULL)
            snapshot_architecture = architecture != NULL ? architecture : "x86_64";
        json_object_set_new(snap, "architecture", json_string(snapshot_architecture));
        json_object_set_new(
            snap, "config",
            ferry_instance_config_for_copy(json_object_get(source != NULL ? source : container, "config")));
        json_object_update(json_object_get(snap, "config"), state->config_updates);
        json_object_set_new(snap, "devices",
                            ferry_json_object_or_empty(source != NULL ? source : container, "devices"));
        json_t *profiles = json_object_get(source != NULL ? source : container, "profiles");
        json_object_set_new(snap, "profiles",
                            json_is_array(profiles) ? json_deep_copy(profiles) : json_array());
        static const char *const copied[] = {"expanded_config", "expanded_devices"};
        for (gsize j = 0; j < G_N_ELEMENTS(copied); j++)
            json_object_set_new(snap, copied[j], ferry_json_object_or_empty(source, copied[j]));
        json_object_update(json_object_get(snap, "expanded_config"), state->config_updates);
        json_object_set_new(snap, "stateful", json_false());
        static const char *const times[] = {"created_at", "expires_at", "description"};
        for (gsize j = 0; j < G_N_ELEMENTS(times); j++) {
            const char *value = ferry_json_get_string(source, times[j]);
            if (value != NULL)
                json_object_set_new(snap, times[j], json_string(value));
        }
        retarget_root(daemon, state->project, snap, ferry_pool_get_name(state->pool));
        json_t *expanded_root = find_root_device(json_object_get(snap, "expanded_devices"));
        if (expanded_root != NULL)
            json_object_set_new(expanded_root, "pool", json_string(ferry_pool_get_name(state->pool)));
        json_object_set_new(state->snapshot_docs, snapshot, snap);
    }
    return TRUE;
}

static gboolean make_dir(const char *path, mode_t mode, GError **error)
{
    if (g_mkdir(path, mode) < 0) {
        ferry_set_error_errno(error, errno, "Failed to create %s", path);
        return FALSE;
    }
    return TRUE;
}

static char *on_tree_begin(const char *snapshot, guint32 *shift, gpointer user_data, GError **error)
{
    ImportState *state = user_data;
    *shift = state->privileged ? 0 : FERRY_IDMAP_DEFAULT_BASE;
    gboolean dir_driver = g_str_equal(ferry_pool_get_driver(state->pool), "dir");
    if (snapshot != NULL && dir_driver) {
        /* On dir a snapshot is a plain directory: extract straight into it. */
        g_autofree char *path =
            ferry_pool_snapshot_path(state->pool, FERRY_VOLUME_CONTAINER, state->volume, snapshot);
        g_autofree char *parent = g_path_get_dirname(path);
        if (g_mkdir(parent, 0700) < 0 && errno != EEXIST) {
            ferry_set_error_errno(error, errno, "Failed to create %s", parent);
            return NULL;
        }
        if (!make_dir(path, 0711, error))
            return NULL;
        return g_steal_pointer(&path);
    }
    if (!state->volume_created) {
        if (!ferry_pool_create_volume(state->pool, FERRY_VOLUME_CONTAINER, state->volume, error))
            return NULL;
        state->volume_created = TRUE;
        return ferry_pool_volume_path(state->pool, FERRY_VOLUME_CONTAINER, state->volume);
    }
    if (state->instance_done) {
        g_set_error(
            error, FERRY_ERROR, FERRY_ERROR_INVALID,
            "Invalid backup: snapshot \"%s\" comes after the instance (snapshots come first, oldest first)",
            snapshot);
        return NULL;
    }
    /* A snapshot here is made from the volume (btrfs: a read-only subvolume snapshot): each later tree is
     * extracted into a staging volume (removed by ferry_instances_recover after a crash) that then takes the
     * volume's place, and the volume is snapshotted again. */
    g_free(state->staging);
    state->staging = g_strdup_printf("%s.import", state->volume);
    ferry_pool_delete_volume(state->pool, FERRY_VOLUME_CONTAINER, state->staging, NULL);
    if (!ferry_pool_create_volume(state->pool, FERRY_VOLUME_CONTAINER, state->staging, error))
        return NULL;
    return ferry_pool_volume_path(state->pool, FERRY_VOLUME_CONTAINER, state->staging);
}

static gboolean on_tree_end(const char *snapshot, gpointer user_data, GError **error)
{
    ImportState *state = user_data;
    if (snapshot == NULL)
        state->instance_done = TRUE;
    if (snapshot != NULL && g_str_equal(ferry_pool_get_driver(state->pool), "dir"))
        return TRUE;
    if (state->staging != NULL) {
        if (!ferry_pool_exchange_volumes(state->pool, FERRY_VOLUME_CONTAINER, state->volume, state->staging,
                                         error) ||
            !ferry_pool_delete_volume(state->pool, FERRY_VOLUME_CONTAINER, state->staging, error))
            return FALSE;
        g_clear_pointer(&state->staging, g_free);
    }
    return snapshot == NULL ||
           ferry_pool_create_snapshot(state->pool, FERRY_VOLUME_CONTAINER, state->volume, snapshot, error);
}

static void on_progress(guint64 done, guint64 total, gpointer user_data)
{
    ImportState *state = user_data;
    if (state->op != NULL)
        ferry_operation_report_progress(state->op, "create_instance_from_backup_progress", "Importing", done,
                                        total);
}

/* The snapshot rows and the finished instance, together or not at all. */
static gboolean write_records(ImportState *state, GError **error)
{
    FerryDb *db = state->daemon->db;
    ferry_db_begin(db);
    const char *snapshot;
    json_t *doc;
    json_object_foreach(state->snapshot_docs, snapshot, doc)
    {
        if (!ferry_db_create(db, FERRY_KIND_SNAPSHOT, state->project, state->name, snapshot, doc, error)) {
            ferry_db_rollback(db);
            return FALSE;
        }
    }
    if (!ferry_instance_creation_done(state->daemon, state->project, state->name, state->config_updates,
                                      FALSE, error)) {
        ferry_db_rollback(db);
        return FALSE;
    }
    return ferry_db_commit(db, error);
}

static gboolean import_backup(FerryDaemon *daemon, FerryOperation *op, const char *project, const char *path,
                              ImageReadFunc read, gpointer read_data, guint64 size, const char *name,
                              const char *pool, GError **error)
{
    ImportState state = {
        .daemon = daemon,
        .op = op,
        .project = project,
        .name_override = name != NULL && *name != '\0' ? name : NULL,
        .pool_override = pool != NULL && *pool != '\0' ? pool : NULL,
    };
    static const FerryBackupReadCallbacks callbacks = {
        on_index, on_tree_begin, on_tree_end, on_progress, on_optimized_header, on_optimized_stream,
    };
    GCancellable *cancellable = op != NULL ? ferry_operation_get_cancellable(op) : NULL;
    gboolean ok = (path != NULL ? ferry_backup_archive_read(path, &callbacks, &state, cancellable, error)
                                : ferry_backup_archive_read_stream(read, read_data, size, &callbacks, &state,
                                                                   cancellable, error)) &&
                  commit_optimized(&state, error) && write_records(&state, error);
    if (!ok) {
        if (state.staging != NULL)
            ferry_pool_delete_volume(state.pool, FERRY_VOLUME_CONTAINER, state.staging, NULL);
        if (state.prepared)
            ferry_instance_create_abort(daemon, project, state.name);
        g_prefix_error(error, "Failed to import the backup: ");
    }
    g_free(state.name);
    g_free(state.volume);
    g_free(state.staging);
    ferry_backup_btrfs_import_free(state.optimized);
    json_decref(state.snapshot_docs);
    json_decref(state.config_updates);
    return ok;
}

gboolean ferry_backup_import(FerryDaemon *daemon, FerryOperation *op, const char *project, const char *path,
                             const char *name, const char *pool, GError **error)
{
    return import_backup(daemon, op, project, path, NULL, NULL, 0, name, pool, error);
}

gboolean ferry_backup_import_stream(FerryDaemon *daemon, FerryOperation *op, const char *project,
                                    ImageReadFunc read, gpointer read_data, guint64 size, const char *name,
                                    const char *pool, GError **error)
{
    return import_backup(daemon, op, project, NULL, read, read_data, size, name, pool, error);
}
