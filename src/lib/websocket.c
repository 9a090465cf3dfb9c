#include "websocket.h"

#include "error.h"
#include "json.h"
#include "tls_cert.h"
#include "tls_trust.h"
#include "ws_frame.h"

#include <errno.h>
#include <ferry-config.h>
#include <libsoup/soup.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

/* Reads from the stream go through a buffer this size; payload is handed out (and unmasked) in place. */
#define READ_BUFFER_SIZE (256 * 1024)
/* Frame bytes are gathered up to this size before a write; larger unmasked payloads are written directly. */
#define WRITE_BUFFER_SIZE (256 * 1024)
/* Relayed messages are forwarded in fragments of at most this size. */
#define RELAY_FRAGMENT_SIZE (256 * 1024)
/* Reads from and writes to file descriptors, and the binary messages pump_from_fd sends. */
#define PUMP_BUFFER_SIZE (128 * 1024)
#define DIAL_TIMEOUT_SECONDS 10
#define CLOSE_WAIT_SECONDS 5
#define MAX_RESPONSE_HEADER (16 * 1024)
#define MAX_ERROR_BODY (64 * 1024)
#define MASK_POOL_SIZE 256
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#define OPCODE_CONTINUATION 0x0
#define OPCODE_TEXT 0x1
#define OPCODE_BINARY 0x2
#define OPCODE_CLOSE 0x8
#define OPCODE_PING 0x9
#define OPCODE_PONG 0xa

struct _FerryWebsocket {
    GIOStream *stream;
    GInputStream *input;
    GOutputStream *output;
    GSocket *socket; /* the TCP socket underneath, when there is one */
    gboolean is_client;
    GCancellable *cancellable; /* every I/O uses it; cancelled by abort */
    GPollFD cancel_fd;         /* of cancellable, kept for the websocket's life */
    gboolean have_cancel_fd;
    gint aborted;             /* atomic */
    gint cancelled_by_caller; /* atomic: the abort came from a caller's GCancellable */
    gboolean stream_closed;

    /* Receiving side, all under recv_lock. Pieces of payload are handed out as pointers into rbuf, which stay
     * valid until the next read, which only happens once they are used up. */
    GMutex recv_lock;
    FerryWsFrameHeader rx_header; /* of the frame being read */
    gboolean rx_in_frame;
    guint64 rx_offset; /* payload bytes of that frame read so far */
    guint8 *rbuf;
    gsize rbuf_pos, rbuf_len;
    GError *read_error; /* set by the recv callback */
    gboolean read_eof;
    GError *recv_failed; /* sticky */
    guint8 frame_opcode;
    gboolean frame_fin;
    guint64 frame_length, frame_read;
    guint8 msg_opcode;     /* of the data message being received, 0 between messages */
    const guint8 *pending; /* payload read_stream has not handed out yet */
    gsize pending_len;
    guint8 control[125];
    gsize control_len;
    gsize max_message;
    gint close_code; /* atomic: of the close frame received, 0 before */

    /* Sending side. msg_lock is held for a whole data message (several frames only when relaying),
     * frame_lock for one frame; a pong needs frame_lock only and may go between fragments. */
    GMutex msg_lock;
    GMutex frame_lock;
    guint8 *wbuf;
    gsize wbuf_len;
    GError *write_error; /* set by the send callback */
    GError *send_failed; /* sticky */
    gboolean close_sent;
    guint8 mask_pool[MASK_POOL_SIZE];
    gsize mask_pos;
    guint64 limit_rate;
    gint64 limit_next; /* monotonic time before which the next paced piece may not start */

    /* A pong owed to the peer, sent by whoever holds or next takes frame_lock. */
    GMutex pong_lock;
    gint pong_pending; /* atomic */
    guint8 pong[125];
    gsize pong_len;
};

/* Where a receive is at: a piece of a data message. */
typedef struct {
    const guint8 *data;
    gsize length;
    guint8 opcode;        /* the message's: OPCODE_TEXT or OPCODE_BINARY */
    gboolean msg_start;   /* first piece of the message */
    gboolean frame_start; /* first piece of its frame */
    gboolean frame_end;
    gboolean msg_end;
    guint64 frame_length;
} Chunk;

/* ---- errors ---- */

static void set_aborted_error(FerryWebsocket *ws, GError **error)
{
    if (g_atomic_int_get(&ws->cancelled_by_caller))
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "Websocket transfer cancelled");
    else
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "Websocket aborted");
}

static void set_io_error(FerryWebsocket *ws, const char *what, const GError *cause, GError **error)
{
    if (g_atomic_int_get(&ws->aborted))
        set_aborted_error(ws, error);
    else
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Websocket %s failed: %s", what,
                    cause->message);
}

static gboolean fail_recv(FerryWebsocket *ws, GError *cause, GError **error)
{
    if (ws->recv_failed == NULL)
        ws->recv_failed = g_error_copy(cause);
    g_propagate_error(error, cause);
    return FALSE;
}

static gboolean fail_send(FerryWebsocket *ws, GError *cause, GError **error)
{
    if (ws->send_failed == NULL)
        ws->send_failed = g_error_copy(cause);
    g_propagate_error(error, cause);
    return FALSE;
}

static gboolean protocol_error(FerryWebsocket *ws, GError **error, const char *format, ...)
    G_GNUC_PRINTF(3, 4);

static gboolean protocol_error(FerryWebsocket *ws, GError **error, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    g_autofree char *detail = g_strdup_vprintf(format, args);
    va_end(args);
    return fail_recv(
        ws, g_error_new(FERRY_ERROR, FERRY_ERROR_INVALID, "Websocket protocol error: %s", detail), error);
}

/* ---- frames on the stream ---- */

/* Read more of the stream into rbuf after what it holds. FALSE at an error (read_error) or the end (read_eof). */
static gboolean read_more(FerryWebsocket *ws)
{
    if (ws->read_error != NULL || ws->read_eof)
        return FALSE;
    if (ws->rbuf_pos == ws->rbuf_len)
        ws->rbuf_pos = ws->rbuf_len = 0;
    gssize n = g_input_stream_read(ws->input, ws->rbuf + ws->rbuf_len, READ_BUFFER_SIZE - ws->rbuf_len,
                                   ws->cancellable, &ws->read_error);
    if (n < 0)
        return FALSE;
    if (n == 0) {
        ws->read_eof = TRUE;
        return FALSE;
    }
    ws->rbuf_len += (gsize)n;
    return TRUE;
}

typedef enum { PIECE_OK, PIECE_WANT_READ, PIECE_PROTO } PieceStatus;

/* A piece of a frame's payload (empty for an empty frame); the frame's header is in ws->rx_header. */
typedef struct {
    const guint8 *data;
    gsize length;
} Piece;

