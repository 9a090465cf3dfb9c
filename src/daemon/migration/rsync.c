/* RSYNC migration transport. One call = one rsync run = one sub-stream in each direction of the channel.
 *
 * Shape of a run (both sides):
 *   rsync <-> socketpair <-> two pump threads <-> channel
 *   - "out" pump: rsync's output -> channel; at its end, our barrier;
 *   - "in" pump: channel -> rsync's input until the peer's barrier, then half-close rsync's input;
 *   - the calling thread supervises: rsync's stderr (kept for the error) and its exit through a pidfd.
 * Any pump failure kills rsync and aborts the channel, which unblocks everything else; a user cancel does
 * the same. rsync runs in its own process group so the kill also reaches the processes it forks (the
 * receiver's generator, the sender's netcat helper). The pidfd means a kill can never hit a recycled pid:
 * the child stays a zombie until we reap it, and kills are skipped once it is reaped. */
#include "rsync.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define PUMP_BUFFER (256 * 1024)
/* The fd the netcat helper finds its socket on (passed down through rsync, which leaves it alone). */
#define HELPER_FD 3
#define STDERR_KEEP 8192
/* rsync's first words: its first complaint is the cause, later ones often consequences. */
#define STDERR_HEAD 1024
#define STDERR_LINES 6
/* After rsync exited, how long the peer may take to end its sub-stream: it is normally immediate (the peer's
 * rsync finishes with ours); a peer that never ends it must not hang the migration. */
#define GRACE_AFTER_SUCCESS (30 * G_USEC_PER_SEC)
#define GRACE_AFTER_FAILURE (10 * G_USEC_PER_SEC)
/* rsync's exit status for "some files vanished before they could be transferred". */
#define RSYNC_EXIT_VANISHED 24
/* "Partial transfer due to error": the protocol ran to its end and some files failed. */
#define RSYNC_EXIT_PARTIAL 23

/* ---- what the local rsync can do ---- */

typedef struct {
    char *path; /* NULL: not installed */
    guint version[3];
    gboolean xattrs, compress;
} RsyncProbe;

static gboolean capability_listed(const char *text, const char *section, const char *word)
{
    const char *start = strstr(text, section);
    if (start == NULL)
        return FALSE;
    /* A section runs until the next unindented line. */
    const char *end = start + strlen(section);
    while ((end = strchr(end, '\n')) != NULL && (end[1] == ' ' || end[1] == '\t'))
        end++;
    g_autofree char *body = end ? g_strndup(start, (gsize)(end - start)) : g_strdup(start);
    g_auto(GStrv) tokens = g_strsplit_set(body, " ,\t\n", -1);
    for (guint i = 0; tokens[i] != NULL; i++)
        if (g_strcmp0(tokens[i], word) == 0)
            return i == 0 || g_strcmp0(tokens[i - 1], "no") != 0;
    return FALSE;
}

static gpointer probe_rsync(gpointer unused)
{
    RsyncProbe *probe = g_new0(RsyncProbe, 1);
    probe->path = g_find_program_in_path("rsync");
    if (probe->path == NULL)
        return probe;

    const char *argv[] = {probe->path, "--version", NULL};
    const char *envp[] = {"LC_ALL=C", NULL};
    g_autofree char *out = NULL;
    int status = 0;
    if (!g_spawn_sync(NULL, (char **)argv, (char **)envp, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL,
                      &status, NULL) ||
        !g_spawn_check_wait_status(status, NULL))
        return probe;

    /* "rsync  version 3.2.7  protocol version 31" */
    const char *v = strstr(out, "version ");
    if (v != NULL)
        sscanf(v + strlen("version "), "%u.%u.%u", &probe->version[0], &probe->version[1],
               &probe->version[2]);
    probe->xattrs = capability_listed(out, "Capabilities:", "xattrs");
    /* rsync before 3.2 has no "Compress list" and always has zlib; -z without negotiation is zlib. */
    probe->compress =
        strstr(out, "Compress list:") == NULL || capability_listed(out, "Compress list:", "zlib");
    return probe;
}

