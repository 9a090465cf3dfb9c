#include "server.h"

#include "api/api.h"
#include "error.h"
#include "response.h"
#include "router.h"
#include "trust.h"

#include <fcntl.h>
#include <glib/gstdio.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>

/* Uploads (images, backups) stream into a temp file under $FERRY_DIR so large bodies never sit in memory. */
typedef struct {
    char *path;
    int fd;
    gboolean failed;
} Upload;

static void upload_free(gpointer data)
{
    Upload *upload = data;
    if (upload->fd >= 0)
        close(upload->fd);
    if (upload->path != NULL)
        g_unlink(upload->path);
    g_free(upload->path);
    g_free(upload);
}

static void on_got_chunk(SoupServerMessage *msg, GBytes *chunk, gpointer user_data)
{
    Upload *upload = user_data;
    gsize size = 0;
    const guint8 *data = g_bytes_get_data(chunk, &size);
    while (size > 0 && !upload->failed) {
        ssize_t written = write(upload->fd, data, size);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0) {
            upload->failed = TRUE;
            break;
        }
        data += written;
        size -= (gsize)written;
    }
}

/* An untrusted client can only redeem a trust token: a few hundred bytes. Its body is kept to this size and never
 * streamed to disk, so that nobody without a certificate can fill our memory or disk. */
#define MAX_UNTRUSTED_BODY (64 * 1024)

static void on_untrusted_chunk(SoupServerMessage *msg, GBytes *chunk, gpointer user_data)
{
    SoupMessageBody *body = soup_server_message_get_request_body(msg);
    if (g_object_get_data(G_OBJECT(msg), "ferry-body-too-large") != NULL)
        return;
    if (body->length + g_bytes_get_size(chunk) > MAX_UNTRUSTED_BODY) {
        g_object_set_data(G_OBJECT(msg), "ferry-body-too-large", GINT_TO_POINTER(TRUE));
        soup_message_body_truncate(body);
        return;
    }
    soup_message_body_append_bytes(body, chunk);
}

static void on_got_headers(SoupServerMessage *msg, gpointer user_data)
{
    FerryDaemon *daemon = user_data;
    if (g_object_get_data(G_OBJECT(msg), "ferry-https") != NULL && !ferry_trust_check_client(daemon, msg, NULL)) {
        /* on_untrusted_chunk accumulates instead, up to the limit; handle_request turns it back on to read. */
        soup_message_body_set_accumulate(soup_server_message_get_request_body(msg), FALSE);
        g_object_set_data(G_OBJECT(msg), "ferry-body-limited", GINT_TO_POINTER(TRUE));
        g_signal_connect(msg, "got-chunk", G_CALLBACK(on_untrusted_chunk), NULL);
        return;
    }
    SoupMessageHeaders *headers = soup_server_message_get_request_headers(msg);
    const char *content_type = soup_message_headers_get_content_type(headers, NULL);
    const char *path = g_uri_get_path(soup_server_message_get_uri(msg));
    if (!ferry_router_is_upload(soup_server_message_get_method(msg), path, content_type))
        return;
    /* A backup import whose client waits for "100 Continue" is extracted as it arrives (api/backups.c). */
    if (api_backup_import_stream(daemon, msg))
        return;
    g_autofree char *dir = g_build_filename(daemon->dir, "uploads", NULL);
    g_mkdir_with_parents(dir, 0700);
    Upload *upload = g_new0(Upload, 1);
    upload->path = g_build_filename(dir, "upload-XXXXXX", NULL);
    upload->fd = g_mkstemp_full(upload->path, O_RDWR | O_CLOEXEC, 0600);
    if (upload->fd < 0) {
        g_clear_pointer(&upload->path, g_free);
        upload->failed = TRUE;
    }
    g_object_set_data_full(G_OBJECT(msg), "ferry-upload", upload, upload_free);
    soup_message_body_set_accumulate(soup_server_message_get_request_body(msg), FALSE);
    g_signal_connect(msg, "got-chunk", G_CALLBACK(on_got_chunk), upload);
}

static gboolean accept_any_client_certificate(SoupServerMessage *msg, GTlsCertificate *certificate,
                                              GTlsCertificateFlags errors, gpointer user_data)
{
    /* Clients present self-signed certificates; whether one is trusted is decided per request against the
     * trust store (ferry_trust_check_client), exactly as Incus does. */
    return TRUE;
}

