#include "client.h"

#include "error.h"
#include "json.h"
#include "tls_cert.h"
#include "tls_trust.h"

#include <ferry-config.h>
#include <gio/gunixsocketaddress.h>
#include <string.h>

/* Incus answers operation waits, events and exec output with single messages well above libsoup's 128 KiB
 * default; this is only a sanity bound. */
#define WEBSOCKET_MAX_PAYLOAD (16 * 1024 * 1024)

struct _FerryClient {
    GMainContext *context;
    SoupSession *session;
    char *socket_path; /* unix socket clients: for uploads written without libsoup */
    char *base_url; /* scheme://host[:port], no trailing slash */
    char *address;  /* for messages */
    char *project;
    gboolean is_unix;
    GTlsCertificate *client_cert;
    char *pinned_fingerprint; /* NULL: any peer certificate is accepted (and recorded) */
    GTlsCertificate *peer_cert;
    char *rejected_fingerprint; /* the last peer certificate refused by the pin */
};

/* The client's context is made thread-default (GMainContextPusher) around everything that starts or
 * finishes I/O, so that every callback of the session and its websockets runs there and nowhere else. */

static FerryClient *client_new(const char *base_url, const char *address, GSocketConnectable *connectable)
{
    FerryClient *client = g_new0(FerryClient, 1);
    client->context = g_main_context_new();
    client->base_url = g_strdup(base_url);
    client->address = g_strdup(address);

    g_autoptr(GMainContextPusher) pusher = g_main_context_pusher_new(client->context);
    g_autofree char *agent = g_strdup_printf("ferry %s", FERRY_VERSION);
    if (connectable != NULL)
        client->session = soup_session_new_with_options("remote-connectable", connectable, "user-agent",
                                                        agent, "timeout", 0, "idle-timeout", 0, NULL);
    else
        /* No TLS database: no CA can vouch for a server, only the pin in accept-certificate. */
        client->session = soup_session_new_with_options("tls-database", NULL, "user-agent", agent, "timeout",
                                                        0, "idle-timeout", 0, NULL);
    return client;
}

FerryClient *ferry_client_new_unix(const char *socket_path)
{
    g_autoptr(GSocketAddress) address = g_unix_socket_address_new(socket_path);
    g_autofree char *label = g_strdup_printf("unix:%s", socket_path);
    FerryClient *client = client_new("http://unix.socket", label, G_SOCKET_CONNECTABLE(address));
    client->is_unix = TRUE;
    client->socket_path = g_strdup(socket_path);
    return client;
}

