/* The sink side of a migration: check everything before any data moves, receive into the new instance's
 * volume (which nobody can see until it is complete), then create the records in one transaction. A failure at
 * any point removes the volume and the rows, leaving the server as it was. */
#include "migration.h"

#include "control_monitor.h"
#include "error.h"
#include "instances.h"
#include "json.h"
#include "link.h"
#include "btrfs_transport.h"
#include "messages.h"
#include "names.h"
#include "offer.h"
#include "pool.h"
#include "response.h"
#include "transfer.h"

#define CONTROL_CONNECT_TIMEOUT 30
#define DATA_CONNECT_TIMEOUT 10
/* After our success message, how long the source has to close the connection (the end of an Incus source). */
#define SOURCE_CLOSE_TIMEOUT 30

typedef struct {
    FerryDaemon *daemon;
    char *project;
    char *name;
    json_t *request;
    gboolean push;
    FerryMigrationLink *link;
    json_t *config_updates; /* what the data says about itself, applied when the instance is complete */
    gboolean refresh;       /* update an existing instance: receive beside it, swap in at the end */
    char *staging;          /* refresh: the volume receiving the data */
} SinkTask;

static void sink_task_free(gpointer data)
{
    SinkTask *task = data;
    g_free(task->project);
    g_free(task->name);
    json_decref(task->request);
    json_decref(task->config_updates);
    g_free(task->staging);
    ferry_migration_link_free(task->link);
    g_free(task);
}

static gboolean connect_channel(FerryOperation *op, gpointer data, SoupServerMessage *msg, const char *channel,
                                GError **error)
{
    SinkTask *task = data;
    return ferry_migration_link_connect(task->link, op, msg, channel, error);
}

static json_t *config_object(Migration__Config **configs, size_t count)
{
    json_t *object = json_object();
    for (size_t i = 0; i < count; i++)
        json_object_set_new(object, configs[i]->key, json_string(configs[i]->value));
    return object;
}

static json_t *find_by_name(json_t *list, const char *name)
{
    size_t index;
    json_t *item;
    json_array_foreach(list, index, item) {
        json_t *item_name = ferry_offer_member(item, "name");
        if (json_is_string(item_name) && g_str_equal(json_string_value(item_name), name))
            return item;
    }
    return NULL;
}

/* The snapshot record the offer describes; the index header adds what protobuf does not carry. */
static json_t *snapshot_document(const Migration__Snapshot *snap, json_t *index_snapshot, const char *pool)
{
    json_t *devices = json_object();
    for (size_t i = 0; i < snap->n_localdevices; i++) {
        json_t *device = config_object(snap->localdevices[i]->config, snap->localdevices[i]->n_config);
        /* A snapshot's own root disk lives where its instance does. */
        if (g_strcmp0(ferry_json_get_string(device, "path"), "/") == 0 &&
            g_strcmp0(ferry_json_get_string(device, "type"), "disk") == 0)
            json_object_set_new(device, "pool", json_string(pool));
        json_object_set_new(devices, snap->localdevices[i]->name, device);
    }
    json_t *profiles = json_array();
    for (size_t i = 0; i < snap->n_profiles; i++)
        json_array_append_new(profiles, json_string(snap->profiles[i]));
    json_t *doc = json_pack("{s:o, s:o, s:o, s:s, s:b}", "config",
                            config_object(snap->localconfig, snap->n_localconfig), "devices", devices, "profiles",
                            profiles, "architecture", ferry_migration_architecture_name(snap->architecture),
                            "stateful", (int)snap->stateful);
    if (snap->has_creation_date && snap->creation_date > 0) {
        g_autofree char *created = ferry_json_timestamp(snap->creation_date * G_USEC_PER_SEC);
        json_object_set_new(doc, "created_at", json_string(created));
    }
    if (snap->has_expiry_date && snap->expiry_date > 0) {
        g_autofree char *expires = ferry_json_timestamp(snap->expiry_date * G_USEC_PER_SEC);
        json_object_set_new(doc, "expires_at", json_string(expires));
    }
    const char *description = snap->description;
    if ((description == NULL || *description == '\0') && index_snapshot != NULL) {
        json_t *text = ferry_offer_member(index_snapshot, "description");
        description = json_is_string(text) ? json_string_value(text) : NULL;
    }
    json_object_set_new(doc, "description", json_string(description != NULL ? description : ""));
    /* Expanded values as the source had them, for a faithful `snapshot show`. */
    if (index_snapshot != NULL) {
        json_t *expanded_config = ferry_offer_member(index_snapshot, "expanded_config");
        json_t *expanded_devices = ferry_offer_member(index_snapshot, "expanded_devices");
        if (json_is_object(expanded_config))
            json_object_set(doc, "expanded_config", expanded_config);
        if (json_is_object(expanded_devices))
            json_object_set(doc, "expanded_devices", expanded_devices);
    }
    return doc;
}