static const RsyncProbe *rsync_probe(void)
{
    static GOnce once = G_ONCE_INIT;
    return g_once(&once, probe_rsync, NULL);
}

static gboolean rsync_at_least(guint major, guint minor, guint patch)
{
    const guint *v = rsync_probe()->version;
    if (v[0] != major)
        return v[0] > major;
    if (v[1] != minor)
        return v[1] > minor;
    return v[2] >= patch;
}

void ferry_rsync_features(gboolean *xattrs, gboolean *delete, gboolean *compress)
{
    const RsyncProbe *probe = rsync_probe();
    gboolean present = probe->path != NULL;
    if (xattrs)
        *xattrs = present && probe->xattrs;
    if (delete)
        *delete = present;
    if (compress)
        *compress = present && probe->compress;
}

/* ---- argument lists (must stay byte-compatible with Incus's internal/rsync) ---- */

static void add_feature_args(GPtrArray *args, const FerryRsyncOptions *options)
{
    if (options->xattrs) {
        g_ptr_array_add(args, g_strdup("--xattrs"));
        /* Like Incus: never carry SELinux labels between hosts (the filter modifier needs 3.1.3). */
        if (rsync_at_least(3, 1, 3))
            g_ptr_array_add(args, g_strdup("--filter=-x security.selinux"));
    }
    if (options->delete)
        g_ptr_array_add(args, g_strdup("--delete"));
    if (options->compress) {
        g_ptr_array_add(args, g_strdup("--compress"));
        /* Level 2: level 6 collapsed throughput on gigabit links (canonical/lxd#5215). */
        g_ptr_array_add(args, g_strdup("--compress-level=2"));
    }
}

GPtrArray *ferry_rsync_sender_args(const FerryRsyncOptions *options)
{
    GPtrArray *args = g_ptr_array_new_with_free_func(g_free);
    const char *fixed[] = {"-ar", "--devices", "--numeric-ids", "--partial", "--sparse"};
    for (gsize i = 0; i < G_N_ELEMENTS(fixed); i++)
        g_ptr_array_add(args, g_strdup(fixed[i]));
    if (options->bwlimit_bytes_per_sec > 0) {
        /* rsync counts KiB/s and takes 0 as "unlimited" (newer versions reject it outright). */
        guint64 kib = MAX(options->bwlimit_bytes_per_sec / 1024, 1);
        g_ptr_array_add(args, g_strdup("--bwlimit"));
        g_ptr_array_add(args, g_strdup_printf("%" G_GUINT64_FORMAT, kib));
    }
    add_feature_args(args, options);
    if (options->hard_links)
        g_ptr_array_add(args, g_strdup("-H"));
    for (gsize i = 0; options->excludes != NULL && options->excludes[i] != NULL; i++)
        g_ptr_array_add(args, g_strdup_printf("--exclude=%s", options->excludes[i]));
    return args;
}

GPtrArray *ferry_rsync_receiver_args(const FerryRsyncOptions *options)
{
    GPtrArray *args = g_ptr_array_new_with_free_func(g_free);
    /* The server's option string is what the sender's client would have generated for Incus's sender
     * options; "e.iLsfx" are the protocol capabilities it claims for the client (no checksum/compression
     * negotiation, so md5 and zlib), and the client follows what the server announces. */
    const char *fixed[] = {"--server",  "-vlogDtpre.iLsfx", "--numeric-ids",     "--devices",
                           "--partial", "--sparse",         "--modify-window=-1"};
    for (gsize i = 0; i < G_N_ELEMENTS(fixed); i++)
        g_ptr_array_add(args, g_strdup(fixed[i]));
    add_feature_args(args, options);
    if (options->hard_links)
        g_ptr_array_add(args, g_strdup("-H"));
    if (options->link_dest != NULL)
        g_ptr_array_add(args, g_strdup_printf("--link-dest=%s", options->link_dest));
    return args;
}

