/* ferry copy and ferry move: instances and snapshots within a server and between servers.
 *
 * On one server a copy is POST /1.0/instances with source type "copy", and a move is a rename (POST
 * /1.0/instances/<name> {"name"}, or .../snapshots/<snapshot>); a move to another pool or project is
 * Incus's server-side move (POST /1.0/instances/<name> {"migration":true,"pool","project"}), or a copy
 * and a delete where the server has no such move.
 *
 * Between servers it is Incus's migration with the request bodies of Incus's client (CopyInstance in
 * client/incus_instances.go): the CLI asks the source for a migration operation and the target for an
 * instance created from migration, hands each the other's operation URL, secrets and server certificate,
 * and follows both operations until the target reports the instance complete.
 *   pull (default): the source listens (a websocket operation whose metadata is the secrets), the target
 *                   dials it, at each address the source has until one answers;
 *   push:           the target listens, the source dials it;
 *   relay:          both listen; the CLI dials both and copies every message across, keeping its type.
 * A move is that copy followed, once the target has reported success, by the deletion of the source. */
#include "cli.h"

#include "error.h"
#include "tls_cert.h"
#include "websocket.h"

#include <gio/gunixsocketaddress.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

/* How long the source's operation may still run once the target's has succeeded (Incus's source ends as
 * soon as the sink's final control message arrives: this is only a bound). */
#define SOURCE_GRACE_SECONDS 30
/* How long to let the other side's operation end after one side failed, for the better error message. */
#define FAILURE_GRACE_MS 3000
/* How long a cancelled operation may take to end. */
#define CANCEL_WAIT_SECONDS 5
/* A clean stop of the source before a stateless move may take this long before the stop is forced. */
#define STOP_TIMEOUT_SECONDS 30

typedef struct {
    gboolean move;
    GPtrArray *config;   /* -c key=value */
    GPtrArray *devices;  /* -d device,key=value */
    GPtrArray *profiles; /* -p */
    char *mode;
    char *storage;
    char *target;
    char *target_project;
    gboolean instance_only;
    gboolean refresh;
    gboolean refresh_exclude_older;
    gboolean stateless;
    gboolean allow_inconsistent;
    gboolean no_profiles;
    gboolean ephemeral;
} Flags;

static void flags_clear(Flags *flags)
{
    g_clear_pointer(&flags->config, g_ptr_array_unref);
    g_clear_pointer(&flags->devices, g_ptr_array_unref);
    g_clear_pointer(&flags->profiles, g_ptr_array_unref);
    g_clear_pointer(&flags->mode, g_free);
    g_clear_pointer(&flags->storage, g_free);
    g_clear_pointer(&flags->target, g_free);
    g_clear_pointer(&flags->target_project, g_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Flags, flags_clear)

/* One end of a transfer: a remote, an instance (or snapshot) name there, and a client for it. */
typedef struct {
    char *remote;
    char *instance;
    char *snapshot; /* NULL: the instance itself */
    FerryClient *client;
    gboolean context_held;
    json_t *server; /* GET /1.0, once fetched */
} Endpoint;

/* This thread owns the client's main context for as long as the endpoint lives. Two servers are followed
 * at once by iterating both contexts in turn (iterate_contexts); a context nobody owns for a moment can be
 * taken by GIO's TLS handshake thread (GTlsInteraction runs the client-certificate request by iterating the
 * context itself when it is free), which then waits for a callback that is only ever dispatched here:
 * owned all along, the request comes to this thread instead. */
static void endpoint_hold_context(Endpoint *end)
{
    end->context_held = g_main_context_acquire(ferry_client_get_context(end->client));
}

static void endpoint_clear(Endpoint *end)
{
    g_clear_pointer(&end->remote, g_free);
    g_clear_pointer(&end->instance, g_free);
    g_clear_pointer(&end->snapshot, g_free);
    if (end->client != NULL && end->context_held)
        g_main_context_release(ferry_client_get_context(end->client));
    end->context_held = FALSE;
    g_clear_pointer(&end->client, ferry_client_free);
    g_clear_pointer(&end->server, json_decref);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Endpoint, endpoint_clear)

static json_t *endpoint_server(Endpoint *end, GError **error)
{
    if (end->server == NULL)
        end->server = ferry_client_get(end->client, "/1.0", NULL, error);
    return end->server;
}

static const char *endpoint_project(Endpoint *end)
{
    const char *project = ferry_client_get_project(end->client);
    return project != NULL && *project != '\0' ? project : "default";
}

/* --- the new instance's definition ---------------------------------------------------------------------- */

/* Incus's InstanceIncludeWhenCopying(key, remoteCopy=true), which its client uses for every copy: the
 * volatile keys a copy keeps. */
static gboolean include_when_copying(const char *key)
{
    return !g_str_has_prefix(key, "volatile.") || strcmp(key, "volatile.base_image") == 0 ||
           strcmp(key, "volatile.apply_nvram") == 0;
}

static gboolean parse_config_overrides(GPtrArray *pairs, json_t *config, GError **error)
{
    for (guint i = 0; pairs != NULL && i < pairs->len; i++) {
        const char *pair = g_ptr_array_index(pairs, i);
        const char *equals = strchr(pair, '=');
        if (equals == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Bad key=value pair: \"%s\"", pair);
            return FALSE;
        }
        g_autofree char *key = g_strndup(pair, equals - pair);
        json_object_set_new(config, key, json_string(equals + 1));
    }
    return TRUE;
}

/* -d <device>,<key>=<value> (one key per flag, the value may hold commas), as Incus parses it: a device of
 * the instance gets the key; a device it has from its profiles is copied into it first; any other name
 * becomes a new device with just the keys given. */
static gboolean apply_device_overrides(GPtrArray *overrides, json_t *devices, json_t *expanded,
                                       GError **error)
{
    for (guint i = 0; overrides != NULL && i < overrides->len; i++) {
        const char *entry = g_ptr_array_index(overrides, i);
        const char *comma = strchr(entry, ',');
        const char *equals = comma != NULL ? strchr(comma + 1, '=') : NULL;
        if (comma == NULL || equals == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Bad device override syntax, expecting <device>,<key>=<value>: %s", entry);
            return FALSE;
        }
        g_autofree char *name = g_strndup(entry, comma - entry);
        g_autofree char *key = g_strndup(comma + 1, equals - comma - 1);
        json_t *device = json_object_get(devices, name);
        if (device == NULL) {
            json_t *inherited = json_object_get(expanded, name);
            device = json_is_object(inherited) ? json_deep_copy(inherited) : json_object();
            json_object_set_new(devices, name, device);
        }
        json_object_set_new(device, key, json_string(equals + 1));
    }
    return TRUE;
}

/* The instance's own root disk: a disk at "/" with no source. */
static const char *root_disk_name(json_t *devices)
{
    const char *name;
    json_t *device;
    json_object_foreach(devices, name, device)
    {
        if (g_strcmp0(ferry_json_get_string(device, "type"), "disk") == 0 &&
            g_strcmp0(ferry_json_get_string(device, "path"), "/") == 0 &&
            ferry_json_get_string(device, "source") == NULL)
            return name;
    }
    return NULL;
}

static json_t *string_array(GPtrArray *strings)
{
    json_t *array = json_array();
    for (guint i = 0; strings != NULL && i < strings->len; i++)
        json_array_append_new(array, json_string(g_ptr_array_index(strings, i)));
    return array;
}

/* What the target should create, from the source instance or snapshot object (origin): its writable fields
 * with the user's overrides, as Incus's client prepares api.InstancesPost. keep_volatile: a move or a
 * refresh keeps the volatile keys; otherwise only those a copy may keep stay. */
static json_t *new_instance_body(Flags *flags, json_t *origin, const char *type, const char *name,
                                 gboolean keep_volatile, GError **error)
{
    g_autoptr(json_t) config = ferry_json_object_or_empty(origin, "config");
    if (!parse_config_overrides(flags->config, config, error))
        return NULL;
    if (!keep_volatile) {
        const char *key;
        json_t *value;
        void *tmp;
        json_object_foreach_safe(config, tmp, key, value)
        {
            if (!include_when_copying(key))
                json_object_del(config, key);
        }
    }
    json_object_del(config, "volatile.last_state.power");

    g_autoptr(json_t) devices = ferry_json_object_or_empty(origin, "devices");
    if (!apply_device_overrides(flags->devices, devices, json_object_get(origin, "expanded_devices"), error))
        return NULL;
    if (flags->storage != NULL) {
        const char *root = root_disk_name(devices);
        if (root != NULL)
            json_object_set_new(json_object_get(devices, root), "pool", json_string(flags->storage));
        else
            json_object_set_new(
                devices, "root",
                json_pack("{s:s, s:s, s:s}", "type", "disk", "path", "/", "pool", flags->storage));
    }

    json_t *profiles;
    if (flags->profiles != NULL)
        profiles = string_array(flags->profiles);
    else if (flags->no_profiles)
        profiles = json_array();
    else
        profiles = ferry_json_array_or_empty(origin, "profiles");

    /* A copy is ephemeral only with -e; a move keeps what the source was. */
    gboolean ephemeral = flags->move ? ferry_json_get_bool(origin, "ephemeral", FALSE) : flags->ephemeral;

    json_t *body = json_object();
    json_object_set_new(body, "name", json_string(name));
    json_object_set_new(body, "instance_type", json_string(""));
    json_object_set_new(body, "type", json_string(type != NULL ? type : "container"));
    const char *architecture = ferry_json_get_string(origin, "architecture");
    if (architecture != NULL)
        json_object_set_new(body, "architecture", json_string(architecture));
    json_object_set(body, "config", config);
    json_object_set(body, "devices", devices);
    json_object_set_new(body, "ephemeral", json_boolean(ephemeral));
    json_object_set_new(body, "profiles", profiles);
    json_object_set_new(body, "stateful", json_boolean(ferry_json_get_bool(origin, "stateful", FALSE)));
    const char *description = ferry_json_get_string(origin, "description");
    json_object_set_new(body, "description", json_string(description != NULL ? description : ""));
    return body;
}

