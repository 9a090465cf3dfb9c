/* The source side of a migration: offer the instance, send its snapshots and data, wait for the verdict. */
#include "migration.h"

#include "control_monitor.h"
#include "error.h"
#include "events.h"
#include "instances.h"
#include "json.h"
#include "link.h"
#include "lxc_runtime.h"
#include "btrfs_transport.h"
#include "messages.h"
#include "offer.h"
#include "pool.h"
#include "response.h"
#include "transfer.h"

/* Incus's waits for the peer to connect its channels. */
#define CONTROL_CONNECT_TIMEOUT 30
#define DATA_CONNECT_TIMEOUT 10

typedef struct {
    FerryDaemon *daemon;
    char *project;
    char *name;
    char *snapshot;       /* send this snapshot as an instance */
    gboolean instance_only;
    gboolean allow_inconsistent;
    json_t *target;       /* push: {operation, secrets, certificate} */
    FerryMigrationLink *link;
} SourceTask;

static void source_task_free(gpointer data)
{
    SourceTask *task = data;
    g_free(task->project);
    g_free(task->name);
    g_free(task->snapshot);
    json_decref(task->target);
    ferry_migration_link_free(task->link);
    g_free(task);
}

static gboolean connect_channel(FerryOperation *op, gpointer data, SoupServerMessage *msg, const char *channel,
                                GError **error)
{
    SourceTask *task = data;
    return ferry_migration_link_connect(task->link, op, msg, channel, error);
}

/* The running container is frozen during a pass unless the user accepted an inconsistent copy (Incus does the
 * same on pools without a consistent snapshot). */
typedef struct {
    char *lxcpath;
    char *lxc_name;
    gboolean frozen;
} Freeze;

static gboolean freeze_for_pass(FerryDaemon *daemon, SourceTask *task, gboolean running, Freeze *freeze,
                                GError **error)
{
    freeze->frozen = FALSE;
    if (!running || task->allow_inconsistent || task->snapshot != NULL)
        return TRUE;
    freeze->lxcpath = ferry_daemon_path(daemon, "containers", NULL);
    freeze->lxc_name = ferry_instance_volume_name(task->project, task->name);
    if (!ferry_container_freeze(freeze->lxcpath, freeze->lxc_name, error))
        return FALSE;
    freeze->frozen = TRUE;
    return TRUE;
}

static void thaw(Freeze *freeze)
{
    if (freeze->frozen)
        ferry_container_unfreeze(freeze->lxcpath, freeze->lxc_name, NULL);
    freeze->frozen = FALSE;
    g_clear_pointer(&freeze->lxcpath, g_free);
    g_clear_pointer(&freeze->lxc_name, g_free);
}

static gboolean send_volume_pass(FerryDaemon *daemon, SourceTask *task, const char *dir, gboolean running,
                                 const FerryTransferOptions *options, FerryTransferProgress *progress,
                                 GCancellable *cancellable, GError **error)
{
    Freeze freeze = {0};
    if (!freeze_for_pass(daemon, task, running, &freeze, error))
        return FALSE;
    gboolean ok = ferry_transfer_send_dir(task->link, dir, options, progress, cancellable, error);
    thaw(&freeze);
    return ok;
}

static void on_btrfs_bytes(guint64 bytes, gpointer user_data)
{
    FerryTransferProgress *progress = user_data;
    ferry_operation_report_progress(progress->op, "fs_progress", "btrfs send", bytes, MAX(progress->total_bytes, bytes));
}

/* The BTRFS transport: an optional subvolume header, then one `btrfs send` stream per subvolume, snapshots
 * oldest first, each incremental on the one before, then the instance from a read-only snapshot. */