/* ---- one rsync process bridged to the channel ---- */

typedef struct {
    FerryByteChannel *channel;
    const FerryRsyncOptions *options;
    gboolean sending;

    int sock; /* our end of the socketpair carrying rsync's protocol stream */
    GPid pid;
    int pidfd;
    GCancellable *stop; /* cancelled to unblock the pumps */
    int stop_fd;

    GMutex lock;
    GCond cond;
    gboolean reaped, aborted, cancelled;
    gboolean killed_for_pump; /* we killed rsync because a pump failed: its death is not news */
    gboolean channel_failed;  /* the channel itself failed (not because we stopped it) */
    int pumps_running;
    GError *pump_error; /* the first failure seen by a pump */
} Bridge;

static void bridge_kill(Bridge *b)
{
    g_mutex_lock(&b->lock);
    if (!b->reaped) {
        /* Unreaped, the leader's pid is also the group id and cannot have been recycled. */
        kill(-b->pid, SIGKILL);
        syscall(SYS_pidfd_send_signal, b->pidfd, SIGKILL, NULL, 0);
    }
    g_mutex_unlock(&b->lock);
}

static void bridge_abort_channel(Bridge *b)
{
    g_mutex_lock(&b->lock);
    gboolean first = !b->aborted;
    b->aborted = TRUE;
    g_mutex_unlock(&b->lock);
    if (first)
        b->channel->abort(b->channel->channel);
}

static const char *peer_name(Bridge *b)
{
    return b->options->peer != NULL ? b->options->peer : "peer";
}

/* Takes error. */
static void bridge_fail(Bridge *b, GError *error)
{
    g_mutex_lock(&b->lock);
    if (b->pump_error == NULL)
        b->pump_error = error;
    else
        g_error_free(error);
    b->killed_for_pump = TRUE;
    g_mutex_unlock(&b->lock);
    /* Stop first, so the pumps take what follows for the consequence it is, not for another failure. */
    g_cancellable_cancel(b->stop);
    bridge_kill(b);
    bridge_abort_channel(b);
}

/* A failure of the channel itself: the trouble is on the peer's side or between us. Takes error. */
static void bridge_channel_fail(Bridge *b, GError *error)
{
    g_mutex_lock(&b->lock);
    if (!g_cancellable_is_cancelled(b->stop))
        b->channel_failed = TRUE;
    g_mutex_unlock(&b->lock);
    bridge_fail(b, error);
}

static void bridge_fail_errno(Bridge *b, int errnum, const char *what)
{
    GError *error = NULL;
    ferry_set_error_errno(&error, errnum, "%s", what);
    bridge_fail(b, error);
}

static void on_user_cancel(GCancellable *cancellable, gpointer data)
{
    Bridge *b = data;
    g_mutex_lock(&b->lock);
    b->cancelled = TRUE;
    g_mutex_unlock(&b->lock);
    g_cancellable_cancel(b->stop);
    bridge_kill(b);
    bridge_abort_channel(b);
}

static void pump_finished(Bridge *b)
{
    g_mutex_lock(&b->lock);
    b->pumps_running--;
    g_cond_broadcast(&b->cond);
    g_mutex_unlock(&b->lock);
}

static void report_progress(Bridge *b, guint64 total)
{
    if (b->options->progress != NULL)
        b->options->progress(total, b->options->progress_data);
}

/* Wait until fd is ready for events or the bridge is stopped; FALSE when stopped. */
static gboolean wait_fd(Bridge *b, int fd, short events, int timeout_ms)
{
    struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = b->stop_fd, .events = POLLIN}};
    while (poll(p, 2, timeout_ms) < 0)
        if (errno != EINTR)
            break;
    return p[1].revents == 0;
}

