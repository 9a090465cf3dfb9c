/* POST /1.0/instances/{name}/exec: run a command in a container, its stdio carried over the operation's
 * websockets (Incus's protocol): non-interactive uses channels "0" (stdin), "1", "2" and "control";
 * interactive uses one pty on "0" plus "control". The operation's metadata ends with {"return": status}. */
#include "api.h"

#include "error.h"
#include "instances.h"
#include "json.h"
#include "lxc_runtime.h"
#include "server.h"

#include <fcntl.h>
#include <gio/gunixinputstream.h>
#include <gio/gunixoutputstream.h>
#include <pty.h>
#include <signal.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

/* How long the client has to connect its websockets before the command is abandoned. */
#define CONNECT_TIMEOUT_SECONDS 30
/* After the command exits, how long its output may take to drain to the client. */
#define DRAIN_TIMEOUT_SECONDS 10

enum { CHANNEL_STDIN, CHANNEL_STDOUT, CHANNEL_STDERR, CHANNEL_CONTROL, CHANNEL_COUNT };
static const char *const channel_names[CHANNEL_COUNT] = {"0", "1", "2", "control"};

typedef struct {
    FerryDaemon *daemon;
    char *project;
    char *name;
    char **argv;
    char **envp;
    char *cwd;
    guint32 uid, gid;
    gboolean interactive;
    gboolean wait_for_websocket;
    gboolean record_output;
    int width, height;
    guint expected_channels;

    /* Main thread only. */
    SoupWebsocketConnection *channels[CHANNEL_COUNT];
    GOutputStream *stdin_stream;  /* pipe or pty master */
    GQueue stdin_queue;           /* GBytes waiting to be written */
    gboolean stdin_writing;
    gboolean stdin_eof;
    GCancellable *cancellable;

    /* Shared with the worker. */
    GMutex lock;
    GCond drained;
    int open_outputs; /* output streams still being pumped */
    int pty_master;   /* -1 when not interactive */
    GPid pid;
} ExecSession;

static void session_free(gpointer data)
{
    ExecSession *session = data;
    for (int i = 0; i < CHANNEL_COUNT; i++) {
        if (session->channels[i] != NULL) {
            g_signal_handlers_disconnect_by_data(session->channels[i], session);
            g_object_unref(session->channels[i]);
        }
    }
    g_queue_clear_full(&session->stdin_queue, (GDestroyNotify)g_bytes_unref);
    g_clear_object(&session->stdin_stream);
    g_clear_object(&session->cancellable);
    if (session->pty_master >= 0)
        close(session->pty_master);
    g_free(session->project);
    g_free(session->name);
    g_strfreev(session->argv);
    g_strfreev(session->envp);
    g_free(session->cwd);
    g_mutex_clear(&session->lock);
    g_cond_clear(&session->drained);
    g_free(session);
}

static void output_finished(ExecSession *session)
{
    g_mutex_lock(&session->lock);
    session->open_outputs--;
    g_cond_broadcast(&session->drained);
    g_mutex_unlock(&session->lock);
}

/* --- stdin: websocket messages -> child --- */

static void write_next_stdin(ExecSession *session);

static void on_stdin_written(GObject *source, GAsyncResult *result, gpointer user_data)
{
    ExecSession *session = user_data;
    g_autoptr(GError) error = NULL;
    session->stdin_writing = FALSE;
    if (!g_output_stream_write_all_finish(G_OUTPUT_STREAM(source), result, NULL, &error)) {
        /* The command stopped reading (exited): drop what is left. */
        g_queue_clear_full(&session->stdin_queue, (GDestroyNotify)g_bytes_unref);
        return;
    }
    write_next_stdin(session);
}

static void write_next_stdin(ExecSession *session)
{
    if (session->stdin_writing || session->stdin_stream == NULL)
        return;
    GBytes *bytes = g_queue_pop_head(&session->stdin_queue);
    if (bytes == NULL) {
        /* Closing a pty master would hang up the terminal; only pipes get EOF. */
        if (session->stdin_eof && !session->interactive)
            g_output_stream_close(session->stdin_stream, NULL, NULL);
        return;
    }
    session->stdin_writing = TRUE;
    gsize size = 0;
    gconstpointer data = g_bytes_get_data(bytes, &size);
    /* The GBytes stays alive until the write finishes: it rides along as qdata on the cancellable-free call. */
    g_output_stream_write_all_async(session->stdin_stream, data, size, G_PRIORITY_DEFAULT, session->cancellable,
                                    on_stdin_written, session);
    g_object_set_data_full(G_OBJECT(session->stdin_stream), "ferry-in-flight", bytes, (GDestroyNotify)g_bytes_unref);
}