FerryClient *ferry_client_new_https(const char *url, GTlsCertificate *client_cert,
                                    GTlsCertificate *server_cert, const char *server_fingerprint,
                                    GError **error)
{
    g_autoptr(GUri) uri = g_uri_parse(url, G_URI_FLAGS_NONE, NULL);
    if (uri == NULL || g_strcmp0(g_uri_get_scheme(uri), "https") != 0 || g_uri_get_host(uri) == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid server address %s (want https://host:port)", url);
        return NULL;
    }
    int port = g_uri_get_port(uri);
    const char *host = g_uri_get_host(uri);
    g_autofree char *host_part = strchr(host, ':') != NULL ? g_strdup_printf("[%s]", host) : g_strdup(host);
    g_autofree char *base = port > 0 ? g_strdup_printf("https://%s:%d", host_part, port)
                                     : g_strdup_printf("https://%s", host_part);

    ferry_tls_trust_no_ca();
    FerryClient *client = client_new(base, base, NULL);
    if (client_cert != NULL)
        client->client_cert = g_object_ref(client_cert);
    if (server_cert != NULL)
        client->pinned_fingerprint = ferry_tls_cert_fingerprint(server_cert);
    else if (server_fingerprint != NULL)
        client->pinned_fingerprint = g_ascii_strdown(server_fingerprint, -1);
    return client;
}

void ferry_client_free(FerryClient *client)
{
    if (client != NULL)
        g_free(client->socket_path);
    if (client == NULL)
        return;
    {
        g_autoptr(GMainContextPusher) pusher = g_main_context_pusher_new(client->context);
        soup_session_abort(client->session);
        g_clear_object(&client->session);
        /* Let aborted messages deliver their callbacks before the context goes away. */
        while (g_main_context_iteration(client->context, FALSE))
            ;
    }
    g_main_context_unref(client->context);
    g_free(client->base_url);
    g_free(client->address);
    g_free(client->project);
    g_clear_object(&client->client_cert);
    g_free(client->pinned_fingerprint);
    g_clear_object(&client->peer_cert);
    g_free(client->rejected_fingerprint);
    g_free(client);
}

void ferry_client_set_project(FerryClient *client, const char *project)
{
    g_free(client->project);
    client->project = g_strdup(project);
}

const char *ferry_client_get_project(FerryClient *client)
{
    return client->project;
}

const char *ferry_client_get_address(FerryClient *client)
{
    return client->address;
}

GTlsCertificate *ferry_client_get_peer_certificate(FerryClient *client)
{
    return client->peer_cert;
}

GMainContext *ferry_client_get_context(FerryClient *client)
{
    return client->context;
}

char *ferry_api_path(const char *first_segment, ...)
{
    GString *path = g_string_new("/1.0");
    va_list args;
    va_start(args, first_segment);
    for (const char *segment = first_segment; segment != NULL; segment = va_arg(args, const char *)) {
        g_autofree char *escaped = g_uri_escape_string(segment, NULL, FALSE);
        g_string_append_c(path, '/');
        g_string_append(path, escaped);
    }
    va_end(args);
    return g_string_free(path, FALSE);
}

char *ferry_operation_id(const char *operation)
{
    const char *slash = strrchr(operation, '/');
    const char *id = slash != NULL ? slash + 1 : operation;
    const char *query = strchr(id, '?');
    return query != NULL ? g_strndup(id, query - id) : g_strdup(id);
}

void ferry_response_free(FerryResponse *response)
{
    if (response == NULL)
        return;
    g_free(response->type);
    g_free(response->operation);
    g_free(response->etag);
    if (response->metadata != NULL)
        json_decref(response->metadata);
    g_free(response);
}

static char *build_url(FerryClient *client, const char *path)
{
    GString *url = g_string_new(client->base_url);
    g_string_append(url, path);
    if (client->project != NULL && *client->project != '\0') {
        const char *query = strchr(path, '?');
        gboolean has_project = query != NULL && (strstr(query, "?project=") || strstr(query, "&project="));
        if (!has_project) {
            g_autofree char *escaped = g_uri_escape_string(client->project, NULL, TRUE);
            g_string_append_printf(url, "%cproject=%s", query != NULL ? '&' : '?', escaped);
        }
    }
    return g_string_free(url, FALSE);
}

static gboolean on_accept_certificate(SoupMessage *msg, GTlsCertificate *peer, GTlsCertificateFlags errors,
                                      gpointer user_data)
{
    FerryClient *client = user_data;
    g_autofree char *fingerprint = ferry_tls_cert_fingerprint(peer);

    g_set_object(&client->peer_cert, peer);
    if (client->pinned_fingerprint == NULL)
        return TRUE;
    if (fingerprint != NULL && g_strcmp0(fingerprint, client->pinned_fingerprint) == 0)
        return TRUE;
    g_free(client->rejected_fingerprint);
    client->rejected_fingerprint = g_steal_pointer(&fingerprint);
    return FALSE;
}

static SoupMessage *new_message(FerryClient *client, const char *method, const char *path, GError **error)
{
    g_autofree char *url = build_url(client, path);
    g_autoptr(GError) local_error = NULL;
    g_autoptr(GUri) uri = g_uri_parse(url, SOUP_HTTP_URI_FLAGS, &local_error);
    if (uri == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid request path %s: %s", path,
                    local_error->message);
        return NULL;
    }
    SoupMessage *msg = soup_message_new_from_uri(method, uri);
    if (!client->is_unix) {
        soup_message_set_tls_client_certificate(msg, client->client_cert);
        g_signal_connect(msg, "accept-certificate", G_CALLBACK(on_accept_certificate), client);
    }
    return msg;
}

/* A transport failure, with the address and, for a refused pin, both fingerprints. */
static void set_transport_error(FerryClient *client, const GError *cause, GError **error)
{
    if (cause->domain == G_TLS_ERROR && client->rejected_fingerprint != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_FORBIDDEN,
                    "Server certificate of %s has fingerprint %s, not the trusted %s", client->address,
                    client->rejected_fingerprint, client->pinned_fingerprint);
        return;
    }
    if (g_error_matches(cause, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, cause->message);
        return;
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE, "Failed to connect to %s: %s", client->address,
                cause->message);
}

typedef struct {
    gboolean done;
    GBytes *body;
    GError *error;
} SendState;

static void on_send_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
    SendState *state = user_data;
    state->body = soup_session_send_and_read_finish(SOUP_SESSION(source), result, &state->error);
    state->done = TRUE;
}

/* Send msg and read the whole body, running the client's context meanwhile. */
static GBytes *send_message(FerryClient *client, SoupMessage *msg, GError **error)
{
    SendState state = {0};
    g_autoptr(GMainContextPusher) pusher = g_main_context_pusher_new(client->context);

    soup_session_send_and_read_async(client->session, msg, G_PRIORITY_DEFAULT, NULL, on_send_done, &state);
    while (!state.done)
        g_main_context_iteration(client->context, TRUE);
    if (state.error != NULL) {
        set_transport_error(client, state.error, error);
        g_error_free(state.error);
        return NULL;
    }
    return state.body;
}

static FerryResponse *parse_envelope(FerryClient *client, guint status, const char *reason, const char *etag,
                                     GBytes *body, GError **error);

/* Decode an Incus envelope; error envelopes and HTTP errors become GErrors. */
static FerryResponse *parse_response(FerryClient *client, SoupMessage *msg, GBytes *body, GError **error)
{
    return parse_envelope(client, soup_message_get_status(msg), soup_message_get_reason_phrase(msg),
                          soup_message_headers_get_one(soup_message_get_response_headers(msg), "ETag"), body, error);
}

