/* ferryd: the ferry daemon.
 *   ferryd [--dir DIR] [--log-level LEVEL]      run in the foreground
 *   ferryd waitready [--dir DIR] [--timeout N]   wait until the daemon answers on its unix socket
 *   ferryd forkstart|forkexec ...                internal helpers (liblxc must not fork from our threads) */
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <glib-unix.h>
#include <locale.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "daemon.h"
#include "ferry-config.h"
#include "lxc_runtime.h"
#include "rsync.h"
#include "tls_trust.h"

static GLogLevelFlags max_level = G_LOG_LEVEL_INFO;

static GLogWriterOutput write_log(GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer user_data)
{
    if ((level & G_LOG_LEVEL_MASK) > max_level)
        return G_LOG_WRITER_HANDLED;
    const char *message = "";
    for (gsize i = 0; i < n_fields; i++) {
        if (g_str_equal(fields[i].key, "MESSAGE"))
            message = fields[i].value;
    }
    const char *label = (level & G_LOG_LEVEL_ERROR)      ? "ERROR"
                        : (level & G_LOG_LEVEL_CRITICAL) ? "CRITICAL"
                        : (level & G_LOG_LEVEL_WARNING)  ? "WARNING"
                        : (level & G_LOG_LEVEL_MESSAGE)  ? "NOTICE"
                        : (level & G_LOG_LEVEL_INFO)     ? "INFO"
                                                         : "DEBUG";
    g_autoptr(GDateTime) now = g_date_time_new_now_utc();
    g_autofree char *stamp = g_date_time_format(now, "%Y-%m-%dT%H:%M:%S");
    fprintf(stderr, "%s.%03dZ %s %s\n", stamp, g_date_time_get_microsecond(now) / 1000, label, message);
    return G_LOG_WRITER_HANDLED;
}

static gboolean parse_log_level(const char *text)
{
    static const struct {
        const char *name;
        GLogLevelFlags level;
    } levels[] = {{"debug", G_LOG_LEVEL_DEBUG},     {"info", G_LOG_LEVEL_INFO}, {"warning", G_LOG_LEVEL_WARNING},
                  {"error", G_LOG_LEVEL_CRITICAL}};
    for (gsize i = 0; i < G_N_ELEMENTS(levels); i++) {
        if (g_str_equal(text, levels[i].name)) {
            max_level = levels[i].level;
            return TRUE;
        }
    }
    return FALSE;
}

static const char *default_dir(void)
{
    const char *dir = g_getenv("FERRY_DIR");
    return dir != NULL && *dir != '\0' ? dir : "/var/lib/ferry";
}

static gboolean on_terminate(gpointer user_data)
{
    FerryDaemon *daemon = user_data;
    g_message("Received termination signal, shutting down (instances keep running)");
    g_main_loop_quit(daemon->loop);
    return G_SOURCE_REMOVE;
}

/* One daemon per directory: a second would take over the unix socket (and remove it when it stops) and manage the
 * same database and containers. The lock is on the directory itself and goes with the process, however it ends;
 * close-on-exec keeps it out of the helpers and containers we start. Returns the descriptor, or -1. */
