#include "control_monitor.h"

#include "error.h"
#include "migrate.pb-c.h"

struct _FerryControlMonitor {
    FerryMigrationLink *link;
    char *peer;
    GThread *thread;
    GMutex lock;
    GCond done_cond;
    gboolean done;
    gboolean success;
    gboolean closed_cleanly;
    gboolean peer_reported; /* the peer said it failed, as opposed to the connection dropping */
    char *failure; /* the peer's message, or our description of what went wrong */
};

static gpointer monitor_thread(gpointer data)
{
    FerryControlMonitor *monitor = data;
    FerryWebsocket *control = ferry_migration_link_get(monitor->link, "control");
    FerryWsType type = FERRY_WS_BINARY;
    g_autoptr(GError) error = NULL;
    g_autoptr(GBytes) message = control != NULL ? ferry_websocket_receive(control, &type, NULL, &error) : NULL;
    gboolean success = FALSE, closed_cleanly = FALSE, peer_reported = FALSE;
    g_autofree char *failure = NULL;
    if (message == NULL) {
        closed_cleanly = control != NULL && error != NULL && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CLOSED) &&
                         ferry_websocket_get_close_code(control) == 1000;
        if (!closed_cleanly)
            failure = g_strdup_printf("Error reading migration control %s: %s", monitor->peer,
                                      error != NULL ? error->message : "not connected");
    } else {
        gsize size = 0;
        const guint8 *bytes = g_bytes_get_data(message, &size);
        Migration__MigrationControl *msg =
            type == FERRY_WS_BINARY ? migration__migration_control__unpack(NULL, size, bytes) : NULL;
        if (msg == NULL) {
            failure = g_strdup_printf("Invalid migration control message from %s", monitor->peer);
        } else {
            success = msg->success;
            peer_reported = !success;
            if (!success)
                failure = g_strdup_printf("Error from migration control %s: %s", monitor->peer,
                                          msg->message != NULL && *msg->message ? msg->message : "failed");
            migration__migration_control__free_unpacked(msg, NULL);
        }
    }
    /* A failure stops the local transfer now, whatever it is blocked on. */
    if (!success && !closed_cleanly)
        ferry_migration_link_abort(monitor->link);
    g_mutex_lock(&monitor->lock);
    monitor->done = TRUE;
    monitor->success = success;
    monitor->closed_cleanly = closed_cleanly;
    monitor->peer_reported = peer_reported;
    monitor->failure = g_steal_pointer(&failure);
    g_cond_broadcast(&monitor->done_cond);
    g_mutex_unlock(&monitor->lock);
    ferry_migration_link_set_verdict(monitor->link);
    return NULL;
}

FerryControlMonitor *ferry_control_monitor_start(FerryMigrationLink *link, const char *peer)
{
    FerryControlMonitor *monitor = g_new0(FerryControlMonitor, 1);
    monitor->link = link;
    monitor->peer = g_strdup(peer);
    g_mutex_init(&monitor->lock);
    g_cond_init(&monitor->done_cond);
    ferry_migration_link_watch_verdict(link);
    monitor->thread = g_thread_new("migration-control", monitor_thread, monitor);
    return monitor;
}

gboolean ferry_control_monitor_finish(FerryControlMonitor *monitor, gboolean accept_close, int timeout_seconds,
                                      GError **error)
{
    gint64 deadline = timeout_seconds < 0 ? G_MAXINT64
                                          : g_get_monotonic_time() + (gint64)timeout_seconds * G_USEC_PER_SEC;
    /* A peer that neither answers nor goes away (a stalled connection) must not outlast a cancel. */
    GCancellable *cancellable = ferry_migration_link_get_cancellable(monitor->link);
    gboolean cancelled = FALSE;
    g_mutex_lock(&monitor->lock);
    while (!monitor->done && !(cancelled = g_cancellable_is_cancelled(cancellable))) {
        gint64 now = g_get_monotonic_time();
        if (now >= deadline)
            break;
        g_cond_wait_until(&monitor->done_cond, &monitor->lock, MIN(deadline, now + G_USEC_PER_SEC / 4));
    }
    gboolean done = monitor->done;
    gboolean ok = done && (monitor->success || (accept_close && monitor->closed_cleanly));
    if (!ok) {
        if (!done && cancelled)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED,
                        "Operation cancelled while waiting for the migration %s's answer", monitor->peer);
        else if (!done)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "No answer from the migration %s within %d seconds",
                        monitor->peer, timeout_seconds);
        else if (monitor->failure != NULL)
            g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, monitor->failure);
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "The migration %s closed the connection early",
                        monitor->peer);
    }
    g_mutex_unlock(&monitor->lock);
    return ok;
}

const char *ferry_control_monitor_peer_failure(FerryControlMonitor *monitor)
{
    g_mutex_lock(&monitor->lock);
    const char *failure = monitor->done && !monitor->success && !monitor->closed_cleanly ? monitor->failure : NULL;
    g_mutex_unlock(&monitor->lock);
    return failure;
}

gboolean ferry_control_monitor_peer_reported(FerryControlMonitor *monitor)
{
    g_mutex_lock(&monitor->lock);
    gboolean reported = monitor->done && monitor->peer_reported;
    g_mutex_unlock(&monitor->lock);
    return reported;
}

void ferry_control_monitor_free(FerryControlMonitor *monitor)
{
    if (monitor == NULL)
        return;
    /* The reader must be gone before the link is: unblock it if the peer never answered. */
    ferry_migration_link_abort(monitor->link);
    g_thread_join(monitor->thread);
    g_free(monitor->peer);
    g_free(monitor->failure);
    g_mutex_clear(&monitor->lock);
    g_cond_clear(&monitor->done_cond);
    g_free(monitor);
}