static FerryResponse *parse_envelope(FerryClient *client, guint status, const char *reason, const char *etag,
                                     GBytes *body, GError **error)
{
    gsize length = 0;
    const char *data = g_bytes_get_data(body, &length);
    g_autoptr(GError) parse_error = NULL;
    g_autoptr(json_t) root = length > 0 ? ferry_json_parse(data, length, &parse_error) : NULL;

    if (root == NULL || !json_is_object(root)) {
        int code = status >= 400 && status < 600 ? (int)status : FERRY_ERROR_INTERNAL;
        g_autofree char *text = length > 0 ? g_strstrip(g_strndup(data, MIN(length, 200))) : NULL;
        g_set_error(error, FERRY_ERROR, code, "Unexpected response from %s: %u %s%s%s", client->address,
                    status, reason != NULL ? reason : "", text != NULL && *text ? ": " : "",
                    text != NULL ? text : "");
        return NULL;
    }

    const char *type = ferry_json_get_string(root, "type");
    if (g_strcmp0(type, "error") == 0 || status >= 400) {
        json_int_t code = json_integer_value(json_object_get(root, "error_code"));
        const char *message = ferry_json_get_string(root, "error");
        if (code < 100 || code > 599)
            code = status >= 400 ? (json_int_t)status : FERRY_ERROR_INTERNAL;
        g_set_error_literal(error, FERRY_ERROR, (int)code, message != NULL && *message ? message : reason);
        return NULL;
    }

    FerryResponse *response = g_new0(FerryResponse, 1);
    response->type = g_strdup(type != NULL ? type : "sync");
    response->status_code = (int)json_integer_value(json_object_get(root, "status_code"));
    response->operation = g_strdup(ferry_json_get_string(root, "operation"));
    if (response->operation != NULL && *response->operation == '\0')
        g_clear_pointer(&response->operation, g_free);
    response->etag = g_strdup(etag);
    json_t *metadata = json_object_get(root, "metadata");
    response->metadata = metadata != NULL ? json_incref(metadata) : json_null();
    return response;
}

static void set_json_body(SoupMessage *msg, json_t *body)
{
    char *text = ferry_json_dump(body);
    g_autoptr(GBytes) bytes = g_bytes_new_take(text, strlen(text));
    soup_message_set_request_body_from_bytes(msg, "application/json", bytes);
}

FerryResponse *ferry_client_request(FerryClient *client, const char *method, const char *path, json_t *body,
                                    const char *etag, GError **error)
{
    g_autoptr(SoupMessage) msg = new_message(client, method, path, error);
    if (msg == NULL)
        return NULL;
    if (body != NULL)
        set_json_body(msg, body);
    if (etag != NULL && *etag != '\0')
        soup_message_headers_replace(soup_message_get_request_headers(msg), "If-Match", etag);

    g_autoptr(GBytes) reply = send_message(client, msg, error);
    if (reply == NULL)
        return NULL;
    return parse_response(client, msg, reply, error);
}

json_t *ferry_client_get(FerryClient *client, const char *path, char **etag_out, GError **error)
{
    g_autoptr(FerryResponse) response = ferry_client_request(client, "GET", path, NULL, NULL, error);
    if (response == NULL)
        return NULL;
    if (etag_out != NULL)
        *etag_out = g_strdup(response->etag);
    return json_incref(response->metadata);
}

GBytes *ferry_client_get_raw(FerryClient *client, const char *path, GError **error)
{
    g_autoptr(SoupMessage) msg = new_message(client, "GET", path, error);
    if (msg == NULL)
        return NULL;
    g_autoptr(GBytes) reply = send_message(client, msg, error);
    if (reply == NULL)
        return NULL;
    if (SOUP_STATUS_IS_SUCCESSFUL(soup_message_get_status(msg)))
        return g_steal_pointer(&reply);
    g_autoptr(FerryResponse) response = parse_response(client, msg, reply, error);
    g_assert(response == NULL);
    return NULL;
}

gboolean ferry_progress_from_operation(const json_t *operation, FerryProgress *progress)
{
    json_t *metadata = json_object_get(operation, "metadata");
    memset(progress, 0, sizeof *progress);
    progress->done = progress->total = progress->rate = -1;
    if (!json_is_object(metadata))
        return FALSE;

    json_t *own = json_object_get(metadata, "progress");
    if (json_is_object(own)) {
        json_t *value;
        if (json_is_integer(value = json_object_get(own, "done")))
            progress->done = json_integer_value(value);
        if (json_is_integer(value = json_object_get(own, "total")))
            progress->total = json_integer_value(value);
        if (json_is_integer(value = json_object_get(own, "rate")))
            progress->rate = json_integer_value(value);
        if (progress->done >= 0) {
            progress->stage = ferry_json_get_string(own, "stage");
            return TRUE;
        }
        /* Incus's own "progress" ({"stage","percent","speed"} as strings) goes with a text key below. */
        progress->total = progress->rate = -1;
    }

    /* Incus: "download_progress": "rootfs: 45% (12.30MB/s)", "create_instance_from_image_unpack_progress":
     * "Unpack: 45% (4.23GB/s)", "fs_progress": "c1: 123.45MB (12.3MB/s)"... */
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)metadata, key, value)
    {
        if (json_is_string(value) && g_str_has_suffix(key, "_progress")) {
            progress->text = json_string_value(value);
            return TRUE;
        }
    }
    return FALSE;
}

