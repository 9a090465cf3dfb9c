/* Websockets for migration data: RFC 6455 framing (ws_frame.h) over a GIOStream with blocking I/O,
 * for worker threads.
 *
 * Back-pressure is the socket's: a send blocks while the peer does not read, and nothing queues without
 * bound. One thread receives while any number of threads send (sends are serialised whole messages); pings
 * are answered by the receiver, without waiting for a send in progress (the pong follows the frame being
 * sent). Incus's peers are gorilla/websocket: the control channel carries one protobuf per binary message,
 * data channels carry byte streams cut into sub-streams by an empty text message, the "barrier"
 * (shared/ws/rwc.go), which the stream functions below speak.
 *
 * Errors are FERRY_ERROR, except that a close frame from the peer ends receiving with G_IO_ERROR_CLOSED.
 * After an I/O or protocol error, a close or an abort, the direction that failed keeps failing the same way.
 * Cancelling the GCancellable of a receiving call aborts the websocket (the stream position is lost).
 * The caller must ignore SIGPIPE (writes to a child's pipe that has gone away).
 *
 * libsoup hand-over (server side): after the 101, soup_server_message_steal_connection (libsoup 3.2)
 * returns libsoup's SoupIOStream, whose input stream is the SoupFilterInputStream the request headers were
 * parsed from; bytes the client sent right after its request can sit in that buffer. Pass the stolen
 * stream itself to ferry_websocket_new (never its base stream or its "GSocket" data): everything is then read
 * through that buffer and nothing is lost. This module only reaches down to the GSocket for socket options
 * and shutdown. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef struct _FerryWebsocket FerryWebsocket;

typedef enum {
    FERRY_WS_TEXT = 1,
    FERRY_WS_BINARY = 2,
} FerryWsType;

/* Close codes (RFC 6455 §7.4.1). */
#define FERRY_WS_CLOSE_NORMAL 1000
#define FERRY_WS_CLOSE_GOING_AWAY 1001
#define FERRY_WS_CLOSE_PROTOCOL_ERROR 1002
#define FERRY_WS_CLOSE_TOO_BIG 1009
#define FERRY_WS_CLOSE_INTERNAL_ERROR 1011

/* Default limit on one received message (ferry_websocket_receive). */
#define FERRY_WS_DEFAULT_MAX_MESSAGE (64 * 1024 * 1024)

/* Take over an already-upgraded connection (server side: the stream libsoup's steal_connection returned
 * after the 101; client side: what ferry_websocket_dial made). is_client: frames sent are masked and
 * received ones must not be, as RFC 6455 wants. Sets TCP_NODELAY and keepalive and clears any socket
 * timeout: data channels may sit idle while the other side works, timeouts are the callers'. */
FerryWebsocket *ferry_websocket_new(GIOStream *stream, gboolean is_client);

/* Dial "wss://host:port/path?query" (or "ws://"), accepting exactly the certificate server_cert_pem (no CA
 * check, as Incus pins migration peers; required for wss), presenting client_cert when not NULL (Incus
 * dials migration sockets with none), and do the HTTP/1.1 upgrade. Connecting, TLS and the upgrade together
 * must finish within 10 s. A refused pin is FERRY_ERROR_FORBIDDEN, an unreachable host
 * FERRY_ERROR_UNAVAILABLE; an answer other than 101 is an error whose code is the HTTP status and whose
 * message is the Incus "error" field of the body when there is one. */
FerryWebsocket *ferry_websocket_dial(const char *url, const char *server_cert_pem,
                                     GTlsCertificate *client_cert, GCancellable *cancellable, GError **error);

/* Send one whole message (one frame). Safe from several threads at once. */
gboolean ferry_websocket_send(FerryWebsocket *ws, FerryWsType type, const void *data, gsize length,
                              GError **error);