static PieceStatus next_piece(FerryWebsocket *ws, Piece *piece)
{
    if (!ws->rx_in_frame) {
        for (;;) {
            gsize header_length = 0;
            FerryWsHeaderStatus status = ferry_ws_frame_decode_header(
                ws->rbuf + ws->rbuf_pos, ws->rbuf_len - ws->rbuf_pos, &ws->rx_header, &header_length);
            if (status == FERRY_WS_HEADER_INVALID)
                return PIECE_PROTO;
            if (status == FERRY_WS_HEADER_OK) {
                ws->rbuf_pos += header_length;
                break;
            }
            /* A header split across reads: keep its start and read the rest behind it. */
            if (ws->rbuf_pos > 0) {
                memmove(ws->rbuf, ws->rbuf + ws->rbuf_pos, ws->rbuf_len - ws->rbuf_pos);
                ws->rbuf_len -= ws->rbuf_pos;
                ws->rbuf_pos = 0;
            }
            if (!read_more(ws))
                return PIECE_WANT_READ;
        }
        ws->rx_in_frame = TRUE;
        ws->rx_offset = 0;
    }
    guint64 remaining = ws->rx_header.length - ws->rx_offset;
    if (remaining > 0 && ws->rbuf_pos == ws->rbuf_len && !read_more(ws))
        return PIECE_WANT_READ;
    gsize n = (gsize)MIN(remaining, ws->rbuf_len - ws->rbuf_pos);
    piece->data = ws->rbuf + ws->rbuf_pos;
    piece->length = n;
    if (ws->rx_header.masked)
        ferry_ws_frame_mask(ws->rbuf + ws->rbuf_pos, n, ws->rx_header.mask, ws->rx_offset);
    ws->rbuf_pos += n;
    ws->rx_offset += n;
    return PIECE_OK;
}

static gboolean flush_wbuf(FerryWebsocket *ws)
{
    if (ws->wbuf_len == 0)
        return TRUE;
    gsize len = ws->wbuf_len;
    ws->wbuf_len = 0;
    return g_output_stream_write_all(ws->output, ws->wbuf, len, NULL, ws->cancellable, &ws->write_error);
}

/* Queue bytes for the stream, masked with mask from offset on when mask is not NULL (a client's payload).
 * Unmasked data too large for the buffer goes out directly. FALSE at a write error (write_error). */
static gboolean put_bytes(FerryWebsocket *ws, const guint8 *data, gsize length, const guint8 *mask,
                          guint64 offset)
{
    while (length > 0) {
        if (mask == NULL && ws->wbuf_len == 0 && length >= WRITE_BUFFER_SIZE)
            return g_output_stream_write_all(ws->output, data, length, NULL, ws->cancellable, &ws->write_error);
        gsize n = MIN(length, WRITE_BUFFER_SIZE - ws->wbuf_len);
        if (mask != NULL)
            ferry_ws_frame_mask_copy(ws->wbuf + ws->wbuf_len, data, n, mask, offset);
        else
            memcpy(ws->wbuf + ws->wbuf_len, data, n);
        ws->wbuf_len += n;
        data += n;
        length -= n;
        offset += n;
        if (ws->wbuf_len == WRITE_BUFFER_SIZE && !flush_wbuf(ws))
            return FALSE;
    }
    return TRUE;
}

/* A client's masking key: unpredictable, from a pool refilled by getrandom. */
static gboolean next_mask(FerryWebsocket *ws, guint8 mask[4])
{
    if (ws->mask_pos + 4 > MASK_POOL_SIZE) {
        if (getrandom(ws->mask_pool, MASK_POOL_SIZE, 0) != MASK_POOL_SIZE)
            return FALSE;
        ws->mask_pos = 0;
    }
    memcpy(mask, ws->mask_pool + ws->mask_pos, 4);
    ws->mask_pos += 4;
    return TRUE;
}

/* ---- life cycle ---- */

/* The GSocket under a GSocketConnection, a TLS connection or libsoup's SoupIOStream ("base-iostream"). */
static GSocket *find_socket(GIOStream *stream)
{
    GObject *object = G_OBJECT(stream);
    for (int depth = 0; object != NULL && depth < 8; depth++) {
        if (G_IS_SOCKET_CONNECTION(object))
            return g_object_ref(g_socket_connection_get_socket(G_SOCKET_CONNECTION(object)));
        const char *property = NULL;
        if (g_object_class_find_property(G_OBJECT_GET_CLASS(object), "base-io-stream") != NULL)
            property = "base-io-stream";
        else if (g_object_class_find_property(G_OBJECT_GET_CLASS(object), "base-iostream") != NULL)
            property = "base-iostream";
        if (property == NULL)
            return NULL;
        GParamSpec *spec = g_object_class_find_property(G_OBJECT_GET_CLASS(object), property);
        if (!(spec->flags & G_PARAM_READABLE) || !g_type_is_a(spec->value_type, G_TYPE_IO_STREAM))
            return NULL;
        GObject *base = NULL;
        g_object_get(object, property, &base, NULL);
        if (base == NULL)
            return NULL;
        /* The base lives as long as the stream holding it. */
        g_object_unref(base);
        object = base;
    }
    return NULL;
}

static void tune_socket(GSocket *socket)
{
    /* No read timeout on any kind of socket: a data channel may sit idle while the other side works. */
    g_socket_set_timeout(socket, 0);
    GSocketFamily family = g_socket_get_family(socket);
    if (family != G_SOCKET_FAMILY_IPV4 && family != G_SOCKET_FAMILY_IPV6)
        return;
    g_socket_set_option(socket, IPPROTO_TCP, TCP_NODELAY, 1, NULL);
    /* Notice a peer that vanished while the channel sits idle (the other side can work for a long time). */
    g_socket_set_keepalive(socket, TRUE);
    g_socket_set_option(socket, IPPROTO_TCP, TCP_KEEPIDLE, 60, NULL);
    g_socket_set_option(socket, IPPROTO_TCP, TCP_KEEPINTVL, 15, NULL);
    g_socket_set_option(socket, IPPROTO_TCP, TCP_KEEPCNT, 8, NULL);
    g_socket_set_timeout(socket, 0);
}

FerryWebsocket *ferry_websocket_new(GIOStream *stream, gboolean is_client)
{
    g_return_val_if_fail(G_IS_IO_STREAM(stream), NULL);

    FerryWebsocket *ws = g_new0(FerryWebsocket, 1);
    ws->stream = g_object_ref(stream);
    ws->input = g_io_stream_get_input_stream(stream);
    ws->output = g_io_stream_get_output_stream(stream);
    ws->socket = find_socket(stream);
    if (ws->socket != NULL)
        tune_socket(ws->socket);
    ws->is_client = is_client;
    ws->cancellable = g_cancellable_new();
    /* Held for good: GIO's blocking waits then reuse this fd instead of making one per wait. */
    ws->have_cancel_fd = g_cancellable_make_pollfd(ws->cancellable, &ws->cancel_fd);
    g_mutex_init(&ws->recv_lock);
    g_mutex_init(&ws->msg_lock);
    g_mutex_init(&ws->frame_lock);
    g_mutex_init(&ws->pong_lock);
    ws->rbuf = g_malloc(READ_BUFFER_SIZE);
    ws->wbuf = g_malloc(WRITE_BUFFER_SIZE);
    ws->mask_pos = MASK_POOL_SIZE;
    ws->max_message = FERRY_WS_DEFAULT_MAX_MESSAGE;
    return ws;
}