struct _FerryOperationWatch {
    FerryClient *client;
    char *operation_id;
    FerryProgressFunc progress;
    gpointer user_data;
    GCancellable *cancellable;
    SoupWebsocketConnection *events;
    gboolean events_pending;
    json_t *last_seen; /* the operation as the last event showed it */
    SoupMessage *wait_msg;
    GCancellable *wait_cancellable;
    SendState wait;
};

static gboolean operation_ended(json_t *operation)
{
    json_int_t status = json_integer_value(json_object_get(operation, "status_code"));
    return status == 200 || status >= 400;
}

static void on_event_message(SoupWebsocketConnection *ws, gint type, GBytes *message, gpointer user_data)
{
    FerryOperationWatch *watch = user_data;
    gsize length = 0;
    const char *data = g_bytes_get_data(message, &length);
    g_autoptr(json_t) event = ferry_json_parse(data, length, NULL);
    if (event == NULL || g_strcmp0(ferry_json_get_string(event, "type"), "operation") != 0)
        return;
    json_t *operation = json_object_get(event, "metadata");
    if (g_strcmp0(ferry_json_get_string(operation, "id"), watch->operation_id) != 0)
        return;
    if (watch->last_seen != NULL)
        json_decref(watch->last_seen);
    watch->last_seen = json_incref(operation);
    FerryProgress progress;
    if (watch->progress != NULL && ferry_progress_from_operation(operation, &progress))
        watch->progress(&progress, watch->user_data);
}

static void on_events_connected(GObject *source, GAsyncResult *result, gpointer user_data)
{
    FerryOperationWatch *watch = user_data;
    /* Events are a nicety (progress, the final metadata of a failed operation): a server without them
     * still completes the wait. */
    SoupWebsocketConnection *ws = soup_session_websocket_connect_finish(SOUP_SESSION(source), result, NULL);
    watch->events_pending = FALSE;
    if (ws == NULL)
        return;
    soup_websocket_connection_set_max_incoming_payload_size(ws, WEBSOCKET_MAX_PAYLOAD);
    g_signal_connect(ws, "message", G_CALLBACK(on_event_message), watch);
    watch->events = ws;
}

static void watch_stop_events(FerryOperationWatch *watch)
{
    FerryClient *client = watch->client;
    if (watch->cancellable != NULL)
        g_cancellable_cancel(watch->cancellable);
    while (watch->events_pending)
        g_main_context_iteration(client->context, TRUE);
    if (watch->events != NULL) {
        g_signal_handlers_disconnect_by_data(watch->events, watch);
        if (soup_websocket_connection_get_state(watch->events) == SOUP_WEBSOCKET_STATE_OPEN)
            soup_websocket_connection_close(watch->events, SOUP_WEBSOCKET_CLOSE_NORMAL, NULL);
        g_clear_object(&watch->events);
    }
    g_clear_object(&watch->cancellable);
}

FerryOperationWatch *ferry_client_watch_operation(FerryClient *client, const char *operation,
                                                  FerryProgressFunc progress, gpointer user_data,
                                                  gboolean follow_events)
{
    FerryOperationWatch *watch = g_new0(FerryOperationWatch, 1);
    watch->client = client;
    watch->operation_id = ferry_operation_id(operation);
    watch->progress = progress;
    watch->user_data = user_data;

    g_autoptr(GMainContextPusher) pusher = g_main_context_pusher_new(client->context);
    if (follow_events || progress != NULL) {
        g_autoptr(SoupMessage) events_msg = new_message(client, "GET", "/1.0/events?type=operation", NULL);
        if (events_msg != NULL) {
            watch->cancellable = g_cancellable_new();
            watch->events_pending = TRUE;
            soup_session_websocket_connect_async(client->session, events_msg, NULL, NULL, G_PRIORITY_DEFAULT,
                                                 watch->cancellable, on_events_connected, watch);
            /* Whoever needs the events must not miss the last one: be subscribed before going on. */
            while (follow_events && watch->events_pending)
                g_main_context_iteration(client->context, TRUE);
        }
    }
    g_autofree char *path = ferry_api_path("operations", watch->operation_id, "wait", NULL);
    g_autofree char *wait_path = g_strconcat(path, "?timeout=-1", NULL);
    watch->wait_msg = new_message(client, "GET", wait_path, &watch->wait.error);
    watch->wait_cancellable = g_cancellable_new();
    if (watch->wait_msg != NULL)
        soup_session_send_and_read_async(client->session, watch->wait_msg, G_PRIORITY_DEFAULT,
                                         watch->wait_cancellable, on_send_done, &watch->wait);
    else
        watch->wait.done = TRUE;
    return watch;
}

gboolean ferry_operation_watch_is_done(FerryOperationWatch *watch)
{
    return watch->wait.done;
}