/* Unix seconds of a snapshot's creation on this server (what Incus compares, to the second). */
static gint64 local_snapshot_time(FerryDaemon *daemon, const char *project, const char *instance, const char *name)
{
    g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_SNAPSHOT, project, instance, name, NULL);
    const char *created = doc != NULL ? ferry_json_get_string(doc, "created_at") : NULL;
    if (created != NULL) {
        g_autoptr(GDateTime) when = g_date_time_new_from_iso8601(created, NULL);
        if (when != NULL)
            return g_date_time_to_unix(when);
    }
    return ferry_db_created_at(daemon->db, FERRY_KIND_SNAPSHOT, project, instance, name) / G_USEC_PER_SEC;
}

/* Refresh plan (Incus's CompareSnapshots): send what the target lacks or has with another creation time;
 * drop what the source no longer has. Nothing is deleted here: the old target stays whole until the swap. */
static void plan_refresh(FerryDaemon *daemon, SinkTask *task, const FerryReceivedHeader *offer, gboolean instance_only,
                         GPtrArray *to_sync, GPtrArray *to_delete)
{
    g_autoptr(GPtrArray) existing = ferry_db_list_names(daemon->db, FERRY_KIND_SNAPSHOT, task->project, task->name);
    size_t offered = instance_only ? 0 : offer->n_snapshotnames;
    for (size_t i = 0; i < offered; i++) {
        const char *name = offer->snapshotnames[i];
        gint64 source_time = 0;
        for (size_t j = 0; j < offer->n_snapshots; j++) {
            if (g_strcmp0(offer->snapshots[j]->name, name) == 0 && offer->snapshots[j]->has_creation_date)
                source_time = offer->snapshots[j]->creation_date;
        }
        gboolean have = g_ptr_array_find_with_equal_func(existing, name, g_str_equal, NULL);
        if (have && local_snapshot_time(daemon, task->project, task->name, name) == source_time)
            continue;
        if (have)
            g_ptr_array_add(to_delete, g_strdup(name));
        g_ptr_array_add(to_sync, g_strdup(name));
    }
    for (guint i = 0; i < existing->len; i++) {
        gboolean offered_name = FALSE;
        for (size_t j = 0; j < offered; j++)
            offered_name = offered_name || g_str_equal(offer->snapshotnames[j], existing->pdata[i]);
        if (!offered_name)
            g_ptr_array_add(to_delete, g_strdup(existing->pdata[i]));
    }
}

/* The BTRFS transport: the subvolume list (from the source's header, or the default shape), one stream per
 * subvolume received into staging, then placed as the instance volume and its snapshots. */