static void on_request_started(SoupServer *server, SoupServerMessage *msg, gpointer user_data)
{
    FerryDaemon *daemon = user_data;
    /* No keep-alive: libsoup 3.2 never closes a kept-alive connection that the client closes while it waits
     * for the next request (fixed in 3.3 by libsoup commit d20c6601), so every such connection stayed open
     * for good, in CLOSE-WAIT. With "close" it hangs up itself once the response is out. The websocket
     * upgrade takes this header off again (accept_upgrade). */
    soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Connection", "close");
    if (server != daemon->unix_server)
        g_object_set_data(G_OBJECT(msg), "ferry-https", GINT_TO_POINTER(TRUE));
    g_signal_connect(msg, "accept-certificate", G_CALLBACK(accept_any_client_certificate), NULL);
    g_signal_connect(msg, "got-headers", G_CALLBACK(on_got_headers), user_data);
}

static void handle_request(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                           gpointer user_data)
{
    FerryDaemon *daemon = user_data;
    gboolean via_unix_socket = server == daemon->unix_server;
    if (g_object_get_data(G_OBJECT(msg), "ferry-body-too-large") != NULL) {
        ferry_response_send_error(msg, 413, "Request body too large");
        return;
    }
    if (g_object_get_data(G_OBJECT(msg), "ferry-body-limited") != NULL)
        soup_message_body_set_accumulate(soup_server_message_get_request_body(msg), TRUE);
    Upload *upload = g_object_get_data(G_OBJECT(msg), "ferry-upload");
    if (upload != NULL && upload->failed) {
        ferry_response_send_error(msg, 500, "Failed to store the uploaded data");
        return;
    }
    ferry_router_dispatch(daemon, msg, via_unix_socket, upload != NULL ? upload->path : NULL);
}

static SoupServer *server_new(FerryDaemon *daemon, GTlsCertificate *certificate)
{
    SoupServer *server =
        certificate != NULL
            ? soup_server_new("server-header", "ferry", "tls-certificate", certificate, "tls-auth-mode",
                              G_TLS_AUTHENTICATION_REQUESTED, NULL)
            : soup_server_new("server-header", "ferry", NULL);
    g_signal_connect(server, "request-started", G_CALLBACK(on_request_started), daemon);
    soup_server_add_handler(server, NULL, handle_request, daemon, NULL);
    return server;
}

GTlsCertificate *ferry_server_peer_certificate(SoupServerMessage *msg)
{
    /* libsoup 3.2 reports the client certificate on the first request of a connection only, so keep it on
     * the connection's socket for the requests that follow on the same connection. */
    GSocket *socket = soup_server_message_get_socket(msg);
    GTlsCertificate *certificate = soup_server_message_get_tls_peer_certificate(msg);
    if (socket == NULL)
        return certificate;
    if (certificate != NULL) {
        g_object_set_data_full(G_OBJECT(socket), "ferry-peer-certificate", g_object_ref(certificate),
                               g_object_unref);
        return certificate;
    }
    return g_object_get_data(G_OBJECT(socket), "ferry-peer-certificate");
}

SoupServer *ferry_server_new_unix(FerryDaemon *daemon, const char *socket_path, GError **error)
{
    g_autoptr(GSocket) socket = g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, 0, error);
    if (socket == NULL)
        return NULL;
    g_unlink(socket_path);
    g_autoptr(GSocketAddress) address = g_unix_socket_address_new(socket_path);
    /* Create it root-only from the start: no window where others could connect. */
    mode_t old_umask = umask(0077);
    gboolean bound = g_socket_bind(socket, address, TRUE, error);
    umask(old_umask);
    if (!bound || !g_socket_listen(socket, error)) {
        g_prefix_error(error, "Failed to listen on %s: ", socket_path);
        return NULL;
    }
    g_chmod(socket_path, 0660);
    SoupServer *server = server_new(daemon, NULL);
    if (!soup_server_listen_socket(server, socket, 0, error)) {
        g_object_unref(server);
        return NULL;
    }
    return server;
}

/* core.https_address: "IP:port", "[IPv6]:port", a bare IP (port 8443) or ":port" (every address). */
static GSocketAddress *parse_listen_address(const char *address, GError **error)
{
    g_autofree char *host = NULL;
    guint64 port = 0;
    if (address[0] == ':') {
        host = g_strdup("::");
        if (!g_ascii_string_to_unsigned(address + 1, 10, 1, G_MAXUINT16, &port, NULL))
            port = 0;
    } else {
        g_autoptr(GSocketConnectable) parsed = g_network_address_parse(address, 8443, NULL);
        if (parsed != NULL) {
            host = g_strdup(g_network_address_get_hostname(G_NETWORK_ADDRESS(parsed)));
            port = g_network_address_get_port(G_NETWORK_ADDRESS(parsed));
        }
    }
    /* Port 0 would bind a random port that no client could be told about. */
    GSocketAddress *socket_address =
        host != NULL && port != 0 ? g_inet_socket_address_new_from_string(host, (guint)port) : NULL;
    if (socket_address == NULL)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid listen address \"%s\": expected IP:port (a literal IP address, port 1-65535)",
                    address);
    return socket_address;
}