gboolean ferry_operation_watch_finish(FerryOperationWatch *watch, json_t **operation_out, GError **error)
{
    FerryClient *client = watch->client;
    g_autoptr(GMainContextPusher) pusher = g_main_context_pusher_new(client->context);
    while (!watch->wait.done)
        g_main_context_iteration(client->context, TRUE);

    if (watch->wait.error != NULL) {
        if (watch->wait_msg != NULL)
            set_transport_error(client, watch->wait.error, error);
        else
            g_propagate_error(error, g_steal_pointer(&watch->wait.error));
        g_clear_error(&watch->wait.error);
        watch_stop_events(watch);
        return FALSE;
    }
    g_autoptr(GBytes) body = g_steal_pointer(&watch->wait.body);
    g_autoptr(GError) wait_error = NULL;
    g_autoptr(FerryResponse) response = parse_response(client, watch->wait_msg, body, &wait_error);

    if (response == NULL) {
        /* Incus answers the wait of a failed operation with an error envelope, without the operation: its
         * final state (exec's exit status...) is only in the last event, which may trail the answer. */
        gint64 deadline = g_get_monotonic_time() + G_USEC_PER_SEC / 2;
        while (watch->events != NULL && (watch->last_seen == NULL || !operation_ended(watch->last_seen)) &&
               g_get_monotonic_time() < deadline)
            g_main_context_iteration(client->context, FALSE);
        watch_stop_events(watch);
        if (operation_out != NULL && watch->last_seen != NULL && operation_ended(watch->last_seen))
            *operation_out = json_incref(watch->last_seen);
        g_propagate_error(error, g_steal_pointer(&wait_error));
        return FALSE;
    }
    watch_stop_events(watch);

    json_t *op = response->metadata;
    if (operation_out != NULL)
        *operation_out = json_incref(op);
    json_int_t status = json_integer_value(json_object_get(op, "status_code"));
    const char *err = ferry_json_get_string(op, "err");
    if (status == 401) {
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_CANCELLED,
                            err != NULL && *err ? err : "Operation cancelled");
        return FALSE;
    }
    if (status >= 400 || (err != NULL && *err != '\0')) {
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                            err != NULL && *err ? err : "Operation failed");
        return FALSE;
    }
    return TRUE;
}

void ferry_operation_watch_free(FerryOperationWatch *watch)
{
    if (watch == NULL)
        return;
    {
        g_autoptr(GMainContextPusher) pusher = g_main_context_pusher_new(watch->client->context);
        watch_stop_events(watch);
        if (!watch->wait.done) {
            g_cancellable_cancel(watch->wait_cancellable);
            while (!watch->wait.done)
                g_main_context_iteration(watch->client->context, TRUE);
        }
    }
    g_clear_error(&watch->wait.error);
    g_clear_pointer(&watch->wait.body, g_bytes_unref);
    g_clear_object(&watch->wait_msg);
    g_clear_object(&watch->wait_cancellable);
    if (watch->last_seen != NULL)
        json_decref(watch->last_seen);
    g_free(watch->operation_id);
    g_free(watch);
}

gboolean ferry_client_wait_operation_full(FerryClient *client, const char *operation,
                                          FerryProgressFunc progress, gpointer user_data,
                                          json_t **operation_out, GError **error)
{
    g_autoptr(FerryOperationWatch) watch =
        ferry_client_watch_operation(client, operation, progress, user_data, operation_out != NULL);
    return ferry_operation_watch_finish(watch, operation_out, error);
}

json_t *ferry_client_wait_operation(FerryClient *client, const char *operation, FerryProgressFunc progress,
                                    gpointer user_data, GError **error)
{
    g_autoptr(FerryOperationWatch) watch =
        ferry_client_watch_operation(client, operation, progress, user_data, FALSE);
    json_t *op = NULL;
    if (!ferry_operation_watch_finish(watch, &op, error)) {
        if (op != NULL)
            json_decref(op);
        return NULL;
    }
    return op;
}

json_t *ferry_client_run(FerryClient *client, const char *method, const char *path, json_t *body,
                         FerryProgressFunc progress, gpointer user_data, GError **error)
{
    g_autoptr(FerryResponse) response = ferry_client_request(client, method, path, body, NULL, error);
    if (response == NULL)
        return NULL;
    if (g_strcmp0(response->type, "async") != 0)
        return json_incref(response->metadata);
    const char *operation = response->operation;
    if (operation == NULL)
        operation = ferry_json_get_string(response->metadata, "id");
    if (operation == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Server answered with an operation without id");
        return NULL;
    }
    return ferry_client_wait_operation(client, operation, progress, user_data, error);
}

typedef struct {
    FerryProgressFunc progress;
    gpointer user_data;
    gint64 done;
    gint64 total;
    gint64 started;
    gint64 last_report;
} UploadProgress;

static void on_wrote_body_data(SoupMessage *msg, guint chunk_size, gpointer user_data)
{
    UploadProgress *upload = user_data;
    upload->done += chunk_size;
    gint64 now = g_get_monotonic_time();
    /* Reports at most ten times a second, and always the last chunk. */
    if (now - upload->last_report < G_USEC_PER_SEC / 10 && (upload->total < 0 || upload->done < upload->total))
        return;
    upload->last_report = now;
    double elapsed = (double)(now - upload->started) / G_USEC_PER_SEC;
    FerryProgress progress = {"Uploading", NULL, upload->done, upload->total,
                              elapsed > 0.2 ? (gint64)(upload->done / elapsed) : -1};
    upload->progress(&progress, upload->user_data);
}