/* rsync -> channel, then our barrier. */
static gpointer pump_out(gpointer data)
{
    Bridge *b = data;
    g_autofree char *buf = g_malloc(PUMP_BUFFER);
    guint64 total = 0;
    for (;;) {
        if (!wait_fd(b, b->sock, POLLIN, -1))
            break; /* stopped: whoever stopped us reports why */
        gssize n = recv(b->sock, buf, PUMP_BUFFER, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n < 0 && errno != ECONNRESET) {
            bridge_fail_errno(b, errno, "Failed to read from rsync");
            break;
        }
        if (n <= 0) {
            /* rsync is done (or died: its exit status tells); either way the peer must see the end. */
            GError *error = NULL;
            if (!b->channel->end(b->channel->channel, &error)) {
                g_prefix_error(&error, "Failed to end the migration stream: ");
                bridge_channel_fail(b, error);
            }
            break;
        }
        GError *error = NULL;
        if (!b->channel->write(b->channel->channel, buf, (gsize)n, &error)) {
            g_prefix_error(&error, "Failed to send to the migration %s: ", peer_name(b));
            bridge_channel_fail(b, error);
            break;
        }
        total += (guint64)n;
        if (b->sending)
            report_progress(b, total);
    }
    pump_finished(b);
    return NULL;
}

/* Deliver data to rsync. FALSE when stopped; *gone when rsync no longer reads. */
static gboolean deliver(Bridge *b, const char *data, gsize len, gboolean *gone)
{
    while (len > 0) {
        gssize n = send(b->sock, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                if (!wait_fd(b, b->sock, POLLOUT, -1))
                    return FALSE;
                continue;
            }
            if (errno == EPIPE || errno == ECONNRESET) {
                *gone = TRUE;
                return TRUE;
            }
            bridge_fail_errno(b, errno, "Failed to write to rsync");
            return FALSE;
        }
        data += n;
        len -= (gsize)n;
    }
    return TRUE;
}

/* Receiving: rsync's own --bwlimit paces what a process writes and a receiver writes little, so the
 * limit is applied here, by not reading the channel faster (the peer feels it as back-pressure). */
static gboolean throttle(Bridge *b, gint64 started, guint64 total)
{
    guint64 rate = b->options->bwlimit_bytes_per_sec;
    if (b->sending || rate == 0)
        return TRUE;
    gint64 due = started + (gint64)((double)total * G_USEC_PER_SEC / (double)rate);
    gint64 now = g_get_monotonic_time();
    if (due <= now)
        return TRUE;
    return wait_fd(b, -1, 0, (int)MIN((due - now) / 1000 + 1, G_MAXINT));
}

