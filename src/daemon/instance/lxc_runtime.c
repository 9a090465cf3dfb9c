/* Container lifecycle from inside ferryd: start and exec through the helper process, everything else
 * in-process over the monitor's command socket. */
#include "lxc_private.h"
#include "lxc_runtime.h"

#include "error.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* How long a forced stop may take to be confirmed: the monitor SIGKILLs init, so this is only reached if the
 * kernel cannot tear the container down. */
#define FORCED_STOP_WAIT_SECONDS 30

static gpointer silence_liblxc(gpointer data)
{
    /* Without this, liblxc writes its errors to the daemon's stderr. */
    struct lxc_log log = {.name = "ferryd", .file = "none", .level = "ERROR", .quiet = true};
    lxc_log_init(&log);
    return NULL;
}

FerryLxcContainer *ferry_lxc_open(const char *lxcpath, const char *name, GError **error)
{
    static GOnce silenced = G_ONCE_INIT;
    if (!ferry_lxc_check_name(lxcpath, name, error))
        return NULL;
    g_once(&silenced, silence_liblxc, NULL);
    FerryLxcContainer *c = lxc_container_new(name, lxcpath);
    if (c == NULL)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to load container \"%s\"", name);
    return c;
}

gboolean ferry_lxc_is_running(FerryLxcContainer *c)
{
    const char *state = c->state(c);
    return state != NULL && strcmp(state, "STOPPED") != 0;
}

static gboolean is_monitor_cgroup_of(const char *entry, const char *prefix)
{
    if (!g_str_has_prefix(entry, prefix))
        return FALSE;
    const char *rest = entry + strlen(prefix);
    if (rest[0] == '\0')
        return TRUE;
    /* liblxc appends -1, -2... when the plain name is taken. */
    if (rest[0] != '-' || rest[1] == '\0')
        return FALSE;
    for (rest++; *rest != '\0'; rest++) {
        if (!g_ascii_isdigit(*rest))
            return FALSE;
    }
    return TRUE;
}

/* liblxc 5.0.2 leaves the monitor's cgroup (lxc.monitor.<name>[-N], next to the containers' cgroups, under
 * init's cgroup in every hierarchy) behind when a daemonized start fails: remove the empty ones, or every
 * failed start leaks one more. rmdir refuses a cgroup that is in use, e.g. by a container of the same name
 * under another lxcpath. */
static void remove_leaked_monitor_cgroups(const char *name)
{
    g_autofree char *mountinfo = NULL, *init_cgroups = NULL;
    if (!g_file_get_contents("/proc/self/mountinfo", &mountinfo, NULL, NULL) ||
        !g_file_get_contents("/proc/1/cgroup", &init_cgroups, NULL, NULL))
        return;
    g_autofree char *prefix = g_strconcat("lxc.monitor.", name, NULL);
    g_auto(GStrv) init_lines = g_strsplit(init_cgroups, "\n", -1);
    g_auto(GStrv) mounts = g_strsplit(mountinfo, "\n", -1);
    for (char **mount = mounts; *mount != NULL; mount++) {
        /* "id parent major:minor root mountpoint options [optional...] - fstype source superoptions" */
        g_auto(GStrv) fields = g_strsplit(*mount, " ", -1);
        guint n = g_strv_length(fields), dash = 6;
        while (dash < n && strcmp(fields[dash], "-") != 0)
            dash++;
        if (dash + 3 >= n)
            continue;
        const char *fstype = fields[dash + 1];
        gboolean v2 = strcmp(fstype, "cgroup2") == 0;
        if (!v2 && strcmp(fstype, "cgroup") != 0)
            continue;
        g_auto(GStrv) options = g_strsplit(fields[dash + 3], ",", -1);
        /* Init's cgroup in this hierarchy: the /proc/1/cgroup line whose controllers it mounts. */
        const char *init_path = NULL;
        for (char **line = init_lines; *line != NULL && init_path == NULL; line++) {
            g_auto(GStrv) parts = g_strsplit(*line, ":", 3);
            if (g_strv_length(parts) != 3)
                continue;
            if (v2) {
                if (strcmp(parts[0], "0") == 0)
                    init_path = strstr(*line, "::") + 2;
                continue;
            }
            if (strcmp(parts[0], "0") == 0)
                continue;
            g_auto(GStrv) controllers = g_strsplit(parts[1], ",", -1);
            gboolean all = TRUE;
            for (char **controller = controllers; *controller != NULL && all; controller++)
                all = g_strv_contains((const char *const *)options, *controller);
            if (all)
                init_path = strchr(strchr(*line, ':') + 1, ':') + 1;
        }
        if (init_path == NULL)
            continue;
        /* The mount's root is a prefix of init's path when a cgroup namespace shows part of the tree. */
        const char *mount_root = fields[3];
        const char *relative = init_path;
        if (strcmp(mount_root, "/") != 0 && g_str_has_prefix(init_path, mount_root))
            relative = init_path + strlen(mount_root);
        g_autofree char *dir_path = g_build_filename(fields[4], relative, NULL);
        g_autoptr(GDir) dir = g_dir_open(dir_path, 0, NULL);
        if (dir == NULL)
            continue;
        const char *entry;
        while ((entry = g_dir_read_name(dir)) != NULL) {
            if (!is_monitor_cgroup_of(entry, prefix))
                continue;
            g_autofree char *path = g_build_filename(dir_path, entry, NULL);
            rmdir(path);
        }
    }
}