/* --- operations ----------------------------------------------------------------------------------------- */

/* One side's operation in a transfer. */
typedef struct {
    const char *role; /* "source" or "target" */
    Endpoint *end;
    char *id;
    json_t *secrets; /* the operation's metadata: the secrets of a listening side */
    FerryOperationWatch *watch;
    gboolean done;
    GError *error; /* set when done and failed */
} Op;

static void op_clear(Op *op)
{
    g_clear_pointer(&op->watch, ferry_operation_watch_free);
    g_clear_pointer(&op->id, g_free);
    g_clear_pointer(&op->secrets, json_decref);
    g_clear_error(&op->error);
    op->done = FALSE;
}

/* "Migration failed on target "b": <message>" */
static void set_side_error(GError **error, const char *role, const char *remote, const GError *cause)
{
    g_set_error(error, FERRY_ERROR, cause->domain == FERRY_ERROR ? cause->code : FERRY_ERROR_INTERNAL,
                "Migration failed on %s \"%s\": %s", role, remote, cause->message);
}

/* Send the request that creates a side's operation. An error is left as the server gave it. */
static gboolean op_start(Op *op, const char *path, json_t *body, GError **error)
{
    g_autoptr(FerryResponse) response =
        ferry_client_request(op->end->client, "POST", path, body, NULL, error);
    if (response == NULL)
        return FALSE;
    const char *id = response->operation;
    if (id == NULL)
        id = ferry_json_get_string(response->metadata, "id");
    if (g_strcmp0(response->type, "async") != 0 || id == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "The server answered without an operation");
        return FALSE;
    }
    op->id = ferry_operation_id(id);
    json_t *metadata = json_object_get(response->metadata, "metadata");
    op->secrets = json_is_object(metadata) ? json_incref(metadata) : json_object();
    return TRUE;
}

static void iterate_contexts(GMainContext **contexts, guint count, int timeout_ms);

/* Cancel a side's operation that is still running (DELETE /1.0/operations/<id>), ignoring failures: this
 * only ever tidies up after another error. The operation holds its instance until its worker has noticed:
 * wait a little for it to end, so that the instance is free again when the CLI returns. */
static void op_cancel(Op *op)
{
    if (op->id == NULL || op->done)
        return;
    g_autofree char *path = ferry_api_path("operations", op->id, NULL);
    g_autoptr(FerryResponse) response =
        ferry_client_request(op->end->client, "DELETE", path, NULL, NULL, NULL);
    if (response == NULL || op->watch == NULL)
        return;
    GMainContext *context = ferry_client_get_context(op->end->client);
    gint64 deadline = g_get_monotonic_time() + CANCEL_WAIT_SECONDS * G_USEC_PER_SEC;
    while (!ferry_operation_watch_is_done(op->watch) && g_get_monotonic_time() < deadline)
        iterate_contexts(&context, 1, 100);
}

/* Secrets of a listening side as a JSON object of strings; FALSE when they are not that. */
static gboolean check_secrets(Op *op, GError **error)
{
    const char *name;
    json_t *value;
    json_object_foreach(op->secrets, name, value)
    {
        if (!json_is_string(value)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                        "The %s's migration operation has a malformed secret \"%s\"", op->role, name);
            return FALSE;
        }
    }
    if (json_object_size(op->secrets) == 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "The %s's migration operation has no websocket secrets", op->role);
        return FALSE;
    }
    return TRUE;
}

/* --- following two servers at once ---------------------------------------------------------------------- */

/* Each FerryClient runs its own GMainContext. One round over several of them: poll all their sources at
 * once and dispatch what is ready, each in its own context (made thread-default while it runs). */
static void iterate_contexts(GMainContext **contexts, guint count, int timeout_ms)
{
    g_autoptr(GArray) fds = g_array_new(FALSE, TRUE, sizeof(GPollFD));
    int priorities[4] = {0};
    int counts[4] = {0};
    gboolean owned[4] = {FALSE};
    int timeout = timeout_ms;
    g_assert(count <= G_N_ELEMENTS(counts));

    for (guint i = 0; i < count; i++) {
        owned[i] = g_main_context_acquire(contexts[i]);
        if (!owned[i])
            continue;
        if (g_main_context_prepare(contexts[i], &priorities[i]))
            timeout = 0;
        guint start = fds->len;
        int wanted = 8, context_timeout = -1;
        for (;;) {
            g_array_set_size(fds, start + wanted);
            int n = g_main_context_query(contexts[i], priorities[i], &context_timeout,
                                         &g_array_index(fds, GPollFD, start), wanted);
            if (n <= wanted) {
                g_array_set_size(fds, start + n);
                counts[i] = n;
                break;
            }
            wanted = n;
        }
        if (context_timeout >= 0 && (timeout < 0 || context_timeout < timeout))
            timeout = context_timeout;
    }

    g_poll((GPollFD *)fds->data, fds->len, timeout);

    guint offset = 0;
    for (guint i = 0; i < count; i++) {
        if (!owned[i])
            continue;
        if (g_main_context_check(contexts[i], priorities[i], &g_array_index(fds, GPollFD, offset),
                                 counts[i])) {
            g_main_context_push_thread_default(contexts[i]);
            g_main_context_dispatch(contexts[i]);
            g_main_context_pop_thread_default(contexts[i]);
        }
        g_main_context_release(contexts[i]);
        offset += counts[i];
    }
}

typedef struct {
    CliProgress *display;
    Op *owner; /* the operation whose progress is shown */
    Op *preferred;
    gint64 first_done; /* for a rate the server did not give: bytes and time of the first report */
    gint64 first_time;
} TransferProgress;

typedef struct {
    TransferProgress *progress;
    Op *op;
} ProgressSource;

/* Progress comes from the preferred side (the target in pull and relay, the source in push, as Incus shows
 * it); the other side's is shown only while the preferred one has said nothing. */
static void on_progress(const FerryProgress *update, gpointer user_data)
{
    ProgressSource *source = user_data;
    TransferProgress *progress = source->progress;
    if (progress->owner != NULL && progress->owner != source->op && source->op != progress->preferred)
        return;
    if (progress->owner != source->op)
        progress->first_time = 0;
    progress->owner = source->op;
    FerryProgress shown = *update;
    /* "Transferring instance: 45% ...", "Transferring instance: snapshot snap0: 12% ..." */
    if (g_strcmp0(shown.stage, "instance") == 0)
        shown.stage = NULL;
    if (shown.rate < 0 && shown.done >= 0) {
        /* ferryd reports done and total; the rate follows from two reports. */
        gint64 now = g_get_monotonic_time();
        if (progress->first_time == 0 || shown.done < progress->first_done) {
            progress->first_time = now;
            progress->first_done = shown.done;
        } else if (now - progress->first_time >= G_USEC_PER_SEC / 2) {
            shown.rate = (shown.done - progress->first_done) * G_USEC_PER_SEC / (now - progress->first_time);
        }
    }
    cli_progress_update(&shown, progress->display);
}

static void op_collect(Op *op)
{
    g_autoptr(json_t) final = NULL;
    GError *local_error = NULL;
    if (!ferry_operation_watch_finish(op->watch, &final, &local_error))
        op->error = local_error;
    op->done = TRUE;
}

/* A dialling side's failure to reach the address it was given (so that the next one is worth trying), as
 * far as a message can tell. */
static gboolean is_connection_failure(const GError *error)
{
    if (error->domain == FERRY_ERROR && error->code == FERRY_ERROR_UNAVAILABLE)
        return TRUE;
    static const char *const markers[] = {"Failed to connect",  "Unable to connect", "Connection refused",
                                          "connection refused", "No route to host",  "Network is unreachable",
                                          "i/o timeout",        "timed out",         "Could not connect"};
    for (gsize i = 0; i < G_N_ELEMENTS(markers); i++) {
        if (strstr(error->message, markers[i]) != NULL)
            return TRUE;
    }
    return FALSE;
}

/* Follow both operations until the target's has ended and the source's too (or has had its grace): TRUE
 * when the target succeeded and the source did not fail. On a failure the error names the side that failed
 * (the target's when both did: it carries the source's message); cancelling the other is the caller's. */