static void shutdown_socket(FerryWebsocket *ws)
{
    /* shutdown(2) rather than g_socket_shutdown: other threads may be inside the GSocket. */
    if (ws->socket != NULL)
        shutdown(g_socket_get_fd(ws->socket), SHUT_RDWR);
}

void ferry_websocket_abort(FerryWebsocket *ws)
{
    g_return_if_fail(ws != NULL);
    g_atomic_int_set(&ws->aborted, 1);
    g_cancellable_cancel(ws->cancellable);
    shutdown_socket(ws);
}

void ferry_websocket_free(FerryWebsocket *ws)
{
    if (ws == NULL)
        return;
    if (!ws->stream_closed) {
        /* No close handshake: do not let a TLS close_notify wait on a peer that does not read. */
        shutdown_socket(ws);
        g_io_stream_close(ws->stream, NULL, NULL);
    }
    g_clear_error(&ws->read_error);
    g_clear_error(&ws->recv_failed);
    g_clear_error(&ws->write_error);
    g_clear_error(&ws->send_failed);
    g_free(ws->rbuf);
    g_free(ws->wbuf);
    g_mutex_clear(&ws->recv_lock);
    g_mutex_clear(&ws->msg_lock);
    g_mutex_clear(&ws->frame_lock);
    g_mutex_clear(&ws->pong_lock);
    if (ws->have_cancel_fd)
        g_cancellable_release_fd(ws->cancellable);
    g_clear_object(&ws->cancellable);
    g_clear_object(&ws->socket);
    g_clear_object(&ws->stream);
    g_free(ws);
}

guint16 ferry_websocket_get_close_code(FerryWebsocket *ws)
{
    return (guint16)g_atomic_int_get(&ws->close_code);
}

void ferry_websocket_set_max_message(FerryWebsocket *ws, gsize max_bytes)
{
    g_mutex_lock(&ws->recv_lock);
    ws->max_message = MIN(max_bytes, G_MAXUINT); /* a GByteArray's bound */
    g_mutex_unlock(&ws->recv_lock);
}

void ferry_websocket_set_send_limit(FerryWebsocket *ws, guint64 bytes_per_second)
{
    g_mutex_lock(&ws->frame_lock);
    ws->limit_rate = bytes_per_second;
    ws->limit_next = 0;
    g_mutex_unlock(&ws->frame_lock);
}

/* A caller's GCancellable aborts the websocket for the duration of a call. */
static void on_caller_cancelled(GCancellable *cancellable, gpointer user_data)
{
    FerryWebsocket *ws = user_data;
    g_atomic_int_set(&ws->cancelled_by_caller, 1);
    ferry_websocket_abort(ws);
}

static gulong link_cancellable(FerryWebsocket *ws, GCancellable *cancellable)
{
    if (cancellable == NULL)
        return 0;
    return g_cancellable_connect(cancellable, G_CALLBACK(on_caller_cancelled), ws, NULL);
}

static void unlink_cancellable(GCancellable *cancellable, gulong id)
{
    if (cancellable != NULL)
        g_cancellable_disconnect(cancellable, id);
}

/* ---- sending ---- */

/* Sleep until the send limit lets the next piece go; FALSE if aborted meanwhile. */
static gboolean pace(FerryWebsocket *ws, gsize bytes)
{
    gint64 now = g_get_monotonic_time();
    gint64 start = MAX(now, ws->limit_next);
    while (start > now) {
        if (ws->have_cancel_fd) {
            GPollFD pfd = ws->cancel_fd;
            g_poll(&pfd, 1, (gint)((start - now + 999) / 1000));
        } else {
            g_usleep((gulong)(start - now));
        }
        if (g_cancellable_is_cancelled(ws->cancellable))
            return FALSE;
        now = g_get_monotonic_time();
    }
    ws->limit_next = start + (gint64)((guint64)bytes * G_USEC_PER_SEC / ws->limit_rate);
    return TRUE;
}

/* One frame; frame_lock held. Payload counts against the send limit when paced. */
static gboolean send_frame_locked(FerryWebsocket *ws, guint8 opcode, gboolean fin, const guint8 *data,
                                  gsize length, gboolean paced, GError **error)
{
    if (ws->send_failed != NULL) {
        g_propagate_error(error, g_error_copy(ws->send_failed));
        return FALSE;
    }
    if (g_atomic_int_get(&ws->aborted)) {
        GError *cause = NULL;
        set_aborted_error(ws, &cause);
        return fail_send(ws, cause, error);
    }
    if (ws->close_sent) {
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_CLOSED, "Websocket is closed");
        return FALSE;
    }

    guint8 mask[4];
    if (ws->is_client && !next_mask(ws, mask))
        return fail_send(ws, g_error_new(FERRY_ERROR, FERRY_ERROR_INTERNAL, "No random bytes for a frame mask"),
                         error);
    guint8 header[FERRY_WS_MAX_HEADER];
    gsize header_length = ferry_ws_frame_encode_header(header, fin, opcode, length, ws->is_client ? mask : NULL);
    gboolean ok = put_bytes(ws, header, header_length, NULL, 0);
    /* Pieces small enough for the pacing to be smooth (20 per second), at least 1 KiB. */
    gsize piece = length;
    if (paced && ws->limit_rate > 0)
        piece = (gsize)CLAMP(ws->limit_rate / 20, 1024, WRITE_BUFFER_SIZE);
    for (gsize offset = 0; ok && offset < length;) {
        gsize n = MIN(piece, length - offset);
        if (paced && ws->limit_rate > 0 && !pace(ws, n)) {
            GError *cause = NULL;
            set_aborted_error(ws, &cause);
            return fail_send(ws, cause, error);
        }
        ok = put_bytes(ws, data + offset, n, ws->is_client ? mask : NULL, offset);
        offset += n;
    }
    if (!ok) {
        GError *cause = NULL;
        set_io_error(ws, "write", ws->write_error, &cause);
        return fail_send(ws, cause, error);
    }

    if (!flush_wbuf(ws) || !g_output_stream_flush(ws->output, ws->cancellable, &ws->write_error)) {
        GError *cause = NULL;
        set_io_error(ws, "write", ws->write_error, &cause);
        return fail_send(ws, cause, error);
    }
    return TRUE;
}

static void send_pending_pong_locked(FerryWebsocket *ws)
{
    if (!g_atomic_int_get(&ws->pong_pending))
        return;
    guint8 payload[125];
    g_mutex_lock(&ws->pong_lock);
    gsize len = ws->pong_len;
    memcpy(payload, ws->pong, len);
    g_atomic_int_set(&ws->pong_pending, 0);
    g_mutex_unlock(&ws->pong_lock);
    /* A failure here shows on the next send or receive; a pong after our close frame is not allowed. */
    if (!ws->close_sent)
        send_frame_locked(ws, OPCODE_PONG, TRUE, payload, len, FALSE, NULL);
}

