/* The HTTP client against an in-process SoupServer (its own thread): envelopes, errors, operations,
 * uploads, websockets, unix socket and HTTPS with a pinned certificate and a client certificate. */
#include "client.h"
#include "json.h"
#include "tls_cert.h"

#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#define FERRY_ERROR_QUARK g_quark_from_static_string("ferry-error-quark")

typedef struct {
    GThread *thread;
    GMainContext *context;
    GMainLoop *loop;
    SoupServer *server;
    GMutex lock;
    GCond cond;
    gboolean ready;
    /* configuration */
    gboolean https;
    GTlsCertificate *certificate;
    char *socket_path;
    /* results */
    guint port;
    gboolean saw_client_cert;
    char *uploaded;
    char *upload_filename;
} TestServer;

static void reply_json(SoupServerMessage *msg, guint status, const char *json)
{
    soup_server_message_set_status(msg, status, NULL);
    soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_COPY, json, strlen(json));
}

static void handler(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                    gpointer user_data)
{
    TestServer *ts = user_data;
    const char *method = soup_server_message_get_method(msg);
    if (soup_server_message_get_tls_peer_certificate(msg) != NULL)
        ts->saw_client_cert = TRUE;

    if (strcmp(path, "/1.0") == 0) {
        soup_message_headers_replace(soup_server_message_get_response_headers(msg), "ETag", "\"abc\"");
        g_autofree char *body = g_strdup_printf(
            "{\"type\":\"sync\",\"status\":\"Success\",\"status_code\":200,\"operation\":\"\",\"error_code\":"
            "0,"
            "\"error\":\"\",\"metadata\":{\"auth\":\"%s\",\"project\":\"%s\"}}",
            soup_server_message_get_tls_peer_certificate(msg) != NULL ? "trusted" : "untrusted",
            query != NULL && g_hash_table_lookup(query, "project")
                ? (char *)g_hash_table_lookup(query, "project")
                : "");
        reply_json(msg, 200, body);
    } else if (strcmp(path, "/1.0/instances/missing") == 0) {
        reply_json(msg, 404,
                   "{\"type\":\"error\",\"status\":\"\",\"status_code\":0,\"operation\":\"\","
                   "\"error_code\":404,\"error\":\"Instance not found\",\"metadata\":null}");
    } else if (strcmp(path, "/1.0/garbage") == 0) {
        soup_server_message_set_status(msg, 502, NULL);
        soup_server_message_set_response(msg, "text/plain", SOUP_MEMORY_STATIC, "bad gateway", 11);
    } else if (strcmp(path, "/1.0/instances") == 0 && strcmp(method, "POST") == 0) {
        SoupMessageBody *request = soup_server_message_get_request_body(msg);
        g_autoptr(json_t) body = ferry_json_parse(request->data, request->length, NULL);
        const char *name = ferry_json_get_string(body, "name");
        const char *op = g_strcmp0(name, "fails") == 0    ? "op2"
                         : g_strcmp0(name, "broken") == 0 ? "op3"
                                                          : "op1";
        g_autofree char *reply =
            g_strdup_printf("{\"type\":\"async\",\"status\":\"Operation created\",\"status_code\":100,"
                            "\"operation\":\"/1.0/operations/"
                            "%s\",\"error_code\":0,\"error\":\"\",\"metadata\":{\"id\":\"%s\"}}",
                            op, op);
        reply_json(msg, 202, reply);
    } else if (strcmp(path, "/1.0/operations/op1/wait") == 0) {
        g_assert_cmpstr(g_hash_table_lookup(query, "timeout"), ==, "-1");
        reply_json(msg, 200,
                   "{\"type\":\"sync\",\"status\":\"Success\",\"status_code\":200,\"metadata\":"
                   "{\"id\":\"op1\",\"status\":\"Success\",\"status_code\":200,\"err\":\"\","
                   "\"metadata\":{\"return\":0}}}");
    } else if (strcmp(path, "/1.0/operations/op2/wait") == 0) {
        reply_json(msg, 400, "{\"type\":\"error\",\"error_code\":400,\"error\":\"Command not found\"}");
    } else if (strcmp(path, "/1.0/operations/op3/wait") == 0) {
        reply_json(msg, 200,
                   "{\"type\":\"sync\",\"status\":\"Success\",\"status_code\":200,\"metadata\":"
                   "{\"id\":\"op3\",\"status\":\"Failure\",\"status_code\":400,\"err\":\"Boom\"}}");
    } else if (strcmp(path, "/1.0/images") == 0 && strcmp(method, "POST") == 0) {
        SoupMessageBody *request = soup_server_message_get_request_body(msg);
        SoupMessageHeaders *headers = soup_server_message_get_request_headers(msg);
        g_free(ts->uploaded);
        ts->uploaded = g_strndup(request->data, request->length);
        g_free(ts->upload_filename);
        ts->upload_filename = g_strdup(soup_message_headers_get_one(headers, "X-Incus-filename"));
        g_assert_cmpstr(soup_message_headers_get_content_type(headers, NULL), ==, "application/octet-stream");
        reply_json(msg, 200,
                   "{\"type\":\"sync\",\"status_code\":200,\"metadata\":{\"fingerprint\":\"f00d\"}}");
    } else {
        reply_json(msg, 404, "{\"type\":\"error\",\"error_code\":404,\"error\":\"not found\"}");
    }
}