static gboolean receive_btrfs(SinkTask *task, FerryPool *pool, const char *volume, GPtrArray *wanted,
                              gboolean with_header, GCancellable *cancellable, GError **error)
{
    g_ptr_array_add(wanted, NULL);
    const char *const *names = (const char *const *)wanted->pdata;
    g_autoptr(GPtrArray) subvolumes = NULL;
    if (with_header) {
        g_autoptr(json_t) header =
            ferry_migration_receive_json(ferry_migration_link_get(task->link, "fs"), cancellable, error);
        subvolumes = header != NULL ? ferry_btrfs_header_parse(header, error) : NULL;
    } else {
        subvolumes = ferry_btrfs_header_default(names);
    }
    if (subvolumes == NULL) {
        g_ptr_array_remove_index(wanted, wanted->len - 1);
        return FALSE;
    }
    g_autoptr(GPtrArray) order = ferry_btrfs_header_select(subvolumes, names);
    g_ptr_array_remove_index(wanted, wanted->len - 1);
    g_autofree char *containers = g_build_filename(ferry_pool_get_mount_path(pool), "containers", NULL);
    g_autoptr(FerryBtrfsReceiver) receiver = ferry_btrfs_receiver_new(containers, error);
    FerryByteChannel channel;
    if (receiver == NULL || !ferry_transfer_channel(task->link, &channel, error))
        return FALSE;
    if (!ferry_btrfs_receiver_receive_all(receiver, order, &channel, NULL, NULL, cancellable, error)) {
        ferry_transfer_await_peer(task->link, *error);
        return FALSE;
    }
    g_autofree char *volume_path = ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, volume);
    g_autofree char *snapshots_dir =
        g_build_filename(ferry_pool_get_mount_path(pool), "containers-snapshots", volume, NULL);
    return ferry_btrfs_receiver_commit(receiver, volume_path, snapshots_dir, error);
}

/* A refresh's staging copy, made on a thread of its own while the pass starts (a hard-link copy of a large
 * tree takes a while). Freeing the job cancels the copy if it is still running and waits for the thread. */
typedef struct {
    FerryPool *pool;
    char *live_volume, *staging;
    GCancellable *cancellable; /* ours, cancelled with the migration's */
    gulong cancel_id;
    GCancellable *migration;
    GThread *thread;
    gboolean ok;
    GError *error;
} StagingJob;

static gpointer staging_thread(gpointer data)
{
    StagingJob *job = data;
    job->ok = ferry_pool_stage_volume(job->pool, FERRY_VOLUME_CONTAINER, job->live_volume, job->staging,
                                      job->cancellable, &job->error);
    return NULL;
}

static void cancel_staging(GCancellable *migration, gpointer data)
{
    g_cancellable_cancel(data);
}

static StagingJob *staging_job_start(FerryPool *pool, const char *live_volume, const char *staging,
                                     GCancellable *migration)
{
    StagingJob *job = g_new0(StagingJob, 1);
    job->pool = pool;
    job->live_volume = g_strdup(live_volume);
    job->staging = g_strdup(staging);
    job->cancellable = g_cancellable_new();
    if (migration != NULL) {
        job->migration = g_object_ref(migration);
        job->cancel_id = g_cancellable_connect(migration, G_CALLBACK(cancel_staging), job->cancellable, NULL);
    }
    job->thread = g_thread_new("ferry-staging", staging_thread, job);
    return job;
}

/* Wait for the copy; its error if it failed. */
static gboolean staging_job_wait(gpointer data, GError **error)
{
    StagingJob *job = data;
    if (job->thread != NULL)
        g_thread_join(g_steal_pointer(&job->thread));
    if (!job->ok && job->error != NULL)
        g_propagate_error(error, g_error_copy(job->error));
    return job->ok;
}

static void staging_job_free(StagingJob *job)
{
    if (job->thread != NULL) {
        g_cancellable_cancel(job->cancellable);
        g_thread_join(g_steal_pointer(&job->thread));
    }
    if (job->migration != NULL) {
        g_cancellable_disconnect(job->migration, job->cancel_id);
        g_object_unref(job->migration);
    }
    g_object_unref(job->cancellable);
    g_clear_error(&job->error);
    g_free(job->live_volume);
    g_free(job->staging);
    g_free(job);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StagingJob, staging_job_free)