static void frame_unlock(FerryWebsocket *ws)
{
    /* A pong queued while we held the lock is ours to send; look again after unlocking, in case it was
     * queued just as we let go (its owner's trylock failed against us). */
    for (;;) {
        send_pending_pong_locked(ws);
        g_mutex_unlock(&ws->frame_lock);
        if (!g_atomic_int_get(&ws->pong_pending) || !g_mutex_trylock(&ws->frame_lock))
            return;
    }
}

static void queue_pong(FerryWebsocket *ws, const guint8 *payload, gsize len)
{
    g_mutex_lock(&ws->pong_lock);
    memcpy(ws->pong, payload, len);
    ws->pong_len = len;
    g_atomic_int_set(&ws->pong_pending, 1);
    g_mutex_unlock(&ws->pong_lock);
    /* The receiver never waits for a send in progress: the pong then follows that frame. */
    if (g_mutex_trylock(&ws->frame_lock))
        frame_unlock(ws);
}

static gboolean send_close_frame(FerryWebsocket *ws, guint16 code, const char *reason, GError **error)
{
    guint8 payload[125];
    gsize len = 0;
    if (code != 0 && code != 1005) {
        payload[0] = (guint8)(code >> 8);
        payload[1] = (guint8)(code & 0xff);
        len = 2;
        if (reason != NULL) {
            gsize room = sizeof payload - 2;
            gsize reason_len = strlen(reason);
            /* Cut at a character boundary: a close reason must be valid UTF-8. */
            if (reason_len > room)
                reason_len = (gsize)(g_utf8_find_prev_char(reason, reason + room + 1) - reason);
            memcpy(payload + 2, reason, reason_len);
            len += reason_len;
        }
    }
    g_mutex_lock(&ws->frame_lock);
    gboolean ok = TRUE;
    if (!ws->close_sent) {
        ok = send_frame_locked(ws, OPCODE_CLOSE, TRUE, payload, len, FALSE, error);
        ws->close_sent = TRUE;
    }
    frame_unlock(ws);
    return ok;
}

gboolean ferry_websocket_send(FerryWebsocket *ws, FerryWsType type, const void *data, gsize length,
                              GError **error)
{
    g_return_val_if_fail(ws != NULL, FALSE);
    g_return_val_if_fail(type == FERRY_WS_TEXT || type == FERRY_WS_BINARY, FALSE);
    g_return_val_if_fail(data != NULL || length == 0, FALSE);
    static const guint8 nothing[1];
    if (data == NULL)
        data = nothing;

    g_mutex_lock(&ws->msg_lock);
    g_mutex_lock(&ws->frame_lock);
    gboolean ok = send_frame_locked(ws, (guint8)type, TRUE, data, length, TRUE, error);
    frame_unlock(ws);
    g_mutex_unlock(&ws->msg_lock);
    return ok;
}

gboolean ferry_websocket_send_barrier(FerryWebsocket *ws, GError **error)
{
    return ferry_websocket_send(ws, FERRY_WS_TEXT, "", 0, error);
}

gboolean ferry_websocket_write_stream(FerryWebsocket *ws, const void *data, gsize length, GError **error)
{
    if (length == 0)
        return TRUE;
    return ferry_websocket_send(ws, FERRY_WS_BINARY, data, length, error);
}

/* ---- receiving ---- */

static gboolean handle_control(FerryWebsocket *ws, GError **error)
{
    switch (ws->frame_opcode) {
    case OPCODE_PING:
        queue_pong(ws, ws->control, ws->control_len);
        return TRUE;
    case OPCODE_PONG:
        return TRUE;
    case OPCODE_CLOSE:
        break;
    default:
        g_assert_not_reached();
    }

    if (ws->control_len == 1)
        return protocol_error(ws, error, "close frame with a 1-byte payload");
    guint16 code = 1005; /* no status code present */
    if (ws->control_len >= 2)
        code = (guint16)(ws->control[0] << 8 | ws->control[1]);
    g_autofree char *reason = g_strndup((const char *)ws->control + MIN(ws->control_len, 2),
                                        ws->control_len - MIN(ws->control_len, 2));
    g_atomic_int_set(&ws->close_code, code);
    /* Answer with the same code, as gorilla does. A failure to answer changes nothing for the caller. */
    send_close_frame(ws, code, NULL, NULL);

    g_autofree char *valid_reason = g_utf8_make_valid(reason, -1);
    GError *closed = g_error_new(G_IO_ERROR, G_IO_ERROR_CLOSED, "Websocket closed by peer (code %u%s%s)",
                                 code, *valid_reason != '\0' ? ": " : "", valid_reason);
    return fail_recv(ws, closed, error);
}

/* The next piece of a data message; control frames are dealt with on the way. recv_lock held. */
static gboolean recv_chunk(FerryWebsocket *ws, Chunk *chunk, GError **error)
{
    if (ws->recv_failed != NULL) {
        g_propagate_error(error, g_error_copy(ws->recv_failed));
        return FALSE;
    }
    for (;;) {
        gboolean frame_start = !ws->rx_in_frame;
        Piece piece = {0};
        PieceStatus r = next_piece(ws, &piece);
        if (r == PIECE_WANT_READ) {
            if (ws->read_error != NULL) {
                GError *cause = NULL;
                set_io_error(ws, "read", ws->read_error, &cause);
                return fail_recv(ws, cause, error);
            }
            GError *cause = NULL;
            if (g_atomic_int_get(&ws->aborted))
                set_aborted_error(ws, &cause);
            else
                cause = g_error_new_literal(FERRY_ERROR, FERRY_ERROR_INTERNAL,
                                            "Websocket connection lost (closed without a close frame)");
            return fail_recv(ws, cause, error);
        }
        if (r == PIECE_PROTO)
            return protocol_error(ws, error, "bad frame header");
        const FerryWsFrameHeader *iocb = &ws->rx_header;
        if (frame_start) {
            if (iocb->rsv != 0)
                return protocol_error(ws, error, "reserved bits set without an extension");
            if (iocb->masked != !ws->is_client)
                return protocol_error(ws, error, "%s",
                                      ws->is_client ? "masked frame from a server"
                                                    : "unmasked frame from a client");
            switch (iocb->opcode) {
            case OPCODE_CONTINUATION:
                if (ws->msg_opcode == 0)
                    return protocol_error(ws, error, "continuation frame outside a message");
                break;
            case OPCODE_TEXT:
            case OPCODE_BINARY:
                if (ws->msg_opcode != 0)
                    return protocol_error(ws, error, "new message inside a fragmented one");
                break;
            case OPCODE_CLOSE:
            case OPCODE_PING:
            case OPCODE_PONG:
                break;
            default:
                return protocol_error(ws, error, "unknown opcode %u", iocb->opcode);
            }
            ws->frame_opcode = iocb->opcode;
            ws->frame_fin = iocb->fin;
            ws->frame_length = iocb->length;
            ws->frame_read = 0;
            ws->control_len = 0;
        }
        ws->frame_read += piece.length;
        gboolean frame_end = ws->frame_read == ws->frame_length;
        if (frame_end)
            ws->rx_in_frame = FALSE;

        if (ws->frame_opcode & 0x8) {
            /* Control frames are at most 125 bytes (the header check refuses longer ones). */
            memcpy(ws->control + ws->control_len, piece.data, piece.length);
            ws->control_len += piece.length;
            if (frame_end && !handle_control(ws, error))
                return FALSE;
            continue;
        }

        chunk->msg_start = frame_start && ws->frame_opcode != OPCODE_CONTINUATION;
        if (chunk->msg_start)
            ws->msg_opcode = ws->frame_opcode;
        chunk->opcode = ws->msg_opcode;
        chunk->data = piece.data;
        chunk->length = piece.length;
        chunk->frame_start = frame_start;
        chunk->frame_end = frame_end;
        chunk->frame_length = ws->frame_length;
        chunk->msg_end = frame_end && ws->frame_fin;
        if (chunk->msg_end)
            ws->msg_opcode = 0;
        return TRUE;
    }
}