static void on_ws_message(SoupWebsocketConnection *ws, gint type, GBytes *message, gpointer user_data)
{
    gsize length = 0;
    const char *data = g_bytes_get_data(message, &length);
    g_autofree char *echo = g_strdup_printf("echo:%.*s", (int)length, data);
    soup_websocket_connection_send_text(ws, echo);
}

static void on_ws(SoupServer *server, SoupServerMessage *msg, const char *path, SoupWebsocketConnection *ws,
                  gpointer user_data)
{
    g_object_ref(ws);
    g_signal_connect(ws, "message", G_CALLBACK(on_ws_message), NULL);
    g_signal_connect(ws, "closed", G_CALLBACK(g_object_unref), NULL);
}

static gboolean accept_any(SoupServerMessage *msg, GTlsCertificate *cert, GTlsCertificateFlags errors,
                           gpointer user_data)
{
    return TRUE;
}

static void on_request_started(SoupServer *server, SoupServerMessage *msg, gpointer user_data)
{
    g_signal_connect(msg, "accept-certificate", G_CALLBACK(accept_any), NULL);
}

static gpointer server_thread(gpointer user_data)
{
    TestServer *ts = user_data;
    g_main_context_push_thread_default(ts->context);
    g_autoptr(GError) error = NULL;
    if (ts->https)
        ts->server = soup_server_new("tls-certificate", ts->certificate, "tls-auth-mode",
                                     G_TLS_AUTHENTICATION_REQUESTED, NULL);
    else
        ts->server = soup_server_new(NULL, NULL);
    g_signal_connect(ts->server, "request-started", G_CALLBACK(on_request_started), NULL);
    soup_server_add_websocket_handler(ts->server, "/1.0/echo", NULL, NULL, on_ws, ts, NULL);
    soup_server_add_handler(ts->server, NULL, handler, ts, NULL);
    if (ts->https) {
        g_assert_true(soup_server_listen_local(
            ts->server, 0, SOUP_SERVER_LISTEN_HTTPS | SOUP_SERVER_LISTEN_IPV4_ONLY, &error));
        GSList *uris = soup_server_get_uris(ts->server);
        ts->port = g_uri_get_port(uris->data);
        g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
    } else {
        g_autoptr(GSocket) socket = g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, 0, &error);
        g_autoptr(GSocketAddress) address = g_unix_socket_address_new(ts->socket_path);
        g_assert_true(g_socket_bind(socket, address, TRUE, &error));
        g_assert_true(g_socket_listen(socket, &error));
        g_assert_true(soup_server_listen_socket(ts->server, socket, 0, &error));
    }
    g_assert_no_error(error);
    g_mutex_lock(&ts->lock);
    ts->ready = TRUE;
    g_cond_signal(&ts->cond);
    g_mutex_unlock(&ts->lock);
    g_main_loop_run(ts->loop);
    soup_server_disconnect(ts->server);
    g_clear_object(&ts->server);
    g_main_context_pop_thread_default(ts->context);
    return NULL;
}

static TestServer *server_start(gboolean https, GTlsCertificate *certificate)
{
    TestServer *ts = g_new0(TestServer, 1);
    ts->https = https;
    ts->certificate = certificate != NULL ? g_object_ref(certificate) : NULL;
    if (!https) {
        g_autofree char *dir = g_dir_make_tmp("ferry-client-XXXXXX", NULL);
        ts->socket_path = g_build_filename(dir, "unix.socket", NULL);
    }
    ts->context = g_main_context_new();
    ts->loop = g_main_loop_new(ts->context, FALSE);
    g_mutex_init(&ts->lock);
    g_cond_init(&ts->cond);
    ts->thread = g_thread_new("server", server_thread, ts);
    g_mutex_lock(&ts->lock);
    while (!ts->ready)
        g_cond_wait(&ts->cond, &ts->lock);
    g_mutex_unlock(&ts->lock);
    return ts;
}

static gboolean quit_loop(gpointer user_data)
{
    g_main_loop_quit(user_data);
    return G_SOURCE_REMOVE;
}

