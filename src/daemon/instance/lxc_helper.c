/* The helper processes ferryd runs itself as (`ferryd forkstart|forkexec ...`): single-threaded, so liblxc
 * may fork in them. These are main()s: they print their errors to stderr, which the daemon captures (start)
 * or which is the command's own stderr (exec). */
#include "lxc_private.h"
#include "lxc_runtime.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_HELPER_FAILED 255
#define EXIT_NOT_FOUND 127
#define EXIT_CANNOT_RUN 126
#define ENV_FD 3
#define LOG_LINES_ON_FAILURE 10

static void helper_log_init(const char *lxcpath, const char *name)
{
    /* Until the container's own lxc.log.file takes over, liblxc's errors go to our stderr. */
    struct lxc_log log = {.name = name, .lxcpath = lxcpath, .file = "none", .level = "ERROR", .quiet = false};
    lxc_log_init(&log);
}

static char *config_item(FerryLxcContainer *c, const char *key)
{
    int len = c->get_config_item(c, key, NULL, 0);
    if (len <= 0)
        return NULL;
    char *value = g_malloc0(len + 1);
    c->get_config_item(c, key, value, len + 1);
    return value;
}

/* The ERROR lines liblxc wrote to the log since offset (this start attempt), or its last lines if none. */
static void print_log_tail(const char *log_file, goffset offset)
{
    g_autofree char *contents = NULL;
    gsize length = 0;
    if (log_file == NULL || !g_file_get_contents(log_file, &contents, &length, NULL))
        return;
    const char *attempt = (gsize)offset <= length ? contents + offset : contents;
    g_auto(GStrv) lines = g_strsplit(attempt, "\n", -1);
    g_autoptr(GPtrArray) errors = g_ptr_array_new();
    for (char **line = lines; *line != NULL; line++) {
        if (strstr(*line, " ERROR ") != NULL)
            g_ptr_array_add(errors, *line);
    }
    if (errors->len == 0) {
        for (char **line = lines; *line != NULL; line++) {
            if ((*line)[0] != '\0')
                g_ptr_array_add(errors, *line);
        }
    }
    guint first = errors->len > LOG_LINES_ON_FAILURE ? errors->len - LOG_LINES_ON_FAILURE : 0;
    for (guint i = first; i < errors->len; i++)
        fprintf(stderr, "%s\n", (const char *)g_ptr_array_index(errors, i));
}

int ferry_container_forkstart_main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "Usage: %s forkstart <lxcpath> <name>\n", argv[0]);
        return 1;
    }
    const char *lxcpath = argv[2], *name = argv[3];
    helper_log_init(lxcpath, name);
    g_autoptr(FerryLxcContainer) c = lxc_container_new(name, lxcpath);
    if (c == NULL || !c->is_defined(c)) {
        fprintf(stderr, "Container \"%s\" has no config in \"%s\"\n", name, lxcpath);
        return 1;
    }
    g_autofree char *log_file = config_item(c, "lxc.log.file");
    struct stat st;
    goffset log_offset = log_file != NULL && stat(log_file, &st) == 0 ? st.st_size : 0;

    /* Daemonized, liblxc forks a monitor that outlives us and reports back whether the container reached
     * RUNNING; every inherited fd is closed in the monitor so nothing of the daemon leaks into it. */
    c->want_daemonize(c, true);
    c->want_close_all_fds(c, true);
    if (!c->start(c, 0, NULL)) {
        fprintf(stderr, "Container log: %s\n", log_file != NULL ? log_file : "(none)");
        print_log_tail(log_file, log_offset);
        return 1;
    }
    return 0;
}

static volatile sig_atomic_t command_pid;

static void forward_signal(int signo)
{
    pid_t pid = command_pid;
    if (pid > 0)
        kill(pid, signo);
}

typedef struct {
    char **argv;
    gboolean tty;
    sigset_t signal_mask; /* the mask to run the command with */
} ExecPayload;

/* Runs inside the container, in the attached process: liblxc has set its namespaces, cgroup, ids, cwd,
 * environment and stdio. */