static void on_stdin_message(SoupWebsocketConnection *connection, gint type, GBytes *message, gpointer user_data)
{
    ExecSession *session = user_data;
    if (session->stdin_eof)
        return;
    /* Incus clients end stdin with an empty message. */
    if (g_bytes_get_size(message) == 0) {
        session->stdin_eof = TRUE;
    } else {
        g_queue_push_tail(&session->stdin_queue, g_bytes_ref(message));
    }
    write_next_stdin(session);
}

static void on_stdin_closed(SoupWebsocketConnection *connection, gpointer user_data)
{
    ExecSession *session = user_data;
    session->stdin_eof = TRUE;
    write_next_stdin(session);
}

/* --- output: child -> websocket --- */

typedef struct {
    ExecSession *session;
    SoupWebsocketConnection *channel;
    GInputStream *stream;
} OutputPump;

static void read_next_output(OutputPump *pump);

static void on_output_read(GObject *source, GAsyncResult *result, gpointer user_data)
{
    OutputPump *pump = user_data;
    g_autoptr(GError) error = NULL;
    g_autoptr(GBytes) bytes = g_input_stream_read_bytes_finish(G_INPUT_STREAM(source), result, &error);
    if (bytes != NULL && g_bytes_get_size(bytes) > 0) {
        if (soup_websocket_connection_get_state(pump->channel) == SOUP_WEBSOCKET_STATE_OPEN)
            soup_websocket_connection_send_message(pump->channel, SOUP_WEBSOCKET_DATA_BINARY, bytes);
        read_next_output(pump);
        return;
    }
    /* EOF (or EIO from a pty whose last holder exited): tell the client this stream is over. */
    if (soup_websocket_connection_get_state(pump->channel) == SOUP_WEBSOCKET_STATE_OPEN)
        soup_websocket_connection_close(pump->channel, SOUP_WEBSOCKET_CLOSE_NORMAL, NULL);
    output_finished(pump->session);
    g_object_unref(pump->stream);
    g_object_unref(pump->channel);
    g_free(pump);
}

static void read_next_output(OutputPump *pump)
{
    /* Cancelled when the session ends: output still held open by a background process must not outlive it. */
    g_input_stream_read_bytes_async(pump->stream, 65536, G_PRIORITY_DEFAULT, pump->session->cancellable,
                                    on_output_read, pump);
}

static void start_output(ExecSession *session, int fd, SoupWebsocketConnection *channel, gboolean close_fd)
{
    OutputPump *pump = g_new0(OutputPump, 1);
    pump->session = session;
    pump->channel = g_object_ref(channel);
    pump->stream = g_unix_input_stream_new(fd, close_fd);
    read_next_output(pump);
}

/* --- control channel --- */

static void on_control_message(SoupWebsocketConnection *connection, gint type, GBytes *message, gpointer user_data)
{
    ExecSession *session = user_data;
    gsize size = 0;
    const char *data = g_bytes_get_data(message, &size);
    g_autoptr(json_t) command = ferry_json_parse(data, size, NULL);
    const char *name = command != NULL ? ferry_json_get_string(command, "command") : NULL;
    if (name == NULL)
        return;
    g_mutex_lock(&session->lock);
    GPid pid = session->pid;
    int master = session->pty_master;
    g_mutex_unlock(&session->lock);
    if (g_str_equal(name, "window-resize") && master >= 0) {
        json_t *args = json_object_get(command, "args");
        const char *width = ferry_json_get_string(args, "width");
        const char *height = ferry_json_get_string(args, "height");
        struct winsize size_request = {.ws_col = width ? (unsigned short)atoi(width) : 80,
                                       .ws_row = height ? (unsigned short)atoi(height) : 24};
        ioctl(master, TIOCSWINSZ, &size_request);
    } else if (g_str_equal(name, "signal") && pid > 0) {
        json_int_t signal_number = json_integer_value(json_object_get(command, "signal"));
        if (signal_number > 0 && signal_number < 65)
            kill(pid, (int)signal_number);
    }
}

