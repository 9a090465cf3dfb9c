#include "backup_export.h"

#include "backup_btrfs.h"
#include "backup_index.h"
#include "error.h"
#include "idmap.h"
#include "instances.h"
#include "json.h"
#include "migration/offer.h"
#include "pool.h"
#include "yaml.h"

typedef struct {
    FerryOperation *op;
    guint64 total;
} ExportProgress;

typedef struct {
    guint32 base;
    guint32 range;
} DiskMap;

static void on_progress(guint64 done, gpointer user_data)
{
    ExportProgress *progress = user_data;
    if (progress->op != NULL)
        ferry_operation_report_progress(progress->op, "create_backup_progress", "Exporting",
                                        MIN(done, progress->total), progress->total);
}

/* The archive holds owners as the container sees them: the records say the data is not shifted. */
static void mark_unshifted(json_t *object)
{
    static const char *const maps[] = {"config", "expanded_config"};
    for (gsize i = 0; i < G_N_ELEMENTS(maps); i++) {
        json_t *config = json_object_get(object, maps[i]);
        if (json_is_object(config))
            json_object_set_new(config, "volatile.last_state.idmap", json_string("[]"));
    }
}

/* The id map the data of a record is stored with on disk (range 0: none). */
static void record_idmap(json_t *config, guint32 *base, guint32 *range)
{
    FerryIdmap map = {0, 0};
    gboolean privileged = TRUE;
    const char *json = ferry_json_get_string(config, "volatile.last_state.idmap");
    if (json == NULL || !ferry_idmap_from_json(json, &map, &privileged, NULL) || privileged)
        map.host_base = map.range = 0;
    *base = map.host_base;
    *range = map.range;
}

/* Go field names of the migration header's "backup config" as backup.yaml names them. */
static json_t *yaml_config(json_t *header)
{
    static const struct {
        const char *go;
        const char *yaml;
    } keys[] = {
        {"Container", "container"}, {"Snapshots", "snapshots"}, {"Pool", "pool"},
        {"Profiles", "profiles"},   {"Volume", "volume"},       {"VolumeSnapshots", "volume_snapshots"},
    };
    json_t *from = json_object_get(header, "config");
    json_t *config = json_object();
    for (gsize i = 0; i < G_N_ELEMENTS(keys); i++) {
        json_t *value = json_object_get(from, keys[i].go);
        if (value != NULL && !json_is_null(value))
            json_object_set(config, keys[i].yaml, value);
    }
    return config;
}