/* channel -> rsync until the peer's barrier, then the end of rsync's input. */
static gpointer pump_in(gpointer data)
{
    Bridge *b = data;
    g_autofree char *buf = g_malloc(PUMP_BUFFER);
    guint64 total = 0;
    gboolean gone = FALSE;
    gint64 started = g_get_monotonic_time();
    for (;;) {
        GError *error = NULL;
        gssize n = b->channel->read(b->channel->channel, buf, PUMP_BUFFER, b->stop, &error);
        if (n < 0) {
            if (g_cancellable_is_cancelled(b->stop)) {
                g_clear_error(&error);
            } else {
                if (error == NULL)
                    g_set_error(&error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Unknown error");
                g_prefix_error(&error, "Failed to receive from the migration %s: ", peer_name(b));
                bridge_channel_fail(b, error);
            }
            break;
        }
        if (n == 0) {
            shutdown(b->sock, SHUT_WR);
            break;
        }
        total += (guint64)n;
        if (!b->sending)
            report_progress(b, total);
        /* Once rsync has exited, keep reading to the barrier so the channel stays in step; rsync's exit
         * status says whether what it missed mattered. */
        if (!gone && !deliver(b, buf, (gsize)n, &gone))
            break;
        if (!throttle(b, started, total))
            break;
    }
    pump_finished(b);
    return NULL;
}

/* Keep the start and the end of rsync's stderr; FALSE at its end. */
static gboolean read_stderr(int fd, GString *head, GString *tail)
{
    char chunk[4096];
    for (;;) {
        gssize n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return TRUE;
        if (n <= 0)
            return FALSE;
        if (head->len < STDERR_HEAD)
            g_string_append_len(head, chunk, MIN(n, (gssize)(STDERR_HEAD - head->len)));
        g_string_append_len(tail, chunk, n);
        if (tail->len > STDERR_KEEP)
            g_string_erase(tail, 0, (gssize)(tail->len - STDERR_KEEP));
    }
}

/* Does rsync's first complaint (in the C locale) say that the stream under it broke, i.e. that the other end
 * went away? Later lines do not count: after a failure of its own (a full disk, a remote shell it could not
 * start) rsync also finds its pipes broken. */
static gboolean stream_broke(const GString *head)
{
    static const char *const signs[] = {"connection unexpectedly closed", "Broken pipe",
                                        "Connection reset by peer"};
    const char *end = memchr(head->str, '\n', head->len);
    gssize first_line = end != NULL ? end - head->str : (gssize)head->len;
    for (gsize i = 0; i < G_N_ELEMENTS(signs); i++)
        if (g_strstr_len(head->str, first_line, signs[i]) != NULL)
            return TRUE;
    return FALSE;
}

/* The last non-empty lines of stderr, one line. */
static char *stderr_summary(GString *tail)
{
    g_autofree char *text = g_utf8_make_valid(tail->str, (gssize)tail->len);
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    g_autoptr(GPtrArray) kept = g_ptr_array_new();
    for (guint i = 0; lines[i] != NULL; i++)
        if (g_strstrip(lines[i])[0] != '\0')
            g_ptr_array_add(kept, lines[i]);
    guint first = kept->len > STDERR_LINES ? kept->len - STDERR_LINES : 0;
    g_autoptr(GString) out = g_string_new(NULL);
    for (guint i = first; i < kept->len; i++)
        g_string_append_printf(out, "%s%s", out->len ? "; " : "", (char *)kept->pdata[i]);
    return g_string_free(g_steal_pointer(&out), FALSE);
}

/* rsync's documented exit values: when the failure happened on the peer, its words stay on the peer's
 * stderr and only the status reaches us. */
static const char *exit_meaning(int code)
{
    static const struct {
        int code;
        const char *text;
    } meanings[] = {
        {1, "syntax or usage error"},
        {2, "protocol incompatibility"},
        {3, "errors selecting input/output files, directories"},
        {4, "requested action not supported"},
        {5, "error starting client-server protocol"},
        {10, "error in socket I/O"},
        {11, "error in file I/O"},
        {12, "error in rsync protocol data stream"},
        {13, "errors with program diagnostics"},
        {14, "error in IPC code"},
        {15, "sibling process crashed"},
        {16, "sibling process was killed by a signal"},
        {20, "received SIGINT, SIGTERM, or SIGHUP"},
        {22, "error allocating core memory buffers"},
        {23, "partial transfer due to error"},
        {24, "partial transfer due to vanished source files"},
        {30, "timeout in data send/receive"},
    };
    for (gsize i = 0; i < G_N_ELEMENTS(meanings); i++)
        if (meanings[i].code == code)
            return meanings[i].text;
    return NULL;
}

static char *describe_exit(gboolean exited, int code)
{
    if (exited && exit_meaning(code) != NULL)
        return g_strdup_printf("rsync exited with status %d (%s)", code, exit_meaning(code));
    if (exited)
        return g_strdup_printf("rsync exited with status %d", code);
    return g_strdup_printf("rsync killed by signal %d", code);
}

static void child_setup(gpointer unused)
{
    setpgid(0, 0);
}

static char **child_environment(void)
{
    const char *path = g_getenv("PATH");
    /* Nothing else: RSYNC_* variables (RSYNC_PROTECT_ARGS, RSYNC_PARTIAL_DIR, checksum lists...) would
     * change the protocol or the on-disk result behind our back. */
    char **envp = g_new0(char *, 3);
    envp[0] = g_strconcat(
        "PATH=", path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL);
    envp[1] = g_strdup("LC_ALL=C");
    return envp;
}

static gboolean set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

static gboolean bridge_run(const char *what, GPtrArray *argv, gboolean sending, FerryByteChannel *channel,
                           const FerryRsyncOptions *options, GCancellable *cancellable, GError **error)
{
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
        ferry_set_error_errno(error, errno, "%s: failed to create a socket pair", what);
        return FALSE;
    }
    g_auto(GStrv) envp = child_environment();
    g_ptr_array_add(argv, NULL);

    GPid pid = 0;
    int stderr_fd = -1;
    g_autoptr(GError) spawn_error = NULL;
    gboolean spawned;
    if (sending) {
        /* The client's stdio is unused: its stream goes through the helper, which gets our socket as
         * HELPER_FD through rsync. */
        int source_fds[] = {pair[1]};
        int target_fds[] = {HELPER_FD};
        spawned = g_spawn_async_with_pipes_and_fds(
            NULL, (const char *const *)argv->pdata, (const char *const *)envp,
            G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL | G_SPAWN_STDOUT_TO_DEV_NULL, child_setup,
            NULL, -1, -1, -1, source_fds, target_fds, 1, &pid, NULL, NULL, &stderr_fd, &spawn_error);
    } else {
        spawned = g_spawn_async_with_pipes_and_fds(NULL, (const char *const *)argv->pdata,
                                                   (const char *const *)envp, G_SPAWN_DO_NOT_REAP_CHILD,
                                                   child_setup, NULL, pair[1], pair[1], -1, NULL, NULL, 0,
                                                   &pid, NULL, NULL, &stderr_fd, &spawn_error);
    }
    close(pair[1]);
    if (!spawned) {
        close(pair[0]);
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "%s: failed to run rsync: %s", what,
                    spawn_error->message);
        return FALSE;
    }
    setpgid(pid, pid); /* also from this side, so a kill right away already reaches the group */

    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        int errsv = errno;
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        close(pair[0]);
        close(stderr_fd);
        ferry_set_error_errno(error, errsv, "%s: pidfd_open", what);
        return FALSE;
    }

    Bridge b = {
        .channel = channel,
        .options = options,
        .sending = sending,
        .sock = pair[0],
        .pid = pid,
        .pidfd = pidfd,
        .stop = g_cancellable_new(),
        .pumps_running = 2,
    };
    g_mutex_init(&b.lock);
    g_cond_init(&b.cond);
    b.stop_fd = g_cancellable_get_fd(b.stop);
    set_nonblocking(b.sock);
    set_nonblocking(stderr_fd);

    gulong handler =
        cancellable ? g_cancellable_connect(cancellable, G_CALLBACK(on_user_cancel), &b, NULL) : 0;
    GThread *out = g_thread_new("rsync-out", pump_out, &b);
    GThread *in = g_thread_new("rsync-in", pump_in, &b);

    /* Supervise until rsync exits: nothing here depends on the peer, so this always ends (a cancel or a
     * pump failure kills rsync). */
    g_autoptr(GString) head = g_string_new(NULL);
    g_autoptr(GString) tail = g_string_new(NULL);
    gboolean stderr_open = TRUE;
    for (;;) {
        struct pollfd p[2] = {{.fd = pidfd, .events = POLLIN},
                              {.fd = stderr_open ? stderr_fd : -1, .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break; /* cannot happen with valid fds; fall through to the blocking reap */
        if (p[1].revents)
            stderr_open = read_stderr(stderr_fd, head, tail);
        if (p[0].revents)
            break;
    }
    /* Look at the exit without reaping: while the zombie exists its pid, which is also its process group's
     * id, cannot be recycled, so the group can still be killed safely below. */
    siginfo_t info = {0};
    while (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) < 0 && errno == EINTR)
        ;
    gboolean exited = info.si_code == CLD_EXITED;
    int code = info.si_status;
    if (stderr_open)
        stderr_open = read_stderr(stderr_fd, head, tail);
    /* Vanished files are the sender's call (it alone knows whether the copy may be inconsistent, and Incus
     * does not tell the sink): the receiving rsync ends with 24 too, and that is not a failure there. */
    gboolean rsync_ok =
        exited && (code == 0 || (code == RSYNC_EXIT_VANISHED && (options->allow_inconsistent || !sending)));

    /* The pumps end at the peer's barrier; bound the wait for a peer that never sends it. */
    gint64 deadline = g_get_monotonic_time() + (rsync_ok ? GRACE_AFTER_SUCCESS : GRACE_AFTER_FAILURE);
    gboolean timed_out = FALSE;
    g_mutex_lock(&b.lock);
    while (b.pumps_running > 0 && !timed_out)
        timed_out = !g_cond_wait_until(&b.cond, &b.lock, deadline);
    g_mutex_unlock(&b.lock);
    if (timed_out) {
        g_cancellable_cancel(b.stop);
        bridge_abort_channel(&b);
    }
    g_thread_join(out);
    g_thread_join(in);
    if (handler != 0)
        g_cancellable_disconnect(cancellable, handler);

    /* Whatever rsync left behind (the sender's helper, a server's forked half) has nothing left to do: the
     * stream is over in both directions. */
    bridge_kill(&b);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    b.reaped = TRUE;

    if (stderr_open)
        read_stderr(stderr_fd, head, tail);
    close(stderr_fd);
    close(b.sock);
    close(pidfd);
    g_cancellable_release_fd(b.stop);
    g_object_unref(b.stop);
    g_mutex_clear(&b.lock);
    g_cond_clear(&b.cond);
    g_autoptr(GError) pump_error = b.pump_error;

    if (b.cancelled) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "Operation cancelled");
        return FALSE;
    }
    if (rsync_ok && pump_error == NULL && !timed_out)
        return TRUE;

    g_autoptr(GString) message = g_string_new(what);
    g_string_append(message, " failed: ");
    g_autofree char *rsync_said = NULL;
    if (!rsync_ok) {
        g_autofree char *output = stderr_summary(tail);
        g_autofree char *how = describe_exit(exited, code);
        rsync_said = output[0] ? g_strdup_printf("%s: %s", how, output) : g_steal_pointer(&how);
    }
    /* Killed by us after a pump failure: the pump knows why. Otherwise rsync's own words come first. */
    if (pump_error != NULL && (rsync_said == NULL || !exited)) {
        g_string_append(message, pump_error->message);
        /* "killed by signal 9" after we killed it would send the reader after the wrong culprit. */
        if (rsync_said != NULL && !b.killed_for_pump)
            g_string_append_printf(message, " (%s)", rsync_said);
    } else if (rsync_said != NULL) {
        g_string_append(message, rsync_said);
        if (pump_error != NULL)
            g_string_append_printf(message, " (%s)", pump_error->message);
    } else {
        g_string_append_printf(message, "the migration %s did not end its rsync stream", peer_name(&b));
    }
    /* Whose failure is it? The peer's when the channel broke or the peer never ended its stream, or when our
     * rsync stopped because the other rsync did: it says the stream broke under it, or it exited silently
     * with the status the peer's rsync sent through the protocol. A "partial transfer" is an orderly end of
     * our own, a signal our own death. */
    gboolean fatal_status = exited && code != RSYNC_EXIT_PARTIAL && code != RSYNC_EXIT_VANISHED;
    gboolean peer_fault = b.channel_failed || timed_out ||
                          (!rsync_ok && fatal_status && (head->len == 0 || stream_broke(head)));
    g_set_error_literal(error, FERRY_ERROR, peer_fault ? FERRY_ERROR_UNAVAILABLE : FERRY_ERROR_INTERNAL,
                        message->str);
    return FALSE;
}

