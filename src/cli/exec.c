/* ferry exec: run a command in an instance over the exec operation's websockets.
 *
 * Protocol (Incus's): POST /1.0/instances/<n>/exec with wait-for-websocket answers with an operation whose
 * metadata.fds names one secret per websocket: "0", "1", "2" and "control" for a non-interactive command,
 * "0" (a pty, both directions) and "control" for an interactive one. Data travels as binary messages; the
 * end of stdin is an empty text message. The server closes the output websockets once the command has
 * exited and its output is drained; the operation's metadata.return is then the exit status. On control:
 * {"command":"window-resize","args":{"width":"80","height":"24"}} and {"command":"signal","signal":N}. */
#include "cli.h"

#include "error.h"

#include <errno.h>
#include <glib-unix.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#define STDIN_CHUNK 32768

typedef struct {
    FerryClient *client;
    gboolean interactive;
    SoupWebsocketConnection *control;
    SoupWebsocketConnection *streams[3]; /* "0", "1", "2" */
    guint open_outputs;
    GSource *stdin_source;
    GPtrArray *signal_sources;
    gboolean stdin_ended;
} ExecSession;

static gboolean write_all(int fd, const guint8 *data, gsize length)
{
    while (length > 0) {
        ssize_t n = write(fd, data, length);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return FALSE;
        }
        data += n;
        length -= (gsize)n;
    }
    return TRUE;
}

/* An output stream ends with Incus's barrier (an empty text message) or its close, whichever comes first;
 * in interactive mode the server waits for us to close after the barrier. */
static void output_ended(SoupWebsocketConnection *ws, ExecSession *session)
{
    if (g_object_get_data(G_OBJECT(ws), "ferry-ended") != NULL)
        return;
    g_object_set_data(G_OBJECT(ws), "ferry-ended", GINT_TO_POINTER(1));
    if (session->open_outputs > 0)
        session->open_outputs--;
}

static void on_output_message(SoupWebsocketConnection *ws, gint type, GBytes *message, gpointer user_data)
{
    ExecSession *session = user_data;
    if (type != SOUP_WEBSOCKET_DATA_BINARY) {
        output_ended(ws, session);
        if (soup_websocket_connection_get_state(ws) == SOUP_WEBSOCKET_STATE_OPEN)
            soup_websocket_connection_close(ws, SOUP_WEBSOCKET_CLOSE_NORMAL, NULL);
        return;
    }
    int fd = GPOINTER_TO_INT(g_object_get_data(G_OBJECT(ws), "ferry-fd"));
    gsize length = 0;
    const guint8 *data = g_bytes_get_data(message, &length);
    write_all(fd, data, length);
}

static void on_output_closed(SoupWebsocketConnection *ws, gpointer user_data)
{
    output_ended(ws, user_data);
}

static void stop_stdin(ExecSession *session)
{
    if (session->stdin_source != NULL) {
        g_source_destroy(session->stdin_source);
        g_clear_pointer(&session->stdin_source, g_source_unref);
    }
}

static void end_stdin(ExecSession *session)
{
    SoupWebsocketConnection *ws = session->streams[0];
    if (!session->stdin_ended && ws != NULL &&
        soup_websocket_connection_get_state(ws) == SOUP_WEBSOCKET_STATE_OPEN)
        soup_websocket_connection_send_text(ws, "");
    session->stdin_ended = TRUE;
    stop_stdin(session);
}

static gboolean on_stdin(gint fd, GIOCondition condition, gpointer user_data)
{
    ExecSession *session = user_data;
    SoupWebsocketConnection *ws = session->streams[0];
    guint8 buffer[STDIN_CHUNK];

    if (ws == NULL || soup_websocket_connection_get_state(ws) != SOUP_WEBSOCKET_STATE_OPEN) {
        g_clear_pointer(&session->stdin_source, g_source_unref);
        return G_SOURCE_REMOVE;
    }
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return G_SOURCE_CONTINUE;
    if (n <= 0) {
        /* End of input: Incus's barrier, then GLib destroys the source as we return; drop our reference. */
        soup_websocket_connection_send_text(ws, "");
        session->stdin_ended = TRUE;
        g_clear_pointer(&session->stdin_source, g_source_unref);
        return G_SOURCE_REMOVE;
    }
    soup_websocket_connection_send_binary(ws, buffer, (gsize)n);
    return G_SOURCE_CONTINUE;
}

