/* The liblxc runtime against real containers (needs root): a busybox image built by
 * scripts/build-busybox-image.sh, one unprivileged container (rootfs shifted to 1000000) and one privileged.
 * The tests share the two containers and run in order: start, exec, limits, freeze, stop. */
#include "idmap.h"
#include "lxc_runtime.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lxc/lxccontainer.h>

#define UNPRIVILEGED "ferrytest_unpriv"
#define PRIVILEGED "ferrytest_priv"
#define BROKEN "ferrytest_broken" /* a rootfs without /sbin/init */
#define MEMORY_LIMIT (256 * 1024 * 1024)

static const char *const all_containers[] = {UNPRIVILEGED, PRIVILEGED, BROKEN};
static const char *const default_env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};

static struct {
    char *skip_reason; /* set when the containers cannot be set up: every test skips with it */
    char *dir;         /* everything of this run; searchable by the unprivileged container's root */
    char *lxcpath;
} fixture;

static gboolean skip_unless_ready(void)
{
    if (fixture.skip_reason == NULL)
        return FALSE;
    g_test_skip(fixture.skip_reason);
    return TRUE;
}

static char *container_path(const char *name, const char *rel)
{
    return g_build_filename(fixture.dir, name, rel, NULL);
}

static void die_with_parent(gpointer data)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static gboolean run_sync(const char *const *argv, GError **error)
{
    g_autofree char *err = NULL;
    int status;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
                      die_with_parent, NULL, NULL, &err, &status, error))
        return FALSE;
    if (!g_spawn_check_wait_status(status, error)) {
        g_prefix_error(error, "%s: %s: ", argv[0], err);
        return FALSE;
    }
    return TRUE;
}

static void force_stop_all(const char *lxcpath)
{
    for (gsize i = 0; i < G_N_ELEMENTS(all_containers); i++) {
        struct lxc_container *c = lxc_container_new(all_containers[i], lxcpath);
        if (c == NULL)
            continue;
        if (c->is_running(c)) {
            c->stop(c);
            c->wait(c, "STOPPED", 10);
        }
        lxc_container_put(c);
    }
}

/* A process that outlives a crashed test (a failed g_assert aborts) and then kills the containers and removes
 * the run's directory, so a failure never leaves containers running. Forked before any thread exists. */
static void start_reaper(void)
{
    int pipe_fds[2];
    if (pipe(pipe_fds) < 0)
        return;
    pid_t pid = fork();
    if (pid < 0)
        return;
    if (pid > 0) {
        close(pipe_fds[0]);
        return; /* the write end stays open, without O_CLOEXEC issues: only we hold it */
    }
    close(pipe_fds[1]);
    int null_fd = open("/dev/null", O_RDWR);
    dup2(null_fd, STDIN_FILENO);
    dup2(null_fd, STDOUT_FILENO);
    dup2(null_fd, STDERR_FILENO);
    setsid();
    char byte;
    while (read(pipe_fds[0], &byte, 1) != 0 && errno == EINTR)
        ;
    /* A helper or tar the test started may still be at work in there: retry until all is gone. */
    for (int attempt = 0; attempt < 10; attempt++) {
        force_stop_all(fixture.lxcpath);
        pid_t rm = fork();
        if (rm == 0) {
            execlp("rm", "rm", "-rf", "--one-file-system", fixture.dir, (char *)NULL);
            _exit(127);
        }
        if (rm > 0)
            waitpid(rm, NULL, 0);
        if (access(fixture.dir, F_OK) < 0)
            break;
        sleep(1);
    }
    _exit(0);
}