static gboolean wait_for_both(Op *source, Op *target, GError **error)
{
    gint64 grace_deadline = 0;
    gint64 failure_deadline = 0;
    for (;;) {
        Op *ops[2] = {source, target};
        for (int i = 0; i < 2; i++) {
            if (!ops[i]->done && ferry_operation_watch_is_done(ops[i]->watch))
                op_collect(ops[i]);
        }
        gboolean failed = (source->done && source->error != NULL) || (target->done && target->error != NULL);
        gint64 now = g_get_monotonic_time();
        if (failed) {
            Op *culprit = target->done && target->error != NULL ? target : source;
            /* A side that could not even connect is the whole story; otherwise the other side may still
             * say something more useful. */
            if (failure_deadline == 0)
                failure_deadline =
                    is_connection_failure(culprit->error) ? now : now + FAILURE_GRACE_MS * 1000;
            if ((source->done && target->done) || now >= failure_deadline) {
                set_side_error(error, culprit->role, culprit->end->remote, culprit->error);
                return FALSE;
            }
        } else if (target->done) {
            if (source->done)
                return TRUE;
            if (grace_deadline == 0)
                grace_deadline = now + SOURCE_GRACE_SECONDS * G_USEC_PER_SEC;
            if (now >= grace_deadline)
                return TRUE;
        }

        GMainContext *contexts[2];
        guint count = 0;
        for (int i = 0; i < 2; i++) {
            if (!ops[i]->done)
                contexts[count++] = ferry_client_get_context(ops[i]->end->client);
        }
        iterate_contexts(contexts, count, 200);
    }
}

/* --- relay: the CLI carries the migration's websockets -------------------------------------------------- */

typedef struct {
    char *name;
    FerryWebsocket *source_ws;
    FerryWebsocket *target_ws;
    GThread *thread;
    gboolean ok;
    GError *error;
} RelayChannel;

static void relay_channel_free(RelayChannel *channel)
{
    if (channel->thread != NULL) {
        ferry_websocket_abort(channel->source_ws);
        ferry_websocket_abort(channel->target_ws);
        g_thread_join(channel->thread);
    }
    g_clear_pointer(&channel->source_ws, ferry_websocket_free);
    g_clear_pointer(&channel->target_ws, ferry_websocket_free);
    g_clear_error(&channel->error);
    g_free(channel->name);
    g_free(channel);
}

static gpointer relay_thread(gpointer data)
{
    RelayChannel *channel = data;
    channel->ok = ferry_websocket_proxy(channel->source_ws, channel->target_ws, NULL, &channel->error);
    return NULL;
}

/* The upgrade to a websocket over a unix socket (the "local" remote), where ferry_websocket_dial (TCP) does
 * not go: the same HTTP/1.1 request, read back byte by byte so that nothing after the headers is taken
 * from the stream before the websocket layer gets it. */
static FerryWebsocket *dial_unix_websocket(const char *socket_path, const char *path, GError **error)
{
    g_autoptr(GSocketClient) socket_client = g_socket_client_new();
    g_socket_client_set_timeout(socket_client, 10);
    g_autoptr(GSocketAddress) address = g_unix_socket_address_new(socket_path);
    g_autoptr(GError) connect_error = NULL;
    g_autoptr(GSocketConnection) connection =
        g_socket_client_connect(socket_client, G_SOCKET_CONNECTABLE(address), NULL, &connect_error);
    if (connection == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE, "Failed to connect to unix:%s: %s",
                    socket_path, connect_error->message);
        return NULL;
    }

    guint8 nonce[16];
    for (gsize i = 0; i < sizeof nonce; i++)
        nonce[i] = (guint8)g_random_int_range(0, 256);
    g_autofree char *key = g_base64_encode(nonce, sizeof nonce);
    g_autofree char *request =
        g_strdup_printf("GET %s HTTP/1.1\r\nHost: unix.socket\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\nUser-Agent: ferry\r\n\r\n",
                        path, key);
    GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(connection));
    GInputStream *in = g_io_stream_get_input_stream(G_IO_STREAM(connection));
    if (!g_output_stream_write_all(out, request, strlen(request), NULL, NULL, error)) {
        g_prefix_error(error, "Failed to send the websocket upgrade to unix:%s: ", socket_path);
        return NULL;
    }

    g_autoptr(GString) head = g_string_new(NULL);
    while (!g_str_has_suffix(head->str, "\r\n\r\n")) {
        char c;
        gssize n = g_input_stream_read(in, &c, 1, NULL, error);
        if (n <= 0) {
            if (n == 0)
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE,
                            "unix:%s closed the connection during the websocket upgrade", socket_path);
            return NULL;
        }
        g_string_append_c(head, c);
        if (head->len > 16384) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Oversized websocket upgrade answer");
            return NULL;
        }
    }
    guint status = 0;
    if (sscanf(head->str, "HTTP/1.%*d %u", &status) != 1 || status != 101) {
        g_set_error(error, FERRY_ERROR, status >= 400 && status < 600 ? (int)status : FERRY_ERROR_INTERNAL,
                    "Failed to open websocket %s: HTTP status %u", path, status);
        return NULL;
    }
    /* Sec-WebSocket-Accept proves the server read this request, not a stale one. */
    g_autofree char *expected_source = g_strconcat(key, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", NULL);
    g_autoptr(GChecksum) sha1 = g_checksum_new(G_CHECKSUM_SHA1);
    g_checksum_update(sha1, (const guchar *)expected_source, -1);
    guint8 digest[20];
    gsize digest_length = sizeof digest;
    g_checksum_get_digest(sha1, digest, &digest_length);
    g_autofree char *expected = g_base64_encode(digest, digest_length);
    g_autofree char *lower = g_ascii_strdown(head->str, -1);
    const char *accept = strstr(lower, "\r\nsec-websocket-accept:");
    if (accept == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "Websocket upgrade without Sec-WebSocket-Accept");
        return NULL;
    }
    const char *value = head->str + (accept - lower) + strlen("\r\nsec-websocket-accept:");
    while (*value == ' ' || *value == '\t')
        value++;
    if (strncmp(value, expected, strlen(expected)) != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "Websocket upgrade with a wrong Sec-WebSocket-Accept");
        return NULL;
    }
    /* The 10 s bound was for connecting and the upgrade; a channel may then sit idle for long. */
    g_socket_set_timeout(g_socket_connection_get_socket(connection), 0);
    return ferry_websocket_new(G_IO_STREAM(connection), TRUE);
}

/* The websocket of an operation on the server an endpoint stands for, through the CLI's own connection to
 * it: its unix socket, or HTTPS with the client certificate and the pinned server certificate. */
static FerryWebsocket *dial_operation_websocket(Cli *cli, Endpoint *end, const char *operation,
                                                const char *secret, GError **error)
{
    g_autofree char *escaped = g_uri_escape_string(secret, NULL, TRUE);
    g_autofree char *base = ferry_api_path("operations", operation, "websocket", NULL);
    g_autofree char *path = g_strdup_printf("%s?secret=%s", base, escaped);
    json_t *entry = cli_config_remote(cli->config, end->remote);
    const char *addr = ferry_json_get_string(entry, "addr");
    if (addr == NULL || g_str_has_prefix(addr, "unix:")) {
        g_autofree char *socket = cli_unix_socket_path(addr != NULL ? addr : "unix://");
        return dial_unix_websocket(socket, path, error);
    }

    g_autofree char *cert_path = cli_config_path(cli->config, "client.crt");
    g_autofree char *key_path = cli_config_path(cli->config, "client.key");
    g_autoptr(GTlsCertificate) client_cert = ferry_tls_cert_load(cert_path, key_path, error);
    if (client_cert == NULL)
        return NULL;
    g_autofree char *server_cert_path = cli_config_server_cert_path(cli->config, end->remote);
    g_autofree char *server_pem = NULL;
    if (!g_file_get_contents(server_cert_path, &server_pem, NULL, error)) {
        g_prefix_error(error, "No trusted certificate for remote %s: ", end->remote);
        return NULL;
    }
    const char *host = strstr(addr, "://");
    g_autofree char *trimmed = g_strdup(host != NULL ? host + 3 : addr);
    gsize length = strlen(trimmed);
    while (length > 0 && trimmed[length - 1] == '/')
        trimmed[--length] = '\0';
    g_autofree char *url = g_strdup_printf("wss://%s%s", trimmed, path);
    return ferry_websocket_dial(url, server_pem, client_cert, NULL, error);
}

/* Incus's proxyMigration: every socket the target expects must be offered by the source, control first;
 * then the CLI connects each pair and copies between them. */