static int lock_daemon_dir(const char *dir)
{
    if (g_mkdir_with_parents(dir, 0711) < 0) {
        fprintf(stderr, "Error: Failed to create %s: %s\n", dir, g_strerror(errno));
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "Error: Failed to open %s: %s\n", dir, g_strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK)
            fprintf(stderr, "Error: Another ferryd is already running in %s\n", dir);
        else
            fprintf(stderr, "Error: Failed to lock %s: %s\n", dir, g_strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* One GET /1.0 over the unix socket; TRUE when the daemon answered 200. */
static gboolean daemon_answers(const char *socket_path)
{
    g_autoptr(GSocketClient) client = g_socket_client_new();
    g_autoptr(GSocketAddress) address = g_unix_socket_address_new(socket_path);
    g_autoptr(GSocketConnection) connection =
        g_socket_client_connect(client, G_SOCKET_CONNECTABLE(address), NULL, NULL);
    if (connection == NULL)
        return FALSE;
    const char request[] = "GET /1.0 HTTP/1.0\r\nHost: ferryd\r\n\r\n";
    GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(connection));
    if (!g_output_stream_write_all(out, request, sizeof(request) - 1, NULL, NULL, NULL))
        return FALSE;
    char status_line[64] = {0};
    gsize got = 0;
    GInputStream *in = g_io_stream_get_input_stream(G_IO_STREAM(connection));
    if (!g_input_stream_read_all(in, status_line, sizeof(status_line) - 1, &got, NULL, NULL))
        return FALSE;
    return g_str_has_prefix(status_line, "HTTP/1.1 200") || g_str_has_prefix(status_line, "HTTP/1.0 200");
}

static int waitready_main(int argc, char **argv)
{
    g_autofree char *dir = NULL;
    int timeout = 0;
    GOptionEntry entries[] = {
        {"dir", 0, 0, G_OPTION_ARG_FILENAME, &dir, "Daemon directory (default $FERRY_DIR or /var/lib/ferry)", "DIR"},
        {"timeout", 't', 0, G_OPTION_ARG_INT, &timeout, "Give up after this many seconds (0 = forever)", "N"},
        {NULL},
    };
    g_autoptr(GOptionContext) context = g_option_context_new("- wait until ferryd is ready");
    g_option_context_add_main_entries(context, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(context, &argc, &argv, &error)) {
        fprintf(stderr, "Error: %s\n", error->message);
        return 2;
    }
    g_autofree char *socket_path = g_build_filename(dir != NULL ? dir : default_dir(), "unix.socket", NULL);
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout * G_USEC_PER_SEC;
    while (!daemon_answers(socket_path)) {
        if (timeout > 0 && g_get_monotonic_time() > deadline) {
            fprintf(stderr, "Error: ferryd did not become ready within %d seconds\n", timeout);
            return 1;
        }
        g_usleep(G_USEC_PER_SEC / 20);
    }
    return 0;
}

int main(int argc, char **argv)
{
    setlocale(LC_ALL, "");
    if (argc > 1 && g_str_equal(argv[1], "forkstart"))
        return ferry_container_forkstart_main(argc, argv);
    if (argc > 1 && g_str_equal(argv[1], "forkexec"))
        return ferry_container_forkexec_main(argc, argv);
    if (argc > 1 && g_str_equal(argv[1], "netcat"))
        return ferry_rsync_netcat_main(argc - 1, argv + 1);
    if (argc > 1 && g_str_equal(argv[1], "waitready"))
        return waitready_main(argc - 1, argv + 1);

    ferry_tls_trust_no_ca();
    g_autofree char *dir = NULL;
    g_autofree char *log_level = NULL;
    gboolean version = FALSE;
    GOptionEntry entries[] = {
        {"dir", 0, 0, G_OPTION_ARG_FILENAME, &dir, "Daemon directory (default $FERRY_DIR or /var/lib/ferry)", "DIR"},
        {"log-level", 0, 0, G_OPTION_ARG_STRING, &log_level, "debug, info, warning or error (default info)",
         "LEVEL"},
        {"version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version", NULL},
        {NULL},
    };
    g_autoptr(GOptionContext) context = g_option_context_new("- the ferry daemon");
    g_option_context_set_summary(context, "Subcommands: waitready [--timeout N]");
    g_option_context_add_main_entries(context, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(context, &argc, &argv, &error)) {
        fprintf(stderr, "Error: %s\n", error->message);
        return 2;
    }
    if (version) {
        printf("%s\n", FERRY_VERSION);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "Error: Unknown subcommand \"%s\"\n", argv[1]);
        return 2;
    }
    if (log_level != NULL && !parse_log_level(log_level)) {
        fprintf(stderr, "Error: Invalid log level \"%s\" (debug, info, warning, error)\n", log_level);
        return 2;
    }
    g_log_set_writer_func(write_log, NULL, NULL);
    /* Trust is decided per request from the client certificate. A TLS session resumed from a ticket carries
     * no certificate through GIO, so the client would look untrusted: issue no tickets, and every connection
     * makes a full handshake that presents its certificate. And TLS 1.2 at least, as Incus requires (1.0 and
     * 1.1 are deprecated, RFC 8996, and GnuTLS's defaults still take them). (Read by glib-networking's GnuTLS
     * backend.) */
    g_setenv("G_TLS_GNUTLS_PRIORITY", "NORMAL:%NO_TICKETS:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2", FALSE);
    /* Peers vanish mid-write; that is an error to handle, not a reason to die. */
    signal(SIGPIPE, SIG_IGN);

    int lock_fd = lock_daemon_dir(dir != NULL ? dir : default_dir());
    if (lock_fd < 0)
        return 1;
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    FerryDaemon *daemon = ferry_daemon_new(dir != NULL ? dir : default_dir(), self, &error);
    if (daemon == NULL || !ferry_daemon_start(daemon, &error)) {
        fprintf(stderr, "Error: %s\n", error->message);
        ferry_daemon_free(daemon);
        return 1;
    }
    g_info("ferryd %s ready in %s%s%s", FERRY_VERSION, daemon->dir, *daemon->https_address ? ", HTTPS on " : "",
           daemon->https_address);
    g_unix_signal_add(SIGTERM, on_terminate, daemon);
    g_unix_signal_add(SIGINT, on_terminate, daemon);
    g_main_loop_run(daemon->loop);
    ferry_daemon_free(daemon);
    close(lock_fd);
    g_info("ferryd stopped");
    return 0;
}