static gboolean prepare_container(const char *name, const char *image, gboolean privileged, gboolean broken,
                                  GError **error)
{
    g_autofree char *volume = g_build_filename(fixture.dir, name, NULL);
    g_autofree char *rootfs = container_path(name, "rootfs");
    if (g_mkdir(volume, 0711) < 0) {
        ferry_set_error_errno(error, errno, "mkdir %s", volume);
        return FALSE;
    }
    if (broken) {
        if (g_mkdir(rootfs, 0755) < 0) {
            ferry_set_error_errno(error, errno, "mkdir %s", rootfs);
            return FALSE;
        }
    } else {
        const char *tar[] = {"tar", "-xJf", image, "-C", volume, "--numeric-owner", "rootfs", NULL};
        if (!run_sync(tar, error))
            return FALSE;
        if (!privileged && !ferry_idmap_shift_tree(rootfs, FERRY_IDMAP_DEFAULT_BASE, NULL, error))
            return FALSE;
    }
    g_autofree char *log_file = g_build_filename(fixture.dir, "logs", name, "lxc.log", NULL);
    g_autofree char *console_log = g_build_filename(fixture.dir, "logs", name, "console.log", NULL);
    const char *environment[] = {"FERRY_TEST=init", NULL};
    FerryContainerSpec spec = {
        .lxcpath = fixture.lxcpath,
        .lxc_name = name,
        .rootfs = rootfs,
        .hostname = privileged ? "priv" : "unpriv",
        .log_file = log_file,
        .console_log = console_log,
        .privileged = privileged,
        .idmap = {.host_base = FERRY_IDMAP_DEFAULT_BASE, .range = FERRY_IDMAP_DEFAULT_RANGE},
        .memory_limit_bytes = privileged ? 0 : MEMORY_LIMIT,
        .cpu_count = privileged ? 1 : 0,
        .environment = environment,
    };
    return ferry_container_write_config(&spec, error);
}

static void setup_fixture(void)
{
    if (geteuid() != 0) {
        fixture.skip_reason = g_strdup("Container tests need root (liblxc, id shifting); run them as root");
        return;
    }
    if (!g_file_test("/sys/fs/cgroup", G_FILE_TEST_IS_DIR) ||
        !g_file_test("/bin/busybox", G_FILE_TEST_EXISTS)) {
        fixture.skip_reason = g_strdup("Container tests need cgroups and /bin/busybox (busybox-static)");
        return;
    }
    g_autoptr(GError) error = NULL;
    fixture.dir = g_dir_make_tmp("ferry-lxc-XXXXXX", &error);
    if (fixture.dir == NULL || chmod(fixture.dir, 0711) < 0) {
        fixture.skip_reason = g_strdup_printf("Cannot create a test directory: %s",
                                              error != NULL ? error->message : g_strerror(errno));
        return;
    }
    fixture.lxcpath = g_build_filename(fixture.dir, "containers", NULL);
    start_reaper();

    g_autofree char *image = g_build_filename(fixture.dir, "busybox.tar.xz", NULL);
    const char *build[] = {BUSYBOX_IMAGE_SCRIPT, image, NULL};
    if (!run_sync(build, &error) || !prepare_container(UNPRIVILEGED, image, FALSE, FALSE, &error) ||
        !prepare_container(PRIVILEGED, image, TRUE, FALSE, &error) ||
        !prepare_container(BROKEN, image, TRUE, TRUE, &error)) {
        /* Not a skip: root with busybox and cgroups should be able to do all this. */
        fixture.skip_reason = g_strdup_printf("Fixture setup failed: %s", error->message);
        g_printerr("# %s\n", fixture.skip_reason);
    }
}

static void teardown_fixture(void)
{
    if (fixture.dir == NULL)
        return;
    force_stop_all(fixture.lxcpath);
    const char *rm[] = {"rm", "-rf", "--one-file-system", fixture.dir, NULL};
    run_sync(rm, NULL);
}

static char *read_all(int fd)
{
    g_autoptr(GString) text = g_string_new(NULL);
    char buffer[4096];
    lseek(fd, 0, SEEK_SET);
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof(buffer));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        g_string_append_len(text, buffer, n);
    }
    return g_string_free(g_steal_pointer(&text), FALSE);
}

static int wait_exit(GPid pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0)
        g_assert_cmpint(errno, ==, EINTR);
    g_assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