static int exec_in_container(void *data)
{
    ExecPayload *payload = data;
    /* A session of its own inside the container: CRIU cannot dump a process whose session leader is outside
     * the container, and a terminal can only become the controlling terminal of a session leader. */
    setsid();
    /* Killing the helper (even with SIGKILL, which it cannot forward) kills the command. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    sigprocmask(SIG_SETMASK, &payload->signal_mask, NULL);
    if (payload->tty && ioctl(STDIN_FILENO, TIOCSCTTY, 0) < 0)
        fprintf(stderr, "Failed to make the terminal the controlling terminal: %s\n", g_strerror(errno));
    execvp(payload->argv[0], payload->argv);
    return errno == ENOENT || errno == ENOTDIR ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN;
}

/* NUL-separated KEY=VALUE strings from fd, as a NULL-terminated vector. */
static char **read_environment(int fd)
{
    g_autoptr(GByteArray) data = g_byte_array_new();
    guint8 buffer[8192];
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof(buffer));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        g_byte_array_append(data, buffer, n);
    }
    g_autoptr(GPtrArray) env = g_ptr_array_new_with_free_func(g_free);
    gsize start = 0;
    for (gsize i = 0; i < data->len; i++) {
        if (data->data[i] != '\0')
            continue;
        if (i > start && memchr(data->data + start, '=', i - start) != NULL)
            g_ptr_array_add(env, g_strndup((const char *)data->data + start, i - start));
        start = i + 1;
    }
    g_ptr_array_add(env, NULL);
    return (char **)g_ptr_array_free(g_steal_pointer(&env), FALSE);
}

int ferry_container_forkexec_main(int argc, char **argv)
{
    /* forkexec <lxcpath> <name> <uid> <gid> <cwd> <tty|notty> -- <argv...> */
    if (argc < 10 || strcmp(argv[8], "--") != 0) {
        fprintf(stderr, "Usage: %s forkexec <lxcpath> <name> <uid> <gid> <cwd> <tty|notty> -- <command...>\n",
                argv[0]);
        return EXIT_HELPER_FAILED;
    }
    const char *lxcpath = argv[2], *name = argv[3], *cwd = argv[6];
    guint64 uid, gid;
    if (!g_ascii_string_to_unsigned(argv[4], 10, 0, G_MAXUINT32 - 1, &uid, NULL) ||
        !g_ascii_string_to_unsigned(argv[5], 10, 0, G_MAXUINT32 - 1, &gid, NULL)) {
        fprintf(stderr, "Invalid uid or gid\n");
        return EXIT_HELPER_FAILED;
    }
    g_auto(GStrv) environment = read_environment(ENV_FD);
    close(ENV_FD);

    helper_log_init(lxcpath, name);
    g_autoptr(FerryLxcContainer) c = lxc_container_new(name, lxcpath);
    if (c == NULL || !ferry_lxc_is_running(c)) {
        fprintf(stderr, "Container \"%s\" is not running\n", name);
        return EXIT_HELPER_FAILED;
    }

    ExecPayload payload = {.argv = argv + 9, .tty = strcmp(argv[7], "tty") == 0};
    lxc_attach_options_t options = LXC_ATTACH_OPTIONS_DEFAULT;
    options.uid = (uid_t)uid;
    options.gid = (gid_t)gid;
    options.initial_cwd = (char *)cwd;
    /* Exactly the caller's environment, like Incus: nothing of ours leaks in. */
    options.env_policy = LXC_ATTACH_CLEAR_ENV;
    options.extra_env_vars = environment;

    /* Block the forwarded signals until the command's pid is known, so none is lost or sent to pid 0. */
    const int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
    sigset_t block, previous;
    sigemptyset(&block);
    for (gsize i = 0; i < G_N_ELEMENTS(forwarded); i++)
        sigaddset(&block, forwarded[i]);
    sigprocmask(SIG_BLOCK, &block, &previous);
    payload.signal_mask = previous;

    pid_t pid = -1;
    int ret = c->attach(c, exec_in_container, &payload, &options, &pid);
    if (ret < 0 || pid <= 0) {
        fprintf(stderr, "Failed to attach to container \"%s\"\n", name);
        return EXIT_HELPER_FAILED;
    }
    command_pid = pid;
    struct sigaction action = {.sa_handler = forward_signal};
    sigemptyset(&action.sa_mask);
    for (gsize i = 0; i < G_N_ELEMENTS(forwarded); i++)
        sigaction(forwarded[i], &action, NULL);
    sigprocmask(SIG_SETMASK, &previous, NULL);

    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "Failed to wait for the command: %s\n", g_strerror(errno));
            return EXIT_HELPER_FAILED;
        }
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return EXIT_HELPER_FAILED;
}
