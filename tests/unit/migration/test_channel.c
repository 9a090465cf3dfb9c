#include "test_channel.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { FRAME_DATA = 'D', FRAME_BARRIER = 'B', HEADER_SIZE = 5 };

struct _TestChannel {
    int fd;
    GMutex write_lock;
    gsize remaining; /* payload left in the data frame being read */
    gint aborted;
    guint64 written, read;
};

static gboolean channel_failed(TestChannel *ch, GError **error)
{
    if (g_atomic_int_get(&ch->aborted)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_CLOSED, "Channel aborted");
        return TRUE;
    }
    return FALSE;
}

/* Wait for data; FALSE with error when cancelled. */
static gboolean wait_readable(TestChannel *ch, GCancellable *c, GError **error)
{
    GPollFD cancel_fd = {.fd = -1};
    gboolean have_cancel = c != NULL && g_cancellable_make_pollfd(c, &cancel_fd);
    struct pollfd p[2] = {{.fd = ch->fd, .events = POLLIN},
                          {.fd = have_cancel ? cancel_fd.fd : -1, .events = POLLIN}};
    while (poll(p, 2, -1) < 0 && errno == EINTR)
        ;
    if (have_cancel)
        g_cancellable_release_fd(c);
    if (g_cancellable_set_error_if_cancelled(c, error))
        return FALSE;
    return TRUE;
}

static gssize recv_some(TestChannel *ch, void *buf, gsize size, GCancellable *c, GError **error)
{
    for (;;) {
        if (channel_failed(ch, error) || !wait_readable(ch, c, error))
            return -1;
        gssize n = recv(ch->fd, buf, size, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n < 0) {
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "recv: %s", g_strerror(errno));
            return -1;
        }
        if (n == 0) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED, "Peer closed the channel");
            return -1;
        }
        return n;
    }
}

static gboolean recv_all(TestChannel *ch, void *buf, gsize size, GCancellable *c, GError **error)
{
    char *p = buf;
    while (size > 0) {
        gssize n = recv_some(ch, p, size, c, error);
        if (n < 0)
            return FALSE;
        p += n;
        size -= (gsize)n;
    }
    return TRUE;
}

static gboolean send_all(TestChannel *ch, const void *buf, gsize size, GError **error)
{
    const char *p = buf;
    while (size > 0) {
        if (channel_failed(ch, error))
            return FALSE;
        gssize n = send(ch->fd, p, size, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "send: %s", g_strerror(errno));
            return FALSE;
        }
        p += n;
        size -= (gsize)n;
    }
    return TRUE;
}

static gboolean send_frame(TestChannel *ch, char type, const void *data, gsize length, GError **error)
{
    guchar header[HEADER_SIZE] = {(guchar)type, (guchar)(length >> 24), (guchar)(length >> 16),
                                  (guchar)(length >> 8), (guchar)length};
    g_mutex_lock(&ch->write_lock);
    gboolean ok = send_all(ch, header, sizeof header, error) && send_all(ch, data, length, error);
    g_mutex_unlock(&ch->write_lock);
    return ok;
}

static gssize ch_read(gpointer channel, void *buffer, gsize size, GCancellable *c, GError **error)
{
    TestChannel *ch = channel;
    while (ch->remaining == 0) {
        guchar header[HEADER_SIZE];
        if (!recv_all(ch, header, sizeof header, c, error))
            return -1;
        if (header[0] == FRAME_BARRIER)
            return 0;
        g_assert_cmpint(header[0], ==, FRAME_DATA);
        ch->remaining =
            ((gsize)header[1] << 24) | ((gsize)header[2] << 16) | ((gsize)header[3] << 8) | header[4];
    }
    gssize n = recv_some(ch, buffer, MIN(size, ch->remaining), c, error);
    if (n > 0) {
        ch->remaining -= (gsize)n;
        __atomic_add_fetch(&ch->read, (guint64)n, __ATOMIC_RELAXED);
    }
    return n;
}

static gboolean ch_write(gpointer channel, const void *data, gsize length, GError **error)
{
    TestChannel *ch = channel;
    if (length == 0)
        return TRUE;
    if (!send_frame(ch, FRAME_DATA, data, length, error))
        return FALSE;
    __atomic_add_fetch(&ch->written, (guint64)length, __ATOMIC_RELAXED);
    return TRUE;
}

static gboolean ch_end(gpointer channel, GError **error)
{
    return send_frame(channel, FRAME_BARRIER, NULL, 0, error);
}

static void ch_abort(gpointer channel)
{
    TestChannel *ch = channel;
    g_atomic_int_set(&ch->aborted, 1);
    shutdown(ch->fd, SHUT_RDWR); /* wakes blocked readers and writers here, and the peer sees the end */
}

void test_channel_pair(TestChannel **a, TestChannel **b)
{
    int fds[2];
    g_assert_no_errno(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
    TestChannel *ends[2];
    for (int i = 0; i < 2; i++) {
        ends[i] = g_new0(TestChannel, 1);
        ends[i]->fd = fds[i];
        g_mutex_init(&ends[i]->write_lock);
    }
    *a = ends[0];
    *b = ends[1];
}

void test_channel_free(TestChannel *ch)
{
    if (ch == NULL)
        return;
    close(ch->fd);
    g_mutex_clear(&ch->write_lock);
    g_free(ch);
}

FerryByteChannel test_channel_iface(TestChannel *ch)
{
    return (FerryByteChannel){
        .read = ch_read, .write = ch_write, .end = ch_end, .abort = ch_abort, .channel = ch};
}

guint64 test_channel_bytes_written(TestChannel *ch)
{
    return __atomic_load_n(&ch->written, __ATOMIC_RELAXED);
}

guint64 test_channel_bytes_read(TestChannel *ch)
{
    return __atomic_load_n(&ch->read, __ATOMIC_RELAXED);
}
