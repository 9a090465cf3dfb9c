#include "messages.h"

#include "error.h"
#include "json.h"

#include <string.h>

/* Protobuf documents on control are small; anything bigger is not a migration peer. */
#define MAX_CONTROL_MESSAGE (16 * 1024 * 1024)
#define MAX_JSON_DOCUMENT (64 * 1024 * 1024)

void ferry_received_header_free(FerryReceivedHeader *header)
{
    if (header != NULL)
        migration__migration_header__free_unpacked(header, NULL);
}

gboolean ferry_migration_send_header(FerryWebsocket *control, const Migration__MigrationHeader *header,
                                     GError **error)
{
    gsize size = migration__migration_header__get_packed_size(header);
    g_autofree guint8 *buffer = g_malloc(MAX(size, 1));
    migration__migration_header__pack(header, buffer);
    if (!ferry_websocket_send(control, FERRY_WS_BINARY, buffer, size, error)) {
        g_prefix_error(error, "Failed to send the migration header: ");
        return FALSE;
    }
    return TRUE;
}

static GBytes *receive_binary(FerryWebsocket *control, const char *what, const char *peer, GCancellable *cancellable,
                              GError **error)
{
    FerryWsType type = FERRY_WS_BINARY;
    g_autoptr(GError) local_error = NULL;
    GBytes *message = ferry_websocket_receive(control, &type, cancellable, &local_error);
    if (message == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE, "Lost the connection to %s while waiting for %s: %s",
                    peer, what, local_error->message);
        return NULL;
    }
    if (type != FERRY_WS_BINARY || g_bytes_get_size(message) > MAX_CONTROL_MESSAGE) {
        g_bytes_unref(message);
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Unexpected message from %s while waiting for %s", peer,
                    what);
        return NULL;
    }
    return message;
}

/* A failure report from the peer, if that is what these bytes are. */
static char *peer_failure(GBytes *message)
{
    gsize size = 0;
    const guint8 *data = g_bytes_get_data(message, &size);
    Migration__MigrationControl *control = migration__migration_control__unpack(NULL, size, data);
    if (control == NULL)
        return NULL;
    char *failure = NULL;
    if (!control->success && control->message != NULL && *control->message != '\0')
        failure = g_strdup(control->message);
    migration__migration_control__free_unpacked(control, NULL);
    return failure;
}

FerryReceivedHeader *ferry_migration_receive_header(FerryWebsocket *control, const char *peer,
                                                           GCancellable *cancellable, GError **error)
{
    g_autoptr(GBytes) message = receive_binary(control, "the migration header", peer, cancellable, error);
    if (message == NULL)
        return NULL;
    g_autofree char *failure = peer_failure(message);
    if (failure != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "%s failed: %s", peer, failure);
        return NULL;
    }
    gsize size = 0;
    const guint8 *data = g_bytes_get_data(message, &size);
    Migration__MigrationHeader *header = migration__migration_header__unpack(NULL, size, data);
    if (header == NULL)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid migration header from %s", peer);
    return header;
}

gboolean ferry_migration_send_control(FerryWebsocket *control, gboolean success, const char *message,
                                      GError **error)
{
    Migration__MigrationControl msg = MIGRATION__MIGRATION_CONTROL__INIT;
    msg.success = success;
    msg.message = (char *)(message != NULL ? message : "");
    gsize size = migration__migration_control__get_packed_size(&msg);
    g_autofree guint8 *buffer = g_malloc(MAX(size, 1));
    migration__migration_control__pack(&msg, buffer);
    return ferry_websocket_send(control, FERRY_WS_BINARY, buffer, size, error);
}

gboolean ferry_migration_receive_control(FerryWebsocket *control, const char *peer, GCancellable *cancellable,
                                         GError **error)
{
    g_autoptr(GBytes) message = receive_binary(control, "the migration result", peer, cancellable, error);
    if (message == NULL)
        return FALSE;
    gsize size = 0;
    const guint8 *data = g_bytes_get_data(message, &size);
    Migration__MigrationControl *msg = migration__migration_control__unpack(NULL, size, data);
    if (msg == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid migration result from %s", peer);
        return FALSE;
    }
    gboolean success = msg->success;
    if (!success)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "%s failed: %s", peer,
                    msg->message != NULL && *msg->message != '\0' ? msg->message : "no reason given");
    migration__migration_control__free_unpacked(msg, NULL);
    return success;
}

gboolean ferry_migration_send_json(FerryWebsocket *fs, json_t *value, GError **error)
{
    /* One binary message and a barrier, as Incus writes its index documents (compact, no newline). */
    g_autofree char *text = ferry_json_dump(value);
    return ferry_websocket_write_stream(fs, text, strlen(text), error) && ferry_websocket_send_barrier(fs, error);
}

json_t *ferry_migration_receive_json(FerryWebsocket *fs, GCancellable *cancellable, GError **error)
{
    g_autoptr(GByteArray) document = g_byte_array_new();
    guint8 buffer[16384];
    for (;;) {
        gssize got = ferry_websocket_read_stream(fs, buffer, sizeof(buffer), cancellable, error);
        if (got < 0)
            return NULL;
        if (got == 0)
            break;
        if (document->len + (gsize)got > MAX_JSON_DOCUMENT) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_TOO_LARGE, "Migration index document too large");
            return NULL;
        }
        g_byte_array_append(document, buffer, (guint)got);
    }
    return ferry_json_parse((const char *)document->data, document->len, error);
}

static const struct {
    int id;
    const char *name;
} architectures[] = {
    {1, "i686"}, {2, "x86_64"}, {3, "armv7l"}, {4, "aarch64"}, {5, "ppc"}, {6, "ppc64"}, {7, "ppc64le"},
    {8, "s390x"}, {9, "mips"}, {10, "mips64"}, {11, "riscv32"}, {12, "riscv64"},
};

int ferry_migration_architecture_id(const char *name)
{
    for (gsize i = 0; i < G_N_ELEMENTS(architectures); i++) {
        if (name != NULL && g_str_equal(architectures[i].name, name))
            return architectures[i].id;
    }
    return 0;
}

const char *ferry_migration_architecture_name(int id)
{
    for (gsize i = 0; i < G_N_ELEMENTS(architectures); i++) {
        if (architectures[i].id == id)
            return architectures[i].name;
    }
    return "x86_64";
}