static gboolean sink_transfer(FerryOperation *op, SinkTask *task, FerryControlMonitor **monitor_out,
                              GError **error)
{
    FerryDaemon *daemon = task->daemon;
    GCancellable *cancellable = ferry_operation_get_cancellable(op);
    json_t *source = json_object_get(task->request, "source");
    if (!task->push) {
        if (!ferry_migration_link_dial(task->link, ferry_json_get_string(source, "operation"),
                                       json_object_get(source, "secrets"), ferry_json_get_string(source, "certificate"),
                                       cancellable, error))
            return FALSE;
    } else if (!ferry_migration_link_wait(task->link, "control", CONTROL_CONNECT_TIMEOUT, cancellable, error) ||
               !ferry_migration_link_wait(task->link, "fs", DATA_CONNECT_TIMEOUT, cancellable, error)) {
        g_prefix_error(error, "Failed waiting for migration connections on target: ");
        return FALSE;
    }
    FerryWebsocket *control = ferry_migration_link_get(task->link, "control");
    FerryWebsocket *fs = ferry_migration_link_get(task->link, "fs");

    g_autoptr(FerryReceivedHeader) offer = ferry_migration_receive_header(control, "source", cancellable, error);
    if (offer == NULL) {
        g_prefix_error(error, "Failed receiving migration offer from source: ");
        return FALSE;
    }
    if (offer->has_criu && offer->criu == MIGRATION__CRIUTYPE__CRIU_RSYNC) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                    "Unable to perform live container migration: ferry does not do live container migration yet. "
                    "Stop the container or move it with --stateless");
        return FALSE;
    }
    /* We speak RSYNC, which every Incus filesystem pool also offers as the fallback. */
    gboolean instance_only = ferry_json_get_bool(source, "instance_only", FALSE) ||
                             ferry_json_get_bool(source, "container_only", FALSE);
    g_autoptr(json_t) target_doc = ferry_db_get(daemon->db, FERRY_KIND_INSTANCE, task->project, "", task->name, error);
    FerryPool *target_pool = target_doc != NULL ? ferry_instance_get_pool(daemon, task->project, target_doc, error)
                                                : NULL;
    if (target_pool == NULL)
        return FALSE;
    /* btrfs to btrfs goes as btrfs streams; everything else, and every refresh (no UUID bookkeeping here yet),
     * falls back to RSYNC, which every filesystem pool offers. */
    gboolean use_btrfs = offer->fs == MIGRATION__MIGRATION_FSTYPE__BTRFS && !task->refresh &&
                         g_str_equal(ferry_pool_get_driver(target_pool), "btrfs");
    Migration__BtrfsFeatures *offered_btrfs = offer->btrfsfeatures;
    gboolean btrfs_header = use_btrfs && offered_btrfs != NULL && offered_btrfs->migration_header;
    gboolean btrfs_subvolumes = use_btrfs && offered_btrfs != NULL && offered_btrfs->header_subvolumes;
    g_autoptr(Migration__MigrationHeader) response = ferry_offer_new();
    response->fs = use_btrfs ? MIGRATION__MIGRATION_FSTYPE__BTRFS : MIGRATION__MIGRATION_FSTYPE__RSYNC;
    if (use_btrfs)
        ferry_offer_set_btrfs_features(response, btrfs_header, btrfs_subvolumes, FALSE);
    gboolean xattrs = FALSE, delete = FALSE, compress = FALSE;
    ferry_rsync_features(&xattrs, &delete, &compress);
    Migration__RsyncFeatures *offered = offer->rsyncfeatures;
    FerryTransferOptions options = {0};
    options.rsync.xattrs = xattrs && offered != NULL && offered->xattrs;
    options.rsync.delete = delete && offered != NULL && offered->delete_;
    options.rsync.compress = compress && offered != NULL && offered->compress;
    options.rsync.allow_inconsistent = ferry_json_get_bool(source, "allow_inconsistent", FALSE);
    ferry_offer_set_rsync_features(response, options.rsync.xattrs, options.rsync.delete, options.rsync.compress,
                                   FALSE);
    response->has_indexheaderversion = TRUE;
    response->indexheaderversion = offer->has_indexheaderversion ? MIN(offer->indexheaderversion, 1) : 0;
    /* Both ends are ferry: the native transport if both allow it, else rsync that also keeps hard links (-H),
     * which Incus's fixed receiver arguments can't. */
    guint32 offered_version = ferry_offer_ferry_version(offer);
    if (offered_version >= FERRY_OFFER_VERSION_HARD_LINKS) {
        g_autofree char *transport = ferry_db_config_get(daemon->db, "migration.transport");
        options.native = offered_version >= FERRY_OFFER_VERSION_NATIVE && g_strcmp0(transport, "rsync") != 0;
        options.zstd = options.native && offer->ferry->has_zstd && offer->ferry->zstd;
        ferry_offer_set_ferry(response, 0,
                              options.native ? FERRY_OFFER_VERSION_NATIVE : FERRY_OFFER_VERSION_HARD_LINKS,
                              options.zstd);
        options.rsync.hard_links = TRUE;
    }
    response->has_refresh = TRUE;
    response->refresh = FALSE;
    response->has_predump = TRUE;
    response->predump = FALSE;
    gboolean final_sync = offer->has_criu && offer->criu == MIGRATION__CRIUTYPE__NONE;
    gboolean final_sync_pass = final_sync && !use_btrfs; /* a btrfs source sends a point-in-time snapshot */
    if (final_sync) {
        response->has_criu = TRUE;
        response->criu = MIGRATION__CRIUTYPE__NONE;
    }
    /* Snapshot names come from the peer: check them before they become paths and rows. */
    for (size_t i = 0; i < offer->n_snapshotnames; i++) {
        if (!ferry_validate_snapshot_name(offer->snapshotnames[i], error))
            return FALSE;
    }
    g_autoptr(GPtrArray) wanted = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GPtrArray) to_delete = g_ptr_array_new_with_free_func(g_free);
    if (task->refresh) {
        plan_refresh(daemon, task, offer, instance_only, wanted, to_delete);
        response->refresh = TRUE;
    } else {
        for (size_t i = 0; !instance_only && i < offer->n_snapshotnames; i++)
            g_ptr_array_add(wanted, g_strdup(offer->snapshotnames[i]));
    }
    for (guint i = 0; i < wanted->len; i++) {
        json_t *snapshot = json_pack("{s:s}", "name", (const char *)wanted->pdata[i]);
        ferry_offer_add_snapshot(response, snapshot);
        json_decref(snapshot);
    }
    size_t snapshot_count = wanted->len;
    if (!ferry_migration_send_header(control, response, error)) {
        g_prefix_error(error, "Failed sending migration response to source: ");
        return FALSE;
    }
    *monitor_out = ferry_control_monitor_start(task->link, "source");

    g_autoptr(json_t) index = NULL;
    if (response->indexheaderversion >= 1) {
        index = ferry_migration_receive_json(fs, cancellable, error);
        if (index == NULL) {
            g_prefix_error(error, "Failed decoding migration index header: ");
            return FALSE;
        }
        g_autoptr(json_t) info =
            json_pack("{s:i, s:s, s:b}", "StatusCode", 200, "Error", "", "Refresh", task->refresh);
        if (!ferry_migration_send_json(fs, info, error))
            return FALSE;
    }
    json_t *index_config = index != NULL ? ferry_offer_member(index, "config") : NULL;
    json_t *index_snapshots = index_config != NULL ? ferry_offer_member(index_config, "Snapshots") : NULL;

    g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_INSTANCE, task->project, "", task->name, error);
    if (doc == NULL)
        return FALSE;
    FerryPool *pool = ferry_instance_get_pool(daemon, task->project, doc, error);
    if (pool == NULL)
        return FALSE;
    g_autofree char *live_volume = ferry_instance_volume_name(task->project, task->name);
    g_autofree char *live_path = NULL;
    g_autoptr(StagingJob) staging_job = NULL;
    const char *volume = live_volume;
    if (task->refresh) {
        /* A copy of the current data receives the changes; the live volume stays untouched. The native
         * receiver never writes into an existing file, so its copy may share the live volume's files (hard
         * links on a dir pool: no data copied); rsync changes metadata in place, so it gets a real copy. */
        task->staging = g_strdup_printf("%s.refresh", live_volume);
        ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, task->staging, NULL);
        gboolean staged = TRUE;
        if (options.native) {
            /* Made by another thread while the pass starts: the receiver reads what we have from the live
             * volume meanwhile, and waits for the copy only before changing anything. */
            staging_job = staging_job_start(pool, live_volume, task->staging, cancellable);
            live_path = ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, live_volume);
            options.basis_dir = live_path;
            options.wait_ready = staging_job_wait;
            options.wait_data = staging_job;
        } else if (wanted->len == 0 && !final_sync_pass) {
            /* One rsync run into an empty volume that links what is unchanged from the live one: rsync then
             * never writes into a file the live volume has. */
            staged = ferry_pool_create_volume(pool, FERRY_VOLUME_CONTAINER, task->staging, error);
            live_path = ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, live_volume);
            options.rsync.link_dest = live_path;
        } else {
            staged = ferry_pool_copy_volume(pool, FERRY_VOLUME_CONTAINER, live_volume, FERRY_VOLUME_CONTAINER,
                                            task->staging, cancellable, error);
        }
        if (!staged)
            return FALSE;
        volume = task->staging;
    } else if (use_btrfs) {
        if (!receive_btrfs(task, pool, volume, wanted, btrfs_header, cancellable, error))
            return FALSE;
    } else if (!ferry_pool_create_volume(pool, FERRY_VOLUME_CONTAINER, volume, error)) {
        return FALSE;
    }
    g_autofree char *path = ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, volume);

    FerryTransferProgress progress = {.op = op};
    if (offer->ferry != NULL && offer->ferry->has_total_bytes && offer->ferry->total_bytes > 0)
        progress.total_bytes = (guint64)offer->ferry->total_bytes;
    /* Snapshots oldest first, each received into the volume and then snapshotted, so rsync moves only what
     * changed since the previous one. */
    for (size_t i = 0; !use_btrfs && i < snapshot_count; i++) {
        const char *snapshot_name = wanted->pdata[i];
        g_autofree char *stage = g_strdup_printf("snapshot %s", snapshot_name);
        progress.stage = stage;
        if (!ferry_transfer_receive_dir(task->link, path, &options, &progress, cancellable, error) ||
            !ferry_pool_create_snapshot(pool, FERRY_VOLUME_CONTAINER, volume, snapshot_name, error))
            return FALSE;
        options.basis_dir = NULL; /* from now on the staging copy itself is what we have */
    }
    progress.stage = "instance";
    if (!use_btrfs && !ferry_transfer_receive_dir(task->link, path, &options, &progress, cancellable, error))
        return FALSE;
    options.basis_dir = NULL;
    if (final_sync_pass) {
        progress.stage = "final sync";
        if (!ferry_transfer_receive_dir(task->link, path, &options, &progress, cancellable, error))
            return FALSE;
    }

    /* All data is here. A refresh now swaps it in: stale snapshots go, received ones move beside the live
     * volume, and one atomic exchange replaces the instance's data. */
    if (task->refresh) {
        for (guint i = 0; i < to_delete->len; i++) {
            if (!ferry_pool_delete_snapshot(pool, FERRY_VOLUME_CONTAINER, live_volume, to_delete->pdata[i], error) ||
                !ferry_db_delete(daemon->db, FERRY_KIND_SNAPSHOT, task->project, task->name, to_delete->pdata[i],
                                 error))
                return FALSE;
        }
        for (guint i = 0; i < wanted->len; i++) {
            if (!ferry_pool_move_snapshot(pool, FERRY_VOLUME_CONTAINER, volume, wanted->pdata[i], live_volume, error))
                return FALSE;
        }
        if (!ferry_pool_exchange_volumes(pool, FERRY_VOLUME_CONTAINER, live_volume, volume, error))
            return FALSE;
        /* The old data now has the staging name; its deletion need not hold up the user. */
        if (!ferry_pool_discard_volume(pool, FERRY_VOLUME_CONTAINER, volume, NULL))
            ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, volume, NULL);
        g_clear_pointer(&task->staging, g_free);
    }
    /* The records appear together or not at all. */
    ferry_db_begin(daemon->db);
    for (size_t i = 0; i < snapshot_count; i++) {
        const char *name = wanted->pdata[i];
        const Migration__Snapshot *snap = NULL;
        for (size_t j = 0; j < offer->n_snapshots; j++) {
            if (g_strcmp0(offer->snapshots[j]->name, name) == 0)
                snap = offer->snapshots[j];
        }
        g_autoptr(json_t) snapshot_doc = NULL;
        if (snap != NULL) {
            snapshot_doc = snapshot_document(snap, find_by_name(index_snapshots, name), ferry_pool_get_name(pool));
        } else {
            /* An old peer that sent names only: the snapshot looks like its instance. */
            snapshot_doc = json_pack("{s:O, s:O, s:O, s:O}", "config", json_object_get(doc, "config"), "devices",
                                     json_object_get(doc, "devices"), "profiles", json_object_get(doc, "profiles"),
                                     "architecture", json_object_get(doc, "architecture"));
        }
        if (!ferry_db_create(daemon->db, FERRY_KIND_SNAPSHOT, task->project, task->name, name, snapshot_doc, error)) {
            ferry_db_rollback(daemon->db);
            return FALSE;
        }
    }
    /* The data keeps the owners it had on the source; the first start shifts it to our map if they differ. */
    g_autofree char *idmap = ferry_offer_idmap_json(offer);
    g_autoptr(json_t) updates = json_pack("{s:s}", "volatile.last_state.idmap", idmap);
    const char *base_image = ferry_json_get_string(source, "base-image");
    if (base_image != NULL && *base_image != '\0')
        json_object_set_new(updates, "volatile.base_image", json_string(base_image));
    task->config_updates = g_steal_pointer(&updates);
    return ferry_db_commit(daemon->db, error);
}