static GPtrArray *relay_start(Cli *cli, Op *source, Op *target, GError **error)
{
    const char *name;
    json_t *value;
    json_object_foreach(target->secrets, name, value)
    {
        if (json_object_get(source->secrets, name) == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                        "Migration target expects the \"%s\" socket but source isn't providing it", name);
            return NULL;
        }
    }
    if (ferry_json_get_string(target->secrets, "control") == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "Migration target didn't setup the required \"control\" socket");
        return NULL;
    }

    /* A relay writes to sockets that may be closed under it. */
    signal(SIGPIPE, SIG_IGN);

    g_autoptr(GPtrArray) channels = g_ptr_array_new_with_free_func((GDestroyNotify)relay_channel_free);
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    g_ptr_array_add(names, (gpointer) "control");
    json_object_foreach(source->secrets, name, value)
    {
        if (strcmp(name, "control") != 0)
            g_ptr_array_add(names, (gpointer)name);
    }
    for (guint i = 0; i < names->len; i++) {
        const char *channel_name = g_ptr_array_index(names, i);
        const char *target_secret = ferry_json_get_string(target->secrets, channel_name);
        if (target_secret == NULL)
            continue; /* offered by the source, not wanted by the target (a criu socket for a cold move) */
        RelayChannel *channel = g_new0(RelayChannel, 1);
        channel->name = g_strdup(channel_name);
        g_ptr_array_add(channels, channel);
        channel->source_ws = dial_operation_websocket(
            cli, source->end, source->id, ferry_json_get_string(source->secrets, channel_name), error);
        if (channel->source_ws == NULL) {
            g_prefix_error(error, "Failed to connect to the \"%s\" socket of source \"%s\": ", channel_name,
                           source->end->remote);
            return NULL;
        }
        channel->target_ws = dial_operation_websocket(cli, target->end, target->id, target_secret, error);
        if (channel->target_ws == NULL) {
            g_prefix_error(error, "Failed to connect to the \"%s\" socket of target \"%s\": ", channel_name,
                           target->end->remote);
            return NULL;
        }
    }
    for (guint i = 0; i < channels->len; i++) {
        RelayChannel *channel = g_ptr_array_index(channels, i);
        g_autofree char *thread_name = g_strdup_printf("relay-%s", channel->name);
        channel->thread = g_thread_new(thread_name, relay_thread, channel);
    }
    return g_steal_pointer(&channels);
}

/* --- one server ----------------------------------------------------------------------------------------- */

static gboolean run_simple(FerryClient *client, const char *method, const char *path, json_t *body,
                           GError **error)
{
    g_autoptr(json_t) result = ferry_client_run(client, method, path, body, NULL, NULL, error);
    return result != NULL;
}

static gboolean change_state(FerryClient *client, const char *name, const char *action, int timeout,
                             gboolean force, GError **error)
{
    g_autofree char *path = ferry_api_path("instances", name, "state", NULL);
    g_autoptr(json_t) body = json_pack("{s:s, s:i, s:b, s:b}", "action", action, "timeout", timeout, "force",
                                       force, "stateful", FALSE);
    return run_simple(client, "PUT", path, body, error);
}

/* A clean shutdown first (the instance's own services flush their data), then a forced stop. */
static gboolean stop_instance(FerryClient *client, const char *name, GError **error)
{
    g_autoptr(GError) clean_error = NULL;
    if (change_state(client, name, "stop", STOP_TIMEOUT_SECONDS, FALSE, &clean_error))
        return TRUE;
    return change_state(client, name, "stop", -1, TRUE, error);
}

/* Incus's `delete --force --force-protected`: stop it if needed, lift delete protection, delete. */
static gboolean delete_instance(FerryClient *client, const char *name, GError **error)
{
    g_autofree char *path = ferry_api_path("instances", name, NULL);
    g_autofree char *etag = NULL;
    g_autoptr(json_t) info = ferry_client_get(client, path, &etag, error);
    if (info == NULL)
        return FALSE;
    if (g_strcmp0(ferry_json_get_string(info, "status"), "Stopped") != 0) {
        if (!change_state(client, name, "stop", -1, TRUE, error))
            return FALSE;
        if (ferry_json_get_bool(info, "ephemeral", FALSE))
            return TRUE; /* an ephemeral instance is gone once stopped */
    }
    const char *protect =
        ferry_json_get_string(json_object_get(info, "expanded_config"), "security.protection.delete");
    if (protect != NULL && g_ascii_strcasecmp(protect, "true") == 0) {
        g_autoptr(json_t) writable = cli_writable(info, cli_instance_writable);
        json_t *config = json_object_get(writable, "config");
        if (!json_is_object(config)) {
            config = json_object();
            json_object_set_new(writable, "config", config);
        }
        json_object_set_new(config, "security.protection.delete", json_string("false"));
        g_autoptr(FerryResponse) response = ferry_client_request(client, "PUT", path, writable, NULL, error);
        if (response == NULL)
            return FALSE;
        if (response->operation != NULL) {
            g_autoptr(json_t) done =
                ferry_client_wait_operation(client, response->operation, NULL, NULL, error);
            if (done == NULL)
                return FALSE;
        }
    }
    return run_simple(client, "DELETE", path, NULL, error);
}

/* move c1 c2 and move c1/snap0 c1/snap1 on one server (Incus's local rename). */
static int local_rename(Flags *flags, Endpoint *src, Endpoint *dst, gboolean dest_named, GError **error)
{
    if (!dest_named) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Can't perform local rename without a new instance name");
        return -1;
    }
    if (flags->config != NULL || flags->devices != NULL || flags->profiles != NULL || flags->no_profiles) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Can't override configuration or profiles in local rename");
        return -1;
    }
    if (flags->refresh) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Can't perform an incremental transfer in local rename");
        return -1;
    }
    if (src->snapshot != NULL) {
        if (strcmp(src->instance, dst->instance) != 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid new snapshot name, parent must be the same as source");
            return -1;
        }
        if (dst->snapshot == NULL || *dst->snapshot == '\0') {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid new snapshot name");
            return -1;
        }
        g_autofree char *path = ferry_api_path("instances", src->instance, "snapshots", src->snapshot, NULL);
        g_autoptr(json_t) body = json_pack("{s:s}", "name", dst->snapshot);
        return run_simple(src->client, "POST", path, body, error) ? 0 : -1;
    }
    if (dst->snapshot != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid instance name: \"%s/%s\"",
                    dst->instance, dst->snapshot);
        return -1;
    }
    g_autofree char *path = ferry_api_path("instances", src->instance, NULL);
    g_autoptr(json_t) body = json_pack("{s:s}", "name", dst->instance);
    return run_simple(src->client, "POST", path, body, error) ? 0 : -1;
}

/* The source instance (or snapshot) object, and the instance's type. */
static json_t *get_origin(Endpoint *src, char **type_out, gboolean *running_out, GError **error)
{
    g_autofree char *instance_path = ferry_api_path("instances", src->instance, NULL);
    g_autoptr(json_t) instance = ferry_client_get(src->client, instance_path, NULL, error);
    if (instance == NULL)
        return NULL;
    *type_out = g_strdup(ferry_json_get_string(instance, "type"));
    *running_out = g_strcmp0(ferry_json_get_string(instance, "status"), "Running") == 0 ||
                   json_integer_value(json_object_get(instance, "status_code")) == 103;
    if (src->snapshot == NULL)
        return g_steal_pointer(&instance);
    g_autofree char *path = ferry_api_path("instances", src->instance, "snapshots", src->snapshot, NULL);
    return ferry_client_get(src->client, path, NULL, error);
}

/* Wait for an operation with the transfer's progress line. */
static gboolean run_with_progress(Cli *cli, FerryClient *client, const char *method, const char *path,
                                  json_t *body, GError **error)
{
    g_autoptr(CliProgress) progress = cli_progress_new(cli, "Transferring instance");
    g_autoptr(json_t) result =
        ferry_client_run(client, method, path, body, cli_progress_update, progress, error);
    return result != NULL;
}

/* POST /1.0/instances[?target=<member>] */
static char *instances_path(Flags *flags)
{
    if (flags->target == NULL)
        return g_strdup("/1.0/instances");
    g_autofree char *escaped = g_uri_escape_string(flags->target, NULL, TRUE);
    return g_strdup_printf("/1.0/instances?target=%s", escaped);
}

/* POST /1.0/instances with source type "copy" (Incus's local shortcut). */
static gboolean local_copy(Cli *cli, Flags *flags, Endpoint *src, Endpoint *dst, json_t *origin,
                           const char *type, gboolean keep_volatile, GError **error)
{
    g_autoptr(json_t) body = new_instance_body(flags, origin, type, dst->instance, keep_volatile, error);
    if (body == NULL)
        return FALSE;
    g_autofree char *source_name = src->snapshot != NULL
                                       ? g_strdup_printf("%s/%s", src->instance, src->snapshot)
                                       : g_strdup(src->instance);
    json_t *source = json_pack("{s:s, s:s, s:b, s:b, s:b, s:b}", "type", "copy", "source", source_name,
                               "live", FALSE, "instance_only", flags->instance_only, "refresh",
                               flags->refresh, "allow_inconsistent", flags->allow_inconsistent);
    const char *base_image = ferry_json_get_string(json_object_get(origin, "config"), "volatile.base_image");
    if (base_image != NULL)
        json_object_set_new(source, "base-image", json_string(base_image));
    if (flags->refresh_exclude_older)
        json_object_set_new(source, "refresh_exclude_older", json_true());
    if (strcmp(endpoint_project(src), endpoint_project(dst)) != 0)
        json_object_set_new(source, "project", json_string(endpoint_project(src)));
    json_object_set_new(body, "source", source);
    g_autofree char *path = instances_path(flags);
    return run_with_progress(cli, dst->client, "POST", path, body, error);
}