static gboolean check_common(const char *dir, FerryByteChannel *channel, const FerryRsyncOptions *options,
                             GCancellable *cancellable, GError **error)
{
    g_return_val_if_fail(channel != NULL && options != NULL, FALSE);
    if (dir == NULL || !g_path_is_absolute(dir)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Rsync needs an absolute path, not \"%s\"",
                    dir ? dir : "(null)");
        return FALSE;
    }
    if (g_cancellable_is_cancelled(cancellable)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "Operation cancelled");
        return FALSE;
    }
    if (rsync_probe()->path == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "rsync is not installed");
        return FALSE;
    }
    return TRUE;
}

/* The -e value: rsync splits it on spaces itself (no shell), honouring quotes but not backslashes. */
static char *remote_shell(const FerryRsyncOptions *options, GError **error)
{
    g_autofree char *helper = NULL;
    if (options->helper_binary != NULL) {
        helper = g_strdup(options->helper_binary);
    } else {
        helper = g_file_read_link("/proc/self/exe", NULL);
        /* Replaced on disk since we started (an upgrade): run what is installed now. */
        if (helper != NULL && g_str_has_suffix(helper, " (deleted)"))
            helper[strlen(helper) - strlen(" (deleted)")] = '\0';
    }
    if (helper == NULL || strpbrk(helper, "'\"\\\n") != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Unusable rsync helper path \"%s\"",
                    helper ? helper : "(none)");
        return NULL;
    }
    const char *quote = strpbrk(helper, " \t") != NULL ? "'" : "";
    return g_strdup_printf("%s%s%s netcat %d --", quote, helper, quote, HELPER_FD);
}

