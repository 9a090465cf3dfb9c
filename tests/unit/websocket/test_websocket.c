/* Websockets for migration channels: framing against hand-made frames, threads and back-pressure,
 * sub-streams, pumps, relay, dialing (TLS pin, refusals) and taking a connection over from libsoup. */
#include "error.h"
#include "tls_cert.h"
#include "websocket.h"

#include <libsoup/soup.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MiB (1024 * 1024)

/* ---- helpers ---- */

/* A connected TCP pair on 127.0.0.1. */
static void tcp_pair(GSocketConnection **server_out, GSocketConnection **client_out)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GSocketListener) listener = g_socket_listener_new();
    g_autoptr(GSocketAddress) any = g_inet_socket_address_new_from_string("127.0.0.1", 0);
    g_autoptr(GSocketAddress) bound = NULL;
    g_assert_true(g_socket_listener_add_address(listener, any, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP,
                                                NULL, &bound, &error));
    g_autoptr(GSocketClient) client = g_socket_client_new();
    g_socket_client_set_enable_proxy(client, FALSE);
    *client_out = g_socket_client_connect(client, G_SOCKET_CONNECTABLE(bound), NULL, &error);
    g_assert_no_error(error);
    *server_out = g_socket_listener_accept(listener, NULL, NULL, &error);
    g_assert_no_error(error);
}

typedef struct {
    FerryWebsocket *server; /* is_client FALSE */
    FerryWebsocket *client; /* masks */
} Pair;

static Pair ws_pair(void)
{
    g_autoptr(GSocketConnection) server = NULL;
    g_autoptr(GSocketConnection) client = NULL;
    tcp_pair(&server, &client);
    Pair pair = {ferry_websocket_new(G_IO_STREAM(server), FALSE),
                 ferry_websocket_new(G_IO_STREAM(client), TRUE)};
    return pair;
}

static void pair_free(Pair *pair)
{
    g_clear_pointer(&pair->server, ferry_websocket_free);
    g_clear_pointer(&pair->client, ferry_websocket_free);
}

/* A websocket on one end of a TCP pair, raw access to the other end (the peer speaking frames by hand). */
typedef struct {
    FerryWebsocket *ws;
    GSocketConnection *raw;
    GInputStream *in;
    GOutputStream *out;
} RawPeer;

static RawPeer raw_peer(gboolean ws_is_client)
{
    GSocketConnection *server = NULL, *client = NULL;
    tcp_pair(&server, &client);
    RawPeer peer;
    if (ws_is_client) {
        peer.ws = ferry_websocket_new(G_IO_STREAM(client), TRUE);
        peer.raw = server;
        g_object_unref(client);
    } else {
        peer.ws = ferry_websocket_new(G_IO_STREAM(server), FALSE);
        peer.raw = client;
        g_object_unref(server);
    }
    g_socket_set_option(g_socket_connection_get_socket(peer.raw), IPPROTO_TCP, TCP_NODELAY, 1, NULL);
    peer.in = g_io_stream_get_input_stream(G_IO_STREAM(peer.raw));
    peer.out = g_io_stream_get_output_stream(G_IO_STREAM(peer.raw));
    return peer;
}

static void raw_peer_free(RawPeer *peer)
{
    g_clear_pointer(&peer->ws, ferry_websocket_free);
    g_clear_object(&peer->raw);
}

/* Append one frame, masked when mask (as a client must). */
static void frame(GByteArray *out, gboolean fin, guint8 opcode, const void *payload, gsize len, gboolean mask)
{
    guint8 header[14];
    gsize h = 0;
    header[h++] = (fin ? 0x80 : 0) | opcode;
    guint8 mask_bit = mask ? 0x80 : 0;
    if (len < 126) {
        header[h++] = mask_bit | (guint8)len;
    } else if (len < 65536) {
        header[h++] = mask_bit | 126;
        header[h++] = (guint8)(len >> 8);
        header[h++] = (guint8)len;
    } else {
        header[h++] = mask_bit | 127;
        for (int i = 7; i >= 0; i--)
            header[h++] = (guint8)((guint64)len >> (8 * i));
    }
    guint8 key[4] = {0x12, 0x34, 0x56, 0x78};
    if (mask) {
        memcpy(header + h, key, 4);
        h += 4;
    }
    g_byte_array_append(out, header, (guint)h);
    gsize start = out->len;
    g_byte_array_append(out, payload, (guint)len);
    if (mask)
        for (gsize i = 0; i < len; i++)
            out->data[start + i] ^= key[i % 4];
}

static void raw_write(RawPeer *peer, GByteArray *bytes)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(g_output_stream_write_all(peer->out, bytes->data, bytes->len, NULL, NULL, &error));
    g_assert_no_error(error);
}

/* Read one frame the websocket sent (server frames are unmasked). */
static GByteArray *raw_read_frame(RawPeer *peer, guint8 *opcode_out, gboolean *fin_out)
{
    g_autoptr(GError) error = NULL;
    guint8 header[2];
    g_assert_true(g_input_stream_read_all(peer->in, header, 2, NULL, NULL, &error));
    g_assert_no_error(error);
    *opcode_out = header[0] & 0x0f;
    *fin_out = (header[0] & 0x80) != 0;
    gboolean masked = (header[1] & 0x80) != 0;
    guint64 len = header[1] & 0x7f;
    if (len >= 126) {
        guint8 ext[8];
        gsize n = len == 126 ? 2 : 8;
        g_assert_true(g_input_stream_read_all(peer->in, ext, n, NULL, NULL, &error));
        len = 0;
        for (gsize i = 0; i < n; i++)
            len = len << 8 | ext[i];
    }
    guint8 key[4] = {0};
    if (masked)
        g_assert_true(g_input_stream_read_all(peer->in, key, 4, NULL, NULL, &error));
    GByteArray *payload = g_byte_array_sized_new((guint)len);
    g_byte_array_set_size(payload, (guint)len);
    g_assert_true(g_input_stream_read_all(peer->in, payload->data, len, NULL, NULL, &error));
    g_assert_no_error(error);
    if (masked)
        for (gsize i = 0; i < len; i++)
            payload->data[i] ^= key[i % 4];
    return payload;
}

/* Deterministic data, fast to make and to check. */
static void fill(guint8 *data, gsize len, guint64 seed)
{
    guint64 x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (gsize i = 0; i < len; i++) {
        if (i % 8 == 0) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        data[i] = (guint8)(x >> (8 * (i % 8)));
    }
}

static guint64 sum_update(guint64 h, const guint8 *data, gsize len)
{
    for (gsize i = 0; i < len; i++)
        h = (h ^ data[i]) * 0x100000001B3ull;
    return h;
}

static void assert_message(FerryWebsocket *ws, FerryWsType type, const void *data, gsize len)
{
    g_autoptr(GError) error = NULL;
    FerryWsType got = 0;
    g_autoptr(GBytes) bytes = ferry_websocket_receive(ws, &got, NULL, &error);
    g_assert_no_error(error);
    g_assert_nonnull(bytes);
    g_assert_cmpint(got, ==, type);
    gsize size = 0;
    const guint8 *got_data = g_bytes_get_data(bytes, &size);
    g_assert_cmpmem(got_data, size, data, len);
}