static gboolean send_btrfs(SourceTask *task, FerryOperation *op, FerryPool *pool, const char *volume,
                           const FerryReceivedHeader *response, FerryTransferProgress *progress,
                           GCancellable *cancellable, GError **error)
{
    g_autoptr(GPtrArray) snapshot_paths = g_ptr_array_new_with_free_func(g_free);
    for (size_t i = 0; i < response->n_snapshotnames; i++)
        g_ptr_array_add(snapshot_paths,
                        ferry_pool_snapshot_path(pool, FERRY_VOLUME_CONTAINER, volume, response->snapshotnames[i]));
    g_ptr_array_add(snapshot_paths, NULL);
    g_autofree char *volume_path = task->snapshot != NULL
                                       ? ferry_pool_snapshot_path(pool, FERRY_VOLUME_CONTAINER, volume, task->snapshot)
                                       : ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, volume);
    const char *const *paths = (const char *const *)snapshot_paths->pdata;
    g_autoptr(GPtrArray) subvolumes = ferry_btrfs_volume_subvolumes(volume_path, paths, error);
    if (subvolumes == NULL)
        return FALSE;
    Migration__BtrfsFeatures *features = response->btrfsfeatures;
    if (features != NULL && features->has_migration_header && features->migration_header) {
        g_autoptr(json_t) header = ferry_btrfs_header_to_json(subvolumes);
        if (!ferry_migration_send_json(ferry_migration_link_get(task->link, "fs"), header, error))
            return FALSE;
    }
    FerryByteChannel channel;
    if (!ferry_transfer_channel(task->link, &channel, error))
        return FALSE;
    FerryBtrfsSendOptions options = {
        .subvolumes = features != NULL && features->has_header_subvolumes && features->header_subvolumes,
        .progress = on_btrfs_bytes,
        .progress_data = progress,
    };
    if (!ferry_btrfs_send_volume(volume_path, paths, subvolumes, &options, &channel, cancellable, error)) {
        ferry_transfer_await_peer(task->link, *error);
        return FALSE;
    }
    ferry_operation_report_progress(op, "fs_progress", "done", progress->total_bytes, progress->total_bytes);
    return TRUE;
}

static gboolean run_source(FerryOperation *op, gpointer data, GError **error);