gboolean ferry_rsync_send(const char *source_dir, FerryByteChannel *channel, const FerryRsyncOptions *options,
                          GCancellable *c, GError **error)
{
    if (!check_common(source_dir, channel, options, c, error))
        return FALSE;
    g_autofree char *rsh = remote_shell(options, error);
    if (rsh == NULL)
        return FALSE;

    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, g_strdup(rsync_probe()->path));
    g_autoptr(GPtrArray) args = ferry_rsync_sender_args(options);
    for (guint i = 0; i < args->len; i++)
        g_ptr_array_add(argv, g_strdup(args->pdata[i]));
    g_ptr_array_add(argv, g_strdup("-e"));
    g_ptr_array_add(argv, g_steal_pointer(&rsh));
    /* Trailing slash: the directory's contents. The remote path is ignored: the receiving side runs its own
     * `rsync --server` with its own destination; "localhost:" only makes rsync use the remote shell. */
    g_ptr_array_add(argv, g_str_has_suffix(source_dir, "/") ? g_strdup(source_dir)
                                                            : g_strconcat(source_dir, "/", NULL));
    g_ptr_array_add(argv, g_strdup("localhost:/tmp/ferry-rsync"));
    return bridge_run("Rsync send", argv, TRUE, channel, options, c, error);
}

gboolean ferry_rsync_receive(const char *dest_dir, FerryByteChannel *channel,
                             const FerryRsyncOptions *options, GCancellable *c, GError **error)
{
    if (!check_common(dest_dir, channel, options, c, error))
        return FALSE;
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, g_strdup(rsync_probe()->path));
    g_autoptr(GPtrArray) args = ferry_rsync_receiver_args(options);
    for (guint i = 0; i < args->len; i++)
        g_ptr_array_add(argv, g_strdup(args->pdata[i]));
    g_ptr_array_add(argv, g_strdup("."));
    g_ptr_array_add(argv, g_strdup(dest_dir));
    return bridge_run("Rsync receive", argv, FALSE, channel, options, c, error);
}