gboolean ferry_container_start(const char *lxcpath, const char *name, const char *helper_binary,
                               GError **error)
{
    g_autoptr(FerryLxcContainer) c = ferry_lxc_open(lxcpath, name, error);
    if (c == NULL)
        return FALSE;
    if (!c->is_defined(c)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Container \"%s\" has no config", name);
        return FALSE;
    }
    if (ferry_lxc_is_running(c)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Container \"%s\" is already running", name);
        return FALSE;
    }

    /* The monitor liblxc leaves behind points its stdio at /dev/null and closes every other fd, so reading
     * the helper's stderr to the end does not wait for the container. */
    g_autoptr(GSubprocess) helper =
        g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_PIPE, error,
                         helper_binary, "forkstart", lxcpath, name, NULL);
    if (helper == NULL) {
        g_prefix_error(error, "Failed to start container: ");
        return FALSE;
    }
    g_autoptr(GBytes) stderr_bytes = NULL;
    if (!g_subprocess_communicate(helper, NULL, NULL, NULL, &stderr_bytes, error)) {
        g_prefix_error(error, "Failed to start container: ");
        return FALSE;
    }
    if (!g_subprocess_get_if_exited(helper) || g_subprocess_get_exit_status(helper) != 0) {
        remove_leaked_monitor_cgroups(name);
        gsize size = 0;
        const char *data = stderr_bytes != NULL ? g_bytes_get_data(stderr_bytes, &size) : NULL;
        g_autofree char *text = g_utf8_make_valid(data != NULL ? data : "", size);
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to start container: %s",
                    g_strstrip(text)[0] != '\0' ? text : "the start helper failed");
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_container_stop(const char *lxcpath, const char *name, gboolean force, int timeout_seconds,
                              GError **error)
{
    g_autoptr(FerryLxcContainer) c = ferry_lxc_open(lxcpath, name, error);
    if (c == NULL)
        return FALSE;
    if (!ferry_lxc_is_running(c))
        return TRUE;

    if (force || timeout_seconds == 0) {
        /* The monitor SIGKILLs init; the pid namespace takes every other process with it. */
        if (!c->stop(c) && ferry_lxc_is_running(c)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to stop container \"%s\"", name);
            return FALSE;
        }
        if (!c->wait(c, "STOPPED", FORCED_STOP_WAIT_SECONDS)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                        "Failed to stop container \"%s\": still running after %d seconds", name,
                        FORCED_STOP_WAIT_SECONDS);
            return FALSE;
        }
        return TRUE;
    }

    /* A frozen init cannot act on the halt signal. */
    const char *state = c->state(c);
    if (state != NULL && (strcmp(state, "FROZEN") == 0 || strcmp(state, "FREEZING") == 0) &&
        !c->unfreeze(c)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to unfreeze container \"%s\"", name);
        return FALSE;
    }
    if (c->shutdown(c, timeout_seconds < 0 ? -1 : timeout_seconds))
        return TRUE;
    if (!ferry_lxc_is_running(c))
        return TRUE;
    state = c->state(c);
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                "Failed shutting down instance, status is \"%s\": not stopped after %d seconds",
                state != NULL && strcmp(state, "FROZEN") == 0 ? "Frozen" : "Running", timeout_seconds);
    return FALSE;
}

FerryContainerStatus ferry_container_status(const char *lxcpath, const char *name, pid_t *init_pid_out)
{
    if (init_pid_out != NULL)
        *init_pid_out = 0;
    g_autoptr(FerryLxcContainer) c = ferry_lxc_open(lxcpath, name, NULL);
    if (c == NULL)
        return FERRY_CONTAINER_ERROR;
    const char *state = c->state(c);
    if (state == NULL)
        return FERRY_CONTAINER_ERROR;
    FerryContainerStatus status;
    if (strcmp(state, "STOPPED") == 0)
        return FERRY_CONTAINER_STOPPED;
    else if (strcmp(state, "FROZEN") == 0 || strcmp(state, "FREEZING") == 0)
        status = FERRY_CONTAINER_FROZEN;
    else if (strcmp(state, "RUNNING") == 0 || strcmp(state, "STARTING") == 0 ||
             strcmp(state, "STOPPING") == 0 || strcmp(state, "THAWED") == 0)
        status = FERRY_CONTAINER_RUNNING;
    else
        return FERRY_CONTAINER_ERROR; /* ABORTING */
    if (init_pid_out != NULL) {
        pid_t pid = c->init_pid(c);
        *init_pid_out = pid > 0 ? pid : 0;
    }
    return status;
}