/* --- between servers ------------------------------------------------------------------------------------ */

/* Where the target can reach a server (Incus's GetConnectionInfo): the remote's HTTPS URL first, then each
 * address the server lists (those starting with ':' name only a port); and the certificate it presents. */
static gboolean connection_info(Cli *cli, Endpoint *end, GPtrArray **urls_out, char **certificate_out,
                                GError **error)
{
    json_t *server = endpoint_server(end, error);
    if (server == NULL)
        return FALSE;
    g_autoptr(GPtrArray) urls = g_ptr_array_new_with_free_func(g_free);
    const char *addr = ferry_json_get_string(cli_config_remote(cli->config, end->remote), "addr");
    g_autofree char *certificate = NULL;
    if (addr != NULL && g_str_has_prefix(addr, "https://")) {
        g_autofree char *url = g_strdup(addr);
        gsize length = strlen(url);
        while (length > 0 && url[length - 1] == '/')
            url[--length] = '\0';
        g_ptr_array_add(urls, g_steal_pointer(&url));
        /* The certificate the CLI pinned for this remote, as Incus passes its own. */
        g_autofree char *cert_path = cli_config_server_cert_path(cli->config, end->remote);
        g_file_get_contents(cert_path, &certificate, NULL, NULL);
    }
    json_t *environment = json_object_get(server, "environment");
    json_t *addresses = json_object_get(environment, "addresses");
    gsize i;
    json_t *value;
    json_array_foreach(addresses, i, value)
    {
        const char *address = json_string_value(value);
        if (address == NULL || *address == '\0' || *address == ':')
            continue;
        g_autofree char *url = g_strdup_printf("https://%s", address);
        if (!g_ptr_array_find_with_equal_func(urls, url, g_str_equal, NULL))
            g_ptr_array_add(urls, g_steal_pointer(&url));
    }
    if (certificate == NULL)
        certificate = g_strdup(ferry_json_get_string(environment, "certificate"));
    if (certificate == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Server \"%s\" did not give its certificate",
                    end->remote);
        return FALSE;
    }
    *urls_out = g_steal_pointer(&urls);
    *certificate_out = g_steal_pointer(&certificate);
    return TRUE;
}

static gboolean has_extension(json_t *server, const char *name)
{
    gsize i;
    json_t *value;
    json_array_foreach(json_object_get(server, "api_extensions"), i, value)
    {
        if (g_strcmp0(json_string_value(value), name) == 0)
            return TRUE;
    }
    return FALSE;
}

/* Incus's CopyInstance checks, with its messages: each feature needs the API extension on both ends. */
static gboolean check_extensions(Flags *flags, Endpoint *src, Endpoint *dst, GError **error)
{
    json_t *source_server = endpoint_server(src, error);
    json_t *target_server = source_server != NULL ? endpoint_server(dst, error) : NULL;
    if (target_server == NULL)
        return FALSE;
    struct {
        gboolean wanted;
        const char *extension;
        gboolean on_target;
        gboolean on_source;
    } checks[] = {
        {flags->instance_only, "container_only_migration", TRUE, TRUE},
        {strcmp(flags->mode, "pull") != 0, "container_push", TRUE, TRUE},
        {strcmp(flags->mode, "push") == 0, "container_push_target", FALSE, TRUE},
        {flags->refresh, "container_incremental_copy", TRUE, TRUE},
        {flags->allow_inconsistent, "instance_allow_inconsistent_copy", TRUE, FALSE},
    };
    for (gsize i = 0; i < G_N_ELEMENTS(checks); i++) {
        if (!checks[i].wanted)
            continue;
        if (checks[i].on_target && !has_extension(target_server, checks[i].extension)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                        "The target server is missing the required \"%s\" API extension",
                        checks[i].extension);
            return FALSE;
        }
        if (checks[i].on_source && !has_extension(source_server, checks[i].extension)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                        "The source server is missing the required \"%s\" API extension",
                        checks[i].extension);
            return FALSE;
        }
    }
    return TRUE;
}

typedef struct {
    Cli *cli;
    Flags *flags;
    Endpoint *src;
    Endpoint *dst;
    json_t *body; /* the target's POST /1.0/instances body, source included */
    gboolean live;
    gboolean refresh;
    gboolean allow_inconsistent;
} Transfer;

/* The source's POST, exactly as Incus's client sends it: api.InstancePost for an instance (its "name" is
 * empty: the source keeps its name), api.InstanceSnapshotPost for a snapshot (named after the new
 * instance). "target" stays null but in push mode. */
static json_t *source_request(Transfer *t)
{
    if (t->src->snapshot != NULL)
        return json_pack("{s:s, s:b, s:n, s:b}", "name", t->dst->instance, "migration", TRUE, "target",
                         "live", t->live);
    return json_pack("{s:s, s:b, s:b, s:b, s:b, s:n, s:s, s:s, s:b}", "name", "", "migration", TRUE, "live",
                     t->live, "instance_only", t->flags->instance_only, "container_only",
                     t->flags->instance_only, "target", "pool", "", "project", "", "allow_inconsistent",
                     t->allow_inconsistent);
}

static char *source_path(Endpoint *src)
{
    return src->snapshot != NULL
               ? ferry_api_path("instances", src->instance, "snapshots", src->snapshot, NULL)
               : ferry_api_path("instances", src->instance, NULL);
}

/* The target's "source" object (api.InstanceSource) for a migration in the given mode. Incus's client
 * always sends type, certificate and allow_inconsistent and leaves out the others when empty or false; the
 * pull mode adds operation, secrets and the source's certificate afterwards. */
static json_t *migration_source(Transfer *t, const char *mode)
{
    gboolean instance_only = t->src->snapshot == NULL && t->flags->instance_only;
    json_t *source = json_pack("{s:s, s:s, s:s}", "type", "migration", "mode", mode, "certificate", "");
    const char *base_image = ferry_json_get_string(json_object_get(t->body, "config"), "volatile.base_image");
    if (base_image != NULL && *base_image != '\0')
        json_object_set_new(source, "base-image", json_string(base_image));
    if (t->live)
        json_object_set_new(source, "live", json_true());
    if (instance_only) {
        json_object_set_new(source, "instance_only", json_true());
        json_object_set_new(source, "container_only", json_true());
    }
    if (t->refresh)
        json_object_set_new(source, "refresh", json_true());
    if (t->refresh && t->flags->refresh_exclude_older)
        json_object_set_new(source, "refresh_exclude_older", json_true());
    json_object_set_new(source, "allow_inconsistent", json_boolean(t->allow_inconsistent));
    return source;
}

static void watch_op(Op *op, ProgressSource *source)
{
    op->watch = ferry_client_watch_operation(op->end->client, op->id, on_progress, source, FALSE);
}

/* The two operations of one copy and what follows them. */
typedef struct {
    Transfer *t;
    Op source;
    Op target;
    TransferProgress progress;
    ProgressSource source_progress;
    ProgressSource target_progress;
    GPtrArray *relay; /* RelayChannel, in relay mode */
} Session;

/* push: the target listens; the source dials it, at each address the target has until one answers. */
static gboolean copy_push(Session *s, const char *src_path, const char *dst_path, json_t *source_body,
                          GError **error)
{
    Transfer *t = s->t;
    /* Where the source is to dial, known before anything is asked of either server. */
    g_autoptr(GPtrArray) urls = NULL;
    g_autofree char *certificate = NULL;
    if (!connection_info(t->cli, t->dst, &urls, &certificate, error))
        return FALSE;
    if (urls->len == 0) {
        g_set_error(
            error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE,
            "The target server isn't listening on the network: set core.https_address on \"%s\" or use "
            "--mode pull or relay",
            t->dst->remote);
        return FALSE;
    }
    json_object_set_new(t->body, "source", migration_source(t, "push"));
    g_autoptr(GError) local_error = NULL;
    if (!op_start(&s->target, dst_path, t->body, &local_error) || !check_secrets(&s->target, &local_error)) {
        set_side_error(error, "target", t->dst->remote, local_error);
        return FALSE;
    }
    watch_op(&s->target, &s->target_progress);
    g_autoptr(GString) tried = g_string_new(NULL);
    for (guint i = 0; i < urls->len; i++) {
        const char *url = g_ptr_array_index(urls, i);
        g_autofree char *operation_url = g_strdup_printf("%s/1.0/operations/%s", url, s->target.id);
        json_object_set_new(source_body, "target",
                            json_pack("{s:s, s:O, s:s}", "operation", operation_url, "secrets",
                                      s->target.secrets, "certificate", certificate));
        op_clear(&s->source);
        g_clear_error(&local_error);
        if (!op_start(&s->source, src_path, source_body, &local_error)) {
            set_side_error(error, "source", t->src->remote, local_error);
            return FALSE;
        }
        watch_op(&s->source, &s->source_progress);
        g_autoptr(GError) wait_error = NULL;
        if (wait_for_both(&s->source, &s->target, &wait_error))
            return TRUE;
        g_string_append_printf(tried, "%s%s", tried->len ? ", " : "", url);
        gboolean unreachable = s->source.error != NULL && is_connection_failure(s->source.error);
        if (unreachable && !s->target.done && i + 1 < urls->len)
            continue;
        if (unreachable && i > 0)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE,
                        "Migration failed on source \"%s\": it could not reach target \"%s\" at %s: %s",
                        t->src->remote, t->dst->remote, tried->str, s->source.error->message);
        else
            g_propagate_error(error, g_steal_pointer(&wait_error));
        return FALSE;
    }
    return FALSE;
}