static void send_control(ExecSession *session, json_t *message)
{
    if (session->control == NULL ||
        soup_websocket_connection_get_state(session->control) != SOUP_WEBSOCKET_STATE_OPEN)
        return;
    g_autofree char *text = ferry_json_dump(message);
    soup_websocket_connection_send_text(session->control, text);
}

static gboolean terminal_size(int *width, int *height)
{
    struct winsize size;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) < 0 || size.ws_col == 0)
        return FALSE;
    *width = size.ws_col;
    *height = size.ws_row;
    return TRUE;
}

static void send_window_size(ExecSession *session)
{
    int width, height;
    if (!terminal_size(&width, &height))
        return;
    g_autofree char *w = g_strdup_printf("%d", width);
    g_autofree char *h = g_strdup_printf("%d", height);
    g_autoptr(json_t) message =
        json_pack("{s:s, s:{s:s, s:s}}", "command", "window-resize", "args", "width", w, "height", h);
    send_control(session, message);
}

typedef struct {
    ExecSession *session;
    int signum;
} SignalForward;

static gboolean on_signal(gpointer user_data)
{
    SignalForward *forward = user_data;
    if (forward->signum == SIGWINCH) {
        send_window_size(forward->session);
        return G_SOURCE_CONTINUE;
    }
    g_autoptr(json_t) message = json_pack("{s:s, s:i}", "command", "signal", "signal", forward->signum);
    send_control(forward->session, message);
    return G_SOURCE_CONTINUE;
}

static void watch_signals(ExecSession *session, GMainContext *context)
{
    static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH};
    session->signal_sources = g_ptr_array_new_with_free_func((GDestroyNotify)g_source_unref);
    for (gsize i = 0; i < G_N_ELEMENTS(forwarded); i++) {
        if (forwarded[i] == SIGWINCH && !session->interactive)
            continue;
        GSource *source = g_unix_signal_source_new(forwarded[i]);
        SignalForward *forward = g_new0(SignalForward, 1);
        forward->session = session;
        forward->signum = forwarded[i];
        g_source_set_callback(source, on_signal, forward, g_free);
        g_source_attach(source, context);
        g_ptr_array_add(session->signal_sources, source);
    }
}

static void unwatch_signals(ExecSession *session)
{
    if (session->signal_sources == NULL)
        return;
    for (guint i = 0; i < session->signal_sources->len; i++)
        g_source_destroy(g_ptr_array_index(session->signal_sources, i));
    g_clear_pointer(&session->signal_sources, g_ptr_array_unref);
}

static void close_websocket(SoupWebsocketConnection **ws)
{
    if (*ws == NULL)
        return;
    g_signal_handlers_disconnect_matched(*ws, G_SIGNAL_MATCH_FUNC, 0, 0, NULL, on_output_message, NULL);
    g_signal_handlers_disconnect_matched(*ws, G_SIGNAL_MATCH_FUNC, 0, 0, NULL, on_output_closed, NULL);
    if (soup_websocket_connection_get_state(*ws) == SOUP_WEBSOCKET_STATE_OPEN)
        soup_websocket_connection_close(*ws, SOUP_WEBSOCKET_CLOSE_NORMAL, NULL);
    g_clear_object(ws);
}

static SoupWebsocketConnection *connect_fd(ExecSession *session, const char *operation, json_t *fds,
                                           const char *which, GError **error)
{
    const char *secret = ferry_json_get_string(fds, which);
    if (secret == NULL)
        return NULL;
    SoupWebsocketConnection *ws = ferry_client_operation_websocket(session->client, operation, secret, error);
    if (ws == NULL)
        g_prefix_error(error, "Failed to connect to the exec websocket \"%s\": ", which);
    return ws;
}

static gboolean set_flag(gpointer user_data)
{
    *(gboolean *)user_data = TRUE;
    return G_SOURCE_REMOVE;
}

typedef struct {
    gboolean saved;
    struct termios state;
} TerminalState;

static void restore_terminal(TerminalState *terminal)
{
    if (terminal->saved)
        tcsetattr(STDIN_FILENO, TCSADRAIN, &terminal->state);
    terminal->saved = FALSE;
}