FerryResponse *ferry_client_upload_file(FerryClient *client, const char *method, const char *path,
                                        const char *file_path, const char *const *headers,
                                        FerryProgressFunc progress, gpointer user_data, GError **error)
{
    g_autoptr(GFile) file = g_file_new_for_path(file_path);
    g_autoptr(GFileInputStream) input = g_file_read(file, NULL, error);
    if (input == NULL)
        return NULL;
    g_autoptr(GFileInfo) info =
        g_file_input_stream_query_info(input, G_FILE_ATTRIBUTE_STANDARD_SIZE, NULL, error);
    if (info == NULL)
        return NULL;
    return ferry_client_upload_stream(client, method, path, G_INPUT_STREAM(input), g_file_info_get_size(info),
                                      headers, progress, user_data, error);
}

#define UPLOAD_CHUNK (1024 * 1024)

/* Status line and headers of a response: the status, and Content-Length (-1 when absent). */
static gboolean read_response_head(GDataInputStream *in, guint *status, char **reason, gint64 *length,
                                   GError **error)
{
    gsize n = 0;
    g_autofree char *line = g_data_input_stream_read_line(in, &n, NULL, error);
    if (line == NULL || !g_str_has_prefix(line, "HTTP/1.") || strlen(line) < 12) {
        if (error != NULL && *error == NULL)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE, "The server closed the connection");
        return FALSE;
    }
    *status = (guint)g_ascii_strtoull(line + 9, NULL, 10);
    *reason = g_strdup(line + MIN(strlen(line), 13));
    *length = -1;
    for (;;) {
        g_autofree char *header = g_data_input_stream_read_line(in, &n, NULL, error);
        if (header == NULL)
            return FALSE;
        if (*header == '\0')
            return TRUE;
        if (g_ascii_strncasecmp(header, "Content-Length:", 15) == 0)
            *length = g_ascii_strtoll(header + 15, NULL, 10);
    }
}

/* An upload over the unix socket without libsoup, whose request bodies go out 8 KiB per write: the body in 1 MiB
 * writes (a quarter of the CPU for a big backup), with the same request and the same answer. */
static FerryResponse *upload_unix(FerryClient *client, const char *method, const char *path, GInputStream *input,
                                  gint64 size, const char *const *headers, FerryProgressFunc progress,
                                  gpointer user_data, GError **error)
{
    g_autofree char *url = build_url(client, path);
    const char *target = strstr(url, "://");
    target = target != NULL ? strchr(target + 3, '/') : NULL;
    g_autoptr(GSocketAddress) address = g_unix_socket_address_new(client->socket_path);
    g_autoptr(GSocketClient) socket_client = g_socket_client_new();
    g_autoptr(GError) connect_error = NULL;
    g_autoptr(GSocketConnection) connection =
        g_socket_client_connect(socket_client, G_SOCKET_CONNECTABLE(address), NULL, &connect_error);
    if (connection == NULL) {
        set_transport_error(client, connect_error, error);
        return NULL;
    }
    gboolean expect_continue = FALSE;
    g_autoptr(GString) head = g_string_new(NULL);
    g_string_append_printf(head, "%s %s HTTP/1.1\r\nHost: unix.socket\r\nUser-Agent: ferry %s\r\n"
                                 "Content-Type: application/octet-stream\r\n",
                           method, target != NULL ? target : path, FERRY_VERSION);
    if (size >= 0)
        g_string_append_printf(head, "Content-Length: %" G_GINT64_FORMAT "\r\n", size);
    else
        g_string_append(head, "Transfer-Encoding: chunked\r\n");
    for (gsize i = 0; headers != NULL && headers[i] != NULL && headers[i + 1] != NULL; i += 2) {
        if (strchr(headers[i + 1], '\n') != NULL || strchr(headers[i + 1], '\r') != NULL)
            continue;
        if (g_ascii_strcasecmp(headers[i], "Expect") == 0)
            expect_continue = TRUE;
        g_string_append_printf(head, "%s: %s\r\n", headers[i], headers[i + 1]);
    }
    g_string_append(head, "Connection: close\r\n\r\n");
    GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(connection));
    g_autoptr(GDataInputStream) in = g_data_input_stream_new(g_io_stream_get_input_stream(G_IO_STREAM(connection)));
    g_data_input_stream_set_newline_type(in, G_DATA_STREAM_NEWLINE_TYPE_CR_LF);
    g_autoptr(GError) io_error = NULL;
    g_autoptr(GByteArray) body = g_byte_array_new();
    g_autoptr(GBytes) bytes = NULL;
    guint status = 0;
    g_autofree char *reason = NULL;
    gint64 length = -1;
    if (!g_output_stream_write_all(out, head->str, head->len, NULL, NULL, &io_error))
        goto failed;
    gboolean final = FALSE;
    if (expect_continue) {
        if (!read_response_head(in, &status, &reason, &length, &io_error))
            goto failed;
        final = status != 100; /* refused on its headers: no body */
        if (!final)
            g_clear_pointer(&reason, g_free);
    }
    if (!final) {
        g_autofree guint8 *buffer = g_malloc(UPLOAD_CHUNK);
        gint64 done = 0, started = g_get_monotonic_time(), last_report = 0;
        for (;;) {
            gssize n = g_input_stream_read(input, buffer, UPLOAD_CHUNK, NULL, error);
            if (n < 0)
                return NULL;
            if (size < 0) {
                char chunk_head[32];
                int chunk_length = g_snprintf(chunk_head, sizeof chunk_head, "%" G_GSSIZE_MODIFIER "x\r\n", n);
                if (!g_output_stream_write_all(out, chunk_head, chunk_length, NULL, NULL, &io_error) ||
                    (n > 0 && !g_output_stream_write_all(out, buffer, n, NULL, NULL, &io_error)) ||
                    !g_output_stream_write_all(out, "\r\n", 2, NULL, NULL, &io_error))
                    goto failed;
            } else if (n > 0 && !g_output_stream_write_all(out, buffer, n, NULL, NULL, &io_error)) {
                goto failed;
            }
            if (n == 0)
                break;
            done += n;
            gint64 now = g_get_monotonic_time();
            if (progress != NULL && (now - last_report >= G_USEC_PER_SEC / 10 || done == size)) {
                last_report = now;
                double elapsed = (double)(now - started) / G_USEC_PER_SEC;
                FerryProgress report = {"Uploading", NULL, done, size, elapsed > 0.2 ? (gint64)(done / elapsed) : -1};
                progress(&report, user_data);
            }
        }
        if (!read_response_head(in, &status, &reason, &length, &io_error))
            goto failed;
    }
    guint8 block[16384];
    for (;;) {
        gssize n = g_input_stream_read(G_INPUT_STREAM(in), block, sizeof block, NULL, &io_error);
        if (n < 0)
            goto failed;
        if (n == 0 || body->len > 16 * 1024 * 1024)
            break;
        g_byte_array_append(body, block, n);
        if (length >= 0 && (gint64)body->len >= length)
            break;
    }
    bytes = g_byte_array_free_to_bytes(g_steal_pointer(&body));
    return parse_envelope(client, status, reason != NULL ? reason : "", NULL, bytes, error);