/* relay: both listen, the CLI carries the sockets. */
static gboolean copy_relay(Session *s, const char *dst_path, GError **error)
{
    Transfer *t = s->t;
    json_object_set_new(t->body, "source", migration_source(t, "push"));
    g_autoptr(GError) local_error = NULL;
    if (!op_start(&s->target, dst_path, t->body, &local_error) || !check_secrets(&s->target, &local_error)) {
        set_side_error(error, "target", t->dst->remote, local_error);
        return FALSE;
    }
    watch_op(&s->target, &s->target_progress);
    s->relay = relay_start(t->cli, &s->source, &s->target, error);
    if (s->relay == NULL)
        return FALSE;
    return wait_for_both(&s->source, &s->target, error);
}

/* pull: the target dials the source, at each address the source has until one answers. */
static gboolean copy_pull(Session *s, const char *dst_path, GPtrArray *urls, const char *certificate,
                          GError **error)
{
    Transfer *t = s->t;
    json_t *migration = migration_source(t, "pull");
    json_object_set_new(t->body, "source", migration);
    json_object_set_new(migration, "certificate", json_string(certificate));
    json_object_set(migration, "secrets", s->source.secrets);
    g_autoptr(GString) tried = g_string_new(NULL);
    for (guint i = 0; i < urls->len; i++) {
        const char *url = g_ptr_array_index(urls, i);
        g_autofree char *operation_url = g_strdup_printf("%s/1.0/operations/%s", url, s->source.id);
        json_object_set_new(migration, "operation", json_string(operation_url));
        op_clear(&s->target);
        g_autoptr(GError) local_error = NULL;
        if (!op_start(&s->target, dst_path, t->body, &local_error)) {
            /* The target refused the request itself: another address of the source changes nothing. */
            set_side_error(error, "target", t->dst->remote, local_error);
            return FALSE;
        }
        watch_op(&s->target, &s->target_progress);
        g_autoptr(GError) wait_error = NULL;
        if (wait_for_both(&s->source, &s->target, &wait_error))
            return TRUE;
        g_string_append_printf(tried, "%s%s", tried->len ? ", " : "", url);
        /* Only a target that could not reach this address is worth another one, and only while the
         * source's operation still waits for it. */
        gboolean unreachable = s->target.error != NULL && is_connection_failure(s->target.error);
        if (unreachable && !s->source.done && i + 1 < urls->len)
            continue;
        if (unreachable && i > 0)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE,
                        "Migration failed on target \"%s\": it could not reach source \"%s\" at %s: %s",
                        t->dst->remote, t->src->remote, tried->str, s->target.error->message);
        else
            g_propagate_error(error, g_steal_pointer(&wait_error));
        return FALSE;
    }
    return FALSE;
}

/* The copy itself between two servers, in the chosen mode; TRUE once the target has the instance. */
static gboolean remote_copy(Transfer *t, GError **error)
{
    gboolean push = strcmp(t->flags->mode, "push") == 0;
    Session s = {.t = t};
    s.source = (Op){.role = "source", .end = t->src};
    s.target = (Op){.role = "target", .end = t->dst};
    s.progress.display = cli_progress_new(t->cli, "Transferring instance");
    s.progress.preferred = push ? &s.source : &s.target;
    s.source_progress = (ProgressSource){&s.progress, &s.source};
    s.target_progress = (ProgressSource){&s.progress, &s.target};
    g_autofree char *src_path = source_path(t->src);
    g_autofree char *dst_path = instances_path(t->flags);
    g_autoptr(json_t) source_body = source_request(t);
    gboolean ok;

    if (push) {
        ok = copy_push(&s, src_path, dst_path, source_body, error);
    } else {
        /* pull and relay: the source listens first. In pull mode, where the target is to dial it is known
         * before anything is asked of either server. */
        gboolean relay = strcmp(t->flags->mode, "relay") == 0;
        g_autoptr(GPtrArray) urls = NULL;
        g_autofree char *certificate = NULL;
        g_autoptr(GError) local_error = NULL;
        ok = relay || connection_info(t->cli, t->src, &urls, &certificate, error);
        if (ok && !relay && urls->len == 0) {
            g_set_error(
                error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE,
                "The source server isn't listening on the network: set core.https_address on \"%s\" or "
                "use --mode push or relay",
                t->src->remote);
            ok = FALSE;
        }
        if (ok) {
            ok = op_start(&s.source, src_path, source_body, &local_error) &&
                 check_secrets(&s.source, &local_error);
            if (!ok)
                set_side_error(error, "source", t->src->remote, local_error);
        }
        if (ok) {
            watch_op(&s.source, &s.source_progress);
            ok = relay ? copy_relay(&s, dst_path, error) : copy_pull(&s, dst_path, urls, certificate, error);
        }
    }

    if (!ok) {
        op_cancel(&s.source);
        op_cancel(&s.target);
    }
    /* Both operations have ended (or are cancelled): what a relayed socket still holds is of no use. */
    g_clear_pointer(&s.relay, g_ptr_array_unref);
    op_clear(&s.source);
    op_clear(&s.target);
    cli_progress_free(s.progress.display);
    return ok;
}

/* After a refresh the target's configuration follows the source's (Incus's client does this PUT), keeping
 * the target's volatile.idmap.next and the pool of its root disk. */
static gboolean sync_refreshed_config(Transfer *t, GError **error)
{
    g_autofree char *path = ferry_api_path("instances", t->dst->instance, NULL);
    g_autofree char *etag = NULL;
    g_autoptr(json_t) current = ferry_client_get(t->dst->client, path, &etag, error);
    if (current == NULL) {
        g_prefix_error(error, "Failed to refresh target instance '%s': ", t->dst->instance);
        return FALSE;
    }
    g_autoptr(json_t) writable = json_deep_copy(t->body);
    json_object_del(writable, "name");
    json_object_del(writable, "type");
    json_object_del(writable, "source");
    json_t *config = json_object_get(writable, "config");
    json_t *current_config = json_object_get(current, "config");
    json_t *idmap_next = json_object_get(current_config, "volatile.idmap.next");
    if (idmap_next != NULL)
        json_object_set(config, "volatile.idmap.next", idmap_next);
    else
        json_object_del(config, "volatile.idmap.next");
    json_t *devices = json_object_get(writable, "devices");
    const char *root = root_disk_name(devices);
    const char *current_root = root_disk_name(json_object_get(current, "devices"));
    if (root != NULL && current_root != NULL && strcmp(root, current_root) == 0) {
        json_t *pool =
            json_object_get(json_object_get(json_object_get(current, "devices"), current_root), "pool");
        if (pool != NULL)
            json_object_set(json_object_get(devices, root), "pool", pool);
    }
    g_autoptr(FerryResponse) response =
        ferry_client_request(t->dst->client, "PUT", path, writable, etag, error);
    if (response == NULL)
        return FALSE;
    if (response->operation != NULL) {
        g_autoptr(json_t) done =
            ferry_client_wait_operation(t->dst->client, response->operation, NULL, NULL, error);
        return done != NULL;
    }
    return TRUE;
}

/* A move that failed after it stopped its source puts the source back as it was. */
static void restart_source(Endpoint *src, GError **error)
{
    g_autoptr(GError) restart_error = NULL;
    if (change_state(src->client, src->instance, "start", -1, FALSE, &restart_error) || error == NULL ||
        *error == NULL)
        return;
    char *message = g_strdup_printf("%s (and the source instance could not be restarted: %s)",
                                    (*error)->message, restart_error->message);
    g_free((*error)->message);
    (*error)->message = message;
}