typedef struct {
    const char *const *envp;
    const char *cwd;
    guint32 uid, gid;
} ExecOptions;

/* Runs argv in the container and returns its exit status; *out and *err get its output. */
static int exec_capture(const char *name, const char *const *argv, const ExecOptions *options, char **out,
                        char **err)
{
    ExecOptions defaults = {.envp = default_env};
    if (options == NULL)
        options = &defaults;
    int out_fd = memfd_create("stdout", MFD_CLOEXEC), err_fd = memfd_create("stderr", MFD_CLOEXEC);
    g_assert_cmpint(out_fd, >=, 0);
    g_assert_cmpint(err_fd, >=, 0);
    GPid pid;
    g_autoptr(GError) error = NULL;
    gboolean ok = ferry_container_exec_spawn(fixture.lxcpath, name, INSTANCE_TEST_HELPER, argv, options->envp,
                                             options->cwd, options->uid, options->gid, -1, out_fd, err_fd,
                                             FALSE, &pid, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    int status = wait_exit(pid);
    *out = read_all(out_fd);
    *err = read_all(err_fd);
    close(out_fd);
    close(err_fd);
    return status;
}

static char *read_text(const char *path)
{
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    return g_strstrip(g_steal_pointer(&text));
}

/* ---- config ---- */

static void test_config(void)
{
    if (skip_unless_ready())
        return;
    g_autofree char *path = g_build_filename(fixture.lxcpath, UNPRIVILEGED, "config", NULL);
    g_autofree char *config = read_text(path);
    const char *expected[] = {
        "lxc.uts.name = unpriv",
        "lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed",
        "lxc.autodev = 1",
        "lxc.net.0.type = empty",
        "lxc.init.cmd = /sbin/init",
        "lxc.idmap = u 0 1000000 1000000000",
        "lxc.idmap = g 0 1000000 1000000000",
        "lxc.environment = FERRY_TEST=init",
    };
    for (gsize i = 0; i < G_N_ELEMENTS(expected); i++)
        g_assert_nonnull(strstr(config, expected[i]));
    g_assert_true(strstr(config, "memory.limit_in_bytes = 268435456") != NULL ||
                  strstr(config, "lxc.cgroup2.memory.max = 268435456") != NULL);
    g_assert_null(strstr(config, "apparmor"));

    g_autofree char *priv_path = g_build_filename(fixture.lxcpath, PRIVILEGED, "config", NULL);
    g_autofree char *priv_config = read_text(priv_path);
    g_assert_null(strstr(priv_config, "lxc.idmap"));
    g_assert_nonnull(strstr(priv_config, "cpuset.cpus = "));

    /* Values that would inject config lines, or that the kernel would refuse, are rejected. */
    g_autofree char *rootfs = container_path(PRIVILEGED, "rootfs");
    FerryContainerSpec bad = {.lxcpath = fixture.lxcpath,
                              .lxc_name = "ferrytest_bad",
                              .rootfs = rootfs,
                              .hostname = "x\nlxc.rootfs.path = dir:/",
                              .log_file = "/tmp/x.log",
                              .privileged = TRUE};
    g_autoptr(GError) error = NULL;
    g_assert_false(ferry_container_write_config(&bad, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    g_clear_error(&error);
    bad.hostname = "x";
    bad.cpuset = "3-1";
    g_assert_false(ferry_container_write_config(&bad, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    g_clear_error(&error);
    bad.cpuset = NULL;
    bad.lxc_name = "../escape";
    g_assert_false(ferry_container_write_config(&bad, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    g_autofree char *bad_dir = g_build_filename(fixture.lxcpath, "ferrytest_bad", NULL);
    g_assert_false(g_file_test(bad_dir, G_FILE_TEST_EXISTS));
}

/* ---- start ---- */

static pid_t assert_running(const char *name)
{
    pid_t pid = 0;
    g_assert_cmpint(ferry_container_status(fixture.lxcpath, name, &pid), ==, FERRY_CONTAINER_RUNNING);
    g_assert_cmpint(pid, >, 1);
    return pid;
}

static void start(const char *name)
{
    g_autoptr(GError) error = NULL;
    gint64 begin = g_get_monotonic_time();
    gboolean ok = ferry_container_start(fixture.lxcpath, name, INSTANCE_TEST_HELPER, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    g_test_message("Started %s in %" G_GINT64_FORMAT " ms", name, (g_get_monotonic_time() - begin) / 1000);
}

static char *uid_map_of(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/uid_map", pid);
    g_autofree char *text = read_text(path);
    g_auto(GStrv) words = g_strsplit_set(text, " \t\n", -1);
    g_autoptr(GString) normal = g_string_new(NULL);
    for (char **word = words; *word != NULL; word++) {
        if ((*word)[0] != '\0')
            g_string_append_printf(normal, normal->len > 0 ? " %s" : "%s", *word);
    }
    return g_string_free(g_steal_pointer(&normal), FALSE);
}

static void test_start_unprivileged(void)
{
    if (skip_unless_ready())
        return;
    g_assert_cmpint(ferry_container_status(fixture.lxcpath, UNPRIVILEGED, NULL), ==, FERRY_CONTAINER_STOPPED);
    start(UNPRIVILEGED);
    pid_t pid = assert_running(UNPRIVILEGED);
    g_autofree char *map = uid_map_of(pid);
    g_assert_cmpstr(map, ==, "0 1000000 1000000000");
    /* init is busybox, running as the container's root, i.e. host uid 1000000. */
    struct stat st;
    g_autofree char *proc = g_strdup_printf("/proc/%d", pid);
    g_assert_cmpint(stat(proc, &st), ==, 0);
    g_assert_cmpuint(st.st_uid, ==, FERRY_IDMAP_DEFAULT_BASE);

    g_autoptr(GError) error = NULL;
    g_assert_false(ferry_container_start(fixture.lxcpath, UNPRIVILEGED, INSTANCE_TEST_HELPER, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT);
}

static void test_start_privileged(void)
{
    if (skip_unless_ready())
        return;
    start(PRIVILEGED);
    pid_t pid = assert_running(PRIVILEGED);
    g_autofree char *map = uid_map_of(pid);
    g_assert_cmpstr(map, ==, "0 0 4294967295");
}

static void test_start_failure(void)
{
    if (skip_unless_ready())
        return;
    g_autoptr(GError) error = NULL;
    g_assert_false(ferry_container_start(fixture.lxcpath, BROKEN, INSTANCE_TEST_HELPER, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL);
    g_test_message("Start failure: %s", error->message);
    g_assert_nonnull(strstr(error->message, "Failed to start container"));
    /* The liblxc log's errors are in the message. */
    g_assert_nonnull(strstr(error->message, "ERROR"));
    g_assert_cmpint(ferry_container_status(fixture.lxcpath, BROKEN, NULL), ==, FERRY_CONTAINER_STOPPED);
    /* liblxc leaves the failed monitor's cgroup behind; the runtime removes it (init's cgroup is the root
     * of each hierarchy on a test host). */
    g_autoptr(GDir) hierarchies = g_dir_open("/sys/fs/cgroup", 0, NULL);
    const char *hierarchy;
    while (hierarchies != NULL && (hierarchy = g_dir_read_name(hierarchies)) != NULL) {
        g_autofree char *leak = g_build_filename("/sys/fs/cgroup", hierarchy, "lxc.monitor." BROKEN, NULL);
        g_assert_false(g_file_test(leak, G_FILE_TEST_EXISTS));
    }

    g_clear_error(&error);
    g_assert_false(ferry_container_start(fixture.lxcpath, "ferrytest_missing", INSTANCE_TEST_HELPER, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND);
}

/* ---- exec ---- */

static void check_exec_output(const char *name)
{
    const char *argv[] = {"sh", "-c", "echo out; echo err >&2; exit 3", NULL};
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint(exec_capture(name, argv, NULL, &out, &err), ==, 3);
    g_assert_cmpstr(out, ==, "out\n");
    g_assert_cmpstr(err, ==, "err\n");
}

static void test_exec_output(void)
{
    if (skip_unless_ready())
        return;
    check_exec_output(UNPRIVILEGED);
    check_exec_output(PRIVILEGED);
}

static void test_exec_not_found(void)
{
    if (skip_unless_ready())
        return;
    const char *missing[] = {"no-such-command", NULL};
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint(exec_capture(UNPRIVILEGED, missing, NULL, &out, &err), ==, 127);
    const char *not_executable[] = {"/etc/passwd", NULL};
    g_autofree char *out2 = NULL, *err2 = NULL;
    g_assert_cmpint(exec_capture(UNPRIVILEGED, not_executable, NULL, &out2, &err2), ==, 126);
}

static void test_exec_identity(void)
{
    if (skip_unless_ready())
        return;
    const char *envp[] = {"PATH=/bin:/usr/bin", "GREETING=hello world", NULL};
    ExecOptions options = {.envp = envp, .cwd = "/tmp", .uid = 1000, .gid = 1001};
    const char *argv[] = {
        "sh", "-c",
        "echo \"$GREETING\"; pwd; id -u; id -g; hostname; grep '^Seccomp:' /proc/self/status; "
        "env | sort",
        NULL};
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint(exec_capture(UNPRIVILEGED, argv, &options, &out, &err), ==, 0);
    g_test_message("exec environment:\n%s", out);
    g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
    g_assert_cmpuint(g_strv_length(lines), >=, 6);
    g_assert_cmpstr(lines[0], ==, "hello world");
    g_assert_cmpstr(lines[1], ==, "/tmp");
    g_assert_cmpstr(lines[2], ==, "1000");
    g_assert_cmpstr(lines[3], ==, "1001");
    g_assert_cmpstr(lines[4], ==, "unpriv");
    /* The seccomp policy is in force (2 = filter mode). */
    g_assert_true(g_str_has_prefix(lines[5], "Seccomp:"));
    g_assert_cmpstr(g_strstrip(lines[5] + strlen("Seccomp:")), ==, "2");
    /* Exactly the environment given, plus init's (lxc.environment, which liblxc applies to attached
     * processes too), liblxc's container=lxc and what sh sets: nothing from the daemon or the helper. */
    for (char **line = lines + 6; *line != NULL; line++) {
        if ((*line)[0] == '\0')
            continue;
        g_autofree char *key = g_strndup(*line, strcspn(*line, "="));
        const char *allowed[] = {"PATH", "GREETING", "PWD", "SHLVL", "container", "FERRY_TEST", NULL};
        if (!g_strv_contains(allowed, key))
            g_test_fail_printf("Unexpected variable in the exec environment: %s", *line);
    }
}

static void test_exec_interactive(void)
{
    if (skip_unless_ready())
        return;
    int master, slave;
    g_assert_cmpint(openpty(&master, &slave, NULL, NULL, NULL), ==, 0);
    /* The terminal must be the controlling one: opening /dev/tty fails without one. */
    const char *argv[] = {"sh", "-c", "test -t 0 && echo is-a-tty; echo via-dev-tty >/dev/tty", NULL};
    GPid pid;
    g_autoptr(GError) error = NULL;
    gboolean ok =
        ferry_container_exec_spawn(fixture.lxcpath, UNPRIVILEGED, INSTANCE_TEST_HELPER, argv, default_env,
                                   NULL, 0, 0, slave, slave, slave, TRUE, &pid, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    close(slave);
    g_assert_cmpint(wait_exit(pid), ==, 0);
    g_autoptr(GString) output = g_string_new(NULL);
    char buffer[1024];
    ssize_t n;
    int flags = fcntl(master, F_GETFL);
    fcntl(master, F_SETFL, flags | O_NONBLOCK);
    while ((n = read(master, buffer, sizeof(buffer))) > 0)
        g_string_append_len(output, buffer, n);
    close(master);
    g_test_message("interactive output: %s", output->str);
    g_assert_nonnull(strstr(output->str, "is-a-tty"));
    g_assert_nonnull(strstr(output->str, "via-dev-tty"));

    /* Not a terminal: refused before anything runs. */
    g_assert_false(ferry_container_exec_spawn(fixture.lxcpath, UNPRIVILEGED, INSTANCE_TEST_HELPER, argv,
                                              default_env, NULL, 0, 0, -1, -1, -1, TRUE, &pid, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
}

/* Polls the unprivileged container until a process whose command line starts with args is (or is no longer)
 * running. */
static gboolean wait_for_process(const char *args, gboolean present)
{
    g_autofree char *script = g_strdup_printf("ps -o args | grep -q '^%s'", args);
    const char *check[] = {"sh", "-c", script, NULL};
    for (int i = 0; i < 100; i++) {
        g_autofree char *out = NULL, *err = NULL;
        if ((exec_capture(UNPRIVILEGED, check, NULL, &out, &err) == 0) == present)
            return TRUE;
        g_usleep(20000);
    }
    return FALSE;
}

static void test_exec_signal(void)
{
    if (skip_unless_ready())
        return;
    const char *argv[] = {"sleep", "30", NULL};
    GPid pid;
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_container_exec_spawn(fixture.lxcpath, UNPRIVILEGED, INSTANCE_TEST_HELPER, argv,
                                             default_env, NULL, 0, 0, -1, -1, -1, FALSE, &pid, &error));
    g_assert_no_error(error);
    /* Once sleep runs in the container, a TERM to the helper reaches it, and its death is the status. */
    g_assert_true(wait_for_process("sleep 30", TRUE));
    g_assert_cmpint(kill(pid, SIGTERM), ==, 0);
    g_assert_cmpint(wait_exit(pid), ==, 128 + SIGTERM);

    /* SIGKILL cannot be forwarded, but the command dies with its helper all the same. */
    const char *long_sleep[] = {"sleep", "31", NULL};
    g_assert_true(ferry_container_exec_spawn(fixture.lxcpath, UNPRIVILEGED, INSTANCE_TEST_HELPER, long_sleep,
                                             default_env, NULL, 0, 0, -1, -1, -1, FALSE, &pid, &error));
    g_assert_true(wait_for_process("sleep 31", TRUE));
    g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
    int status;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(wait_for_process("sleep 31", FALSE));
}

static void test_exec_stopped(void)
{
    if (skip_unless_ready())
        return;
    const char *argv[] = {"true", NULL};
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint(exec_capture(BROKEN, argv, NULL, &out, &err), ==, 255);
    g_assert_nonnull(strstr(err, "not running"));
}

/* ---- limits and usage ---- */

/* The path of pid's cgroup for controller (v1), or its unified cgroup. */
static char *cgroup_dir(pid_t pid, const char *controller)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/cgroup", pid);
    g_autofree char *text = read_text(path);
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    char *unified = NULL;
    for (char **line = lines; *line != NULL; line++) {
        g_auto(GStrv) fields = g_strsplit(*line, ":", 3);
        if (g_strv_length(fields) != 3)
            continue;
        g_auto(GStrv) controllers = g_strsplit(fields[1], ",", -1);
        if (g_strv_contains((const char *const *)controllers, controller)) {
            g_free(unified);
            return g_build_filename("/sys/fs/cgroup", controller, fields[2], NULL);
        }
        if (strcmp(fields[0], "0") == 0) {
            g_free(unified);
            unified = g_build_filename("/sys/fs/cgroup", fields[2], NULL);
        }
    }
    return unified;
}

static void test_memory_limit(void)
{
    if (skip_unless_ready())
        return;
    pid_t pid = assert_running(UNPRIVILEGED);
    g_autofree char *dir = cgroup_dir(pid, "memory");
    g_assert_nonnull(dir);
    g_autofree char *v1 = g_build_filename(dir, "memory.limit_in_bytes", NULL);
    g_autofree char *v2 = g_build_filename(dir, "memory.max", NULL);
    g_autofree char *limit = read_text(g_file_test(v1, G_FILE_TEST_EXISTS) ? v1 : v2);
    g_test_message("memory cgroup %s: limit %s", dir, limit);
    g_assert_cmpstr(limit, ==, "268435456");

    pid_t priv_pid = assert_running(PRIVILEGED);
    g_autofree char *cpuset_dir = cgroup_dir(priv_pid, "cpuset");
    g_autofree char *cpus_file = g_build_filename(cpuset_dir, "cpuset.cpus", NULL);
    g_autofree char *cpus = read_text(cpus_file);
    cpu_set_t allowed;
    g_assert_cmpint(sched_getaffinity(0, sizeof(allowed), &allowed), ==, 0);
    int first = 0;
    while (!CPU_ISSET(first, &allowed))
        first++;
    g_autofree char *expected = g_strdup_printf("%d", first);
    g_assert_cmpstr(cpus, ==, expected);
}

static void test_usage(void)
{
    if (skip_unless_ready())
        return;
    FerryContainerUsage usage;
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_container_usage(fixture.lxcpath, UNPRIVILEGED, &usage, &error));
    g_assert_no_error(error);
    g_test_message("usage: memory %" G_GINT64_FORMAT " peak %" G_GINT64_FORMAT " processes %" G_GINT64_FORMAT
                   " cpu %" G_GINT64_FORMAT " ns",
                   usage.memory_usage, usage.memory_peak, usage.processes, usage.cpu_usage_ns);
    g_assert_cmpint(usage.memory_usage, >, 0);
    g_assert_cmpint(usage.memory_usage, <=, MEMORY_LIMIT);
    g_assert_cmpint(usage.processes, >=, 1);
    g_assert_cmpint(usage.cpu_usage_ns, >, 0);

    g_assert_false(ferry_container_usage(fixture.lxcpath, BROKEN, &usage, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT);
}

static void test_freeze(void)
{
    if (skip_unless_ready())
        return;
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_container_freeze(fixture.lxcpath, PRIVILEGED, &error));
    g_assert_no_error(error);
    g_assert_cmpint(ferry_container_status(fixture.lxcpath, PRIVILEGED, NULL), ==, FERRY_CONTAINER_FROZEN);
    g_assert_true(ferry_container_unfreeze(fixture.lxcpath, PRIVILEGED, &error));
    g_assert_no_error(error);
    assert_running(PRIVILEGED);
}

/* ---- stop ---- */

static void assert_stopped(const char *name)
{
    pid_t pid = -1;
    g_assert_cmpint(ferry_container_status(fixture.lxcpath, name, &pid), ==, FERRY_CONTAINER_STOPPED);
    g_assert_cmpint(pid, ==, 0);
}

static void test_destroy_running(void)
{
    if (skip_unless_ready())
        return;
    g_autoptr(GError) error = NULL;
    g_assert_false(ferry_container_destroy_config(fixture.lxcpath, UNPRIVILEGED, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT);
}

static void test_stop_clean(void)
{
    if (skip_unless_ready())
        return;
    g_autoptr(GError) error = NULL;
    gint64 begin = g_get_monotonic_time();
    g_assert_true(ferry_container_stop(fixture.lxcpath, UNPRIVILEGED, FALSE, 30, &error));
    g_assert_no_error(error);
    gint64 elapsed_ms = (g_get_monotonic_time() - begin) / 1000;
    g_test_message("Clean stop took %" G_GINT64_FORMAT " ms", elapsed_ms);
    g_assert_cmpint(elapsed_ms, <, 10000);
    assert_stopped(UNPRIVILEGED);
    /* The console log shows init went through its halt sequence rather than being killed. */
    g_autofree char *console = g_build_filename(fixture.dir, "logs", UNPRIVILEGED, "console.log", NULL);
    g_autofree char *text = read_text(console);
    g_assert_nonnull(strstr(text, "halt"));
    /* Stopping a stopped container is not an error. */
    g_assert_true(ferry_container_stop(fixture.lxcpath, UNPRIVILEGED, FALSE, 30, &error));
    g_assert_no_error(error);
}

static void test_stop_timeout(void)
{
    if (skip_unless_ready())
        return;
    /* busybox init needs about two seconds to halt; with one second the clean stop gives up, as Incus's
     * does, and leaves the container to finish (or to the caller to force). */
    g_autoptr(GError) error = NULL;
    g_assert_false(ferry_container_stop(fixture.lxcpath, PRIVILEGED, FALSE, 1, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL);
    g_assert_nonnull(strstr(error->message, "Failed shutting down instance"));
    g_clear_error(&error);
    g_assert_true(ferry_container_stop(fixture.lxcpath, PRIVILEGED, TRUE, -1, &error));
    g_assert_no_error(error);
    assert_stopped(PRIVILEGED);
}

static void test_stop_force(void)
{
    if (skip_unless_ready())
        return;
    start(PRIVILEGED);
    assert_running(PRIVILEGED);
    g_autoptr(GError) error = NULL;
    gint64 begin = g_get_monotonic_time();
    g_assert_true(ferry_container_stop(fixture.lxcpath, PRIVILEGED, TRUE, -1, &error));
    g_assert_no_error(error);
    gint64 elapsed_ms = (g_get_monotonic_time() - begin) / 1000;
    g_test_message("Forced stop took %" G_GINT64_FORMAT " ms", elapsed_ms);
    /* Well under the 2 s busybox init needs to halt: it was killed, not asked. */
    g_assert_cmpint(elapsed_ms, <, 1900);
    assert_stopped(PRIVILEGED);
}

static void test_destroy(void)
{
    if (skip_unless_ready())
        return;
    g_autoptr(GError) error = NULL;
    for (gsize i = 0; i < G_N_ELEMENTS(all_containers); i++) {
        g_assert_true(ferry_container_destroy_config(fixture.lxcpath, all_containers[i], &error));
        g_assert_no_error(error);
        g_autofree char *dir = g_build_filename(fixture.lxcpath, all_containers[i], NULL);
        g_assert_false(g_file_test(dir, G_FILE_TEST_EXISTS));
    }
    /* Nothing left to destroy is fine. */
    g_assert_true(ferry_container_destroy_config(fixture.lxcpath, UNPRIVILEGED, &error));
    g_assert_no_error(error);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    setup_fixture();
    g_test_add_func("/instance/lxc/config", test_config);
    g_test_add_func("/instance/lxc/start-unprivileged", test_start_unprivileged);
    g_test_add_func("/instance/lxc/start-privileged", test_start_privileged);
    g_test_add_func("/instance/lxc/start-failure", test_start_failure);
    g_test_add_func("/instance/lxc/exec-output", test_exec_output);
    g_test_add_func("/instance/lxc/exec-not-found", test_exec_not_found);
    g_test_add_func("/instance/lxc/exec-identity", test_exec_identity);
    g_test_add_func("/instance/lxc/exec-interactive", test_exec_interactive);
    g_test_add_func("/instance/lxc/exec-signal", test_exec_signal);
    g_test_add_func("/instance/lxc/exec-stopped", test_exec_stopped);
    g_test_add_func("/instance/lxc/memory-limit", test_memory_limit);
    g_test_add_func("/instance/lxc/usage", test_usage);
    g_test_add_func("/instance/lxc/freeze", test_freeze);
    g_test_add_func("/instance/lxc/destroy-running", test_destroy_running);
    g_test_add_func("/instance/lxc/stop-clean", test_stop_clean);
    g_test_add_func("/instance/lxc/stop-timeout", test_stop_timeout);
    g_test_add_func("/instance/lxc/stop-force", test_stop_force);
    g_test_add_func("/instance/lxc/destroy", test_destroy);
    int status = g_test_run();
    teardown_fixture();
    return status;
}