gboolean ferry_backup_export(FerryDaemon *daemon, FerryOperation *op, const char *project, const char *name,
                             const FerryBackupOptions *options, FerryBackupWriteFunc write,
                             gpointer user_data, GError **error)
{
    GCancellable *cancellable = op != NULL ? ferry_operation_get_cancellable(op) : NULL;
    g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_INSTANCE, project, "", name, error);
    if (doc == NULL)
        return FALSE;
    if (ferry_json_get_bool(doc, "creating", FALSE)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Instance \"%s\" is still being created", name);
        return FALSE;
    }
    FerryPool *pool = ferry_instance_get_pool(daemon, project, doc, error);
    if (pool == NULL)
        return FALSE;
    /* As Incus: asked of a driver without an optimized form, the portable layout is written instead. */
    gboolean optimized = options->optimized && g_str_equal(ferry_pool_get_driver(pool), "btrfs");
    g_autoptr(json_t) instance = ferry_instance_render(daemon, project, name, 1, error);
    if (instance == NULL)
        return FALSE;
    g_autoptr(GPtrArray) names = options->instance_only
                                     ? g_ptr_array_new_with_free_func(g_free)
                                     : ferry_db_list_names(daemon->db, FERRY_KIND_SNAPSHOT, project, name);
    g_autoptr(json_t) snapshots = json_array();
    g_autoptr(GArray) maps = g_array_new(FALSE, TRUE, sizeof(DiskMap));
    for (guint i = 0; i < names->len; i++) {
        json_t *snapshot = ferry_snapshot_render(daemon, project, name, names->pdata[i], error);
        if (snapshot == NULL)
            return FALSE;
        DiskMap map;
        /* A snapshot taken before a privileged switch keeps the owners it had then. */
        if (ferry_json_get_string(json_object_get(snapshot, "config"), "volatile.last_state.idmap") != NULL)
            record_idmap(json_object_get(snapshot, "config"), &map.base, &map.range);
        else
            record_idmap(json_object_get(doc, "config"), &map.base, &map.range);
        g_array_append_val(maps, map);
        /* A stream holds the owners as they are on disk, and the records keep saying which they are. */
        if (!optimized)
            mark_unshifted(snapshot);
        json_array_append_new(snapshots, snapshot);
    }
    guint32 base, range;
    record_idmap(json_object_get(doc, "config"), &base, &range);
    if (!optimized)
        mark_unshifted(instance);

    const char *pool_name = ferry_pool_get_name(pool);
    g_autoptr(json_t) header =
        ferry_offer_index_header(daemon, project, instance, snapshots, pool_name, TRUE);
    g_autoptr(json_t) config = yaml_config(header);
    g_autofree char *index_text = ferry_backup_index_render(name, ferry_pool_get_driver(pool), pool_name,
                                                            names, optimized, config, error);
    if (index_text == NULL)
        return FALSE;
    g_autofree char *backup_yaml = ferry_yaml_emit(config, error);
    if (backup_yaml == NULL)
        return FALSE;

    g_autofree char *volume = ferry_instance_volume_name(project, name);
    g_autofree char *volume_path = ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, volume);
    g_autoptr(GPtrArray) snapshot_paths = g_ptr_array_new_with_free_func(g_free);
    ExportProgress progress = {op, 0};
    for (guint i = 0; i < names->len; i++)
        g_ptr_array_add(snapshot_paths,
                        ferry_pool_snapshot_path(pool, FERRY_VOLUME_CONTAINER, volume, names->pdata[i]));
    g_autoptr(FerryBackupBtrfsExport) streams = NULL;
    if (optimized) {
        streams = ferry_backup_btrfs_export_new(volume_path, snapshot_paths, backup_yaml, cancellable, error);
        if (streams == NULL)
            return FALSE;
        progress.total = ferry_backup_btrfs_export_size(streams);
    } else {
        g_ptr_array_add(snapshot_paths, g_strdup(volume_path));
        for (guint i = 0; i < snapshot_paths->len; i++) {
            guint64 bytes = 0;
            if (!ferry_backup_tree_size(snapshot_paths->pdata[i], &bytes, cancellable, error))
                return FALSE;
            progress.total += bytes;
        }
    }
    on_progress(0, &progress);

    g_autoptr(FerryBackupWriter) writer =
        ferry_backup_writer_new(options->compression, write, user_data, cancellable, error);
    if (writer == NULL)
        return FALSE;
    ferry_backup_writer_set_progress(writer, on_progress, &progress);
    if (!ferry_backup_writer_add_file(writer, "backup/index.yaml", index_text, strlen(index_text), 0644,
                                      error))
        return FALSE;
    if (optimized) {
        if (!ferry_backup_btrfs_export_write(streams, writer, error) ||
            !ferry_backup_writer_close(writer, error))
            return FALSE;
        on_progress(progress.total, &progress);
        return TRUE;
    }
    for (guint i = 0; i < names->len; i++) {
        g_autofree char *prefix = g_strdup_printf("backup/snapshots/%s", (const char *)names->pdata[i]);
        const DiskMap *map = &g_array_index(maps, DiskMap, i);
        if (!ferry_backup_writer_add_tree(writer, snapshot_paths->pdata[i], prefix, map->base, map->range,
                                          error)) {
            g_prefix_error(error, "Snapshot \"%s\": ", (const char *)names->pdata[i]);
            return FALSE;
        }
    }
    if (!ferry_backup_writer_add_tree(writer, volume_path, "backup/container", base, range, error) ||
        !ferry_backup_writer_add_file(writer, "backup/container/backup.yaml", backup_yaml,
                                      strlen(backup_yaml), 0400, error) ||
        !ferry_backup_writer_close(writer, error))
        return FALSE;
    if (op != NULL)
        ferry_operation_report_progress(op, "create_backup_progress", "Exporting", progress.total,
                                        progress.total);
    return TRUE;
}
