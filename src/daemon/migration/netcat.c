/* rsync's remote shell on the sending side. rsync gives its remote shell a socketpair (or pipes) as
 * stdin/stdout and never lets us in between, so the shell it runs is ferryd itself relaying to a socket that
 * ferryd created and rsync merely passed down (fd inheritance; no listening socket anyone could join). */
#include "netcat.h"
#include "rsync.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define RELAY_BUFFER (128 * 1024)

typedef struct {
    int from, to;
    char *buf;
    gsize len, off;
    gboolean eof;  /* `from` is exhausted */
    gboolean done; /* direction finished: ended and half-closed, or abandoned */
} Direction;

static gboolean set_nonblocking(int fd, GError **error)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        ferry_set_error_errno(error, errno, "Failed to set fd %d non-blocking", fd);
        return FALSE;
    }
    return TRUE;
}

/* MSG_NOSIGNAL: a vanished reader must be an error code, not a SIGPIPE. */
static gssize write_some(int fd, const char *data, gsize len)
{
    gssize n = send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == ENOTSOCK)
        n = write(fd, data, len);
    return n;
}

static void half_close(int fd)
{
    if (shutdown(fd, SHUT_WR) < 0 && errno == ENOTSOCK)
        close(fd);
}

static gboolean is_gone(int err)
{
    return err == EPIPE || err == ECONNRESET;
}

/* Read what is available into an empty buffer. FALSE on a hard error. */
static gboolean fill(Direction *d, GError **error, const char *what)
{
    gssize n = read(d->from, d->buf, RELAY_BUFFER);
    if (n > 0) {
        d->len = (gsize)n;
        d->off = 0;
    } else if (n == 0 || (n < 0 && errno == ECONNRESET)) {
        d->eof = TRUE;
    } else if (errno != EAGAIN && errno != EINTR) {
        ferry_set_error_errno(error, errno, "Failed to read from %s", what);
        return FALSE;
    }
    return TRUE;
}

/* Write what is buffered. Returns -1 on EAGAIN-free hard error (errno set), 0 otherwise. */
static int flush(Direction *d)
{
    while (d->len > 0) {
        gssize n = write_some(d->to, d->buf + d->off, d->len);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            return -1;
        }
        d->off += (gsize)n;
        d->len -= (gsize)n;
    }
    return 0;
}

gboolean ferry_netcat_bridge(int in_fd, int out_fd, int sock_fd, GError **error)
{
    if (!set_nonblocking(in_fd, error) || !set_nonblocking(out_fd, error) || !set_nonblocking(sock_fd, error))
        return FALSE;

    g_autofree char *up_buf = g_malloc(RELAY_BUFFER);
    g_autofree char *down_buf = g_malloc(RELAY_BUFFER);
    Direction up = {.from = in_fd, .to = sock_fd, .buf = up_buf};
    Direction down = {.from = sock_fd, .to = out_fd, .buf = down_buf};

    /* Like ssh, we are done when the far side is: rsync waits for its remote shell to exit before it closes
     * the shell's stdin, so waiting for that EOF as well would deadlock. */
    while (!down.done) {
        /* Only fds we wait on are polled, except out_fd which is watched while idle: POLLERR/POLLHUP there
         * is how we learn that rsync is gone when nothing is flowing to it. */
        struct pollfd p[4] = {
            {.fd = (!up.done && !up.eof && up.len == 0) ? up.from : -1, .events = POLLIN},
            {.fd = (!up.done && up.len > 0) ? up.to : -1, .events = POLLOUT},
            {.fd = (!down.done && !down.eof && down.len == 0) ? down.from : -1, .events = POLLIN},
            {.fd = (!down.done) ? down.to : -1, .events = down.len > 0 ? POLLOUT : 0},
        };
        if (poll(p, G_N_ELEMENTS(p), -1) < 0) {
            if (errno == EINTR)
                continue;
            ferry_set_error_errno(error, errno, "Failed to poll");
            return FALSE;
        }

        if (p[0].revents && !fill(&up, error, "rsync"))
            return FALSE;
        if (!up.done && flush(&up) < 0) {
            /* ferryd's end is gone: nothing can reach the peer any more. */
            ferry_set_error_errno(error, errno, "Failed to write to the migration socket");
            return FALSE;
        }
        if (!up.done && up.eof && up.len == 0) {
            half_close(up.to);
            up.done = TRUE;
        }

        if (p[2].revents && !fill(&down, error, "the migration socket"))
            return FALSE;
        if (!down.done && flush(&down) < 0) {
            if (!is_gone(errno)) {
                ferry_set_error_errno(error, errno, "Failed to write to rsync");
                return FALSE;
            }
            down.done = TRUE; /* rsync exited: what it did not read, it did not need */
        }
        if (!down.done && down.len == 0 && (p[3].revents & (POLLERR | POLLHUP)) && !down.eof)
            down.done = TRUE;
        if (!down.done && down.eof && down.len == 0) {
            half_close(down.to);
            down.done = TRUE;
        }
    }

    /* Pass on what rsync already wrote (a last error message, say), without waiting for more. */
    while (!up.done) {
        if (up.len > 0) {
            struct pollfd p = {.fd = up.to, .events = POLLOUT};
            if (flush(&up) < 0 || (up.len > 0 && poll(&p, 1, 1000) <= 0))
                break;
            continue;
        }
        if (up.eof || !fill(&up, NULL, "rsync") || up.len == 0)
            break;
    }
    half_close(up.to);
    return TRUE;
}

int ferry_rsync_netcat_main(int argc, char **argv)
{
    /* argv: netcat <fd> [-- <what rsync appends: host, "rsync", server args...>] */
    if (argc < 2) {
        fprintf(stderr, "Usage: ferryd netcat <fd> [-- ...]\n");
        return 2;
    }
    char *end = NULL;
    errno = 0;
    long fd = strtol(argv[1], &end, 10);
    struct stat st;
    if (errno != 0 || end == argv[1] || *end != '\0' || fd < 3 || fd > G_MAXINT || fstat((int)fd, &st) < 0 ||
        !S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "ferryd netcat: %s is not an inherited socket\n", argv[1]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    g_autoptr(GError) error = NULL;
    if (!ferry_netcat_bridge(STDIN_FILENO, STDOUT_FILENO, (int)fd, &error)) {
        fprintf(stderr, "ferryd netcat: %s\n", error->message);
        return 1;
    }
    return 0;
}