/* --- connection handling (main thread) --- */

typedef struct {
    FerryOperation *op;
    ExecSession *session;
    int channel;
} PendingChannel;

static void on_channel_ready(SoupWebsocketConnection *connection, gpointer user_data)
{
    PendingChannel *pending = user_data;
    ExecSession *session = pending->session;
    session->channels[pending->channel] = g_object_ref(connection);
    if (pending->channel == CHANNEL_STDIN) {
        g_signal_connect(connection, "message", G_CALLBACK(on_stdin_message), session);
        g_signal_connect(connection, "closed", G_CALLBACK(on_stdin_closed), session);
    } else if (pending->channel == CHANNEL_CONTROL) {
        g_signal_connect(connection, "message", G_CALLBACK(on_control_message), session);
    }
    ferry_operation_mark_connected(pending->op);
}

static void pending_channel_free(gpointer data)
{
    PendingChannel *pending = data;
    ferry_operation_unref(pending->op);
    g_free(pending);
}

static gboolean connect_channel(FerryOperation *op, gpointer data, SoupServerMessage *msg, const char *secret_name,
                                GError **error)
{
    ExecSession *session = data;
    for (int i = 0; i < CHANNEL_COUNT; i++) {
        if (!g_str_equal(channel_names[i], secret_name))
            continue;
        PendingChannel *pending = g_new0(PendingChannel, 1);
        pending->op = ferry_operation_ref(op);
        pending->session = session;
        pending->channel = i;
        if (!ferry_server_accept_websocket(msg, on_channel_ready, pending, pending_channel_free, error)) {
            pending_channel_free(pending);
            return FALSE;
        }
        return TRUE;
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Unknown exec channel \"%s\"", secret_name);
    return FALSE;
}

/* --- the worker --- */

typedef struct {
    ExecSession *session;
    int fds[3]; /* our ends: stdin writer, stdout reader, stderr reader; or the pty master in fds[0] */
    GMutex lock;
    GCond done;
    gboolean finished;
} Wiring;

/* Attach our ends of the child's stdio to the websockets (main thread). */
static gboolean wire_streams(gpointer user_data)
{
    Wiring *wiring = user_data;
    ExecSession *session = wiring->session;
    if (session->interactive) {
        int master = wiring->fds[0];
        session->stdin_stream = g_unix_output_stream_new(dup(master), TRUE);
        start_output(session, dup(master), session->channels[CHANNEL_STDIN], TRUE);
    } else {
        session->stdin_stream = g_unix_output_stream_new(wiring->fds[0], TRUE);
        start_output(session, wiring->fds[1], session->channels[CHANNEL_STDOUT], TRUE);
        start_output(session, wiring->fds[2], session->channels[CHANNEL_STDERR], TRUE);
    }
    write_next_stdin(session);
    g_mutex_lock(&wiring->lock);
    wiring->finished = TRUE;
    g_cond_signal(&wiring->done);
    g_mutex_unlock(&wiring->lock);
    return G_SOURCE_REMOVE;
}

static gboolean close_channels(gpointer user_data)
{
    ExecSession *session = user_data;
    for (int i = 0; i < CHANNEL_COUNT; i++) {
        if (session->channels[i] != NULL &&
            soup_websocket_connection_get_state(session->channels[i]) == SOUP_WEBSOCKET_STATE_OPEN)
            soup_websocket_connection_close(session->channels[i], SOUP_WEBSOCKET_CLOSE_NORMAL, NULL);
    }
    g_cancellable_cancel(session->cancellable);
    return G_SOURCE_REMOVE;
}

/* A pty from the container's own devpts instance, so that the command sees a terminal that exists inside
 * the container (tty(1), ttyname(3) work there). The path is resolved beneath the container's root without
 * following symlinks: the container controls its /dev. */