static gboolean source_transfer(FerryOperation *op, SourceTask *task, FerryControlMonitor **monitor_out,
                                GError **error)
{
    FerryDaemon *daemon = task->daemon;
    GCancellable *cancellable = ferry_operation_get_cancellable(op);
    if (task->target != NULL) {
        if (!ferry_migration_link_dial(task->link, ferry_json_get_string(task->target, "operation"),
                                       json_object_get(task->target, "secrets"),
                                       ferry_json_get_string(task->target, "certificate"), cancellable, error))
            return FALSE;
    } else if (!ferry_migration_link_wait(task->link, "control", CONTROL_CONNECT_TIMEOUT, cancellable, error) ||
               !ferry_migration_link_wait(task->link, "fs", DATA_CONNECT_TIMEOUT, cancellable, error)) {
        g_prefix_error(error, "Failed waiting for migration connections on source: ");
        return FALSE;
    }
    FerryWebsocket *control = ferry_migration_link_get(task->link, "control");
    FerryWebsocket *fs = ferry_migration_link_get(task->link, "fs");

    g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_INSTANCE, task->project, "", task->name, error);
    if (doc == NULL)
        return FALSE;
    FerryPool *pool = ferry_instance_get_pool(daemon, task->project, doc, error);
    if (pool == NULL)
        return FALSE;
    int status_code = 0;
    ferry_instance_status(daemon, task->project, task->name, &status_code);
    gboolean running = status_code == 103 && task->snapshot == NULL;
    g_autofree char *volume = ferry_instance_volume_name(task->project, task->name);

    g_autoptr(json_t) instance = ferry_instance_render(daemon, task->project, task->name, 1, error);
    if (instance == NULL)
        return FALSE;
    g_autoptr(json_t) snapshots = json_array();
    if (!task->instance_only && task->snapshot == NULL) {
        g_autoptr(GPtrArray) names = ferry_db_list_names(daemon->db, FERRY_KIND_SNAPSHOT, task->project, task->name);
        for (guint i = 0; i < names->len; i++) {
            json_t *snap = ferry_snapshot_render(daemon, task->project, task->name, names->pdata[i], error);
            if (snap == NULL)
                return FALSE;
            json_array_append_new(snapshots, snap);
        }
    }

    /* The offer. */
    g_autoptr(Migration__MigrationHeader) offer = ferry_offer_new();
    /* A btrfs pool prefers btrfs send/receive and keeps RSYNC (its features below) as the fallback. */
    gboolean btrfs_pool = g_str_equal(ferry_pool_get_driver(pool), "btrfs");
    offer->fs = btrfs_pool ? MIGRATION__MIGRATION_FSTYPE__BTRFS : MIGRATION__MIGRATION_FSTYPE__RSYNC;
    if (btrfs_pool)
        ferry_offer_set_btrfs_features(offer, TRUE, TRUE, TRUE);
    gboolean xattrs = FALSE, delete = FALSE, compress = FALSE;
    ferry_rsync_features(&xattrs, &delete, &compress);
    ferry_offer_set_rsync_features(offer, xattrs, delete, compress, FALSE);
    if (running) {
        offer->has_criu = TRUE;
        offer->criu = MIGRATION__CRIUTYPE__NONE;
    }
    offer->has_predump = TRUE;
    offer->predump = FALSE;
    offer->has_indexheaderversion = TRUE;
    offer->indexheaderversion = 1;
    ferry_offer_set_idmap(offer, ferry_json_get_string(json_object_get(doc, "config"), "volatile.last_state.idmap"));
    size_t index;
    json_t *snap;
    json_array_foreach(snapshots, index, snap) ferry_offer_add_snapshot(offer, snap);
    guint64 total = 0, bytes = 0;
    if (ferry_pool_volume_usage(pool, FERRY_VOLUME_CONTAINER, volume, &bytes, NULL))
        total += bytes;
    json_array_foreach(snapshots, index, snap) {
        /* Each snapshot pass moves at most the snapshot's size; rsync sends less when they share data. */
        if (ferry_pool_snapshot_usage(pool, FERRY_VOLUME_CONTAINER, volume, ferry_json_get_string(snap, "name"),
                                      &bytes, NULL))
            total += bytes;
    }
    /* Between ferry servers the native transport, unless this server is set to rsync; Incus ignores it. */
    g_autofree char *transport = ferry_db_config_get(daemon->db, "migration.transport");
    gboolean native_allowed = g_strcmp0(transport, "rsync") != 0;
    ferry_offer_set_ferry(offer, total, native_allowed ? FERRY_OFFER_VERSION_NATIVE : FERRY_OFFER_VERSION_HARD_LINKS,
                          native_allowed);
    if (!ferry_migration_send_header(control, offer, error)) {
        g_prefix_error(error, "Failed sending migration offer: ");
        return FALSE;
    }
    g_autoptr(FerryReceivedHeader) response = ferry_migration_receive_header(control, "target", cancellable,
                                                                                   error);
    if (response == NULL) {
        g_prefix_error(error, "Failed receiving migration offer response: ");
        return FALSE;
    }
    gboolean use_btrfs = btrfs_pool && response->fs == MIGRATION__MIGRATION_FSTYPE__BTRFS;
    if (response->fs != MIGRATION__MIGRATION_FSTYPE__RSYNC && !use_btrfs) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Failed to negotiate migration type: No matching migration types found. Offered types: [%d], "
                    "our types: [RSYNC]",
                    response->fs);
        return FALSE;
    }
    FerryTransferOptions options = {0};
    Migration__RsyncFeatures *agreed = response->rsyncfeatures;
    options.rsync.xattrs = xattrs && agreed != NULL && agreed->xattrs;
    options.rsync.delete = delete && agreed != NULL && agreed->delete_;
    options.rsync.compress = compress && agreed != NULL && agreed->compress;
    options.rsync.allow_inconsistent = task->allow_inconsistent;
    options.rsync.helper_binary = daemon->helper_binary;
    guint32 agreed_version = ferry_offer_ferry_version(response);
    /* A ferry target from before version 3 answers a native offer with its own version 2, whose stream (one
     * zstd frame per phase) this server no longer speaks: say so before any data moves. */
    if (native_allowed && agreed_version == FERRY_OFFER_VERSION_NATIVE - 1) {
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "The target runs an older ferry whose native transport (version 2) this server no "
                            "longer speaks: upgrade it, or set migration.transport=rsync on either server");
        return FALSE;
    }
    options.rsync.hard_links = agreed_version >= FERRY_OFFER_VERSION_HARD_LINKS;
    options.rsync.bwlimit_bytes_per_sec = ferry_migration_bandwidth_limit(daemon, pool);
    options.native = native_allowed && agreed_version >= FERRY_OFFER_VERSION_NATIVE;
    options.zstd = options.native && response->ferry->has_zstd && response->ferry->zstd;
    g_message("Migrating \"%s\" to the target with %s", task->name,
              use_btrfs       ? "btrfs send/receive"
              : options.native ? (options.zstd ? "ferry's native transport (zstd)" : "ferry's native transport")
                               : "rsync");
    /* ferry's own key limits every stream, whatever carries it; rsync's --bwlimit covers the pool's key, and
     * for the native transport the websocket paces both. */
    g_autofree char *server_limit = ferry_db_config_get(daemon->db, "migration.bandwidth");
    if (options.native && options.rsync.bwlimit_bytes_per_sec > 0)
        ferry_migration_link_limit(task->link, options.rsync.bwlimit_bytes_per_sec);
    else if (server_limit != NULL)
        ferry_migration_link_limit(task->link, ferry_migration_bandwidth_limit(daemon, NULL));

    /* Everything from here on is watched: a failure report from the target stops us. */
    *monitor_out = ferry_control_monitor_start(task->link, "target");

    if (response->has_indexheaderversion && response->indexheaderversion >= 1) {
        /* Only the snapshots the target asked for are described. */
        g_autoptr(json_t) requested = json_array();
        for (size_t i = 0; i < response->n_snapshotnames; i++) {
            json_array_foreach(snapshots, index, snap) {
                if (g_strcmp0(ferry_json_get_string(snap, "name"), response->snapshotnames[i]) == 0)
                    json_array_append(requested, snap);
            }
        }
        g_autoptr(json_t) header = ferry_offer_index_header(daemon, task->project, instance, requested,
                                                            ferry_pool_get_name(pool), task->snapshot == NULL);
        if (!ferry_migration_send_json(fs, header, error)) {
            g_prefix_error(error, "Failed sending migration index header: ");
            return FALSE;
        }
        g_autoptr(json_t) info = ferry_migration_receive_json(fs, cancellable, error);
        if (info == NULL) {
            g_prefix_error(error, "Failed decoding migration index header response: ");
            return FALSE;
        }
        json_int_t code = json_integer_value(ferry_offer_member(info, "StatusCode"));
        if (code != 200) {
            json_t *message = ferry_offer_member(info, "Error");
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed negotiating migration options: %s",
                        json_is_string(message) ? json_string_value(message) : "target refused");
            return FALSE;
        }
    }

    FerryTransferProgress progress = {.op = op, .total_bytes = total};
    if (use_btrfs)
        return send_btrfs(task, op, pool, volume, response, &progress, cancellable, error);
    for (size_t i = 0; i < response->n_snapshotnames; i++) {
        g_autofree char *stage = g_strdup_printf("snapshot %s", response->snapshotnames[i]);
        progress.stage = stage;
        g_autofree char *path =
            ferry_pool_snapshot_path(pool, FERRY_VOLUME_CONTAINER, volume, response->snapshotnames[i]);
        if (!ferry_transfer_send_dir(task->link, path, &options, &progress, cancellable, error))
            return FALSE;
    }
    g_autofree char *main_path = task->snapshot != NULL
                                     ? ferry_pool_snapshot_path(pool, FERRY_VOLUME_CONTAINER, volume, task->snapshot)
                                     : ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, volume);
    progress.stage = "instance";
    if (!send_volume_pass(daemon, task, main_path, running, &options, &progress, cancellable, error))
        return FALSE;
    /* A running instance changed while it was copied: a second pass catches up (Incus's MultiSync). */
    if (running && response->has_criu && response->criu == MIGRATION__CRIUTYPE__NONE) {
        progress.stage = "final sync";
        if (!send_volume_pass(daemon, task, main_path, running, &options, &progress, cancellable, error))
            return FALSE;
    }
    /* rsync sends less than the disk holds (compression, shared snapshot data): the end is 100%. */
    ferry_operation_report_progress(op, "fs_progress", "done", progress.done_bytes, progress.done_bytes);
    return TRUE;
}