static gboolean run_sink(FerryOperation *op, gpointer data, GError **error)
{
    SinkTask *task = data;
    FerryDaemon *daemon = task->daemon;
    FerryControlMonitor *monitor = NULL;
    g_autoptr(GError) local_error = NULL;
    gboolean ok = sink_transfer(op, task, &monitor, &local_error);
    FerryWebsocket *control = ferry_migration_link_get(task->link, "control");
    if (ok) {
        /* Tell the source, then wait for it to hang up: that is its "done". A source that reports a failure
         * now still undoes the copy; one that says nothing leaves us with complete data, which we keep. */
        ok = control != NULL && ferry_migration_send_control(control, TRUE, NULL, &local_error);
        g_autoptr(GError) close_error = NULL;
        if (ok && !ferry_control_monitor_finish(monitor, TRUE, SOURCE_CLOSE_TIMEOUT, &close_error)) {
            if (ferry_control_monitor_peer_reported(monitor)) {
                ok = FALSE;
                local_error = g_steal_pointer(&close_error);
            } else {
                g_warning("Migration of \"%s\": %s; keeping the complete copy", task->name, close_error->message);
            }
        }
        if (ok)
            ok = ferry_instance_creation_done(daemon, task->project, task->name, task->config_updates, FALSE,
                                              &local_error);
    }
    if (!ok) {
        const char *peer_failure = monitor != NULL ? ferry_control_monitor_peer_failure(monitor) : NULL;
        g_autofree char *reason = ferry_transfer_failure_reason(local_error, peer_failure);
        if (control != NULL && peer_failure == NULL) {
            g_autofree char *message = g_strdup_printf("Failed migration on target: %s", reason);
            ferry_migration_send_control(control, FALSE, message, NULL);
        }
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Error transferring instance data: %s", reason);
    }
    ferry_control_monitor_free(monitor);
    ferry_migration_link_release(task->link);
    if (task->staging != NULL) {
        /* A refresh that did not reach the swap: the old target is intact, only the staging copy goes. */
        g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_INSTANCE, task->project, "", task->name, NULL);
        FerryPool *pool = doc != NULL ? ferry_instance_get_pool(daemon, task->project, doc, NULL) : NULL;
        if (pool != NULL)
            ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, task->staging, NULL);
    }
    if (!ok)
        ferry_instance_create_abort(daemon, task->project, task->name);
    else if (ferry_json_get_bool(task->request, "start", FALSE))
        ok = ferry_instance_start(daemon, task->project, task->name, error);
    return ok;
}