/* The next whole message (fragments reassembled), its type in *type_out (may be NULL). One receiving thread
 * at a time, concurrently with senders. Called in the middle of a binary message that
 * ferry_websocket_read_stream has started, returns the rest of it. A message above the size limit is
 * FERRY_ERROR_TOO_LARGE; a close frame is answered and ends with G_IO_ERROR_CLOSED. */
GBytes *ferry_websocket_receive(FerryWebsocket *ws, FerryWsType *type_out, GCancellable *cancellable,
                                GError **error);

/* The barrier: an empty text message. */
gboolean ferry_websocket_send_barrier(FerryWebsocket *ws, GError **error);

/* Send a close frame (reason cut to fit one frame) unless one was sent already, then, when no other thread
 * is receiving, wait up to 5 s for the peer's close frame (discarding data) and close the stream. Other
 * threads must not be sending. FALSE when the close frame could not be sent. */
gboolean ferry_websocket_close(FerryWebsocket *ws, guint16 code, const char *reason);

/* Release; closes the stream (without a close frame) if ferry_websocket_close did not. No other thread may
 * still use ws: abort and join them first. */
void ferry_websocket_free(FerryWebsocket *ws);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryWebsocket, ferry_websocket_free)

/* Make every blocked or later send and receive fail promptly with FERRY_ERROR_CANCELLED (from any thread;
 * takes no lock). For cancellation, or when the other half of a migration failed. */
void ferry_websocket_abort(FerryWebsocket *ws);

/* The code of the close frame received from the peer, 0 when none was (1005 for one without a code). */
guint16 ferry_websocket_get_close_code(FerryWebsocket *ws);

/* Limit on one message for ferry_websocket_receive (default FERRY_WS_DEFAULT_MAX_MESSAGE). The stream and
 * relay functions have none: they never hold a whole message. */
void ferry_websocket_set_max_message(FerryWebsocket *ws, gsize max_bytes);

/* Payload bytes per second for everything sent from now on (0: unlimited). */
void ferry_websocket_set_send_limit(FerryWebsocket *ws, guint64 bytes_per_second);

/* Byte streams as Incus's ws wrapper: reads return the payload of binary messages, a binary message larger
 * than size over several reads; a text message (the barrier) ends the sub-stream: 0 is returned, and the
 * next read starts the next sub-stream. A close frame with code 1000 also reads as 0 (as Incus's wrapper),
 * any other close as G_IO_ERROR_CLOSED. size 0 reads nothing and returns 0. -1 on error. */
gssize ferry_websocket_read_stream(FerryWebsocket *ws, void *buffer, gsize size, GCancellable *cancellable,
                                   GError **error);
/* Send data as one binary message (nothing for length 0: an empty message means nothing to a stream). */
gboolean ferry_websocket_write_stream(FerryWebsocket *ws, const void *data, gsize length, GError **error);

/* Called as bytes go by with the total moved so far. */
typedef void (*FerryBytesFunc)(guint64 bytes, gpointer user_data);

/* Copy fd to the websocket as binary messages until EOF on fd, then send the barrier if asked. */
gboolean ferry_websocket_pump_from_fd(FerryWebsocket *ws, int fd, gboolean send_barrier_at_eof,
                                      FerryBytesFunc progress, gpointer user_data, guint64 *bytes_out,
                                      GCancellable *cancellable, GError **error);
/* Copy the websocket's current sub-stream to fd until the barrier (or a close with code 1000). */
gboolean ferry_websocket_pump_to_fd(FerryWebsocket *ws, int fd, FerryBytesFunc progress, gpointer user_data,
                                    guint64 *bytes_out, GCancellable *cancellable, GError **error);

/* Relay: copy every message both ways between a and b, keeping its type (barriers survive) and streaming
 * it (no size limit), until either side closes or fails; then send the other side a close frame (the same
 * code, or 1011 after an error) and abort both. TRUE when it ended with a close, FALSE with the first error.
 * Blocks; runs one direction on a second thread. */
gboolean ferry_websocket_proxy(FerryWebsocket *a, FerryWebsocket *b, GCancellable *cancellable,
                               GError **error);

G_END_DECLS