static int transfer_between_servers(Cli *cli, Flags *flags, Endpoint *src, Endpoint *dst, GError **error)
{
    if (flags->move && src->snapshot != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Instance snapshots cannot be moved on their own");
        return -1;
    }
    if (!check_extensions(flags, src, dst, error))
        return -1;
    g_autofree char *type = NULL;
    gboolean running = FALSE;
    g_autoptr(json_t) origin = get_origin(src, &type, &running, error);
    if (origin == NULL)
        return -1;
    if (src->snapshot != NULL)
        running = FALSE; /* a snapshot is not running, whatever its instance does */

    /* Incus: a copy is stateful unless --stateless or --refresh, a move unless --stateless; live only when
     * the instance runs. Containers can't move live yet: say so before touching anything. */
    gboolean live = running && !flags->stateless && !flags->refresh;
    if (live && g_strcmp0(type, "virtual-machine") != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                    "Live migration of containers is not supported yet: stop the instance first or use "
                    "--stateless");
        return -1;
    }

    Transfer t = {cli, flags, src, dst, NULL, live, flags->refresh, flags->allow_inconsistent};
    /* A move keeps the volatile keys (the instance moves, it is not a new one), as does a refresh. */
    t.body = new_instance_body(flags, origin, type, dst->instance, flags->move || flags->refresh, error);
    if (t.body == NULL)
        return -1;
    g_autoptr(json_t) body_owner = t.body;

    /* A running instance moved statelessly: stop it first so that the copy holds everything it wrote and
     * the two never run at once (a move keeps the MAC addresses). With --refresh (near-live), a first copy
     * is made while it runs and only the final refresh happens with it stopped. */
    gboolean stop_first = flags->move && running && !live && !ferry_json_get_bool(origin, "ephemeral", FALSE);
    gboolean near_live = stop_first && flags->refresh && !flags->instance_only;
    gboolean stopped = FALSE;
    gboolean ok = FALSE;

    gboolean created_by_first_pass = FALSE;
    if (near_live) {
        g_autofree char *target_instance = ferry_api_path("instances", dst->instance, NULL);
        g_autoptr(GError) lookup_error = NULL;
        g_autoptr(json_t) existing = ferry_client_get(dst->client, target_instance, NULL, &lookup_error);
        if (existing == NULL && lookup_error->code != FERRY_ERROR_NOT_FOUND) {
            g_propagate_error(error, g_steal_pointer(&lookup_error));
            return -1;
        }
        /* The first pass runs while the instance does: files may change under it, the final pass fixes
         * them, so vanished files are no error here. */
        t.allow_inconsistent = TRUE;
        if (!remote_copy(&t, error))
            return -1;
        created_by_first_pass = existing == NULL;
        t.allow_inconsistent = flags->allow_inconsistent;
        json_object_del(t.body, "source");
    }
    if (stop_first) {
        if (!stop_instance(src->client, src->instance, error)) {
            g_prefix_error(error, "Failed to stop the source instance: ");
            return -1;
        }
        stopped = TRUE;
    }
    ok = remote_copy(&t, error);
    if (ok && flags->refresh)
        ok = sync_refreshed_config(&t, error);
    if (!ok) {
        /* Leave things as they were: no half-moved copy on the target, the source running again. */
        if (created_by_first_pass) {
            g_autoptr(GError) cleanup_error = NULL;
            delete_instance(dst->client, dst->instance, &cleanup_error);
        }
        if (stopped)
            restart_source(src, error);
        return -1;
    }

    if (flags->move) {
        if (!delete_instance(src->client, src->instance, error)) {
            g_prefix_error(error, "Failed to delete original instance after copying it: ");
            return -1;
        }
        if (running && !live) {
            if (!change_state(dst->client, dst->instance, "start", -1, FALSE, error)) {
                g_prefix_error(error, "Failed to start the moved instance on \"%s\": ", dst->remote);
                return -1;
            }
        }
    }
    return 0;
}

/* Incus's server-side move: POST /1.0/instances/<name> {"migration":true,"pool","project",...}. */
static int server_side_move(Cli *cli, Flags *flags, Endpoint *src, Endpoint *dst, json_t *origin,
                            gboolean running, GError **error)
{
    g_autoptr(json_t) body = json_pack(
        "{s:s, s:b, s:b, s:b, s:b, s:n, s:s, s:s, s:b}", "name", dst->instance, "migration", TRUE, "live",
        running && !flags->stateless, "instance_only", flags->instance_only, "container_only",
        flags->instance_only, "target", "pool", flags->storage != NULL ? flags->storage : "", "project",
        flags->target_project != NULL ? flags->target_project : "", "allow_inconsistent",
        flags->allow_inconsistent);
    if (flags->config != NULL) {
        g_autoptr(json_t) config = json_object();
        if (!parse_config_overrides(flags->config, config, error))
            return -1;
        json_object_set(body, "config", config);
    }
    if (flags->profiles != NULL)
        json_object_set_new(body, "profiles", string_array(flags->profiles));
    else if (flags->no_profiles)
        json_object_set_new(body, "profiles", json_array());
    if (flags->devices != NULL) {
        g_autoptr(json_t) devices = json_object();
        if (!apply_device_overrides(flags->devices, devices, json_object_get(origin, "expanded_devices"),
                                    error))
            return -1;
        json_object_set(body, "devices", devices);
    }
    g_autofree char *path = ferry_api_path("instances", src->instance, NULL);
    g_autoptr(FerryResponse) response = ferry_client_request(src->client, "POST", path, body, NULL, error);
    if (response == NULL) {
        g_prefix_error(error, "Migration API failure: ");
        return -1;
    }
    if (response->operation == NULL)
        return 0;
    g_autoptr(CliProgress) progress = cli_progress_new(cli, "Transferring instance");
    g_autoptr(json_t) done =
        ferry_client_wait_operation(src->client, response->operation, cli_progress_update, progress, error);
    if (done == NULL) {
        g_prefix_error(error, "Migration operation failure: ");
        return -1;
    }
    return 0;
}

/* move to another pool or project on one server: Incus's server-side move, else a copy and a delete (and a
 * rename when the name stays in the same project). */
static int local_move(Cli *cli, Flags *flags, Endpoint *src, Endpoint *dst, GError **error)
{
    if (src->snapshot != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Instance snapshots cannot be moved on their own");
        return -1;
    }
    if (flags->target != NULL) {
        json_t *server = endpoint_server(src, error);
        if (server == NULL)
            return -1;
        if (!ferry_json_get_bool(json_object_get(server, "environment"), "server_clustered", FALSE)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "--target needs a clustered server; \"%s\" is not clustered", src->remote);
            return -1;
        }
    }
    g_autofree char *type = NULL;
    gboolean running = FALSE;
    g_autoptr(json_t) origin = get_origin(src, &type, &running, error);
    if (origin == NULL)
        return -1;
    if (running && !flags->stateless && g_strcmp0(type, "virtual-machine") != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                    "Live migration of containers is not supported yet: stop the instance first or use "
                    "--stateless");
        return -1;
    }

    /* The server's own move (Incus 6.x+: POST /1.0/instances/<name> with a pool or a project), when it has
     * the extensions for what is asked and no transfer mode was forced on the client. */
    json_t *server = endpoint_server(src, error);
    if (server == NULL)
        return -1;
    gboolean server_side =
        strcmp(flags->mode, "pull") == 0 &&
        (flags->storage == NULL || has_extension(server, "instance_pool_move")) &&
        (flags->target_project == NULL || has_extension(server, "instance_project_move")) &&
        ((flags->config == NULL && flags->devices == NULL && flags->profiles == NULL) ||
         has_extension(server, "instance_move_config"));
    if (server_side)
        return server_side_move(cli, flags, src, dst, origin, running, error);

    /* Copy and delete. In the same project the copy needs a name of its own until the source is gone. */
    gboolean same_project = strcmp(endpoint_project(src), endpoint_project(dst)) == 0;
    gboolean via_temporary = same_project && strcmp(src->instance, dst->instance) == 0;
    g_autofree char *final_name = g_strdup(dst->instance);
    if (via_temporary) {
        g_free(dst->instance);
        /* Short enough for any source name (instance names stop at 63 characters). */
        dst->instance = g_strdup_printf("move-of-%08x%08x", g_random_int(), g_random_int());
    }
    /* Stopped first, as between servers; an ephemeral instance would vanish: it is copied running. */
    gboolean stopped = FALSE;
    if (running && !ferry_json_get_bool(origin, "ephemeral", FALSE)) {
        if (!stop_instance(src->client, src->instance, error)) {
            g_prefix_error(error, "Failed to stop the source instance: ");
            return -1;
        }
        stopped = TRUE;
    }
    if (!local_copy(cli, flags, src, dst, origin, type, TRUE, error)) {
        if (stopped)
            restart_source(src, error);
        return -1;
    }
    if (!delete_instance(src->client, src->instance, error)) {
        g_prefix_error(error, "Failed to delete original instance after copying it: ");
        return -1;
    }
    if (via_temporary) {
        g_autofree char *temporary_path = ferry_api_path("instances", dst->instance, NULL);
        g_autoptr(json_t) rename = json_pack("{s:s}", "name", final_name);
        if (!run_simple(dst->client, "POST", temporary_path, rename, error)) {
            g_prefix_error(error, "Failed to rename the moved instance from \"%s\": ", dst->instance);
            return -1;
        }
        g_free(dst->instance);
        dst->instance = g_steal_pointer(&final_name);
    }
    if (running && !change_state(dst->client, dst->instance, "start", -1, FALSE, error)) {
        g_prefix_error(error, "Failed to start the moved instance: ");
        return -1;
    }
    return 0;
}

/* Two remotes are one server when they are the same remote or the same address. */
static gboolean same_server(Cli *cli, const char *a, const char *b)
{
    if (strcmp(a, b) == 0)
        return TRUE;
    const char *addr_a = ferry_json_get_string(cli_config_remote(cli->config, a), "addr");
    const char *addr_b = ferry_json_get_string(cli_config_remote(cli->config, b), "addr");
    if (addr_a == NULL || addr_b == NULL)
        return FALSE;
    if (g_str_has_prefix(addr_a, "unix:") && g_str_has_prefix(addr_b, "unix:")) {
        g_autofree char *socket_a = cli_unix_socket_path(addr_a);
        g_autofree char *socket_b = cli_unix_socket_path(addr_b);
        return strcmp(socket_a, socket_b) == 0;
    }
    return strcmp(addr_a, addr_b) == 0;
}