static void too_large(FerryWebsocket *ws, GError **error)
{
    fail_recv(ws,
              g_error_new(FERRY_ERROR, FERRY_ERROR_TOO_LARGE,
                          "Websocket message larger than %" G_GSIZE_FORMAT " bytes", ws->max_message),
              error);
}

static GBytes *receive_locked(FerryWebsocket *ws, FerryWsType *type_out, GError **error)
{
    g_autoptr(GByteArray) buffer = NULL;
    guint8 type = 0;
    gboolean done = FALSE;

    if (ws->pending_len > 0 || ws->msg_opcode != 0) {
        /* The rest of a binary message read_stream began. */
        type = OPCODE_BINARY;
        buffer = g_byte_array_new();
        g_byte_array_append(buffer, ws->pending, (guint)ws->pending_len);
        ws->pending_len = 0;
        done = ws->msg_opcode == 0;
    }
    while (!done) {
        Chunk chunk;
        if (!recv_chunk(ws, &chunk, error))
            return NULL;
        if (chunk.msg_start)
            type = chunk.opcode;
        if (chunk.frame_start) {
            /* Refuse on the header's length, before reading the payload. */
            gsize have = buffer != NULL ? buffer->len : 0;
            if (have > ws->max_message || chunk.frame_length > ws->max_message - have) {
                too_large(ws, error);
                return NULL;
            }
            if (buffer == NULL) {
                buffer = g_byte_array_sized_new((guint)chunk.frame_length);
            } else {
                /* Room for the whole frame at once (GByteArrays do not clear what they add). */
                g_byte_array_set_size(buffer, (guint)(have + chunk.frame_length));
                g_byte_array_set_size(buffer, (guint)have);
            }
        }
        g_byte_array_append(buffer, chunk.data, (guint)chunk.length);
        done = chunk.msg_end;
    }
    if (type_out != NULL)
        *type_out = type == OPCODE_TEXT ? FERRY_WS_TEXT : FERRY_WS_BINARY;
    return g_byte_array_free_to_bytes(g_steal_pointer(&buffer));
}

GBytes *ferry_websocket_receive(FerryWebsocket *ws, FerryWsType *type_out, GCancellable *cancellable,
                                GError **error)
{
    g_return_val_if_fail(ws != NULL, NULL);

    g_mutex_lock(&ws->recv_lock);
    gulong id = link_cancellable(ws, cancellable);
    GBytes *bytes = receive_locked(ws, type_out, error);
    unlink_cancellable(cancellable, id);
    g_mutex_unlock(&ws->recv_lock);
    return bytes;
}

/* The end of a sub-stream: a close with code 1000 reads as EOF, as in Incus's wrapper. */
static gboolean is_normal_close(FerryWebsocket *ws, const GError *error)
{
    return g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CLOSED) &&
           g_atomic_int_get(&ws->close_code) == FERRY_WS_CLOSE_NORMAL;
}

/* The next piece of the current sub-stream (what read_stream left first); FALSE at its end (*end set) or
 * on error. The caller takes what it uses from ws->pending. recv_lock held. */
static gboolean next_stream_piece(FerryWebsocket *ws, const guint8 **data, gsize *length, gboolean *end,
                                  GError **error)
{
    *end = FALSE;
    while (ws->pending_len == 0) {
        Chunk chunk;
        GError *local_error = NULL;
        if (!recv_chunk(ws, &chunk, &local_error)) {
            if (is_normal_close(ws, local_error)) {
                g_error_free(local_error);
                *end = TRUE;
                return FALSE;
            }
            g_propagate_error(error, local_error);
            return FALSE;
        }
        if (chunk.opcode == OPCODE_TEXT) {
            /* The barrier; a text message with content would end the stream all the same. */
            while (!chunk.msg_end) {
                if (!recv_chunk(ws, &chunk, error))
                    return FALSE;
            }
            *end = TRUE;
            return FALSE;
        }
        ws->pending = chunk.data;
        ws->pending_len = chunk.length;
    }
    *data = ws->pending;
    *length = ws->pending_len;
    return TRUE;
}

gssize ferry_websocket_read_stream(FerryWebsocket *ws, void *buffer, gsize size, GCancellable *cancellable,
                                   GError **error)
{
    g_return_val_if_fail(ws != NULL, -1);
    if (size == 0)
        return 0;

    g_mutex_lock(&ws->recv_lock);
    gulong id = link_cancellable(ws, cancellable);
    const guint8 *data = NULL;
    gsize length = 0;
    gboolean end = FALSE;
    gssize result = 0;
    if (next_stream_piece(ws, &data, &length, &end, error)) {
        gsize n = MIN(size, length);
        memcpy(buffer, data, n);
        ws->pending += n;
        ws->pending_len -= n;
        result = (gssize)n;
    } else if (!end) {
        result = -1;
    }
    unlink_cancellable(cancellable, id);
    g_mutex_unlock(&ws->recv_lock);
    return result;
}

/* ---- pumps ---- */

/* Wait until fd is ready for events or the websocket is aborted; FALSE (error set) on abort. */
static gboolean wait_fd(FerryWebsocket *ws, int fd, short events, GError **error)
{
    GPollFD fds[2] = {{.fd = fd, .events = events}};
    int n = 1;
    if (ws->have_cancel_fd)
        fds[n++] = ws->cancel_fd;
    for (;;) {
        int r = g_poll(fds, n, -1);
        if (r >= 0 || errno != EINTR)
            break;
    }
    if (g_cancellable_is_cancelled(ws->cancellable)) {
        set_aborted_error(ws, error);
        return FALSE;
    }
    return TRUE;
}

