#include "link.h"

#include "error.h"
#include "json.h"
#include "daemon.h"
#include "pool.h"
#include "server.h"

#include <string.h>

struct _FerryMigrationLink {
    GMutex lock;
    GCond changed;
    GHashTable *channels; /* name -> FerryWebsocket* */
    gboolean aborted;
    GCancellable *cancellable; /* the migration's */
    gulong cancel_handler;
    gboolean verdict_watched, verdict_in;
};

static void on_cancelled(GCancellable *cancellable, gpointer data)
{
    FerryMigrationLink *link = data;
    /* Waiters on our condition notice (cancel does not signal it otherwise). */
    g_mutex_lock(&link->lock);
    g_cond_broadcast(&link->changed);
    g_mutex_unlock(&link->lock);
}

static void remember_cancellable(FerryMigrationLink *link, GCancellable *cancellable)
{
    if (cancellable == NULL)
        return;
    g_mutex_lock(&link->lock);
    gboolean first = link->cancellable == NULL;
    if (first)
        link->cancellable = g_object_ref(cancellable);
    g_mutex_unlock(&link->lock);
    /* Outside the lock: connect runs the handler at once when already cancelled. */
    if (first)
        link->cancel_handler = g_cancellable_connect(cancellable, G_CALLBACK(on_cancelled), link, NULL);
}

GCancellable *ferry_migration_link_get_cancellable(FerryMigrationLink *link)
{
    g_mutex_lock(&link->lock);
    GCancellable *cancellable = link->cancellable;
    g_mutex_unlock(&link->lock);
    return cancellable;
}

void ferry_migration_link_watch_verdict(FerryMigrationLink *link)
{
    g_mutex_lock(&link->lock);
    link->verdict_watched = TRUE;
    g_mutex_unlock(&link->lock);
}

void ferry_migration_link_set_verdict(FerryMigrationLink *link)
{
    g_mutex_lock(&link->lock);
    link->verdict_in = TRUE;
    g_cond_broadcast(&link->changed);
    g_mutex_unlock(&link->lock);
}

gboolean ferry_migration_link_wait_verdict(FerryMigrationLink *link, guint timeout_ms)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    g_mutex_lock(&link->lock);
    while (link->verdict_watched && !link->verdict_in && !g_cancellable_is_cancelled(link->cancellable) &&
           g_cond_wait_until(&link->changed, &link->lock, deadline))
        ;
    gboolean in = link->verdict_in;
    g_mutex_unlock(&link->lock);
    return in;
}

FerryMigrationLink *ferry_migration_link_new(void)
{
    FerryMigrationLink *link = g_new0(FerryMigrationLink, 1);
    g_mutex_init(&link->lock);
    g_cond_init(&link->changed);
    link->channels = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)ferry_websocket_free);
    return link;
}

void ferry_migration_link_free(FerryMigrationLink *link)
{
    if (link == NULL)
        return;
    if (link->cancel_handler != 0)
        g_cancellable_disconnect(link->cancellable, link->cancel_handler);
    g_clear_object(&link->cancellable);
    g_hash_table_unref(link->channels);
    g_mutex_clear(&link->lock);
    g_cond_clear(&link->changed);
    g_free(link);
}

json_t *ferry_migration_link_listen(FerryMigrationLink *link, FerryOperation *op, const char *const *channels)
{
    json_t *secrets = json_object();
    for (gsize i = 0; channels[i] != NULL; i++) {
        g_autofree char *secret = ferry_random_secret();
        ferry_operation_add_secret(op, channels[i], secret);
        json_object_set_new(secrets, channels[i], json_string(secret));
    }
    return secrets;
}

typedef struct {
    FerryMigrationLink *link;
    FerryOperation *op;
    char *channel;
} PendingChannel;

static void on_stream(GIOStream *stream, gpointer user_data)
{
    PendingChannel *pending = user_data;
    FerryMigrationLink *link = pending->link;
    g_mutex_lock(&link->lock);
    if (!link->aborted && g_hash_table_lookup(link->channels, pending->channel) == NULL)
        g_hash_table_insert(link->channels, g_strdup(pending->channel), ferry_websocket_new(stream, FALSE));
    g_cond_broadcast(&link->changed);
    g_mutex_unlock(&link->lock);
}

static void pending_channel_free(gpointer data)
{
    PendingChannel *pending = data;
    ferry_operation_unref(pending->op);
    g_free(pending->channel);
    g_free(pending);
}