int cli_cmd_exec(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) env = NULL;
    g_autofree char *mode = NULL, *cwd = NULL;
    gboolean force_interactive = FALSE, force_noninteractive = FALSE, disable_stdin = FALSE;
    int user = 0, group = 0;
    const CliOption options[] = {
        {"cwd", 0, CLI_OPT_STRING, &cwd, "DIR", "Directory to run the command in (default /root)"},
        {"disable-stdin", 'n', CLI_OPT_BOOL, &disable_stdin, NULL, "Disable stdin (reads from /dev/null)"},
        {"env", 0, CLI_OPT_STRV, &env, "KEY=VALUE", "Environment variable to set (e.g. HOME=/home/foo)"},
        {"force-interactive", 't', CLI_OPT_BOOL, &force_interactive, NULL,
         "Force pseudo-terminal allocation"},
        {"force-noninteractive", 'T', CLI_OPT_BOOL, &force_noninteractive, NULL,
         "Disable pseudo-terminal allocation"},
        {"group", 0, CLI_OPT_INT, &group, "GID", "Group ID to run the command as (default 0)"},
        {"mode", 0, CLI_OPT_STRING, &mode, "MODE",
         "Override the terminal mode (auto, interactive or "
         "non-interactive)"},
        {"user", 0, CLI_OPT_INT, &user, "UID", "User ID to run the command as (default 0)"},
        {NULL},
    };
    /* Flags are ferry's up to the first word after the instance name (or "--"); from there on everything
     * belongs to the command, so "ferry exec c1 ls -la" needs no "--" (Incus's does). */
    int split = 1;
    int positional = 0;
    for (; split < argc; split++) {
        if (strcmp(argv[split], "--") == 0)
            break;
        if (argv[split][0] == '-' && argv[split][1] != '\0') {
            /* Flags with a separate value consume the next word. */
            const char *flag = argv[split];
            gboolean takes_value = (strcmp(flag, "--env") == 0 || strcmp(flag, "--cwd") == 0 ||
                                    strcmp(flag, "--user") == 0 || strcmp(flag, "--group") == 0 ||
                                    strcmp(flag, "--mode") == 0 || strcmp(flag, "--project") == 0);
            /* A value-taking flag at the very end is left for cli_parse to report as missing its value. */
            if (takes_value && split + 1 < argc)
                split++;
            continue;
        }
        if (++positional == 2)
            break;
    }
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, split, argv, options, &args, error))
        return -1;
    g_autoptr(GPtrArray) command = g_ptr_array_new();
    for (int i = split < argc && strcmp(argv[split], "--") == 0 ? split + 1 : split; i < argc; i++)
        g_ptr_array_add(command, argv[i]);
    if (args->len != 1 || command->len == 0) {
        g_ptr_array_set_size(args, 0);
        cli_check_args(cli, args, 2, -1, error);
        return -1;
    }
    if (force_interactive && force_noninteractive) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "You can't pass -t and -T at the same time");
        return -1;
    }
    if (mode != NULL && strcmp(mode, "auto") != 0 && (force_interactive || force_noninteractive)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "You can't pass -t or -T at the same time as --mode");
        return -1;
    }

    gboolean stdin_tty = isatty(STDIN_FILENO);
    gboolean stdout_tty = isatty(STDOUT_FILENO);
    gboolean interactive;
    if (disable_stdin)
        interactive = FALSE;
    else if (force_interactive || g_strcmp0(mode, "interactive") == 0)
        interactive = TRUE;
    else if (force_noninteractive || g_strcmp0(mode, "non-interactive") == 0)
        interactive = FALSE;
    else
        interactive = stdin_tty && stdout_tty;

    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &name, error);
    if (client == NULL)
        return -1;

    g_autoptr(json_t) environment = json_object();
    const char *term = g_getenv("TERM");
    if (term != NULL && *term != '\0')
        json_object_set_new(environment, "TERM", json_string(term));
    for (guint i = 0; env != NULL && i < env->len; i++) {
        const char *pair = g_ptr_array_index(env, i);
        const char *equals = strchr(pair, '=');
        g_autofree char *key = equals != NULL ? g_strndup(pair, equals - pair) : g_strdup(pair);
        json_object_set_new(environment, key, json_string(equals != NULL ? equals + 1 : ""));
    }
    g_autoptr(json_t) command_array = json_array();
    for (guint i = 0; i < command->len; i++)
        json_array_append_new(command_array, json_string(g_ptr_array_index(command, i)));
    int width = 0, height = 0;
    if (stdout_tty)
        terminal_size(&width, &height);

    g_autoptr(json_t) body = json_pack("{s:O, s:O, s:b, s:b, s:b, s:i, s:i, s:i, s:i, s:s}", "command",
                                       command_array, "environment", environment, "interactive", interactive,
                                       "wait-for-websocket", 1, "record-output", 0, "width", width, "height",
                                       height, "user", user, "group", group, "cwd", cwd != NULL ? cwd : "");
    g_autofree char *path = ferry_api_path("instances", name, "exec", NULL);
    g_autoptr(FerryResponse) response = ferry_client_request(client, "POST", path, body, NULL, error);
    if (response == NULL)
        return -1;
    const char *operation = response->operation;
    if (operation == NULL)
        operation = ferry_json_get_string(response->metadata, "id");
    json_t *fds = json_object_get(json_object_get(response->metadata, "metadata"), "fds");
    if (operation == NULL || !json_is_object(fds)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "The server's exec operation carries no websockets");
        return -1;
    }

    /* Follow the operation from now on: a failed command's exit status is only in its last event. */
    g_autoptr(FerryOperationWatch) watch = ferry_client_watch_operation(client, operation, NULL, NULL, TRUE);

    ExecSession session = {0};
    session.client = client;
    session.interactive = interactive;
    GMainContext *context = ferry_client_get_context(client);
    gboolean failed = FALSE;

    session.control = connect_fd(&session, operation, fds, "control", error);
    failed = session.control == NULL && ferry_json_get_string(fds, "control") != NULL;
    if (!failed) {
        session.streams[0] = connect_fd(&session, operation, fds, "0", error);
        failed = session.streams[0] == NULL;
    }
    for (int i = 1; !failed && !interactive && i < 3; i++) {
        session.streams[i] = connect_fd(&session, operation, fds, i == 1 ? "1" : "2", error);
        failed = session.streams[i] == NULL;
    }
    if (failed) {
        for (int i = 0; i < 3; i++)
            close_websocket(&session.streams[i]);
        close_websocket(&session.control);
        return -1;
    }

    TerminalState terminal = {FALSE};
    if (interactive && stdin_tty && tcgetattr(STDIN_FILENO, &terminal.state) == 0) {
        struct termios raw = terminal.state;
        cfmakeraw(&raw);
        terminal.saved = tcsetattr(STDIN_FILENO, TCSADRAIN, &raw) == 0;
    }

    {
        g_autoptr(GMainContextPusher) pusher = g_main_context_pusher_new(context);
        /* Interactive: the pty's output comes back on "0"; otherwise on "1" and "2". */
        for (int i = interactive ? 0 : 1; i < (interactive ? 1 : 3); i++) {
            g_object_set_data(G_OBJECT(session.streams[i]), "ferry-fd",
                              GINT_TO_POINTER(i == 2 ? STDERR_FILENO : STDOUT_FILENO));
            g_signal_connect(session.streams[i], "message", G_CALLBACK(on_output_message), &session);
            g_signal_connect(session.streams[i], "closed", G_CALLBACK(on_output_closed), &session);
            session.open_outputs++;
        }
        if (disable_stdin) {
            end_stdin(&session);
        } else {
            session.stdin_source = g_unix_fd_source_new(STDIN_FILENO, G_IO_IN | G_IO_HUP | G_IO_ERR);
            g_source_set_callback(session.stdin_source, (GSourceFunc)(void (*)(void))on_stdin, &session,
                                  NULL);
            g_source_attach(session.stdin_source, context);
        }
        watch_signals(&session, context);
        if (interactive)
            send_window_size(&session);

        /* Until the server has closed the output streams; should it not after the command ended, give up
         * waiting for them a few seconds later. */
        gboolean gave_up = FALSE;
        GSource *timer = NULL;
        while (session.open_outputs > 0 && !gave_up) {
            if (timer == NULL && ferry_operation_watch_is_done(watch)) {
                timer = g_timeout_source_new_seconds(5);
                g_source_set_callback(timer, set_flag, &gave_up, NULL);
                g_source_attach(timer, context);
            }
            g_main_context_iteration(context, TRUE);
        }
        if (timer != NULL) {
            g_source_destroy(timer);
            g_source_unref(timer);
        }

        unwatch_signals(&session);
        stop_stdin(&session);
    }
    restore_terminal(&terminal);

    for (int i = 0; i < 3; i++)
        close_websocket(&session.streams[i]);
    close_websocket(&session.control);

    g_autoptr(json_t) final = NULL;
    g_autoptr(GError) wait_error = NULL;
    gboolean ok = ferry_operation_watch_finish(watch, &final, &wait_error);
    json_t *ret = json_object_get(json_object_get(final, "metadata"), "return");
    if (!ok) {
        if (json_is_integer(ret)) {
            fprintf(stderr, "Error: %s\n", wait_error->message);
            return (int)json_integer_value(ret);
        }
        g_propagate_error(error, g_steal_pointer(&wait_error));
        return -1;
    }
    return json_is_integer(ret) ? (int)json_integer_value(ret) : 0;
}
