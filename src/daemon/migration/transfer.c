#include "transfer.h"

#include "error.h"

/* How long a pass that failed because of the peer waits for the peer's own account on control. */
#define PEER_VERDICT_WAIT_MS 5000

/* FerryByteChannel over the fs websocket: rsync only knows about byte streams and barriers. */
static gssize channel_read(gpointer channel, void *buffer, gsize size, GCancellable *c, GError **error)
{
    return ferry_websocket_read_stream(channel, buffer, size, c, error);
}

static gboolean channel_write(gpointer channel, const void *data, gsize length, GError **error)
{
    return ferry_websocket_write_stream(channel, data, length, error);
}

static gboolean channel_end(gpointer channel, GError **error)
{
    return ferry_websocket_send_barrier(channel, error);
}

static void channel_abort(gpointer channel)
{
    ferry_websocket_abort(channel);
}

gboolean ferry_transfer_channel(FerryMigrationLink *link, FerryByteChannel *channel_out, GError **error)
{
    FerryWebsocket *fs = ferry_migration_link_get(link, "fs");
    if (fs == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "The migration's fs channel is not connected");
        return FALSE;
    }
    FerryByteChannel channel = {channel_read, channel_write, channel_end, channel_abort, fs};
    *channel_out = channel;
    return TRUE;
}

void ferry_transfer_await_peer(FerryMigrationLink *link, const GError *error)
{
    if (g_error_matches(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE))
        ferry_migration_link_wait_verdict(link, PEER_VERDICT_WAIT_MS);
}

char *ferry_transfer_failure_reason(const GError *local_error, const char *peer_failure)
{
    if (peer_failure == NULL)
        return g_strdup(local_error->message);
    /* Our error is only the echo of theirs when the stream broke under us or we were stopped. */
    if (g_error_matches(local_error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE) ||
        g_error_matches(local_error, FERRY_ERROR, FERRY_ERROR_CANCELLED))
        return g_strdup(peer_failure);
    return g_strdup_printf("%s (and then: %s)", local_error->message, peer_failure);
}

/* The transports report the running total of the current pass. */
static void on_bytes(guint64 bytes, gpointer user_data)
{
    FerryTransferProgress *progress = user_data;
    progress->pass_bytes = bytes;
    guint64 done = progress->done_bytes + bytes;
    if (progress->op != NULL)
        ferry_operation_report_progress(progress->op, "fs_progress", progress->stage, done,
                                        MAX(progress->total_bytes, done));
}

static gboolean run_pass(FerryMigrationLink *link, const char *dir, const FerryTransferOptions *options,
                         FerryTransferProgress *progress, gboolean sending, GCancellable *cancellable,
                         GError **error)
{
    FerryWebsocket *fs = ferry_migration_link_get(link, "fs");
    if (fs == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "The migration's fs channel is not connected");
        return FALSE;
    }
    FerryByteChannel channel = {channel_read, channel_write, channel_end, channel_abort, fs};
    const char *peer = sending ? "target" : "source";
    if (progress != NULL)
        progress->pass_bytes = 0;
    GError *local_error = NULL;
    gboolean ok;
    if (options->native) {
        FerryNativeOptions pass = {
            .zstd = options->zstd,
            .allow_inconsistent = options->rsync.allow_inconsistent,
            .progress = progress != NULL ? on_bytes : NULL,
            .progress_data = progress,
            .peer = peer,
            .basis_dir = options->basis_dir,
            .wait_ready = options->wait_ready,
            .wait_data = options->wait_data,
        };
        ok = sending ? ferry_native_send(dir, &channel, &pass, cancellable, &local_error)
                     : ferry_native_receive(dir, &channel, &pass, cancellable, &local_error);
    } else {
        FerryRsyncOptions pass = options->rsync;
        pass.peer = peer;
        if (progress != NULL) {
            pass.progress = on_bytes;
            pass.progress_data = progress;
        }
        ok = sending ? ferry_rsync_send(dir, &channel, &pass, cancellable, &local_error)
                     : ferry_rsync_receive(dir, &channel, &pass, cancellable, &local_error);
    }
    if (progress != NULL)
        progress->done_bytes += progress->pass_bytes;
    /* The trouble began at the peer (its side stopped, the connection broke): what it says on control, or
     * that control broke too, tells the user more than our broken stream, and our caller prefers it when it is
     * in. It follows at once unless the peer is stalled; and reporting ours first could make the peer report
     * our consequence instead of its cause. */
    if (!ok)
        ferry_transfer_await_peer(link, local_error);
    if (!ok)
        g_propagate_error(error, local_error);
    return ok;
}

gboolean ferry_transfer_send_dir(FerryMigrationLink *link, const char *dir, const FerryTransferOptions *options,
                                 FerryTransferProgress *progress, GCancellable *cancellable, GError **error)
{
    return run_pass(link, dir, options, progress, TRUE, cancellable, error);
}

gboolean ferry_transfer_receive_dir(FerryMigrationLink *link, const char *dir, const FerryTransferOptions *options,
                                    FerryTransferProgress *progress, GCancellable *cancellable, GError **error)
{
    return run_pass(link, dir, options, progress, FALSE, cancellable, error);
}