static void server_stop(TestServer *ts)
{
    g_main_context_invoke(ts->context, quit_loop, ts->loop);
    g_thread_join(ts->thread);
    g_main_loop_unref(ts->loop);
    g_main_context_unref(ts->context);
    if (ts->socket_path != NULL) {
        g_unlink(ts->socket_path);
        g_autofree char *dir = g_path_get_dirname(ts->socket_path);
        g_rmdir(dir);
    }
    g_clear_object(&ts->certificate);
    g_free(ts->socket_path);
    g_free(ts->uploaded);
    g_free(ts->upload_filename);
    g_free(ts);
}

static void on_client_ws_message(SoupWebsocketConnection *ws, gint type, GBytes *message, gpointer user_data)
{
    gsize length = 0;
    const char *data = g_bytes_get_data(message, &length);
    *(char **)user_data = g_strndup(data, length);
}

static void test_api_path(void)
{
    g_autofree char *path = ferry_api_path("instances", "c1", "snapshots", "a b/c", NULL);
    g_assert_cmpstr(path, ==, "/1.0/instances/c1/snapshots/a%20b%2Fc");
    g_autofree char *id = ferry_operation_id("/1.0/operations/1234-abcd");
    g_assert_cmpstr(id, ==, "1234-abcd");
    g_autofree char *plain = ferry_operation_id("xyz");
    g_assert_cmpstr(plain, ==, "xyz");
}