static gboolean write_fd_all(FerryWebsocket *ws, int fd, const guint8 *data, gsize length, GError **error)
{
    while (length > 0) {
        if (!wait_fd(ws, fd, G_IO_OUT, error))
            return FALSE;
        ssize_t n = write(fd, data, length);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            ferry_set_error_errno(error, errno, "Failed to write websocket data to file descriptor %d", fd);
            return FALSE;
        }
        data += n;
        length -= (gsize)n;
    }
    return TRUE;
}

gboolean ferry_websocket_pump_from_fd(FerryWebsocket *ws, int fd, gboolean send_barrier_at_eof,
                                      FerryBytesFunc progress, gpointer user_data, guint64 *bytes_out,
                                      GCancellable *cancellable, GError **error)
{
    g_return_val_if_fail(ws != NULL, FALSE);

    gulong id = link_cancellable(ws, cancellable);
    g_autofree guint8 *buffer = g_malloc(PUMP_BUFFER_SIZE);
    guint64 total = 0;
    gboolean ok = TRUE;
    for (;;) {
        if (!wait_fd(ws, fd, G_IO_IN, error)) {
            ok = FALSE;
            break;
        }
        ssize_t n = read(fd, buffer, PUMP_BUFFER_SIZE);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            ferry_set_error_errno(error, errno, "Failed to read file descriptor %d for the websocket", fd);
            ok = FALSE;
            break;
        }
        if (n == 0)
            break;
        if (!ferry_websocket_send(ws, FERRY_WS_BINARY, buffer, (gsize)n, error)) {
            ok = FALSE;
            break;
        }
        total += (guint64)n;
        if (progress != NULL)
            progress(total, user_data);
    }
    if (ok && send_barrier_at_eof)
        ok = ferry_websocket_send_barrier(ws, error);
    unlink_cancellable(cancellable, id);
    if (bytes_out != NULL)
        *bytes_out = total;
    return ok;
}

gboolean ferry_websocket_pump_to_fd(FerryWebsocket *ws, int fd, FerryBytesFunc progress, gpointer user_data,
                                    guint64 *bytes_out, GCancellable *cancellable, GError **error)
{
    g_return_val_if_fail(ws != NULL, FALSE);

    g_mutex_lock(&ws->recv_lock);
    gulong id = link_cancellable(ws, cancellable);
    guint64 total = 0;
    gboolean ok = TRUE;
    for (;;) {
        const guint8 *data;
        gsize length;
        gboolean end;
        if (!next_stream_piece(ws, &data, &length, &end, error)) {
            ok = end;
            break;
        }
        ws->pending_len = 0;
        if (!write_fd_all(ws, fd, data, length, error)) {
            ok = FALSE;
            break;
        }
        total += length;
        if (progress != NULL)
            progress(total, user_data);
    }
    unlink_cancellable(cancellable, id);
    g_mutex_unlock(&ws->recv_lock);
    if (bytes_out != NULL)
        *bytes_out = total;
    return ok;
}

/* ---- relay ---- */

typedef struct {
    FerryWebsocket *a, *b;
    GMutex lock;
    gboolean finished;
    gboolean ok;
    GError *error;
} Relay;

typedef struct {
    Relay *relay;
    FerryWebsocket *in, *out;
} RelayDirection;

/* Forward messages from in to out, fragment by fragment, until in closes or something fails. */
static gboolean relay_forward(FerryWebsocket *in, FerryWebsocket *out, GError **error)
{
    g_autofree guint8 *buffer = g_malloc(RELAY_FRAGMENT_SIZE);
    gsize have = 0;
    gboolean in_message = FALSE;
    guint8 opcode = 0;
    gboolean ok = TRUE;

    g_mutex_lock(&in->recv_lock);
    for (;;) {
        Chunk chunk;
        if (!recv_chunk(in, &chunk, error)) {
            ok = FALSE;
            break;
        }
        if (chunk.msg_start) {
            /* Other senders on out must not slip frames into a fragmented message. */
            g_mutex_lock(&out->msg_lock);
            in_message = TRUE;
            opcode = chunk.opcode;
        }
        gsize offset = 0;
        do {
            gsize n = MIN(chunk.length - offset, RELAY_FRAGMENT_SIZE - have);
            memcpy(buffer + have, chunk.data + offset, n);
            have += n;
            offset += n;
            gboolean last = chunk.msg_end && offset == chunk.length;
            if (have == RELAY_FRAGMENT_SIZE || (chunk.frame_end && offset == chunk.length)) {
                g_mutex_lock(&out->frame_lock);
                ok = send_frame_locked(out, opcode, last, buffer, have, TRUE, error);
                frame_unlock(out);
                opcode = OPCODE_CONTINUATION;
                have = 0;
                if (!ok)
                    break;
            }
        } while (offset < chunk.length);
        if (!ok)
            break;
        if (chunk.msg_end) {
            g_mutex_unlock(&out->msg_lock);
            in_message = FALSE;
        }
    }
    if (in_message)
        g_mutex_unlock(&out->msg_lock);
    g_mutex_unlock(&in->recv_lock);
    return ok;
}

static void relay_direction(RelayDirection *direction)
{
    Relay *relay = direction->relay;
    GError *error = NULL;
    relay_forward(direction->in, direction->out, &error);

    g_mutex_lock(&relay->lock);
    gboolean first = !relay->finished;
    relay->finished = TRUE;
    g_mutex_unlock(&relay->lock);
    if (!first) {
        g_clear_error(&error);
        return;
    }
    guint16 code = FERRY_WS_CLOSE_INTERNAL_ERROR;
    if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CLOSED)) {
        code = ferry_websocket_get_close_code(direction->in);
        relay->ok = TRUE;
        g_clear_error(&error);
    } else {
        relay->ok = FALSE;
        relay->error = error;
    }
    send_close_frame(direction->out, code, NULL, NULL);
    ferry_websocket_abort(relay->a);
    ferry_websocket_abort(relay->b);
}

static gpointer relay_thread(gpointer data)
{
    relay_direction(data);
    return NULL;
}

gboolean ferry_websocket_proxy(FerryWebsocket *a, FerryWebsocket *b, GCancellable *cancellable,
                               GError **error)
{
    g_return_val_if_fail(a != NULL && b != NULL && a != b, FALSE);

    Relay relay = {.a = a, .b = b};
    g_mutex_init(&relay.lock);
    RelayDirection a_to_b = {&relay, a, b};
    RelayDirection b_to_a = {&relay, b, a};
    gulong id_a = link_cancellable(a, cancellable);
    gulong id_b = link_cancellable(b, cancellable);

    GThread *thread = g_thread_new("ws-relay", relay_thread, &b_to_a);
    relay_direction(&a_to_b);
    g_thread_join(thread);

    unlink_cancellable(cancellable, id_a);
    unlink_cancellable(cancellable, id_b);
    g_mutex_clear(&relay.lock);
    if (!relay.ok) {
        if (g_cancellable_is_cancelled(cancellable)) {
            g_clear_error(&relay.error);
            g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "Websocket relay cancelled");
        } else {
            g_propagate_error(error, relay.error);
        }
        return FALSE;
    }
    return TRUE;
}