static int run_transfer(Cli *cli, int argc, char **argv, gboolean move, GError **error)
{
    g_auto(Flags) flags = {.move = move};
    const CliOption copy_options[] = {
        {"allow-inconsistent", 0, CLI_OPT_BOOL, &flags.allow_inconsistent, NULL,
         "Ignore copy errors for volatile files"},
        {"config", 'c', CLI_OPT_STRV, &flags.config, "KEY=VALUE",
         "Config key/value to apply to the new instance"},
        {"device", 'd', CLI_OPT_STRV, &flags.devices, "DEVICE,KEY=VALUE",
         "New key/value to apply to a specific device"},
        {"ephemeral", 'e', CLI_OPT_BOOL, &flags.ephemeral, NULL, "Ephemeral instance"},
        {"instance-only", 0, CLI_OPT_BOOL, &flags.instance_only, NULL,
         "Copy the instance without its snapshots"},
        {"mode", 0, CLI_OPT_STRING, &flags.mode, "MODE",
         "Transfer mode. One of pull, push or relay (default \"pull\")"},
        {"no-profiles", 0, CLI_OPT_BOOL, &flags.no_profiles, NULL,
         "Create the instance with no profiles applied"},
        {"profile", 'p', CLI_OPT_STRV, &flags.profiles, "PROFILE", "Profile to apply to the new instance"},
        {"refresh", 0, CLI_OPT_BOOL, &flags.refresh, NULL, "Perform an incremental copy"},
        {"refresh-exclude-older", 0, CLI_OPT_BOOL, &flags.refresh_exclude_older, NULL,
         "During incremental copy, exclude source snapshots earlier than latest target snapshot"},
        {"stateless", 0, CLI_OPT_BOOL, &flags.stateless, NULL, "Copy a stateful instance stateless"},
        {"storage", 's', CLI_OPT_STRING, &flags.storage, "POOL", "Storage pool name"},
        {"target", 0, CLI_OPT_STRING, &flags.target, "MEMBER", "Cluster member name"},
        {"target-project", 0, CLI_OPT_STRING, &flags.target_project, "PROJECT",
         "Copy to a project different from the source"},
        {NULL},
    };
    const CliOption move_options[] = {
        {"allow-inconsistent", 0, CLI_OPT_BOOL, &flags.allow_inconsistent, NULL,
         "Ignore copy errors for volatile files"},
        {"config", 'c', CLI_OPT_STRV, &flags.config, "KEY=VALUE",
         "Config key/value to apply to the target instance"},
        {"device", 'd', CLI_OPT_STRV, &flags.devices, "DEVICE,KEY=VALUE",
         "New key/value to apply to a specific device"},
        {"instance-only", 0, CLI_OPT_BOOL, &flags.instance_only, NULL,
         "Move the instance without its snapshots"},
        {"mode", 0, CLI_OPT_STRING, &flags.mode, "MODE",
         "Transfer mode. One of pull, push or relay (default \"pull\")"},
        {"no-profiles", 0, CLI_OPT_BOOL, &flags.no_profiles, NULL,
         "Unset all profiles on the target instance"},
        {"profile", 'p', CLI_OPT_STRV, &flags.profiles, "PROFILE", "Profile to apply to the target instance"},
        {"refresh", 0, CLI_OPT_BOOL, &flags.refresh, NULL,
         "Transfer the instance incrementally, reducing the downtime of a running instance"},
        {"stateless", 0, CLI_OPT_BOOL, &flags.stateless, NULL, "Copy a stateful instance stateless"},
        {"storage", 's', CLI_OPT_STRING, &flags.storage, "POOL", "Storage pool name"},
        {"target", 0, CLI_OPT_STRING, &flags.target, "MEMBER", "Cluster member name"},
        {"target-project", 0, CLI_OPT_STRING, &flags.target_project, "PROJECT",
         "Copy to a project different from the source"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, move ? move_options : copy_options, &args, error))
        return -1;
    /* Incus: a rename needs both names; a move to a pool, project or member may leave the second out. */
    guint min_args =
        move && flags.target == NULL && flags.target_project == NULL && flags.storage == NULL ? 2 : 1;
    if (!cli_check_args(cli, args, min_args, 2, error))
        return -1;

    if (flags.mode == NULL)
        flags.mode = g_strdup("pull");
    if (strcmp(flags.mode, "pull") != 0 && strcmp(flags.mode, "push") != 0 &&
        strcmp(flags.mode, "relay") != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid mode \"%s\": must be one of pull, push, relay", flags.mode);
        return -1;
    }
    if (flags.refresh && flags.no_profiles) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "--no-profiles cannot be used with --refresh");
        return -1;
    }
    if (move && flags.refresh && !flags.stateless) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "--refresh can only be used with --stateless");
        return -1;
    }
    if (flags.refresh_exclude_older && !flags.refresh) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "--refresh-exclude-older can only be used with --refresh");
        return -1;
    }

    g_auto(Endpoint) src = {0};
    g_auto(Endpoint) dst = {0};
    g_autofree char *source_name = NULL;
    g_autofree char *dest_name = NULL;
    const char *dest_arg = args->len > 1 ? g_ptr_array_index(args, 1) : NULL;
    if (!cli_config_parse_remote(cli->config, g_ptr_array_index(args, 0), &src.remote, &source_name, error))
        return -1;
    if (dest_arg != NULL) {
        if (!cli_config_parse_remote(cli->config, dest_arg, &dst.remote, &dest_name, error))
            return -1;
    } else {
        dst.remote = g_strdup(src.remote);
        dest_name = g_strdup("");
    }
    if (*source_name == '\0') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "You must specify a source instance name");
        return -1;
    }
    cli_split_snapshot(source_name, &src.instance, &src.snapshot);
    if (src.snapshot != NULL && flags.instance_only) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "--instance-only can't be passed when the source is a snapshot");
        return -1;
    }
    if (src.snapshot != NULL && flags.refresh) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "--refresh can only be used with instances");
        return -1;
    }

    gboolean one_server = same_server(cli, src.remote, dst.remote);
    gboolean dest_named = *dest_name != '\0';
    gboolean rename =
        move && one_server && flags.target == NULL && flags.storage == NULL && flags.target_project == NULL;

    /* Without a name the target keeps the source's (a copied snapshot becomes an instance of its parent's
     * name), as Incus does when a destination remote is given; a copy without any destination, and a
     * rename, need one. */
    if (!dest_named && !rename && (dest_arg != NULL || move)) {
        g_free(dest_name);
        dest_name = g_strdup(src.instance);
    }
    if (*dest_name == '\0' && !rename) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "You must specify a destination instance name");
        return -1;
    }
    cli_split_snapshot(dest_name, &dst.instance, &dst.snapshot);
    if (!rename && dst.snapshot != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid instance name \"%s\": a copy can't be a snapshot", dest_name);
        return -1;
    }

    src.client = cli_connect(cli, src.remote, error);
    if (src.client == NULL)
        return -1;
    endpoint_hold_context(&src);
    dst.client = cli_connect(cli, dst.remote, error);
    if (dst.client == NULL)
        return -1;
    endpoint_hold_context(&dst);
    if (flags.target_project != NULL)
        ferry_client_set_project(dst.client, flags.target_project);

    if (rename)
        return local_rename(&flags, &src, &dst, dest_named, error);

    if (flags.target != NULL && !(move && one_server)) {
        json_t *server = endpoint_server(&dst, error);
        if (server == NULL)
            return -1;
        if (!ferry_json_get_bool(json_object_get(server, "environment"), "server_clustered", FALSE)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "--target needs a clustered server; \"%s\" is not clustered", dst.remote);
            return -1;
        }
    }

    if (one_server) {
        if (move)
            return local_move(cli, &flags, &src, &dst, error);
        g_autofree char *type = NULL;
        gboolean running = FALSE;
        g_autoptr(json_t) origin = get_origin(&src, &type, &running, error);
        if (origin == NULL)
            return -1;
        if (!local_copy(cli, &flags, &src, &dst, origin, type, flags.refresh, error))
            return -1;
        return 0;
    }
    return transfer_between_servers(cli, &flags, &src, &dst, error);
}

/* The help text of both verbs (Incus's words). */
const char cli_transfer_modes_help[] =
    "Transfer modes (--mode):\n"
    " - pull: Target server pulls the data from the source server (source must listen on network)\n"
    " - push: Source server pushes the data to the target server (target must listen on network)\n"
    " - relay: The CLI connects to both source and server and proxies the data (both source and target must "
    "listen on network)\n"
    "\n"
    "The pull transfer mode is the default as it is compatible with all server versions.";

int cli_cmd_copy(Cli *cli, int argc, char **argv, GError **error)
{
    return run_transfer(cli, argc, argv, FALSE, error);
}

int cli_cmd_move(Cli *cli, int argc, char **argv, GError **error)
{
    return run_transfer(cli, argc, argv, TRUE, error);
}