static gboolean run_source(FerryOperation *op, gpointer data, GError **error)
{
    SourceTask *task = data;
    FerryControlMonitor *monitor = NULL;
    g_autoptr(GError) local_error = NULL;
    gboolean ok = source_transfer(op, task, &monitor, &local_error);
    if (ok) {
        /* The target says whether it has everything; then we close, which is how an Incus source ends. */
        ok = ferry_control_monitor_finish(monitor, FALSE, -1, &local_error);
        FerryWebsocket *control = ferry_migration_link_get(task->link, "control");
        if (ok && control != NULL)
            ferry_websocket_close(control, 1000, "");
    }
    if (!ok) {
        /* Prefer what the target said over the broken pipe it left us with. */
        const char *peer_failure = monitor != NULL ? ferry_control_monitor_peer_failure(monitor) : NULL;
        g_autofree char *reason = ferry_transfer_failure_reason(local_error, peer_failure);
        FerryWebsocket *control = ferry_migration_link_get(task->link, "control");
        if (control != NULL && peer_failure == NULL) {
            g_autofree char *message = g_strdup_printf("Failed migration on source: %s", reason);
            ferry_migration_send_control(control, FALSE, message, NULL);
            ferry_websocket_close(control, 1000, "");
        }
        g_set_error(error, FERRY_ERROR, ferry_error_http_status(local_error) == FERRY_ERROR_CANCELLED
                                            ? FERRY_ERROR_CANCELLED
                                            : FERRY_ERROR_INTERNAL,
                    "Failed migration on source: %s", reason);
    }
    ferry_control_monitor_free(monitor);
    ferry_migration_link_release(task->link);
    ferry_daemon_release_instance(task->daemon, task->project, task->name);
    if (ok) {
        g_autofree char *url = g_strdup_printf("/1.0/instances/%s", task->name);
        ferry_events_lifecycle(task->daemon->events, task->project, "instance-migrated", url);
    }
    return ok;
}