static void test_unix_requests(void)
{
    TestServer *ts = server_start(FALSE, NULL);
    g_autoptr(FerryClient) client = ferry_client_new_unix(ts->socket_path);
    g_autoptr(GError) error = NULL;

    g_autofree char *etag = NULL;
    g_autoptr(json_t) server = ferry_client_get(client, "/1.0", &etag, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(ferry_json_get_string(server, "auth"), ==, "untrusted");
    g_assert_cmpstr(etag, ==, "\"abc\"");

    ferry_client_set_project(client, "web");
    g_autoptr(json_t) with_project = ferry_client_get(client, "/1.0", NULL, &error);
    g_assert_cmpstr(ferry_json_get_string(with_project, "project"), ==, "web");
    ferry_client_set_project(client, NULL);

    g_autoptr(json_t) missing = ferry_client_get(client, "/1.0/instances/missing", NULL, &error);
    g_assert_null(missing);
    g_assert_error(error, FERRY_ERROR_QUARK, 404);
    g_assert_cmpstr(error->message, ==, "Instance not found");
    g_clear_error(&error);

    g_autoptr(json_t) garbage = ferry_client_get(client, "/1.0/garbage", NULL, &error);
    g_assert_null(garbage);
    g_assert_error(error, FERRY_ERROR_QUARK, 502);
    g_clear_error(&error);

    g_autoptr(json_t) body = json_pack("{s:s}", "name", "c1");
    g_autoptr(json_t) op = ferry_client_run(client, "POST", "/1.0/instances", body, NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(ferry_json_get_string(op, "id"), ==, "op1");

    /* Incus answers the wait of a failed operation with an error envelope... */
    json_object_set_new(body, "name", json_string("fails"));
    g_autoptr(json_t) failed = ferry_client_run(client, "POST", "/1.0/instances", body, NULL, NULL, &error);
    g_assert_null(failed);
    g_assert_error(error, FERRY_ERROR_QUARK, 400);
    g_assert_cmpstr(error->message, ==, "Command not found");
    g_clear_error(&error);

    /* ...or with the operation in the Failure state. */
    json_object_set_new(body, "name", json_string("broken"));
    g_autoptr(json_t) final = NULL;
    g_autoptr(FerryResponse) response =
        ferry_client_request(client, "POST", "/1.0/instances", body, NULL, &error);
    g_assert_cmpstr(response->type, ==, "async");
    g_assert_cmpstr(response->operation, ==, "/1.0/operations/op3");
    g_assert_false(ferry_client_wait_operation_full(client, response->operation, NULL, NULL, &final, &error));
    g_assert_cmpstr(error->message, ==, "Boom");
    g_assert_cmpstr(ferry_json_get_string(final, "status"), ==, "Failure");
    g_clear_error(&error);

    g_autofree char *file = NULL;
    int fd = g_file_open_tmp("ferry-upload-XXXXXX", &file, &error);
    g_assert_cmpint(fd, >=, 0);
    g_assert_true(g_file_set_contents(file, "image bytes", -1, &error));
    const char *headers[] = {"X-Incus-filename", "image.tar.xz", NULL};
    g_autoptr(FerryResponse) uploaded =
        ferry_client_upload_file(client, "POST", "/1.0/images", file, headers, NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(ferry_json_get_string(uploaded->metadata, "fingerprint"), ==, "f00d");
    g_assert_cmpstr(ts->uploaded, ==, "image bytes");
    g_assert_cmpstr(ts->upload_filename, ==, "image.tar.xz");
    close(fd);
    g_unlink(file);

    g_autoptr(SoupWebsocketConnection) ws = ferry_client_websocket(client, "/1.0/echo", &error);
    g_assert_no_error(error);
    g_autofree char *received = NULL;
    {
        g_autoptr(GMainContextPusher) pusher = g_main_context_pusher_new(ferry_client_get_context(client));
        g_signal_connect(ws, "message", G_CALLBACK(on_client_ws_message), &received);
        soup_websocket_connection_send_text(ws, "ping");
        while (received == NULL)
            g_main_context_iteration(ferry_client_get_context(client), TRUE);
        soup_websocket_connection_close(ws, SOUP_WEBSOCKET_CLOSE_NORMAL, NULL);
    }
    g_assert_cmpstr(received, ==, "echo:ping");

    server_stop(ts);
}

static void test_unavailable(void)
{
    g_autoptr(FerryClient) client = ferry_client_new_unix("/nonexistent/ferry/unix.socket");
    g_autoptr(GError) error = NULL;
    g_autoptr(json_t) server = ferry_client_get(client, "/1.0", NULL, &error);
    g_assert_null(server);
    g_assert_error(error, FERRY_ERROR_QUARK, 503);
    g_assert_nonnull(strstr(error->message, "unix:/nonexistent/ferry/unix.socket"));
}

static GTlsCertificate *make_cert(FerryCertKind kind)
{
    g_autofree char *cert = NULL, *key = NULL;
    g_assert_true(ferry_tls_cert_generate(kind, &cert, &key, NULL));
    g_autofree char *both = g_strconcat(cert, key, NULL);
    GTlsCertificate *tls = g_tls_certificate_new_from_pem(both, -1, NULL);
    g_assert_nonnull(tls);
    return tls;
}

static void test_https_pinning(void)
{
    g_autoptr(GTlsCertificate) server_cert = make_cert(FERRY_CERT_SERVER);
    g_autoptr(GTlsCertificate) client_cert = make_cert(FERRY_CERT_CLIENT);
    g_autoptr(GTlsCertificate) other_cert = make_cert(FERRY_CERT_SERVER);
    TestServer *ts = server_start(TRUE, server_cert);
    g_autofree char *url = g_strdup_printf("https://127.0.0.1:%u", ts->port);
    g_autoptr(GError) error = NULL;

    /* Pinned to the right certificate, with a client certificate: trusted. */
    g_autoptr(FerryClient) pinned = ferry_client_new_https(url, client_cert, server_cert, NULL, &error);
    g_assert_no_error(error);
    g_autoptr(json_t) server = ferry_client_get(pinned, "/1.0", NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(ferry_json_get_string(server, "auth"), ==, "trusted");
    g_assert_true(ts->saw_client_cert);

    /* By fingerprint, as a trust token pins it. */
    g_autofree char *fingerprint = ferry_tls_cert_fingerprint(server_cert);
    g_autoptr(FerryClient) by_fingerprint = ferry_client_new_https(url, NULL, NULL, fingerprint, &error);
    g_autoptr(json_t) untrusted = ferry_client_get(by_fingerprint, "/1.0", NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(ferry_json_get_string(untrusted, "auth"), ==, "untrusted");

    /* Another certificate is refused, and the message says which. */
    g_autoptr(FerryClient) wrong = ferry_client_new_https(url, client_cert, other_cert, NULL, &error);
    g_autoptr(json_t) refused = ferry_client_get(wrong, "/1.0", NULL, &error);
    g_assert_null(refused);
    g_assert_error(error, FERRY_ERROR_QUARK, 403);
    g_assert_nonnull(strstr(error->message, fingerprint));
    g_clear_error(&error);

    /* Unpinned: accepted and recorded, for the user to confirm. */
    g_autoptr(FerryClient) probe = ferry_client_new_https(url, client_cert, NULL, NULL, &error);
    g_autoptr(json_t) probed = ferry_client_get(probe, "/1.0", NULL, &error);
    g_assert_no_error(error);
    g_autofree char *seen = ferry_tls_cert_fingerprint(ferry_client_get_peer_certificate(probe));
    g_assert_cmpstr(seen, ==, fingerprint);

    g_autoptr(FerryClient) bad_url = ferry_client_new_https("http://x", NULL, NULL, NULL, &error);
    g_assert_null(bad_url);
    g_assert_error(error, FERRY_ERROR_QUARK, 400);

    server_stop(ts);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/client/api-path", test_api_path);
    g_test_add_func("/client/unix", test_unix_requests);
    g_test_add_func("/client/unavailable", test_unavailable);
    g_test_add_func("/client/https-pinning", test_https_pinning);
    return g_test_run();
}