failed:
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE, "Upload to %s failed: %s", client->address,
                io_error != NULL ? io_error->message : "connection closed");
    return NULL;
}

FerryResponse *ferry_client_upload_stream(FerryClient *client, const char *method, const char *path,
                                          GInputStream *input, gint64 size, const char *const *headers,
                                          FerryProgressFunc progress, gpointer user_data, GError **error)
{
    if (client->socket_path != NULL)
        return upload_unix(client, method, path, input, size, headers, progress, user_data, error);
    g_autoptr(SoupMessage) msg = new_message(client, method, path, error);
    if (msg == NULL)
        return NULL;
    soup_message_set_request_body(msg, "application/octet-stream", input, size);
    SoupMessageHeaders *request_headers = soup_message_get_request_headers(msg);
    for (gsize i = 0; headers != NULL && headers[i] != NULL && headers[i + 1] != NULL; i += 2)
        soup_message_headers_replace(request_headers, headers[i], headers[i + 1]);

    UploadProgress upload = {progress, user_data, 0, size, g_get_monotonic_time(), 0};
    if (progress != NULL)
        g_signal_connect(msg, "wrote-body-data", G_CALLBACK(on_wrote_body_data), &upload);

    g_autoptr(GBytes) reply = send_message(client, msg, error);
    if (progress != NULL)
        g_signal_handlers_disconnect_by_data(msg, &upload);
    if (reply == NULL)
        return NULL;
    return parse_response(client, msg, reply, error);
}

typedef struct {
    gboolean done;
    GInputStream *stream;
    gssize count;
    GError *error;
} StreamState;

static void on_stream_sent(GObject *source, GAsyncResult *result, gpointer user_data)
{
    StreamState *state = user_data;
    state->stream = soup_session_send_finish(SOUP_SESSION(source), result, &state->error);
    state->done = TRUE;
}

static void on_stream_read(GObject *source, GAsyncResult *result, gpointer user_data)
{
    StreamState *state = user_data;
    state->count = g_input_stream_read_finish(G_INPUT_STREAM(source), result, &state->error);
    state->done = TRUE;
}

/* One read of up to size bytes, running the client's context meanwhile: -1 with error, 0 at the end. */
static gssize read_some(FerryClient *client, GInputStream *stream, void *buffer, gsize size, GError **error)
{
    StreamState state = {0};
    g_input_stream_read_async(stream, buffer, size, G_PRIORITY_DEFAULT, NULL, on_stream_read, &state);
    while (!state.done)
        g_main_context_iteration(client->context, TRUE);
    if (state.error != NULL) {
        g_propagate_error(error, state.error);
        return -1;
    }
    return state.count;
}

#define DOWNLOAD_CHUNK (256 * 1024)