/* ---- close ---- */

gboolean ferry_websocket_close(FerryWebsocket *ws, guint16 code, const char *reason)
{
    g_return_val_if_fail(ws != NULL, FALSE);

    gboolean ok = send_close_frame(ws, code, reason, NULL);
    if (!g_mutex_trylock(&ws->recv_lock))
        return ok; /* the receiving thread will see the peer's close frame */

    if (ok && ws->recv_failed == NULL && ws->socket != NULL) {
        /* Wait for the peer's answer before closing: closing with its data unread would reset the
         * connection, and the peer could lose our close frame. The socket timeout bounds a silent peer, the
         * deadline one that keeps sending. Without a socket there is no timeout: no wait. */
        g_socket_set_timeout(ws->socket, CLOSE_WAIT_SECONDS);
        gint64 deadline = g_get_monotonic_time() + CLOSE_WAIT_SECONDS * G_USEC_PER_SEC;
        while (g_get_monotonic_time() < deadline) {
            Chunk chunk;
            if (!recv_chunk(ws, &chunk, NULL))
                break;
        }
        g_socket_set_timeout(ws->socket, 0);
    }
    if (!ws->stream_closed) {
        ws->stream_closed = TRUE;
        if (!ok)
            shutdown_socket(ws);
        g_io_stream_close(ws->stream, NULL, NULL);
    }
    g_mutex_unlock(&ws->recv_lock);
    return ok;
}

/* ---- dialing ---- */

typedef struct {
    GTlsCertificate *pinned;
    gboolean rejected;
} PinCheck;

static gboolean on_accept_certificate(GTlsConnection *connection, GTlsCertificate *peer,
                                      GTlsCertificateFlags errors, gpointer user_data)
{
    PinCheck *check = user_data;
    if (g_tls_certificate_is_same(peer, check->pinned))
        return TRUE;
    check->rejected = TRUE;
    return FALSE;
}

/* The whole body of an error response (bounded), decoded from chunked transfer encoding if need be. */
static GByteArray *read_error_body(GInputStream *input, SoupMessageHeaders *headers, const guint8 *extra,
                                   gsize extra_len, GCancellable *cancellable)
{
    GByteArray *raw = g_byte_array_new();
    g_byte_array_append(raw, extra, (guint)extra_len);
    SoupEncoding encoding = soup_message_headers_get_encoding(headers);
    goffset want =
        encoding == SOUP_ENCODING_CONTENT_LENGTH ? soup_message_headers_get_content_length(headers) : -1;
    guint8 buf[4096];
    while (raw->len < MAX_ERROR_BODY && (want < 0 || (goffset)raw->len < want)) {
        if (encoding == SOUP_ENCODING_CHUNKED && raw->len >= 5 &&
            memcmp(raw->data + raw->len - 5, "0\r\n\r\n", 5) == 0)
            break;
        gssize n = g_input_stream_read(input, buf, sizeof buf, cancellable, NULL);
        if (n <= 0)
            break;
        g_byte_array_append(raw, buf, (guint)n);
    }
    if (want >= 0 && (goffset)raw->len > want)
        g_byte_array_set_size(raw, (guint)want);
    if (encoding != SOUP_ENCODING_CHUNKED)
        return raw;

    GByteArray *body = g_byte_array_new();
    gsize pos = 0;
    while (pos < raw->len) {
        const guint8 *eol = memchr(raw->data + pos, '\n', raw->len - pos);
        if (eol == NULL)
            break;
        guint64 size = g_ascii_strtoull((const char *)raw->data + pos, NULL, 16);
        pos = (gsize)(eol - raw->data) + 1;
        if (size == 0 || size > raw->len - pos)
            break;
        g_byte_array_append(body, raw->data + pos, (guint)size);
        pos += (gsize)size + 2;
    }
    g_byte_array_unref(raw);
    return body;
}

static void set_http_error(guint status, const char *reason, GByteArray *body, const char *address,
                           GError **error)
{
    int code = status >= 400 && status < 600 ? (int)status : FERRY_ERROR_INTERNAL;
    g_autoptr(json_t) json = NULL;
    if (body != NULL && body->len > 0)
        json = ferry_json_parse((const char *)body->data, body->len, NULL);
    const char *message = json != NULL && json_is_object(json) ? ferry_json_get_string(json, "error") : NULL;
    if (message != NULL && *message != '\0')
        g_set_error_literal(error, FERRY_ERROR, code, message);
    else
        g_set_error(error, FERRY_ERROR, code, "Websocket upgrade refused by %s: HTTP %u %s", address, status,
                    reason != NULL ? reason : "");
}

static char *accept_key(const char *key)
{
    g_autoptr(GChecksum) sha1 = g_checksum_new(G_CHECKSUM_SHA1);
    g_checksum_update(sha1, (const guchar *)key, (gssize)strlen(key));
    g_checksum_update(sha1, (const guchar *)WS_GUID, (gssize)strlen(WS_GUID));
    guint8 digest[20];
    gsize digest_len = sizeof digest;
    g_checksum_get_digest(sha1, digest, &digest_len);
    return g_base64_encode(digest, digest_len);
}

/* Send the upgrade request and read the answer; *leftover gets the bytes after the headers. address is
 * host:port, for the Host header and messages. */