/* One cgroup value of the running container, as a number; field picks "name value" out of a keyed file
 * (cpu.stat), NULL takes the file's single number. FALSE if the file does not exist. */
static gboolean read_cgroup_number(FerryLxcContainer *c, const char *file, const char *field, gint64 *out)
{
    char buffer[4096];
    int len = c->get_cgroup_item(c, file, buffer, sizeof(buffer));
    if (len <= 0 || (gsize)len >= sizeof(buffer))
        return FALSE;
    buffer[len] = '\0';
    const char *value = buffer;
    if (field != NULL) {
        g_auto(GStrv) lines = g_strsplit(buffer, "\n", -1);
        for (char **line = lines; *line != NULL; line++) {
            g_auto(GStrv) kv = g_strsplit(*line, " ", 2);
            if (g_strv_length(kv) == 2 && strcmp(kv[0], field) == 0)
                return g_ascii_string_to_signed(g_strstrip(kv[1]), 10, 0, G_MAXINT64, out, NULL);
        }
        return FALSE;
    }
    g_autofree char *text = g_strstrip(g_strdup(value));
    return g_ascii_string_to_signed(text, 10, 0, G_MAXINT64, out, NULL);
}

gboolean ferry_container_usage(const char *lxcpath, const char *name, FerryContainerUsage *out,
                               GError **error)
{
    out->memory_usage = out->memory_peak = out->processes = out->cpu_usage_ns = -1;
    g_autoptr(FerryLxcContainer) c = ferry_lxc_open(lxcpath, name, error);
    if (c == NULL)
        return FALSE;
    if (!ferry_lxc_is_running(c)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Container \"%s\" is not running", name);
        return FALSE;
    }
    /* liblxc resolves each file in whichever hierarchy holds its controller; the v1 names are tried first
     * because on a hybrid host that is where the controllers are. */
    gboolean ok = (read_cgroup_number(c, "memory.usage_in_bytes", NULL, &out->memory_usage) ||
                   read_cgroup_number(c, "memory.current", NULL, &out->memory_usage)) &&
                  read_cgroup_number(c, "pids.current", NULL, &out->processes);
    if (!read_cgroup_number(c, "memory.max_usage_in_bytes", NULL, &out->memory_peak) &&
        !read_cgroup_number(c, "memory.peak", NULL, &out->memory_peak))
        out->memory_peak = -1;
    gint64 usec;
    if (!read_cgroup_number(c, "cpuacct.usage", NULL, &out->cpu_usage_ns)) {
        if (read_cgroup_number(c, "cpu.stat", "usage_usec", &usec))
            out->cpu_usage_ns = usec * 1000;
        else
            ok = FALSE;
    }
    if (!ok) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "Failed to read the cgroup usage of container \"%s\"", name);
        return FALSE;
    }
    return TRUE;
}

/* Write one cgroup limit through liblxc, trying the v1 key and then the v2 one (whichever the host has). */
static gboolean set_limit(FerryLxcContainer *c, const char *v1_key, const char *v2_key, const char *value,
                          GError **error)
{
    if (c->set_cgroup_item(c, v1_key, value) || c->set_cgroup_item(c, v2_key, value))
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to set %s to %s on the running container", v1_key,
                value);
    return FALSE;
}

gboolean ferry_container_apply_limits(const char *lxcpath, const char *name, gint64 memory_limit_bytes,
                                      const char *cpuset, gint64 cpu_count, GError **error)
{
    g_autoptr(FerryLxcContainer) c = ferry_lxc_open(lxcpath, name, error);
    if (c == NULL)
        return FALSE;
    if (!ferry_lxc_is_running(c))
        return TRUE;
    /* No limit is written as the largest value each version accepts. */
    g_autofree char *memory = memory_limit_bytes > 0 ? g_strdup_printf("%" G_GINT64_FORMAT, memory_limit_bytes)
                                                     : g_strdup("-1");
    if (!c->set_cgroup_item(c, "memory.limit_in_bytes", memory) &&
        !c->set_cgroup_item(c, "memory.max", memory_limit_bytes > 0 ? memory : "max")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to set the memory limit of running container "
                    "\"%s\" to %s", name, memory);
        return FALSE;
    }
    g_autofree char *cpus = NULL;
    if (cpuset != NULL)
        cpus = g_strdup(cpuset);
    else
        cpus = ferry_lxc_first_cpus(cpu_count > 0 ? cpu_count : (gint64)g_get_num_processors(), error);
    return cpus != NULL && set_limit(c, "cpuset.cpus", "cpuset.cpus", cpus, error);
}