gboolean ferry_client_download(FerryClient *client, const char *path, GOutputStream *out,
                               FerryDownloadStartFunc started, FerryProgressFunc progress, gpointer user_data,
                               GError **error)
{
    g_autoptr(SoupMessage) msg = new_message(client, "GET", path, error);
    if (msg == NULL)
        return FALSE;
    g_autoptr(GMainContextPusher) pusher = g_main_context_pusher_new(client->context);
    StreamState state = {0};
    soup_session_send_async(client->session, msg, G_PRIORITY_DEFAULT, NULL, on_stream_sent, &state);
    while (!state.done)
        g_main_context_iteration(client->context, TRUE);
    if (state.error != NULL) {
        set_transport_error(client, state.error, error);
        g_error_free(state.error);
        return FALSE;
    }
    g_autoptr(GInputStream) stream = state.stream;
    g_autofree guint8 *buffer = g_malloc(DOWNLOAD_CHUNK);
    if (!SOUP_STATUS_IS_SUCCESSFUL(soup_message_get_status(msg))) {
        g_autoptr(GByteArray) body = g_byte_array_new();
        gssize n;
        while ((n = read_some(client, stream, buffer, DOWNLOAD_CHUNK, NULL)) > 0 && body->len < 1024 * 1024)
            g_byte_array_append(body, buffer, n);
        g_autoptr(GBytes) bytes = g_byte_array_free_to_bytes(g_steal_pointer(&body));
        g_autoptr(FerryResponse) response = parse_response(client, msg, bytes, error);
        if (response != NULL) {
            g_set_error(error, FERRY_ERROR, (int)soup_message_get_status(msg), "Download of %s failed: %u %s", path,
                        soup_message_get_status(msg), soup_message_get_reason_phrase(msg));
        }
        return FALSE;
    }
    if (started != NULL)
        started(soup_message_headers_get_one(soup_message_get_response_headers(msg), "X-Ferry-Operation"),
                user_data);
    gint64 received = 0, started_at = g_get_monotonic_time(), last_report = 0;
    for (;;) {
        g_autoptr(GError) read_error = NULL;
        gssize n = read_some(client, stream, buffer, DOWNLOAD_CHUNK, &read_error);
        if (n < 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE, "Download from %s ended early: %s",
                        client->address, read_error->message);
            return FALSE;
        }
        if (n == 0)
            break;
        if (!g_output_stream_write_all(out, buffer, n, NULL, NULL, error))
            return FALSE;
        received += n;
        gint64 now = g_get_monotonic_time();
        if (progress != NULL && now - last_report >= G_USEC_PER_SEC / 10) {
            last_report = now;
            double elapsed = (double)(now - started_at) / G_USEC_PER_SEC;
            FerryProgress report = {"Receiving", NULL, received, -1, elapsed > 0.2 ? (gint64)(received / elapsed) : -1};
            progress(&report, user_data);
        }
    }
    return TRUE;
}

typedef struct {
    gboolean done;
    SoupWebsocketConnection *ws;
    GError *error;
} WebsocketState;

static void on_websocket_connected(GObject *source, GAsyncResult *result, gpointer user_data)
{
    WebsocketState *state = user_data;
    state->ws = soup_session_websocket_connect_finish(SOUP_SESSION(source), result, &state->error);
    state->done = TRUE;
}

SoupWebsocketConnection *ferry_client_websocket(FerryClient *client, const char *path, GError **error)
{
    g_autoptr(SoupMessage) msg = new_message(client, "GET", path, error);
    if (msg == NULL)
        return NULL;

    WebsocketState state = {0};
    g_autoptr(GMainContextPusher) pusher = g_main_context_pusher_new(client->context);
    soup_session_websocket_connect_async(client->session, msg, NULL, NULL, G_PRIORITY_DEFAULT, NULL,
                                         on_websocket_connected, &state);
    while (!state.done)
        g_main_context_iteration(client->context, TRUE);
    if (state.error != NULL) {
        /* The upgrade was refused: an Incus error response (bad secret, unknown operation). */
        if (state.error->domain == SOUP_WEBSOCKET_ERROR && soup_message_get_status(msg) >= 400) {
            g_set_error(error, FERRY_ERROR, (int)soup_message_get_status(msg),
                        "Failed to open websocket %s: %s", path, soup_message_get_reason_phrase(msg));
        } else {
            set_transport_error(client, state.error, error);
        }
        g_error_free(state.error);
        return NULL;
    }
    soup_websocket_connection_set_max_incoming_payload_size(state.ws, WEBSOCKET_MAX_PAYLOAD);
    return state.ws;
}

SoupWebsocketConnection *ferry_client_operation_websocket(FerryClient *client, const char *operation,
                                                          const char *secret, GError **error)
{
    g_autofree char *id = ferry_operation_id(operation);
    g_autofree char *base = ferry_api_path("operations", id, "websocket", NULL);
    g_autofree char *escaped = g_uri_escape_string(secret, NULL, TRUE);
    g_autofree char *path = g_strdup_printf("%s?secret=%s", base, escaped);
    return ferry_client_websocket(client, path, error);
}