FerryResponse *ferry_migration_source_start(FerryRequest *request, const char *snapshot)
{
    FerryDaemon *daemon = request->daemon;
    const char *name = ferry_request_param(request, "name");
    GError *error = NULL;
    json_t *body = request->body;
    if (!ferry_db_exists(daemon->db, FERRY_KIND_INSTANCE, request->project, "", name))
        return ferry_response_error_new(404, "Instance \"%s\" not found", name);
    if (snapshot != NULL && !ferry_db_exists(daemon->db, FERRY_KIND_SNAPSHOT, request->project, name, snapshot))
        return ferry_response_error_new(404, "Snapshot \"%s/%s\" not found", name, snapshot);
    json_t *target = json_object_get(body, "target");
    if (json_is_object(target)) {
        const char *operation = ferry_json_get_string(target, "operation");
        json_t *secrets = json_object_get(target, "secrets");
        if (operation == NULL || !g_str_has_prefix(operation, "https://"))
            return ferry_response_error_new(400, "Invalid migration target operation \"%s\"",
                                            operation != NULL ? operation : "");
        static const char *const needed[] = {"control", "fs"};
        for (gsize i = 0; i < G_N_ELEMENTS(needed); i++) {
            if (ferry_json_get_string(secrets, needed[i]) == NULL)
                return ferry_response_error_new(
                    400, "Expected \"%s\" connection secret missing from migration source target request", needed[i]);
        }
    }
    if (!ferry_daemon_claim_instance(daemon, request->project, name, "migrate", &error))
        return ferry_response_error(error);

    SourceTask *task = g_new0(SourceTask, 1);
    task->daemon = daemon;
    task->project = g_strdup(request->project);
    task->name = g_strdup(name);
    task->snapshot = g_strdup(snapshot);
    /* Incus's source never does a live transfer on this path: a running instance is sent statelessly. */
    task->instance_only = ferry_json_get_bool(body, "instance_only", FALSE) ||
                          ferry_json_get_bool(body, "container_only", FALSE) || snapshot != NULL;
    task->allow_inconsistent = ferry_json_get_bool(body, "allow_inconsistent", FALSE);
    task->target = json_is_object(target) ? json_incref(target) : NULL;
    task->link = ferry_migration_link_new();
    g_autofree char *url = g_strdup_printf("/1.0/instances/%s", name);
    FerryOperationClass klass = task->target != NULL ? FERRY_OPERATION_TASK : FERRY_OPERATION_WEBSOCKET;
    g_autoptr(FerryOperation) op = ferry_operation_new(
        daemon, klass, request->project, snapshot != NULL ? "Transferring snapshot" : "Migrating instance",
        json_pack("{s:[s]}", "instances", url), NULL, run_source, task, source_task_free);
    if (task->target == NULL) {
        static const char *const channels[] = {"control", "fs", NULL};
        ferry_operation_set_metadata(op, ferry_migration_link_listen(task->link, op, channels));
        ferry_operation_set_connect(op, connect_channel);
    }
    ferry_operation_start(op);
    return ferry_response_async(op);
}