gboolean ferry_container_freeze(const char *lxcpath, const char *name, GError **error)
{
    g_autoptr(FerryLxcContainer) c = ferry_lxc_open(lxcpath, name, error);
    if (c == NULL)
        return FALSE;
    if (!ferry_lxc_is_running(c)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Container \"%s\" is not running", name);
        return FALSE;
    }
    if (!c->freeze(c)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to freeze container \"%s\"", name);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_container_unfreeze(const char *lxcpath, const char *name, GError **error)
{
    g_autoptr(FerryLxcContainer) c = ferry_lxc_open(lxcpath, name, error);
    if (c == NULL)
        return FALSE;
    if (!ferry_lxc_is_running(c)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Container \"%s\" is not running", name);
        return FALSE;
    }
    if (!c->unfreeze(c)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to unfreeze container \"%s\"", name);
        return FALSE;
    }
    return TRUE;
}

/* The command's environment as NUL-terminated strings in a memfd: it reaches the helper without becoming
 * the helper's own environment (LD_PRELOAD and friends would act on a host root process) and without
 * showing in its argv. */
static int environment_memfd(const char *const *envp, GError **error)
{
    g_auto(FerryLxcFd) fd = memfd_create("ferry-exec-environment", MFD_CLOEXEC);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "Failed to create the exec environment");
        return -1;
    }
    g_autoptr(GString) data = g_string_new(NULL);
    for (const char *const *env = envp; env != NULL && *env != NULL; env++)
        g_string_append_len(data, *env, strlen(*env) + 1);
    for (gsize written = 0; written < data->len;) {
        ssize_t n = write(fd, data->str + written, data->len - written);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ferry_set_error_errno(error, errno, "Failed to write the exec environment");
            return -1;
        }
        written += n;
    }
    if (lseek(fd, 0, SEEK_SET) < 0) {
        ferry_set_error_errno(error, errno, "Failed to write the exec environment");
        return -1;
    }
    return g_steal_fd(&fd);
}

gboolean ferry_container_exec_spawn(const char *lxcpath, const char *name, const char *helper_binary,
                                    const char *const *argv, const char *const *envp, const char *cwd,
                                    guint32 uid, guint32 gid, int stdin_fd, int stdout_fd, int stderr_fd,
                                    gboolean interactive, GPid *pid_out, GError **error)
{
    if (!ferry_lxc_check_name(lxcpath, name, error))
        return FALSE;
    if (argv == NULL || argv[0] == NULL || argv[0][0] == '\0') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "No command to run");
        return FALSE;
    }
    if (uid == G_MAXUINT32 || gid == G_MAXUINT32) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid uid or gid");
        return FALSE;
    }
    if (interactive && (stdin_fd < 0 || !isatty(stdin_fd))) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "An interactive command needs a terminal as stdin");
        return FALSE;
    }

    g_auto(FerryLxcFd) env_fd = environment_memfd(envp, error);
    if (env_fd < 0)
        return FALSE;

    g_autoptr(GPtrArray) helper_argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(helper_argv, g_strdup(helper_binary));
    g_ptr_array_add(helper_argv, g_strdup("forkexec"));
    g_ptr_array_add(helper_argv, g_strdup(lxcpath));
    g_ptr_array_add(helper_argv, g_strdup(name));
    g_ptr_array_add(helper_argv, g_strdup_printf("%u", uid));
    g_ptr_array_add(helper_argv, g_strdup_printf("%u", gid));
    g_ptr_array_add(helper_argv, g_strdup(cwd != NULL && cwd[0] != '\0' ? cwd : "/"));
    g_ptr_array_add(helper_argv, g_strdup(interactive ? "tty" : "notty"));
    g_ptr_array_add(helper_argv, g_strdup("--"));
    for (const char *const *arg = argv; *arg != NULL; arg++)
        g_ptr_array_add(helper_argv, g_strdup(*arg));
    g_ptr_array_add(helper_argv, NULL);

    /* The helper itself runs with an empty environment; its fd 3 is the command's environment. */
    const char *const helper_envp[] = {NULL};
    int source_fds[] = {env_fd};
    int target_fds[] = {3};
    if (!g_spawn_async_with_pipes_and_fds(NULL, (const char *const *)helper_argv->pdata, helper_envp,
                                          G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, stdin_fd, stdout_fd,
                                          stderr_fd, source_fds, target_fds, G_N_ELEMENTS(source_fds),
                                          pid_out, NULL, NULL, NULL, error)) {
        g_prefix_error(error, "Failed to run the command in container \"%s\": ", name);
        return FALSE;
    }
    return TRUE;
}