static gboolean open_container_pty(FerryDaemon *daemon, ExecSession *session, int *master_out, int *slave_out)
{
    g_autofree char *lxcpath = ferry_daemon_path(daemon, "containers", NULL);
    g_autofree char *lxc_name = ferry_instance_volume_name(session->project, session->name);
    pid_t init_pid = 0;
    if (ferry_container_status(lxcpath, lxc_name, &init_pid) != FERRY_CONTAINER_RUNNING || init_pid <= 0)
        return FALSE;
    g_autofree char *root_path = g_strdup_printf("/proc/%d/root", (int)init_pid);
    int root = open(root_path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0)
        return FALSE;
    struct open_how how = {
        .flags = O_RDWR | O_NOCTTY | O_CLOEXEC,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    int master = (int)syscall(SYS_openat2, root, "dev/pts/ptmx", &how, sizeof(how));
    close(root);
    if (master < 0)
        return FALSE;
    struct stat st;
    int unlock = 0;
    /* Only the devpts multiplexer (char 5:2) will do: anything else the container put there is refused. */
    if (fstat(master, &st) < 0 || !S_ISCHR(st.st_mode) || major(st.st_rdev) != 5 || minor(st.st_rdev) != 2 ||
        ioctl(master, TIOCSPTLCK, &unlock) < 0) {
        close(master);
        return FALSE;
    }
    int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0) {
        close(master);
        return FALSE;
    }
    *master_out = master;
    *slave_out = slave;
    return TRUE;
}