SoupServer *ferry_server_new_https(FerryDaemon *daemon, const char *address, GError **error)
{
    g_autoptr(GSocketAddress) socket_address = parse_listen_address(address, error);
    if (socket_address == NULL)
        return NULL;
    SoupServer *server = server_new(daemon, daemon->server_certificate);
    g_autoptr(GError) listen_error = NULL;
    if (!soup_server_listen(server, socket_address, SOUP_SERVER_LISTEN_HTTPS, &listen_error)) {
        /* An address we cannot bind (in use, not ours) is a bad value for the setting, not a server fault. */
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Failed to listen on %s: %s", address,
                    listen_error->message);
        g_object_unref(server);
        return NULL;
    }
    return server;
}

/* Kept on the message until the 101 is out. If the client goes away before (or the server drops the message
 * for any other reason), finalizing the message frees it, so the caller's data is never lost. */
#define PENDING_UPGRADE_KEY "ferry-pending-upgrade"

typedef struct {
    FerryWebsocketReadyFunc ready;
    FerryStreamReadyFunc stream_ready;
    gpointer user_data;
    GDestroyNotify destroy;
} PendingUpgrade;

static void pending_upgrade_free(gpointer data)
{
    PendingUpgrade *pending = data;
    if (pending->destroy != NULL)
        pending->destroy(pending->user_data);
    g_free(pending);
}

static void on_upgrade_written(SoupServerMessage *msg, gpointer user_data)
{
    g_signal_handlers_disconnect_by_func(msg, on_upgrade_written, user_data);
    PendingUpgrade *pending = g_object_steal_data(G_OBJECT(msg), PENDING_UPGRADE_KEY);
    if (pending == NULL)
        return;
    /* Stealing may drop libsoup's last reference to msg, whose URI is still needed. */
    g_autoptr(SoupServerMessage) msg_ref = g_object_ref(msg);
    /* The 101 response is out: from here the connection is ours. */
    g_autoptr(GIOStream) stream = soup_server_message_steal_connection(msg);
    if (stream == NULL) {
        pending_upgrade_free(pending);
        return;
    }
    if (pending->stream_ready != NULL) {
        pending->stream_ready(stream, pending->user_data);
    } else {
        GUri *uri = soup_server_message_get_uri(msg);
        g_autoptr(SoupWebsocketConnection) connection =
            soup_websocket_connection_new(stream, uri, SOUP_WEBSOCKET_CONNECTION_SERVER, NULL, NULL, NULL);
        soup_websocket_connection_set_max_incoming_payload_size(connection, 128 * 1024 * 1024);
        pending->ready(connection, pending->user_data);
    }
    pending_upgrade_free(pending);
}

static gboolean accept_upgrade(SoupServerMessage *msg, PendingUpgrade *pending, GError **error)
{
    if (!soup_websocket_server_check_handshake(msg, NULL, NULL, NULL, error)) {
        g_prefix_error(error, "Bad websocket handshake: ");
        if (*error != NULL)
            (*error)->code = FERRY_ERROR_INVALID;
        /* Not taken: the caller still owns its data. */
        g_free(pending);
        return FALSE;
    }
    /* The 101 says "Connection: Upgrade" alone, not the "close" that every other response carries. */
    soup_message_headers_remove(soup_server_message_get_response_headers(msg), "Connection");
    soup_websocket_server_process_handshake(msg, NULL, NULL, NULL, NULL);
    g_object_set_data_full(G_OBJECT(msg), PENDING_UPGRADE_KEY, pending, pending_upgrade_free);
    g_signal_connect(msg, "wrote-informational", G_CALLBACK(on_upgrade_written), pending);
    return TRUE;
}

gboolean ferry_server_accept_websocket(SoupServerMessage *msg, FerryWebsocketReadyFunc ready, gpointer user_data,
                                       GDestroyNotify destroy, GError **error)
{
    PendingUpgrade *pending = g_new0(PendingUpgrade, 1);
    pending->ready = ready;
    pending->user_data = user_data;
    pending->destroy = destroy;
    return accept_upgrade(msg, pending, error);
}

gboolean ferry_server_accept_stream(SoupServerMessage *msg, FerryStreamReadyFunc ready, gpointer user_data,
                                    GDestroyNotify destroy, GError **error)
{
    PendingUpgrade *pending = g_new0(PendingUpgrade, 1);
    pending->stream_ready = ready;
    pending->user_data = user_data;
    pending->destroy = destroy;
    return accept_upgrade(msg, pending, error);
}