gboolean ferry_migration_link_connect(FerryMigrationLink *link, FerryOperation *op, SoupServerMessage *msg,
                                      const char *channel, GError **error)
{
    PendingChannel *pending = g_new0(PendingChannel, 1);
    pending->link = link;
    /* The operation keeps the link alive until the stream arrives. */
    pending->op = ferry_operation_ref(op);
    pending->channel = g_strdup(channel);
    if (!ferry_server_accept_stream(msg, on_stream, pending, pending_channel_free, error)) {
        pending_channel_free(pending);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_migration_link_wait(FerryMigrationLink *link, const char *channel, guint timeout_seconds,
                                   GCancellable *cancellable, GError **error)
{
    remember_cancellable(link, cancellable);
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_seconds * G_USEC_PER_SEC;
    g_mutex_lock(&link->lock);
    /* Wake up now and then to notice cancellation: cancel does not signal our condition. */
    while (g_hash_table_lookup(link->channels, channel) == NULL && !link->aborted &&
           !g_cancellable_is_cancelled(cancellable) && g_get_monotonic_time() < deadline)
        g_cond_wait_until(&link->changed, &link->lock, MIN(deadline, g_get_monotonic_time() + G_USEC_PER_SEC / 5));
    gboolean connected = g_hash_table_lookup(link->channels, channel) != NULL;
    gboolean aborted = link->aborted;
    g_mutex_unlock(&link->lock);
    if (connected)
        return TRUE;
    if (g_cancellable_is_cancelled(cancellable) || aborted)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "Migration cancelled while waiting for the \"%s\" "
                    "connection", channel);
    else
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "The other side did not connect the migration's \"%s\" channel within %u seconds", channel,
                    timeout_seconds);
    return FALSE;
}

gboolean ferry_migration_link_dial(FerryMigrationLink *link, const char *operation_url, json_t *secrets,
                                   const char *certificate_pem, GCancellable *cancellable, GError **error)
{
    remember_cancellable(link, cancellable);
    if (!g_str_has_prefix(operation_url, "https://")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid migration operation URL \"%s\"", operation_url);
        return FALSE;
    }
    /* Control first: the listening side waits for it before the data channels. */
    g_autoptr(GPtrArray) order = g_ptr_array_new();
    if (json_object_get(secrets, "control") != NULL)
        g_ptr_array_add(order, (gpointer) "control");
    const char *name;
    json_t *secret;
    json_object_foreach(secrets, name, secret) {
        if (!g_str_equal(name, "control"))
            g_ptr_array_add(order, (gpointer)name);
    }
    for (guint i = 0; i < order->len; i++) {
        const char *channel = order->pdata[i];
        const char *value = ferry_json_get_string(secrets, channel);
        if (value == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid secret for channel \"%s\"", channel);
            return FALSE;
        }
        g_autofree char *escaped = g_uri_escape_string(value, NULL, FALSE);
        g_autofree char *url =
            g_strdup_printf("wss://%s/websocket?secret=%s", operation_url + strlen("https://"), escaped);
        FerryWebsocket *ws = ferry_websocket_dial(url, certificate_pem, NULL, cancellable, error);
        if (ws == NULL) {
            g_prefix_error(error, "Failed to connect the migration's \"%s\" channel to %s: ", channel,
                           operation_url);
            return FALSE;
        }
        g_mutex_lock(&link->lock);
        g_hash_table_replace(link->channels, g_strdup(channel), ws);
        g_mutex_unlock(&link->lock);
    }
    return TRUE;
}

FerryWebsocket *ferry_migration_link_get(FerryMigrationLink *link, const char *channel)
{
    g_mutex_lock(&link->lock);
    FerryWebsocket *ws = g_hash_table_lookup(link->channels, channel);
    g_mutex_unlock(&link->lock);
    return ws;
}

void ferry_migration_link_abort(FerryMigrationLink *link)
{
    g_mutex_lock(&link->lock);
    link->aborted = TRUE;
    GHashTableIter iter;
    gpointer ws;
    g_hash_table_iter_init(&iter, link->channels);
    while (g_hash_table_iter_next(&iter, NULL, &ws))
        ferry_websocket_abort(ws);
    g_cond_broadcast(&link->changed);
    g_mutex_unlock(&link->lock);
}

void ferry_migration_link_release(FerryMigrationLink *link)
{
    ferry_migration_link_abort(link);
    g_mutex_lock(&link->lock);
    GHashTable *channels = link->channels;
    link->channels = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)ferry_websocket_free);
    g_mutex_unlock(&link->lock);
    g_hash_table_unref(channels);
}

static guint64 parse_limit(const char *value)
{
    gint64 bytes = 0;
    /* rsync takes a bare number as KiB/s; Incus passes rsync.bwlimit to it as is. */
    if (value == NULL || *value == '\0')
        return 0;
    if (g_ascii_isdigit(value[strlen(value) - 1]))
        return g_ascii_strtoull(value, NULL, 10) * 1024;
    return ferry_parse_size(value, &bytes) && bytes > 0 ? (guint64)bytes : 0;
}

guint64 ferry_migration_bandwidth_limit(FerryDaemon *daemon, FerryPool *pool)
{
    g_autofree char *server = ferry_db_config_get(daemon->db, "migration.bandwidth");
    guint64 limit = parse_limit(server);
    GHashTable *config = pool != NULL ? ferry_pool_get_config(pool) : NULL;
    guint64 pool_limit = config != NULL ? parse_limit(g_hash_table_lookup(config, "rsync.bwlimit")) : 0;
    if (pool_limit > 0 && (limit == 0 || pool_limit < limit))
        limit = pool_limit;
    return limit;
}

void ferry_migration_link_limit(FerryMigrationLink *link, guint64 bytes_per_second)
{
    g_mutex_lock(&link->lock);
    GHashTableIter iter;
    gpointer ws;
    g_hash_table_iter_init(&iter, link->channels);
    while (g_hash_table_iter_next(&iter, NULL, &ws))
        ferry_websocket_set_send_limit(ws, bytes_per_second);
    g_mutex_unlock(&link->lock);
}