/* Sends from another thread: a send bigger than the socket buffers blocks until the peer reads. */
typedef struct {
    FerryWebsocket *ws;
    FerryWsType type;
    const guint8 *data;
    gsize len;
} SendJob;

static gpointer send_thread(gpointer data)
{
    SendJob *job = data;
    GError *error = NULL;
    if (!ferry_websocket_send(job->ws, job->type, job->data, job->len, &error))
        return error;
    return NULL;
}

/* ---- message round trips ---- */

static void exchange(FerryWebsocket *from, FerryWebsocket *to)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_websocket_send(from, FERRY_WS_TEXT, "hello", 5, &error));
    assert_message(to, FERRY_WS_TEXT, "hello", 5);
    g_assert_true(ferry_websocket_send(from, FERRY_WS_BINARY, "\x00\x01\x02", 3, &error));
    assert_message(to, FERRY_WS_BINARY, "\x00\x01\x02", 3);
    g_assert_true(ferry_websocket_send_barrier(from, &error));
    assert_message(to, FERRY_WS_TEXT, "", 0);
    g_assert_true(ferry_websocket_send(from, FERRY_WS_BINARY, NULL, 0, &error));
    assert_message(to, FERRY_WS_BINARY, "", 0);
    /* 200 bytes and 70000 bytes: the 16-bit and 64-bit length forms. */
    guint8 medium[70000];
    fill(medium, sizeof medium, 7);
    g_assert_true(ferry_websocket_send(from, FERRY_WS_BINARY, medium, 200, &error));
    assert_message(to, FERRY_WS_BINARY, medium, 200);
    g_assert_true(ferry_websocket_send(from, FERRY_WS_BINARY, medium, sizeof medium, &error));
    assert_message(to, FERRY_WS_BINARY, medium, sizeof medium);

    g_autofree guint8 *big = g_malloc(10 * MiB);
    fill(big, 10 * MiB, 42);
    SendJob job = {from, FERRY_WS_BINARY, big, 10 * MiB};
    GThread *thread = g_thread_new("send", send_thread, &job);
    assert_message(to, FERRY_WS_BINARY, big, 10 * MiB);
    g_assert_null(g_thread_join(thread));
}

static void test_roundtrip(void)
{
    g_autoptr(GSocketConnection) server = NULL;
    g_autoptr(GSocketConnection) client = NULL;
    tcp_pair(&server, &client);
    GSocket *socket = g_socket_connection_get_socket(server);
    g_assert_true(g_socket_set_option(socket, IPPROTO_TCP, TCP_NODELAY, 0, NULL));
    Pair pair = {ferry_websocket_new(G_IO_STREAM(server), FALSE),
                 ferry_websocket_new(G_IO_STREAM(client), TRUE)};
    int nodelay = 0;
    g_assert_true(g_socket_get_option(socket, IPPROTO_TCP, TCP_NODELAY, &nodelay, NULL));
    g_assert_cmpint(nodelay, !=, 0);

    exchange(pair.client, pair.server);
    exchange(pair.server, pair.client);
    pair_free(&pair);
}

/* ---- threads ---- */

#define WRITERS 2
#define CHUNK (256 * 1024)

typedef struct {
    FerryWebsocket *ws;
    int id;
    gsize bytes;
    guint64 sum;
} Writer;

static gpointer writer_thread(gpointer data)
{
    Writer *writer = data;
    g_autofree guint8 *buf = g_malloc(CHUNK);
    writer->sum = 0xcbf29ce484222325ull;
    for (guint64 seq = 0; seq < writer->bytes / CHUNK; seq++) {
        fill(buf, CHUNK, (guint64)writer->id << 32 | seq);
        buf[0] = (guint8)writer->id;
        writer->sum = sum_update(writer->sum, buf, CHUNK);
        g_autoptr(GError) error = NULL;
        g_assert_true(ferry_websocket_send(writer->ws, FERRY_WS_BINARY, buf, CHUNK, &error));
        g_assert_no_error(error);
    }
    return NULL;
}

typedef struct {
    FerryWebsocket *ws;
    guint64 sums[WRITERS];
    guint64 bytes;
    guint64 expected;
} Reader;

static gpointer reader_thread(gpointer data)
{
    Reader *reader = data;
    for (int i = 0; i < WRITERS; i++)
        reader->sums[i] = 0xcbf29ce484222325ull;
    while (reader->bytes < reader->expected) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GBytes) bytes = ferry_websocket_receive(reader->ws, NULL, NULL, &error);
        g_assert_no_error(error);
        gsize size;
        const guint8 *data_ = g_bytes_get_data(bytes, &size);
        g_assert_cmpuint(size, ==, CHUNK);
        g_assert_cmpuint(data_[0], <, WRITERS);
        reader->sums[data_[0]] = sum_update(reader->sums[data_[0]], data_, size);
        reader->bytes += size;
    }
    return NULL;
}

/* per_writer bytes from each of two writer threads on each side at once, one reader on each side. */
static void run_concurrent(FerryWebsocket *server, FerryWebsocket *client, gsize per_writer)
{
    FerryWebsocket *sides[2] = {server, client};
    Writer writers[2][WRITERS];
    Reader readers[2] = {{.ws = server}, {.ws = client}};
    GThread *threads[2 * (WRITERS + 1)];
    int t = 0;
    for (int s = 0; s < 2; s++) {
        readers[s].expected = (guint64)WRITERS * per_writer;
        threads[t++] = g_thread_new("reader", reader_thread, &readers[s]);
        for (int w = 0; w < WRITERS; w++) {
            writers[s][w] = (Writer){.ws = sides[s], .id = w, .bytes = per_writer};
            threads[t++] = g_thread_new("writer", writer_thread, &writers[s][w]);
        }
    }
    for (int i = 0; i < t; i++)
        g_thread_join(threads[i]);
    /* What the server wrote, the client read, and the other way round. */
    for (int w = 0; w < WRITERS; w++) {
        g_assert_cmpuint(readers[1].sums[w], ==, writers[0][w].sum);
        g_assert_cmpuint(readers[0].sums[w], ==, writers[1][w].sum);
    }
}

/* 100 MiB each way. */
static void test_concurrent(void)
{
    Pair pair = ws_pair();
    run_concurrent(pair.server, pair.client, 50 * MiB);
    pair_free(&pair);
}

/* ---- frames by hand ---- */