static gboolean http_upgrade(GIOStream *stream, const char *address, const char *target,
                             GByteArray **leftover, GCancellable *cancellable, GError **error)
{
    guint8 nonce[16];
    if (getrandom(nonce, sizeof nonce, 0) != sizeof nonce) {
        ferry_set_error_errno(error, errno, "Failed to make a websocket key");
        return FALSE;
    }
    g_autofree char *key = g_base64_encode(nonce, sizeof nonce);
    g_autofree char *request = g_strdup_printf("GET %s HTTP/1.1\r\n"
                                               "Host: %s\r\n"
                                               "User-Agent: ferry %s\r\n"
                                               "Upgrade: websocket\r\n"
                                               "Connection: Upgrade\r\n"
                                               "Sec-WebSocket-Key: %s\r\n"
                                               "Sec-WebSocket-Version: 13\r\n"
                                               "\r\n",
                                               target, address, FERRY_VERSION, key);
    g_autoptr(GError) local_error = NULL;
    GInputStream *input = g_io_stream_get_input_stream(stream);
    if (!g_output_stream_write_all(g_io_stream_get_output_stream(stream), request, strlen(request), NULL,
                                   cancellable, &local_error)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE, "Failed to send websocket upgrade to %s: %s",
                    address, local_error->message);
        return FALSE;
    }

    g_autoptr(GByteArray) response = g_byte_array_new();
    gsize header_end = 0;
    while (header_end == 0) {
        guint8 buf[4096];
        gssize n = g_input_stream_read(input, buf, sizeof buf, cancellable, &local_error);
        if (n < 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE,
                        "Failed to read websocket upgrade answer from %s: %s", address, local_error->message);
            return FALSE;
        }
        if (n == 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE,
                        "Connection to %s closed during the websocket upgrade", address);
            return FALSE;
        }
        gsize from = response->len >= 3 ? response->len - 3 : 0;
        g_byte_array_append(response, buf, (guint)n);
        for (gsize i = from; i + 4 <= response->len; i++) {
            if (memcmp(response->data + i, "\r\n\r\n", 4) == 0) {
                header_end = i + 4;
                break;
            }
        }
        if (header_end == 0 && response->len > MAX_RESPONSE_HEADER) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                        "Websocket upgrade answer from %s is too long", address);
            return FALSE;
        }
    }

    g_autoptr(SoupMessageHeaders) headers = soup_message_headers_new(SOUP_MESSAGE_HEADERS_RESPONSE);
    guint status = 0;
    g_autofree char *reason = NULL;
    if (!soup_headers_parse_response((const char *)response->data, (int)header_end, headers, NULL, &status,
                                     &reason)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Malformed websocket upgrade answer from %s",
                    address);
        return FALSE;
    }
    if (status != SOUP_STATUS_SWITCHING_PROTOCOLS) {
        g_autoptr(GByteArray) body = read_error_body(input, headers, response->data + header_end,
                                                     response->len - header_end, cancellable);
        set_http_error(status, reason, body, address, error);
        return FALSE;
    }
    g_autofree char *expected = accept_key(key);
    const char *accept = soup_message_headers_get_one(headers, "Sec-WebSocket-Accept");
    if (!soup_message_headers_header_equals(headers, "Upgrade", "websocket") ||
        !soup_message_headers_header_contains(headers, "Connection", "upgrade") || accept == NULL ||
        strcmp(accept, expected) != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Invalid websocket upgrade answer from %s",
                    address);
        return FALSE;
    }
    *leftover = g_byte_array_new();
    g_byte_array_append(*leftover, response->data + header_end, response->len - header_end);
    return TRUE;
}

FerryWebsocket *ferry_websocket_dial(const char *url, const char *server_cert_pem,
                                     GTlsCertificate *client_cert, GCancellable *cancellable, GError **error)
{
    g_return_val_if_fail(url != NULL, NULL);
    ferry_tls_trust_no_ca();

    g_autoptr(GError) local_error = NULL;
    g_autoptr(GUri) uri = g_uri_parse(url, G_URI_FLAGS_ENCODED | G_URI_FLAGS_SCHEME_NORMALIZE, &local_error);
    if (uri == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid websocket URL %s: %s", url,
                    local_error->message);
        return NULL;
    }
    const char *scheme = g_uri_get_scheme(uri);
    gboolean tls = g_ascii_strcasecmp(scheme, "wss") == 0;
    if (!tls && g_ascii_strcasecmp(scheme, "ws") != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid websocket URL %s: scheme must be ws or wss", url);
        return NULL;
    }
    const char *host = g_uri_get_host(uri);
    if (host == NULL || *host == '\0') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid websocket URL %s: no host", url);
        return NULL;
    }
    int port = g_uri_get_port(uri);
    if (port <= 0)
        port = tls ? 443 : 80;
    g_autoptr(GTlsCertificate) pinned = NULL;
    if (tls) {
        if (server_cert_pem == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "No certificate to pin for %s", url);
            return NULL;
        }
        pinned = ferry_tls_cert_new_from_pem(server_cert_pem, error);
        if (pinned == NULL)
            return NULL;
    }
    gboolean ipv6 = strchr(host, ':') != NULL;
    g_autofree char *address = g_strdup_printf(ipv6 ? "[%s]:%d" : "%s:%d", host, port);
    const char *path = g_uri_get_path(uri);
    const char *query = g_uri_get_query(uri);
    g_autofree char *target = g_strdup_printf("%s%s%s", *path != '\0' ? path : "/", query != NULL ? "?" : "",
                                              query != NULL ? query : "");

    g_autoptr(GSocketClient) client = g_socket_client_new();
    g_socket_client_set_enable_proxy(client, FALSE);
    /* Also the new socket's I/O timeout: it bounds the TLS handshake and the upgrade (new() lifts it). */
    g_socket_client_set_timeout(client, DIAL_TIMEOUT_SECONDS);
    g_autoptr(GSocketConnectable) connectable = g_network_address_new(host, (guint16)port);
    g_autoptr(GSocketConnection) connection =
        g_socket_client_connect(client, connectable, cancellable, &local_error);
    if (connection == NULL) {
        if (g_error_matches(local_error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
            g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "Websocket dial cancelled");
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE, "Failed to connect to %s: %s", address,
                        local_error->message);
        return NULL;
    }

    g_autoptr(GIOStream) stream = NULL;
    if (tls) {
        stream = g_tls_client_connection_new(G_IO_STREAM(connection), connectable, &local_error);
        if (stream == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to set up TLS to %s: %s", address,
                        local_error->message);
            return NULL;
        }
        /* No CA can vouch for the peer: only the pinned certificate, in accept-certificate. */
        g_tls_connection_set_database(G_TLS_CONNECTION(stream), NULL);
        /* A peer that drops the connection reads as end of stream, not as a TLS error. */
        g_tls_connection_set_require_close_notify(G_TLS_CONNECTION(stream), FALSE);
        if (client_cert != NULL)
            g_tls_connection_set_certificate(G_TLS_CONNECTION(stream), client_cert);
        PinCheck check = {.pinned = pinned};
        gulong handler =
            g_signal_connect(stream, "accept-certificate", G_CALLBACK(on_accept_certificate), &check);
        gboolean shaken = g_tls_connection_handshake(G_TLS_CONNECTION(stream), cancellable, &local_error);
        g_signal_handler_disconnect(stream, handler);
        if (!shaken) {
            if (check.rejected)
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_FORBIDDEN,
                            "Server certificate of %s is not the expected one", address);
            else if (g_error_matches(local_error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
                g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "Websocket dial cancelled");
            else
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE, "TLS handshake with %s failed: %s",
                            address, local_error->message);
            return NULL;
        }
    } else {
        stream = G_IO_STREAM(g_object_ref(connection));
    }

    g_autoptr(GByteArray) leftover = NULL;
    if (!http_upgrade(stream, address, target, &leftover, cancellable, error))
        return NULL;

    FerryWebsocket *ws = ferry_websocket_new(stream, TRUE);
    /* Frames the server sent right behind its 101. */
    g_assert(leftover->len <= READ_BUFFER_SIZE);
    if (leftover->len > 0)
        memcpy(ws->rbuf, leftover->data, leftover->len);
    ws->rbuf_len = leftover->len;
    return ws;
}