FerryResponse *ferry_migration_sink_start(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    json_t *source = json_object_get(request->body, "source");
    const char *mode = ferry_json_get_string(source, "mode");
    if (mode == NULL || (!g_str_equal(mode, "pull") && !g_str_equal(mode, "push")))
        return ferry_response_error_new(501, "Mode \"%s\" not implemented", mode != NULL ? mode : "");
    gboolean push = g_str_equal(mode, "push");
    if (ferry_json_get_bool(source, "live", FALSE))
        return ferry_response_error_new(
            400, "Unable to perform live container migration: ferry does not do live container migration yet. "
                 "Stop the container or move it with --stateless");
    if (!push) {
        const char *operation = ferry_json_get_string(source, "operation");
        if (operation == NULL || !g_str_has_prefix(operation, "https://"))
            return ferry_response_error_new(400, "Invalid migration source operation \"%s\"",
                                            operation != NULL ? operation : "");
        static const char *const needed[] = {"control", "fs"};
        for (gsize i = 0; i < G_N_ELEMENTS(needed); i++) {
            if (ferry_json_get_string(json_object_get(source, "secrets"), needed[i]) == NULL)
                return ferry_response_error_new(
                    400, "Expected \"%s\" connection secret missing from migration sink target request", needed[i]);
        }
    }
    const char *name = ferry_json_get_string(request->body, "name");
    gboolean refresh = FALSE;
    g_autoptr(json_t) body = json_deep_copy(request->body);
    json_object_del(body, "source");
    if (name != NULL && ferry_db_exists(daemon->db, FERRY_KIND_INSTANCE, request->project, "", name)) {
        if (!ferry_json_get_bool(source, "refresh", FALSE))
            return ferry_response_error_new(409, "Instance \"%s\" already exists", name);
        int code = 0;
        ferry_instance_status(daemon, request->project, name, &code);
        if (code != 102)
            return ferry_response_error_new(400, "The target instance \"%s\" is running: stop it before "
                                                 "refreshing it", name);
        if (!ferry_daemon_claim_instance(daemon, request->project, name, "refresh", &error))
            return ferry_response_error(error);
        refresh = TRUE;
    } else {
        /* Everything is checked before any byte moves; the row is "creating" until the data is complete. */
        g_autoptr(json_t) doc = ferry_instance_prepare_new(daemon, request->project, body, &error);
        if (doc == NULL)
            return ferry_response_error(error);
    }

    SinkTask *task = g_new0(SinkTask, 1);
    task->daemon = daemon;
    task->project = g_strdup(request->project);
    task->name = g_strdup(ferry_json_get_string(body, "name"));
    task->request = json_deep_copy(request->body);
    task->push = push;
    task->refresh = refresh;
    task->link = ferry_migration_link_new();
    g_autofree char *url = g_strdup_printf("/1.0/instances/%s", task->name);
    g_autoptr(FerryOperation) op = ferry_operation_new(daemon, push ? FERRY_OPERATION_WEBSOCKET : FERRY_OPERATION_TASK,
                                                       request->project, "Creating instance",
                                                       json_pack("{s:[s]}", "instances", url), NULL, run_sink, task,
                                                       sink_task_free);
    if (push) {
        static const char *const channels[] = {"control", "fs", NULL};
        ferry_operation_set_metadata(op, ferry_migration_link_listen(task->link, op, channels));
        ferry_operation_set_connect(op, connect_channel);
    }
    ferry_operation_start(op);
    return ferry_response_async(op);
}