static void test_fragments(void)
{
    RawPeer peer = raw_peer(FALSE);
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    frame(bytes, FALSE, 0x1, "Hel", 3, TRUE);
    frame(bytes, TRUE, 0x9, "p1", 2, TRUE); /* a ping between fragments */
    frame(bytes, FALSE, 0x0, "l", 1, TRUE);
    frame(bytes, FALSE, 0x0, "", 0, TRUE);
    frame(bytes, TRUE, 0x0, "o", 1, TRUE);
    guint8 big[71000];
    fill(big, sizeof big, 3);
    frame(bytes, FALSE, 0x2, big, 1000, TRUE);
    frame(bytes, TRUE, 0x0, big + 1000, sizeof big - 1000, TRUE);
    raw_write(&peer, bytes);
    assert_message(peer.ws, FERRY_WS_TEXT, "Hello", 5);
    assert_message(peer.ws, FERRY_WS_BINARY, big, sizeof big);

    guint8 opcode;
    gboolean fin;
    g_autoptr(GByteArray) pong = raw_read_frame(&peer, &opcode, &fin);
    g_assert_cmpuint(opcode, ==, 0xa);
    g_assert_true(fin);
    g_assert_cmpmem(pong->data, pong->len, "p1", 2);

    /* Headers and payload trickling in byte by byte. */
    g_byte_array_set_size(bytes, 0);
    frame(bytes, FALSE, 0x2, big, 300, TRUE);
    frame(bytes, TRUE, 0x0, big + 300, 70000, TRUE);
    for (guint i = 0; i < 64; i++) {
        g_autoptr(GError) error = NULL;
        g_assert_true(g_output_stream_write_all(peer.out, bytes->data + i, 1, NULL, NULL, &error));
    }
    g_autoptr(GByteArray) rest = g_byte_array_new();
    g_byte_array_append(rest, bytes->data + 64, bytes->len - 64);
    raw_write(&peer, rest);
    assert_message(peer.ws, FERRY_WS_BINARY, big, 70300);
    raw_peer_free(&peer);
}