static int decode_status(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

static gboolean open_record_files(ExecSession *session, int *out_fd, int *err_fd, char **out_url, char **err_url,
                                  GError **error)
{
    g_autofree char *volume = ferry_instance_volume_name(session->project, session->name);
    g_autofree char *dir = ferry_daemon_path(session->daemon, "logs", volume, NULL);
    g_mkdir_with_parents(dir, 0700);
    g_autofree char *id = g_uuid_string_random();
    g_autofree char *out_name = g_strdup_printf("exec_%s.stdout", id);
    g_autofree char *err_name = g_strdup_printf("exec_%s.stderr", id);
    g_autofree char *out_path = g_build_filename(dir, out_name, NULL);
    g_autofree char *err_path = g_build_filename(dir, err_name, NULL);
    *out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    *err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (*out_fd < 0 || *err_fd < 0) {
        ferry_set_error_errno(error, errno, "Failed to create exec output files in %s", dir);
        return FALSE;
    }
    *out_url = g_strdup_printf("/1.0/instances/%s/logs/%s", session->name, out_name);
    *err_url = g_strdup_printf("/1.0/instances/%s/logs/%s", session->name, err_name);
    return TRUE;
}

static gboolean run_exec(FerryOperation *op, gpointer data, GError **error)
{
    ExecSession *session = data;
    FerryDaemon *daemon = session->daemon;
    if (session->wait_for_websocket &&
        !ferry_operation_wait_connected(op, session->expected_channels, CONNECT_TIMEOUT_SECONDS, error))
        return FALSE;

    int child_fds[3] = {-1, -1, -1};
    Wiring wiring = {.session = session, .fds = {-1, -1, -1}};
    g_autofree char *record_out = NULL;
    g_autofree char *record_err = NULL;
    if (!session->wait_for_websocket) {
        child_fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (session->record_output) {
            if (!open_record_files(session, &child_fds[1], &child_fds[2], &record_out, &record_err, error))
                return FALSE;
        } else {
            child_fds[1] = open("/dev/null", O_WRONLY | O_CLOEXEC);
            child_fds[2] = open("/dev/null", O_WRONLY | O_CLOEXEC);
        }
    } else if (session->interactive) {
        int master = -1, slave = -1;
        struct winsize size = {.ws_col = session->width > 0 ? session->width : 80,
                               .ws_row = session->height > 0 ? session->height : 24};
        if (open_container_pty(daemon, session, &master, &slave)) {
            ioctl(master, TIOCSWINSZ, &size);
        } else {
            /* A container without its own devpts: a host pty still gives a working terminal. */
            g_debug("Exec in %s: no devpts in the container, using a host pty", session->name);
            if (openpty(&master, &slave, NULL, NULL, &size) < 0) {
                ferry_set_error_errno(error, errno, "Failed to allocate a terminal");
                return FALSE;
            }
            fcntl(master, F_SETFD, FD_CLOEXEC);
            fcntl(slave, F_SETFD, FD_CLOEXEC);
        }
        child_fds[0] = slave;
        child_fds[1] = dup(slave);
        child_fds[2] = dup(slave);
        wiring.fds[0] = master;
        g_mutex_lock(&session->lock);
        session->pty_master = master;
        session->open_outputs = 1;
        g_mutex_unlock(&session->lock);
    } else {
        int stdin_pipe[2], stdout_pipe[2], stderr_pipe[2];
        if (pipe2(stdin_pipe, O_CLOEXEC) < 0 || pipe2(stdout_pipe, O_CLOEXEC) < 0 ||
            pipe2(stderr_pipe, O_CLOEXEC) < 0) {
            ferry_set_error_errno(error, errno, "Failed to create pipes");
            return FALSE;
        }
        child_fds[0] = stdin_pipe[0];
        child_fds[1] = stdout_pipe[1];
        child_fds[2] = stderr_pipe[1];
        wiring.fds[0] = stdin_pipe[1];
        wiring.fds[1] = stdout_pipe[0];
        wiring.fds[2] = stderr_pipe[0];
        g_mutex_lock(&session->lock);
        session->open_outputs = 2;
        g_mutex_unlock(&session->lock);
    }

    g_autofree char *lxcpath = ferry_daemon_path(daemon, "containers", NULL);
    g_autofree char *lxc_name = ferry_instance_volume_name(session->project, session->name);
    GPid pid = 0;
    gboolean spawned = ferry_container_exec_spawn(
        lxcpath, lxc_name, daemon->helper_binary, (const char *const *)session->argv,
        (const char *const *)session->envp, session->cwd, session->uid, session->gid, child_fds[0], child_fds[1],
        child_fds[2], session->interactive, &pid, error);
    for (int i = 0; i < 3; i++) {
        if (child_fds[i] >= 0)
            close(child_fds[i]);
    }
    if (!spawned) {
        for (int i = 0; i < 3; i++) {
            if (wiring.fds[i] >= 0 && !(session->interactive && i == 0))
                close(wiring.fds[i]);
        }
        g_main_context_invoke(daemon->main_context, close_channels, session);
        return FALSE;
    }
    g_mutex_lock(&session->lock);
    session->pid = pid;
    g_mutex_unlock(&session->lock);

    if (session->wait_for_websocket) {
        g_mutex_init(&wiring.lock);
        g_cond_init(&wiring.done);
        g_main_context_invoke(daemon->main_context, wire_streams, &wiring);
        g_mutex_lock(&wiring.lock);
        while (!wiring.finished)
            g_cond_wait(&wiring.done, &wiring.lock);
        g_mutex_unlock(&wiring.lock);
        g_mutex_clear(&wiring.lock);
        g_cond_clear(&wiring.done);
    }

    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    int exit_code = decode_status(status);

    /* Let the output drain: the pipes reach EOF once every process holding them has exited. */
    gint64 deadline = g_get_monotonic_time() + DRAIN_TIMEOUT_SECONDS * G_USEC_PER_SEC;
    g_mutex_lock(&session->lock);
    session->pid = 0;
    while (session->open_outputs > 0) {
        if (!g_cond_wait_until(&session->drained, &session->lock, deadline))
            break;
    }
    g_mutex_unlock(&session->lock);
    g_main_context_invoke(daemon->main_context, close_channels, session);

    json_t *metadata = json_pack("{s:i}", "return", exit_code);
    if (record_out != NULL)
        json_object_set_new(metadata, "output", json_pack("{s:s, s:s}", "1", record_out, "2", record_err));
    ferry_operation_set_metadata(op, metadata);
    return TRUE;
}

static char **string_list(json_t *array)
{
    GPtrArray *list = g_ptr_array_new();
    size_t index;
    json_t *item;
    json_array_foreach(array, index, item) g_ptr_array_add(list, g_strdup(json_string_value(item)));
    g_ptr_array_add(list, NULL);
    return (char **)g_ptr_array_free(list, FALSE);
}

/* Incus's default environment, then the instance's environment.* config, then the request's. */
static char **build_environment(json_t *expanded_config, json_t *requested, gboolean interactive)
{
    g_autoptr(GHashTable) env = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_hash_table_insert(env, g_strdup("PATH"), g_strdup("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    g_hash_table_insert(env, g_strdup("HOME"), g_strdup("/root"));
    g_hash_table_insert(env, g_strdup("USER"), g_strdup("root"));
    g_hash_table_insert(env, g_strdup("LANG"), g_strdup("C.UTF-8"));
    if (interactive)
        g_hash_table_insert(env, g_strdup("TERM"), g_strdup("xterm"));
    const char *key;
    json_t *value;
    json_object_foreach(expanded_config, key, value) {
        if (g_str_has_prefix(key, "environment.") && json_is_string(value))
            g_hash_table_replace(env, g_strdup(key + strlen("environment.")), g_strdup(json_string_value(value)));
    }
    json_object_foreach(requested, key, value) {
        if (json_is_string(value))
            g_hash_table_replace(env, g_strdup(key), g_strdup(json_string_value(value)));
    }
    GPtrArray *list = g_ptr_array_new();
    GHashTableIter iter;
    gpointer name, text;
    g_hash_table_iter_init(&iter, env);
    while (g_hash_table_iter_next(&iter, &name, &text))
        g_ptr_array_add(list, g_strdup_printf("%s=%s", (char *)name, (char *)text));
    g_ptr_array_add(list, NULL);
    return (char **)g_ptr_array_free(list, FALSE);
}

FerryResponse *api_instance_exec(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *name = ferry_request_param(request, "name");
    GError *error = NULL;
    if (request->body == NULL)
        return ferry_response_error_new(400, "Missing request body");
    g_autoptr(json_t) instance = ferry_instance_render(daemon, request->project, name, 1, &error);
    if (instance == NULL)
        return ferry_response_error(error);
    if (!g_str_equal(ferry_json_get_string(instance, "status"), "Running"))
        return ferry_response_error_new(400, "Instance is not running");
    json_t *command = json_object_get(request->body, "command");
    if (!json_is_array(command) || json_array_size(command) == 0)
        return ferry_response_error_new(400, "Missing command");
    size_t index;
    json_t *item;
    json_array_foreach(command, index, item) {
        if (!json_is_string(item))
            return ferry_response_error_new(400, "Command arguments must be strings");
    }
    json_t *environment = json_object_get(request->body, "environment");
    if (environment != NULL && !json_is_object(environment) && !json_is_null(environment))
        return ferry_response_error_new(400, "Invalid environment: must be an object");

    ExecSession *session = g_new0(ExecSession, 1);
    session->daemon = daemon;
    session->project = g_strdup(request->project);
    session->name = g_strdup(name);
    session->argv = string_list(command);
    session->interactive = ferry_json_get_bool(request->body, "interactive", FALSE);
    session->wait_for_websocket = ferry_json_get_bool(request->body, "wait-for-websocket", FALSE);
    session->record_output = ferry_json_get_bool(request->body, "record-output", FALSE);
    session->envp = build_environment(json_object_get(instance, "expanded_config"), environment,
                                      session->interactive);
    const char *cwd = ferry_json_get_string(request->body, "cwd");
    session->cwd = g_strdup(cwd != NULL && *cwd != '\0' ? cwd : "/root");
    session->uid = (guint32)json_integer_value(json_object_get(request->body, "user"));
    session->gid = (guint32)json_integer_value(json_object_get(request->body, "group"));
    session->width = (int)json_integer_value(json_object_get(request->body, "width"));
    session->height = (int)json_integer_value(json_object_get(request->body, "height"));
    session->pty_master = -1;
    session->cancellable = g_cancellable_new();
    g_mutex_init(&session->lock);
    g_cond_init(&session->drained);

    json_t *fds = json_object();
    FerryOperationClass klass = session->wait_for_websocket ? FERRY_OPERATION_WEBSOCKET : FERRY_OPERATION_TASK;
    g_autofree char *url = g_strdup_printf("/1.0/instances/%s", name);
    g_autoptr(FerryOperation) op = ferry_operation_new(
        daemon, klass, request->project, "Executing command", json_pack("{s:[s]}", "instances", url), NULL,
        run_exec, session, session_free);
    if (session->wait_for_websocket) {
        const int interactive_channels[] = {CHANNEL_STDIN, CHANNEL_CONTROL};
        const int plain_channels[] = {CHANNEL_STDIN, CHANNEL_STDOUT, CHANNEL_STDERR, CHANNEL_CONTROL};
        const int *channels = session->interactive ? interactive_channels : plain_channels;
        guint count = session->interactive ? 2 : 4;
        for (guint i = 0; i < count; i++) {
            g_autofree char *secret = ferry_random_secret();
            ferry_operation_add_secret(op, channel_names[channels[i]], secret);
            json_object_set_new(fds, channel_names[channels[i]], json_string(secret));
        }
        session->expected_channels = count;
        ferry_operation_set_connect(op, connect_channel);
    }
    ferry_operation_set_metadata(op, json_pack("{s:o}", "fds", fds));
    ferry_operation_start(op);
    return ferry_response_async(op);
}