static void test_protocol_errors(void)
{
    struct {
        const char *name;
        gboolean fin;
        guint8 opcode;
        gboolean mask;
    } cases[] = {
        {"unmasked from client", TRUE, 0x2, FALSE},
        {"continuation first", TRUE, 0x0, TRUE},
        {"reserved opcode", TRUE, 0x3, TRUE},
        {"fragmented ping", FALSE, 0x9, TRUE},
    };
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        RawPeer peer = raw_peer(FALSE);
        g_autoptr(GByteArray) bytes = g_byte_array_new();
        frame(bytes, cases[i].fin, cases[i].opcode, "x", 1, cases[i].mask);
        raw_write(&peer, bytes);
        g_autoptr(GError) error = NULL;
        g_autoptr(GBytes) got = ferry_websocket_receive(peer.ws, NULL, NULL, &error);
        g_assert_null(got);
        g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
        g_test_message("%s: %s", cases[i].name, error->message);
        raw_peer_free(&peer);
    }

    /* A masked frame to a client, reserved bits, and a text inside a fragmented binary. */
    RawPeer peer = raw_peer(TRUE);
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    frame(bytes, TRUE, 0x2, "x", 1, TRUE);
    raw_write(&peer, bytes);
    g_autoptr(GError) error = NULL;
    g_assert_null(ferry_websocket_receive(peer.ws, NULL, NULL, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    raw_peer_free(&peer);

    peer = raw_peer(TRUE);
    g_byte_array_set_size(bytes, 0);
    frame(bytes, TRUE, 0x2, "x", 1, FALSE);
    bytes->data[0] |= 0x40;
    raw_write(&peer, bytes);
    g_clear_error(&error);
    g_assert_null(ferry_websocket_receive(peer.ws, NULL, NULL, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    raw_peer_free(&peer);

    peer = raw_peer(TRUE);
    g_byte_array_set_size(bytes, 0);
    frame(bytes, FALSE, 0x2, "x", 1, FALSE);
    frame(bytes, TRUE, 0x1, "y", 1, FALSE);
    raw_write(&peer, bytes);
    g_clear_error(&error);
    g_assert_null(ferry_websocket_receive(peer.ws, NULL, NULL, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    /* Sticky. */
    g_clear_error(&error);
    g_assert_null(ferry_websocket_receive(peer.ws, NULL, NULL, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    raw_peer_free(&peer);
}

static void test_too_large(void)
{
    Pair pair = ws_pair();
    ferry_websocket_set_max_message(pair.server, 1000);
    g_autoptr(GError) error = NULL;
    guint8 data[1001] = {0};
    g_assert_true(ferry_websocket_send(pair.client, FERRY_WS_BINARY, data, 1000, &error));
    assert_message(pair.server, FERRY_WS_BINARY, data, 1000);
    g_assert_true(ferry_websocket_send(pair.client, FERRY_WS_BINARY, data, 1001, &error));
    g_assert_null(ferry_websocket_receive(pair.server, NULL, NULL, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_TOO_LARGE);
    pair_free(&pair);

    /* Fragments adding up past the limit. */
    RawPeer peer = raw_peer(FALSE);
    ferry_websocket_set_max_message(peer.ws, 1000);
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    frame(bytes, FALSE, 0x2, data, 600, TRUE);
    frame(bytes, TRUE, 0x0, data, 600, TRUE);
    raw_write(&peer, bytes);
    g_clear_error(&error);
    g_assert_null(ferry_websocket_receive(peer.ws, NULL, NULL, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_TOO_LARGE);
    raw_peer_free(&peer);
}

static void test_ping(void)
{
    RawPeer peer = raw_peer(FALSE);
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    frame(bytes, TRUE, 0x9, "abc", 3, TRUE);
    frame(bytes, TRUE, 0xa, "unsolicited", 11, TRUE); /* pongs are ignored */
    frame(bytes, TRUE, 0x1, "x", 1, TRUE);
    raw_write(&peer, bytes);
    assert_message(peer.ws, FERRY_WS_TEXT, "x", 1);
    guint8 opcode;
    gboolean fin;
    g_autoptr(GByteArray) pong = raw_read_frame(&peer, &opcode, &fin);
    g_assert_cmpuint(opcode, ==, 0xa);
    g_assert_cmpmem(pong->data, pong->len, "abc", 3);
    raw_peer_free(&peer);
}

/* ---- closing ---- */

static gpointer receive_thread(gpointer data)
{
    GError *error = NULL;
    GBytes *bytes = ferry_websocket_receive(data, NULL, NULL, &error);
    g_assert_null(bytes);
    return error;
}

static void test_close(void)
{
    /* A close frame by hand: answered with the same code, receive ends with G_IO_ERROR_CLOSED. */
    RawPeer peer = raw_peer(FALSE);
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    frame(bytes, TRUE, 0x8,
          "\x03\xe8"
          "bye",
          5, TRUE);
    raw_write(&peer, bytes);
    g_autoptr(GError) error = NULL;
    g_assert_null(ferry_websocket_receive(peer.ws, NULL, NULL, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CLOSED);
    g_assert_nonnull(strstr(error->message, "bye"));
    g_assert_cmpuint(ferry_websocket_get_close_code(peer.ws), ==, 1000);
    guint8 opcode;
    gboolean fin;
    g_autoptr(GByteArray) answer = raw_read_frame(&peer, &opcode, &fin);
    g_assert_cmpuint(opcode, ==, 0x8);
    g_assert_cmpmem(answer->data, answer->len, "\x03\xe8", 2);
    g_clear_error(&error);
    g_assert_null(ferry_websocket_receive(peer.ws, NULL, NULL, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CLOSED);
    g_clear_error(&error);
    g_assert_false(ferry_websocket_send(peer.ws, FERRY_WS_TEXT, "x", 1, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CLOSED);
    /* A stream read sees a normal close as the end. */
    char buf[8];
    g_clear_error(&error);
    g_assert_cmpint(ferry_websocket_read_stream(peer.ws, buf, sizeof buf, NULL, &error), ==, 0);
    g_assert_no_error(error);
    raw_peer_free(&peer);

    /* Between two websockets: close waits for the answer the receiving side sends. */
    Pair pair = ws_pair();
    GThread *thread = g_thread_new("receive", receive_thread, pair.server);
    g_assert_true(ferry_websocket_close(pair.client, FERRY_WS_CLOSE_GOING_AWAY, "done"));
    GError *closed = g_thread_join(thread);
    g_assert_error(closed, G_IO_ERROR, G_IO_ERROR_CLOSED);
    g_error_free(closed);
    g_assert_cmpuint(ferry_websocket_get_close_code(pair.server), ==, FERRY_WS_CLOSE_GOING_AWAY);
    g_assert_cmpuint(ferry_websocket_get_close_code(pair.client), ==, FERRY_WS_CLOSE_GOING_AWAY);
    /* A stream read sees any other close as an error. */
    g_clear_error(&error);
    g_assert_cmpint(ferry_websocket_read_stream(pair.server, buf, sizeof buf, NULL, &error), ==, -1);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CLOSED);
    g_assert_true(ferry_websocket_close(pair.server, FERRY_WS_CLOSE_NORMAL, NULL));
    pair_free(&pair);

    /* A peer that just goes away. */
    pair = ws_pair();
    g_clear_pointer(&pair.client, ferry_websocket_free);
    g_clear_error(&error);
    g_assert_null(ferry_websocket_receive(pair.server, NULL, NULL, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL);
    pair_free(&pair);
}

/* ---- abort and cancellation ---- */

static gpointer cancel_later(gpointer data)
{
    g_usleep(100 * 1000);
    g_cancellable_cancel(data);
    return NULL;
}

static gpointer abort_later(gpointer data)
{
    g_usleep(100 * 1000);
    ferry_websocket_abort(data);
    return NULL;
}

static void test_abort(void)
{
    /* A blocked receive. */
    Pair pair = ws_pair();
    gint64 start = g_get_monotonic_time();
    GThread *thread = g_thread_new("receive", receive_thread, pair.server);
    g_usleep(100 * 1000);
    ferry_websocket_abort(pair.server);
    GError *error = g_thread_join(thread);
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED);
    g_clear_error(&error);
    g_assert_cmpint(g_get_monotonic_time() - start, <, 2 * G_USEC_PER_SEC);
    g_assert_false(ferry_websocket_send(pair.server, FERRY_WS_TEXT, "x", 1, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED);
    g_clear_error(&error);
    pair_free(&pair);

    /* A send blocked because the peer does not read. */
    pair = ws_pair();
    gsize len = 64 * MiB;
    g_autofree guint8 *big = g_malloc0(len);
    GThread *aborter = g_thread_new("abort", abort_later, pair.client);
    g_assert_false(ferry_websocket_send(pair.client, FERRY_WS_BINARY, big, len, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED);
    g_clear_error(&error);
    g_thread_join(aborter);
    pair_free(&pair);

    /* A receive cancelled through its GCancellable. */
    pair = ws_pair();
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    GThread *canceller = g_thread_new("cancel", cancel_later, cancellable);
    g_assert_null(ferry_websocket_receive(pair.server, NULL, cancellable, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED);
    g_clear_error(&error);
    g_thread_join(canceller);
    pair_free(&pair);
}

/* ---- sub-streams ---- */

static GByteArray *read_substream(FerryWebsocket *ws, gsize bufsize)
{
    GByteArray *all = g_byte_array_new();
    g_autofree guint8 *buf = g_malloc(bufsize);
    for (;;) {
        g_autoptr(GError) error = NULL;
        gssize n = ferry_websocket_read_stream(ws, buf, bufsize, NULL, &error);
        g_assert_no_error(error);
        g_assert_cmpint(n, >=, 0);
        g_assert_cmpint(n, <=, (gssize)bufsize);
        if (n == 0)
            return all;
        g_byte_array_append(all, buf, (guint)n);
    }
}

static void test_streams(void)
{
    Pair pair = ws_pair();
    g_autoptr(GError) error = NULL;
    guint8 big[100 * 1024];
    fill(big, sizeof big, 9);

    g_assert_true(ferry_websocket_write_stream(pair.client, "abc", 3, &error));
    g_assert_true(ferry_websocket_write_stream(pair.client, "", 0, &error));
    g_assert_true(
        ferry_websocket_send(pair.client, FERRY_WS_BINARY, "", 0, &error)); /* empty message: nothing */
    g_assert_true(ferry_websocket_write_stream(pair.client, "defgh", 5, &error));
    g_assert_true(ferry_websocket_send_barrier(pair.client, &error));
    g_assert_true(ferry_websocket_write_stream(pair.client, big, sizeof big, &error));
    g_assert_true(ferry_websocket_write_stream(pair.client, "end", 3, &error));
    g_assert_true(ferry_websocket_send_barrier(pair.client, &error));
    g_assert_true(ferry_websocket_send_barrier(pair.client, &error)); /* an empty sub-stream */
    g_assert_true(ferry_websocket_write_stream(pair.client, big, 5000, &error));
    g_assert_true(ferry_websocket_send_barrier(pair.client, &error));
    g_assert_true(ferry_websocket_write_stream(pair.client, big, 10, &error));
    g_assert_true(
        ferry_websocket_send(pair.client, FERRY_WS_TEXT, "ignored", 7, &error)); /* text ends it too */
    g_assert_true(ferry_websocket_send(pair.client, FERRY_WS_BINARY, "msg", 3, &error));
    g_assert_no_error(error);

    g_autoptr(GByteArray) first = read_substream(pair.server, 7);
    g_assert_cmpmem(first->data, first->len, "abcdefgh", 8);
    g_autoptr(GByteArray) second = read_substream(pair.server, 7);
    g_assert_cmpuint(second->len, ==, sizeof big + 3);
    g_assert_cmpmem(second->data, sizeof big, big, sizeof big);
    g_assert_cmpmem(second->data + sizeof big, 3, "end", 3);
    g_autoptr(GByteArray) third = read_substream(pair.server, 4096);
    g_assert_cmpuint(third->len, ==, 0);
    /* Half a message by stream, the rest as a message. */
    guint8 buf[1000];
    g_assert_cmpint(ferry_websocket_read_stream(pair.server, buf, sizeof buf, NULL, &error), ==, 1000);
    g_assert_cmpmem(buf, 1000, big, 1000);
    assert_message(pair.server, FERRY_WS_BINARY, big + 1000, 4000);
    assert_message(pair.server, FERRY_WS_TEXT, "", 0);
    g_autoptr(GByteArray) fifth = read_substream(pair.server, 64);
    g_assert_cmpmem(fifth->data, fifth->len, big, 10);
    assert_message(pair.server, FERRY_WS_BINARY, "msg", 3);
    g_assert_cmpint(ferry_websocket_read_stream(pair.server, buf, 0, NULL, &error), ==, 0);
    pair_free(&pair);
}

/* ---- pumps ---- */

typedef struct {
    int fd;
    gsize len;
    guint64 sum;
} PipeJob;

static gpointer pipe_writer(gpointer data)
{
    PipeJob *job = data;
    g_autofree guint8 *buf = g_malloc(job->len);
    fill(buf, job->len, 77);
    job->sum = sum_update(0, buf, job->len);
    gsize off = 0;
    while (off < job->len) {
        ssize_t n = write(job->fd, buf + off, MIN(job->len - off, 100000));
        g_assert_cmpint(n, >, 0);
        off += (gsize)n;
    }
    close(job->fd);
    return NULL;
}

static gpointer pipe_reader(gpointer data)
{
    PipeJob *job = data;
    guint8 buf[65536];
    job->sum = 0;
    for (;;) {
        ssize_t n = read(job->fd, buf, sizeof buf);
        g_assert_cmpint(n, >=, 0);
        if (n == 0)
            break;
        job->sum = sum_update(job->sum, buf, (gsize)n);
        job->len += (gsize)n;
    }
    close(job->fd);
    return NULL;
}

typedef struct {
    FerryWebsocket *ws;
    int fd;
    guint64 bytes;
    guint64 last_progress;
    guint calls;
    gboolean ok;
} PumpJob;

static void on_progress(guint64 bytes, gpointer user_data)
{
    PumpJob *job = user_data;
    g_assert_cmpuint(bytes, >=, job->last_progress);
    job->last_progress = bytes;
    job->calls++;
}

static gpointer pump_from_thread(gpointer data)
{
    PumpJob *job = data;
    g_autoptr(GError) error = NULL;
    job->ok =
        ferry_websocket_pump_from_fd(job->ws, job->fd, TRUE, on_progress, job, &job->bytes, NULL, &error);
    g_assert_no_error(error);
    return NULL;
}

static void test_pump(void)
{
    Pair pair = ws_pair();
    int in[2], out[2];
    g_assert_cmpint(pipe(in), ==, 0);
    g_assert_cmpint(pipe(out), ==, 0);
    PipeJob source = {.fd = in[1], .len = 5 * MiB + 123};
    PipeJob sink = {.fd = out[0]};
    PumpJob from = {.ws = pair.client, .fd = in[0]};
    PumpJob to = {.ws = pair.server, .fd = out[1]};
    GThread *threads[3] = {
        g_thread_new("source", pipe_writer, &source),
        g_thread_new("sink", pipe_reader, &sink),
        g_thread_new("pump", pump_from_thread, &from),
    };
    g_autoptr(GError) error = NULL;
    to.ok = ferry_websocket_pump_to_fd(to.ws, to.fd, on_progress, &to, &to.bytes, NULL, &error);
    g_assert_no_error(error);
    g_assert_true(to.ok);
    close(out[1]);
    for (int i = 0; i < 3; i++)
        g_thread_join(threads[i]);
    close(in[0]);
    g_assert_true(from.ok);
    g_assert_cmpuint(from.bytes, ==, source.len);
    g_assert_cmpuint(to.bytes, ==, source.len);
    g_assert_cmpuint(sink.len, ==, source.len);
    g_assert_cmpuint(sink.sum, ==, source.sum);
    g_assert_cmpuint(from.last_progress, ==, source.len);
    g_assert_cmpuint(to.last_progress, ==, source.len);
    g_assert_cmpuint(to.calls, >, 1);

    /* The websocket goes on after the barrier. */
    g_assert_true(ferry_websocket_send(pair.client, FERRY_WS_BINARY, "next", 4, &error));
    assert_message(pair.server, FERRY_WS_BINARY, "next", 4);
    pair_free(&pair);
}

/* ---- relay ---- */

typedef struct {
    FerryWebsocket *a, *b;
    gboolean ok;
    GError *error;
} ProxyJob;

static gpointer proxy_thread(gpointer data)
{
    ProxyJob *job = data;
    job->ok = ferry_websocket_proxy(job->a, job->b, NULL, &job->error);
    return NULL;
}

static void test_proxy(void)
{
    /* source client <-> (source server | relay | target client) <-> target server */
    Pair source = ws_pair();
    Pair target = ws_pair();
    ProxyJob job = {source.server, target.client};
    GThread *thread = g_thread_new("proxy", proxy_thread, &job);

    g_autoptr(GError) error = NULL;
    guint8 big[200 * 1024];
    fill(big, sizeof big, 5);
    g_assert_true(ferry_websocket_send(source.client, FERRY_WS_TEXT, "hello", 5, &error));
    g_assert_true(ferry_websocket_send(source.client, FERRY_WS_BINARY, big, sizeof big, &error));
    g_assert_true(ferry_websocket_send_barrier(source.client, &error));
    g_assert_true(ferry_websocket_send(source.client, FERRY_WS_BINARY, "", 0, &error));
    assert_message(target.server, FERRY_WS_TEXT, "hello", 5);
    assert_message(target.server, FERRY_WS_BINARY, big, sizeof big);
    assert_message(target.server, FERRY_WS_TEXT, "", 0);
    assert_message(target.server, FERRY_WS_BINARY, "", 0);

    g_assert_true(ferry_websocket_send(target.server, FERRY_WS_BINARY, "back", 4, &error));
    g_assert_true(ferry_websocket_send_barrier(target.server, &error));
    assert_message(source.client, FERRY_WS_BINARY, "back", 4);
    assert_message(source.client, FERRY_WS_TEXT, "", 0);

    /* One side closes: the other is closed with the same code. */
    GThread *receiver = g_thread_new("receive", receive_thread, target.server);
    g_assert_true(ferry_websocket_close(source.client, FERRY_WS_CLOSE_NORMAL, "bye"));
    GError *closed = g_thread_join(receiver);
    g_assert_error(closed, G_IO_ERROR, G_IO_ERROR_CLOSED);
    g_error_free(closed);
    g_assert_cmpuint(ferry_websocket_get_close_code(target.server), ==, FERRY_WS_CLOSE_NORMAL);
    g_thread_join(thread);
    g_assert_no_error(job.error);
    g_assert_true(job.ok);
    pair_free(&source);
    pair_free(&target);

    /* A side that fails: the relay reports the error and closes the other side with 1011. */
    source = ws_pair();
    target = ws_pair();
    job = (ProxyJob){source.server, target.client};
    thread = g_thread_new("proxy", proxy_thread, &job);
    receiver = g_thread_new("receive", receive_thread, target.server);
    g_clear_pointer(&source.client, ferry_websocket_free);
    closed = g_thread_join(receiver);
    g_assert_error(closed, G_IO_ERROR, G_IO_ERROR_CLOSED);
    g_error_free(closed);
    g_assert_cmpuint(ferry_websocket_get_close_code(target.server), ==, FERRY_WS_CLOSE_INTERNAL_ERROR);
    g_thread_join(thread);
    g_assert_false(job.ok);
    g_assert_error(job.error, FERRY_ERROR, FERRY_ERROR_INTERNAL);
    g_clear_error(&job.error);
    pair_free(&source);
    pair_free(&target);
}

/* ---- dialing ---- */

typedef enum {
    ANSWER_UPGRADE,
    ANSWER_FORBIDDEN,
    ANSWER_FORBIDDEN_CHUNKED,
} Answer;

typedef struct {
    GSocketListener *listener;
    guint16 port;
    GTlsCertificate *cert; /* NULL: plain */
    Answer answer;
    char *request;
    FerryWebsocket *ws;
    GThread *thread;
} Server;

static gpointer server_thread(gpointer data)
{
    Server *server = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(GSocketConnection) connection = g_socket_listener_accept(server->listener, NULL, NULL, &error);
    g_assert_no_error(error);
    g_autoptr(GIOStream) stream = NULL;
    if (server->cert != NULL) {
        stream = g_tls_server_connection_new(G_IO_STREAM(connection), server->cert, &error);
        g_assert_no_error(error);
        if (!g_tls_connection_handshake(G_TLS_CONNECTION(stream), NULL, &error))
            return NULL; /* the client refused the certificate */
    } else {
        stream = g_object_ref(G_IO_STREAM(connection));
    }
    GInputStream *in = g_io_stream_get_input_stream(stream);
    GOutputStream *out = g_io_stream_get_output_stream(stream);
    GString *request = g_string_new(NULL);
    while (!g_str_has_suffix(request->str, "\r\n\r\n")) {
        char c;
        g_assert_cmpint(g_input_stream_read(in, &c, 1, NULL, &error), ==, 1);
        g_string_append_c(request, c);
    }
    server->request = g_string_free(request, FALSE);

    const char *json =
        "{\"type\":\"error\",\"status\":\"\",\"status_code\":0,\"operation\":\"\",\"error_code\":403,"
        "\"error\":\"Websocket secret is not valid\",\"metadata\":null}";
    g_autofree char *answer = NULL;
    if (server->answer == ANSWER_FORBIDDEN) {
        answer = g_strdup_printf("HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
                                 "Content-Length: %zu\r\n\r\n%s",
                                 strlen(json), json);
    } else if (server->answer == ANSWER_FORBIDDEN_CHUNKED) {
        gsize half = strlen(json) / 2;
        answer = g_strdup_printf("HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "%zx\r\n%.*s\r\n%zx\r\n%s\r\n0\r\n\r\n",
                                 half, (int)half, json, strlen(json) - half, json + half);
    } else {
        const char *key = strstr(server->request, "Sec-WebSocket-Key: ") + strlen("Sec-WebSocket-Key: ");
        g_autofree char *k = g_strndup(key, strcspn(key, "\r"));
        g_autofree char *with_guid = g_strconcat(k, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", NULL);
        g_autoptr(GChecksum) sha1 = g_checksum_new(G_CHECKSUM_SHA1);
        g_checksum_update(sha1, (const guchar *)with_guid, -1);
        guint8 digest[20];
        gsize digest_len = sizeof digest;
        g_checksum_get_digest(sha1, digest, &digest_len);
        g_autofree char *accept = g_base64_encode(digest, digest_len);
        /* A frame right behind the 101, in the same write. */
        answer = g_strdup_printf(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: %s\r\n\r\n\x81\x05"
            "early",
            accept);
    }
    g_assert_true(g_output_stream_write_all(out, answer, strlen(answer), NULL, NULL, &error));
    if (server->answer == ANSWER_UPGRADE)
        server->ws = ferry_websocket_new(stream, FALSE);
    else
        g_io_stream_close(stream, NULL, NULL);
    return NULL;
}

static void server_start(Server *server, const char *cert_pem, const char *key_pem, Answer answer)
{
    g_autoptr(GError) error = NULL;
    memset(server, 0, sizeof *server);
    server->answer = answer;
    if (cert_pem != NULL) {
        g_autofree char *both = g_strconcat(cert_pem, key_pem, NULL);
        server->cert = g_tls_certificate_new_from_pem(both, -1, &error);
        g_assert_no_error(error);
    }
    server->listener = g_socket_listener_new();
    g_autoptr(GSocketAddress) any = g_inet_socket_address_new_from_string("127.0.0.1", 0);
    g_autoptr(GSocketAddress) bound = NULL;
    g_assert_true(g_socket_listener_add_address(server->listener, any, G_SOCKET_TYPE_STREAM,
                                                G_SOCKET_PROTOCOL_TCP, NULL, &bound, &error));
    server->port = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound));
    server->thread = g_thread_new("server", server_thread, server);
}

static void server_finish(Server *server)
{
    if (server->thread != NULL)
        g_thread_join(server->thread);
    g_clear_object(&server->listener);
    g_clear_object(&server->cert);
    g_clear_pointer(&server->request, g_free);
    g_clear_pointer(&server->ws, ferry_websocket_free);
}

static void dial_and_talk(const char *scheme, const char *cert_pem, const char *key_pem)
{
    Server server;
    server_start(&server, cert_pem, key_pem, ANSWER_UPGRADE);
    g_autofree char *url =
        g_strdup_printf("%s://127.0.0.1:%u/1.0/operations/abc/websocket?secret=s%%20x", scheme, server.port);
    g_autoptr(GError) error = NULL;
    g_autoptr(FerryWebsocket) ws = ferry_websocket_dial(url, cert_pem, NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_nonnull(ws);
    g_thread_join(g_steal_pointer(&server.thread));
    g_assert_true(
        g_str_has_prefix(server.request, "GET /1.0/operations/abc/websocket?secret=s%20x HTTP/1.1\r\n"));
    g_assert_nonnull(strstr(server.request, "\r\nUpgrade: websocket\r\n"));
    g_assert_nonnull(strstr(server.request, "\r\nSec-WebSocket-Version: 13\r\n"));
    g_autofree char *host = g_strdup_printf("\r\nHost: 127.0.0.1:%u\r\n", server.port);
    g_assert_nonnull(strstr(server.request, host));

    assert_message(ws, FERRY_WS_TEXT, "early", 5);
    g_assert_true(ferry_websocket_send(ws, FERRY_WS_BINARY, "ping", 4, &error));
    assert_message(server.ws, FERRY_WS_BINARY, "ping", 4);
    g_assert_true(ferry_websocket_send(server.ws, FERRY_WS_BINARY, "pong", 4, &error));
    assert_message(ws, FERRY_WS_BINARY, "pong", 4);
    g_autofree guint8 *big = g_malloc(3 * MiB);
    fill(big, 3 * MiB, 1);
    SendJob job = {ws, FERRY_WS_BINARY, big, 3 * MiB};
    GThread *sender = g_thread_new("send", send_thread, &job);
    assert_message(server.ws, FERRY_WS_BINARY, big, 3 * MiB);
    g_assert_null(g_thread_join(sender));

    GThread *receiver = g_thread_new("receive", receive_thread, server.ws);
    g_assert_true(ferry_websocket_close(ws, FERRY_WS_CLOSE_NORMAL, NULL));
    GError *closed = g_thread_join(receiver);
    g_assert_error(closed, G_IO_ERROR, G_IO_ERROR_CLOSED);
    g_error_free(closed);
    server_finish(&server);
}

static void test_dial(void)
{
    g_autofree char *cert = NULL, *key = NULL;
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_tls_cert_generate(FERRY_CERT_SERVER, &cert, &key, &error));
    dial_and_talk("wss", cert, key);
    dial_and_talk("ws", NULL, NULL);
}

/* Reader and writers at once over TLS, 16 MiB each way. */
static void test_concurrent_tls(void)
{
    g_autofree char *cert = NULL, *key = NULL;
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_tls_cert_generate(FERRY_CERT_SERVER, &cert, &key, &error));
    Server server;
    server_start(&server, cert, key, ANSWER_UPGRADE);
    g_autofree char *url = g_strdup_printf("wss://127.0.0.1:%u/x", server.port);
    g_autoptr(FerryWebsocket) ws = ferry_websocket_dial(url, cert, NULL, NULL, &error);
    g_assert_no_error(error);
    g_thread_join(g_steal_pointer(&server.thread));
    assert_message(ws, FERRY_WS_TEXT, "early", 5);
    run_concurrent(server.ws, ws, 8 * MiB);
    server_finish(&server);
}

static void test_dial_wrong_cert(void)
{
    g_autofree char *cert = NULL, *key = NULL, *other = NULL, *other_key = NULL;
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_tls_cert_generate(FERRY_CERT_SERVER, &cert, &key, &error));
    g_assert_true(ferry_tls_cert_generate(FERRY_CERT_SERVER, &other, &other_key, &error));
    Server server;
    server_start(&server, cert, key, ANSWER_UPGRADE);
    g_autofree char *url = g_strdup_printf("wss://127.0.0.1:%u/x", server.port);
    g_autoptr(FerryWebsocket) ws = ferry_websocket_dial(url, other, NULL, NULL, &error);
    g_assert_null(ws);
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_FORBIDDEN);
    g_test_message("%s", error->message);
    server_finish(&server);
}

static void test_dial_refused(void)
{
    g_autofree char *cert = NULL, *key = NULL;
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_tls_cert_generate(FERRY_CERT_SERVER, &cert, &key, &error));
    Answer answers[] = {ANSWER_FORBIDDEN, ANSWER_FORBIDDEN_CHUNKED};
    for (gsize i = 0; i < G_N_ELEMENTS(answers); i++) {
        Server server;
        server_start(&server, cert, key, answers[i]);
        g_autofree char *url = g_strdup_printf("wss://127.0.0.1:%u/x", server.port);
        g_clear_error(&error);
        g_autoptr(FerryWebsocket) ws = ferry_websocket_dial(url, cert, NULL, NULL, &error);
        g_assert_null(ws);
        g_assert_error(error, FERRY_ERROR, 403);
        g_assert_cmpstr(error->message, ==, "Websocket secret is not valid");
        server_finish(&server);
    }

    /* Nobody listening; a bad URL. */
    g_autoptr(GSocketListener) listener = g_socket_listener_new();
    guint16 port = g_socket_listener_add_any_inet_port(listener, NULL, &error);
    g_clear_object(&listener);
    g_autofree char *url = g_strdup_printf("ws://127.0.0.1:%u/x", port);
    g_clear_error(&error);
    g_assert_null(ferry_websocket_dial(url, NULL, NULL, NULL, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE);
    g_clear_error(&error);
    g_assert_null(ferry_websocket_dial("https://127.0.0.1/x", NULL, NULL, NULL, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
}

/* ---- send limit ---- */

static gpointer receive_bytes_thread(gpointer data)
{
    g_autoptr(GError) error = NULL;
    GBytes *bytes = ferry_websocket_receive(data, NULL, NULL, &error);
    g_assert_no_error(error);
    return bytes;
}

static void test_send_limit(void)
{
    Pair pair = ws_pair();
    ferry_websocket_set_send_limit(pair.client, 4 * MiB);
    g_autofree guint8 *data = g_malloc0(2 * MiB);
    GThread *thread = g_thread_new("receive", receive_bytes_thread, pair.server);
    gint64 start = g_get_monotonic_time();
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_websocket_send(pair.client, FERRY_WS_BINARY, data, 2 * MiB, &error));
    gint64 elapsed = g_get_monotonic_time() - start;
    GBytes *got = g_thread_join(thread);
    g_assert_cmpuint(g_bytes_get_size(got), ==, 2 * MiB);
    g_bytes_unref(got);
    g_test_message("2 MiB at 4 MiB/s took %.2f s", elapsed / 1e6);
    g_assert_cmpint(elapsed, >=, 400 * 1000);
    g_assert_cmpint(elapsed, <, 5 * G_USEC_PER_SEC);
    pair_free(&pair);
}

/* ---- random bytes ---- */

static void test_fuzz(void)
{
    GRand *rand = g_rand_new_with_seed(12345);
    for (int round = 0; round < 400; round++) {
        int fds[2];
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
        g_autoptr(GSocket) mine = g_socket_new_from_fd(fds[0], NULL);
        g_autoptr(GSocketConnection) connection = g_socket_connection_factory_create_connection(mine);
        gboolean is_client = g_rand_boolean(rand);
        g_autoptr(FerryWebsocket) ws = ferry_websocket_new(G_IO_STREAM(connection), is_client);
        ferry_websocket_set_max_message(ws, 64 * 1024);

        /* Plausible frames (random header bits, small lengths) mixed with plain noise. */
        g_autoptr(GByteArray) bytes = g_byte_array_new();
        int frames = g_rand_int_range(rand, 0, 8);
        for (int f = 0; f < frames; f++) {
            guint8 payload[300];
            gsize len = (gsize)g_rand_int_range(rand, 0, g_rand_boolean(rand) ? 130 : 300);
            for (gsize i = 0; i < len; i++)
                payload[i] = (guint8)g_rand_int(rand);
            guint8 opcodes[] = {0x0, 0x1, 0x2, 0x8, 0x9, 0xa, (guint8)g_rand_int_range(rand, 0, 16)};
            frame(bytes, g_rand_boolean(rand), opcodes[g_rand_int_range(rand, 0, G_N_ELEMENTS(opcodes))],
                  payload, len, g_rand_int_range(rand, 0, 8) != 0 ? !is_client : is_client);
            if (g_rand_int_range(rand, 0, 10) == 0)
                bytes->data[bytes->len - 1 - (guint)g_rand_int_range(rand, 0, (gint)MIN(bytes->len, 20))] ^=
                    0xff;
        }
        int noise = g_rand_int_range(rand, 0, frames == 0 ? 2000 : 40);
        for (int i = 0; i < noise; i++) {
            guint8 b = (guint8)g_rand_int(rand);
            g_byte_array_append(bytes, &b, 1);
        }
        g_assert_cmpint(write(fds[1], bytes->data, bytes->len), ==, (gssize)bytes->len);
        shutdown(fds[1], SHUT_WR);

        gboolean as_stream = g_rand_boolean(rand);
        for (int i = 0; i < 100; i++) {
            g_autoptr(GError) error = NULL;
            if (as_stream) {
                guint8 buf[100];
                if (ferry_websocket_read_stream(ws, buf, sizeof buf, NULL, &error) < 0)
                    break;
            } else {
                g_autoptr(GBytes) got = ferry_websocket_receive(ws, NULL, NULL, &error);
                if (got == NULL)
                    break;
            }
        }
        close(fds[1]);
    }
    g_rand_free(rand);
}

/* ---- libsoup hand-over ---- */

typedef struct {
    GMainContext *context;
    GMainLoop *loop;
    GAsyncQueue *stolen;
    guint16 port;
    GMutex lock;
    GCond ready;
} SoupServerThread;

static void on_wrote_informational(SoupServerMessage *msg, gpointer user_data)
{
    SoupServerThread *st = user_data;
    g_async_queue_push(st->stolen, soup_server_message_steal_connection(msg));
}

static void on_request(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                       gpointer user_data)
{
    if (!soup_websocket_server_check_handshake(msg, NULL, NULL, NULL, NULL)) {
        soup_server_message_set_status(msg, 400, NULL);
        return;
    }
    soup_websocket_server_process_handshake(msg, NULL, NULL, NULL, NULL);
    g_signal_connect(msg, "wrote-informational", G_CALLBACK(on_wrote_informational), user_data);
}

static gpointer soup_thread(gpointer data)
{
    SoupServerThread *st = data;
    g_main_context_push_thread_default(st->context);
    g_autoptr(GError) error = NULL;
    SoupServer *server = soup_server_new(NULL, NULL);
    soup_server_add_handler(server, "/ws", on_request, st, NULL);
    g_assert_true(soup_server_listen_local(server, 0, SOUP_SERVER_LISTEN_IPV4_ONLY, &error));
    GSList *uris = soup_server_get_uris(server);
    g_mutex_lock(&st->lock);
    st->port = (guint16)g_uri_get_port(uris->data);
    g_cond_signal(&st->ready);
    g_mutex_unlock(&st->lock);
    g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
    g_main_loop_run(st->loop);
    soup_server_disconnect(server);
    g_object_unref(server);
    g_main_context_pop_thread_default(st->context);
    return NULL;
}

static gboolean quit_loop(gpointer data)
{
    g_main_loop_quit(data);
    return G_SOURCE_REMOVE;
}

/* The client sends a frame in the same write as its upgrade request: libsoup reads it into its buffer with
 * the headers, and it must come out of the stolen stream. */
static void test_soup_steal(void)
{
    SoupServerThread st = {.context = g_main_context_new(), .stolen = g_async_queue_new()};
    st.loop = g_main_loop_new(st.context, FALSE);
    g_mutex_init(&st.lock);
    g_cond_init(&st.ready);
    g_mutex_lock(&st.lock);
    GThread *thread = g_thread_new("soup", soup_thread, &st);
    while (st.port == 0)
        g_cond_wait(&st.ready, &st.lock);
    g_mutex_unlock(&st.lock);

    g_autoptr(GError) error = NULL;
    g_autoptr(GSocketClient) client = g_socket_client_new();
    g_socket_client_set_enable_proxy(client, FALSE);
    g_autofree char *host = g_strdup_printf("127.0.0.1:%u", st.port);
    g_autoptr(GSocketConnection) raw = g_socket_client_connect_to_host(client, host, 0, NULL, &error);
    g_assert_no_error(error);
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    g_autofree char *request =
        g_strdup_printf("GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n",
                        host);
    g_byte_array_append(bytes, (const guint8 *)request, (guint)strlen(request));
    frame(bytes, TRUE, 0x2, "early bytes", 11, TRUE);
    g_assert_true(g_output_stream_write_all(g_io_stream_get_output_stream(G_IO_STREAM(raw)), bytes->data,
                                            bytes->len, NULL, NULL, &error));

    GIOStream *stolen = g_async_queue_timeout_pop(st.stolen, 5 * G_USEC_PER_SEC);
    g_assert_nonnull(stolen);
    g_test_message("stolen stream: %s", G_OBJECT_TYPE_NAME(stolen));
    /* Nothing left in the kernel: the frame sits in libsoup's buffer. */
    GIOStream *base = NULL;
    g_object_get(stolen, "base-iostream", &base, NULL);
    g_assert_true(G_IS_SOCKET_CONNECTION(base));
    GSocket *socket = g_socket_connection_get_socket(G_SOCKET_CONNECTION(base));
    g_assert_cmpint(g_socket_get_available_bytes(socket), ==, 0);
    g_assert_cmpint(g_socket_get_timeout(socket), ==, 0);
    g_object_unref(base);

    g_autoptr(FerryWebsocket) ws = ferry_websocket_new(stolen, FALSE);
    g_object_unref(stolen);
    assert_message(ws, FERRY_WS_BINARY, "early bytes", 11);
    g_assert_true(ferry_websocket_send(ws, FERRY_WS_TEXT, "hi", 2, &error));

    /* The client sees the 101, then our frame. */
    GInputStream *in = g_io_stream_get_input_stream(G_IO_STREAM(raw));
    GString *answer = g_string_new(NULL);
    while (!g_str_has_suffix(answer->str, "\r\n\r\n")) {
        char c;
        g_assert_cmpint(g_input_stream_read(in, &c, 1, NULL, &error), ==, 1);
        g_string_append_c(answer, c);
    }
    g_assert_true(g_str_has_prefix(answer->str, "HTTP/1.1 101"));
    g_assert_nonnull(strstr(answer->str, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    g_string_free(answer, TRUE);
    guint8 got[4];
    g_assert_true(g_input_stream_read_all(in, got, 4, NULL, NULL, &error));
    g_assert_cmpmem(got, 4, "\x81\x02hi", 4);

    g_main_context_invoke(st.context, quit_loop, st.loop);
    g_thread_join(thread);
    g_main_loop_unref(st.loop);
    g_main_context_unref(st.context);
    g_async_queue_unref(st.stolen);
    g_mutex_clear(&st.lock);
    g_cond_clear(&st.ready);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/websocket/roundtrip", test_roundtrip);
    g_test_add_func("/websocket/concurrent", test_concurrent);
    g_test_add_func("/websocket/fragments", test_fragments);
    g_test_add_func("/websocket/protocol-errors", test_protocol_errors);
    g_test_add_func("/websocket/too-large", test_too_large);
    g_test_add_func("/websocket/ping", test_ping);
    g_test_add_func("/websocket/close", test_close);
    g_test_add_func("/websocket/abort", test_abort);
    g_test_add_func("/websocket/streams", test_streams);
    g_test_add_func("/websocket/pump", test_pump);
    g_test_add_func("/websocket/proxy", test_proxy);
    g_test_add_func("/websocket/dial", test_dial);
    g_test_add_func("/websocket/concurrent-tls", test_concurrent_tls);
    g_test_add_func("/websocket/dial-wrong-cert", test_dial_wrong_cert);
    g_test_add_func("/websocket/dial-refused", test_dial_refused);
    g_test_add_func("/websocket/send-limit", test_send_limit);
    g_test_add_func("/websocket/fuzz", test_fuzz);
    g_test_add_func("/websocket/soup-steal", test_soup_steal);
    return g_test_run();
}
