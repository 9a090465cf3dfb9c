/* The liblxc config ferry generates for a container: what an Incus container gets by default on this kind of
 * host, minus networking (no bridge: loopback only) and AppArmor (not in the kernel). */
#include "lxc_private.h"
#include "lxc_runtime.h"

#include "error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_FILE "config"
#define SECCOMP_FILE "seccomp"

/* Incus's default seccomp policy: module loading, kexec and open_by_handle_at (which walks out of a bind
 * mount: the "shocker" escape) are refused with ENOSYS, and so is a forced umount. */
static char *escape_fstab(const char *text)
{
    GString *escaped = g_string_new(NULL);
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == ' ')
            g_string_append(escaped, "\\040");
        else if (*p == '\t')
            g_string_append(escaped, "\\011");
        else
            g_string_append_c(escaped, *p);
    }
    return g_string_free(escaped, FALSE);
}

static const char seccomp_policy[] = "2\n"
                                     "denylist\n"
                                     "reject_force_umount\n"
                                     "[all]\n"
                                     "kexec_load errno 38\n"
                                     "open_by_handle_at errno 38\n"
                                     "init_module errno 38\n"
                                     "finit_module errno 38\n"
                                     "delete_module errno 38\n";

/* The devices a container may use (Incus's list): mknod of anything (useless without access), the pty and
 * the standard character devices, fuse and tun. */
static const char *const allowed_devices[] = {
    "b *:* m",   "c *:* m",   "c 136:* rwm", "c 1:3 rwm", "c 1:5 rwm",    "c 1:7 rwm",    "c 1:8 rwm",
    "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm",   "c 5:2 rwm", "c 10:229 rwm", "c 10:200 rwm",
};

gboolean ferry_lxc_check_name(const char *lxcpath, const char *name, GError **error)
{
    if (lxcpath == NULL || !g_path_is_absolute(lxcpath)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Container path must be absolute");
        return FALSE;
    }
    if (name == NULL || name[0] == '\0' || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0 || strpbrk(name, "\n\r") != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid container name \"%s\"",
                    name != NULL ? name : "");
        return FALSE;
    }
    return TRUE;
}

typedef enum {
    CGROUP_NONE,
    CGROUP_V1,
    CGROUP_V2,
} CgroupVersion;

/* Where a controller lives for the daemon (and so for the containers it starts): its own v1 hierarchy, the
 * unified one (pure v2 at /sys/fs/cgroup, or the hybrid layout's /sys/fs/cgroup/unified), or nowhere.
 * liblxc wants lxc.cgroup.* keys for the former and lxc.cgroup2.* for the latter. */
static CgroupVersion controller_version(const char *controller)
{
    g_autofree char *self = NULL;
    if (g_file_get_contents("/proc/self/cgroup", &self, NULL, NULL)) {
        g_auto(GStrv) lines = g_strsplit(self, "\n", -1);
        for (char **line = lines; *line != NULL; line++) {
            g_auto(GStrv) fields = g_strsplit(*line, ":", 3);
            if (g_strv_length(fields) != 3 || strcmp(fields[0], "0") == 0)
                continue;
            g_auto(GStrv) controllers = g_strsplit(fields[1], ",", -1);
            if (g_strv_contains((const char *const *)controllers, controller))
                return CGROUP_V1;
        }
    }
    const char *unified[] = {"/sys/fs/cgroup/cgroup.controllers",
                             "/sys/fs/cgroup/unified/cgroup.controllers"};
    for (gsize i = 0; i < G_N_ELEMENTS(unified); i++) {
        g_autofree char *list = NULL;
        if (!g_file_get_contents(unified[i], &list, NULL, NULL))
            continue;
        /* Device access under v2 is a BPF program, not a controller: any unified hierarchy has it. A hybrid
         * host's unified hierarchy is no use for it, though: liblxc only applies v2 device rules when
         * everything is unified. */
        if (strcmp(controller, "devices") == 0)
            return i == 0 ? CGROUP_V2 : CGROUP_NONE;
        g_auto(GStrv) controllers = g_strsplit_set(g_strstrip(list), " \n", -1);
        if (g_strv_contains((const char *const *)controllers, controller))
            return CGROUP_V2;
    }
    return CGROUP_NONE;
}

static gboolean check_value(const char *what, const char *value, GError **error)
{
    if (value == NULL || value[0] == '\0' || strpbrk(value, "\n\r") != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid %s \"%s\" for a container config", what,
                    value != NULL ? value : "");
        return FALSE;
    }
    return TRUE;
}

/* A CPU list as the kernel writes it ("0-3,6"): digits, commas and ascending ranges only. */
static gboolean check_cpuset(const char *cpuset, GError **error)
{
    g_auto(GStrv) parts = g_strsplit(cpuset, ",", -1);
    for (char **part = parts; *part != NULL; part++) {
        g_auto(GStrv) bounds = g_strsplit(*part, "-", 3);
        guint n = g_strv_length(bounds);
        guint64 low = 0, high = 0;
        gboolean ok =
            (n == 1 || n == 2) && g_ascii_string_to_unsigned(bounds[0], 10, 0, CPU_SETSIZE - 1, &low, NULL) &&
            (n == 1 ||
             (g_ascii_string_to_unsigned(bounds[1], 10, 0, CPU_SETSIZE - 1, &high, NULL) && high >= low));
        if (!ok) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid CPU list \"%s\"", cpuset);
            return FALSE;
        }
    }
    return TRUE;
}

/* The first count CPUs this process may run on, as a CPU list: limits.cpu=N pins the container to N CPUs
 * that its parent cgroup actually allows (and never to more than there are). */
char *ferry_lxc_first_cpus(gint64 count, GError **error)
{
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0) {
        ferry_set_error_errno(error, errno, "Failed to read the CPUs the daemon may use");
        return NULL;
    }
    g_autoptr(GString) list = g_string_new(NULL);
    gint64 taken = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && taken < count; cpu++) {
        if (!CPU_ISSET(cpu, &allowed))
            continue;
        int last = cpu;
        while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, &allowed) && taken + (last - cpu + 1) < count)
            last++;
        g_string_append_printf(list, list->len > 0 ? ",%d" : "%d", cpu);
        if (last > cpu)
            g_string_append_printf(list, "-%d", last);
        taken += last - cpu + 1;
        cpu = last;
    }
    return g_string_free(g_steal_pointer(&list), FALSE);
}

static void add(GString *config, const char *key, const char *value)
{
    g_string_append_printf(config, "%s = %s\n", key, value);
}

static gboolean add_cgroup_limit(GString *config, const char *controller, const char *v1_key,
                                 const char *v2_key, const char *value, GError **error)
{
    switch (controller_version(controller)) {
    case CGROUP_V1:
        add(config, v1_key, value);
        return TRUE;
    case CGROUP_V2:
        add(config, v2_key, value);
        return TRUE;
    case CGROUP_NONE:
        break;
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                "Cannot apply the limit: this host has no \"%s\" cgroup controller", controller);
    return FALSE;
}

static char *render_config(const FerryContainerSpec *spec, const char *seccomp_path, GError **error)
{
    if (!check_value("rootfs", spec->rootfs, error) || !check_value("hostname", spec->hostname, error) ||
        !check_value("log file", spec->log_file, error) ||
        (spec->console_log != NULL && !check_value("console log", spec->console_log, error)))
        return NULL;
    if (!g_path_is_absolute(spec->rootfs) || !g_path_is_absolute(spec->log_file) ||
        (spec->console_log != NULL && !g_path_is_absolute(spec->console_log))) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Container paths must be absolute");
        return NULL;
    }
    if (strlen(spec->hostname) > 64) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Hostname \"%s\" is too long", spec->hostname);
        return NULL;
    }

    g_autoptr(GString) config = g_string_new("# Generated by ferryd on every start; edits are lost.\n");
    add(config, "lxc.uts.name", spec->hostname);
    g_autofree char *rootfs = g_strconcat("dir:", spec->rootfs, NULL);
    add(config, "lxc.rootfs.path", rootfs);
    /* proc and sys read-only where they reach the host (sysrq-trigger, /sys/kernel...), the container's own
     * cgroup writable and the rest of the hierarchy read-only: what Incus mounts on a cgroup v1 host. */
    add(config, "lxc.mount.auto", "proc:mixed sys:mixed cgroup:mixed");
    /* A fresh tmpfs /dev with only the standard nodes, instead of the rootfs's /dev. */
    add(config, "lxc.autodev", "1");
    /* No getty ttys (inits that spawn them would otherwise spin); ptys for exec and for the console. */
    add(config, "lxc.tty.max", "0");
    add(config, "lxc.pty.max", "1024");
    /* A network namespace with only loopback: there is no bridge to attach a veth to. */
    add(config, "lxc.net.0.type", "empty");
    add(config, "lxc.init.cmd", "/sbin/init");
    /* Capabilities Incus drops by default. mac_admin/mac_override matter without an LSM too: nothing in a
     * container should reconfigure one. */
    add(config, "lxc.cap.drop", "sys_time sys_module sys_rawio mac_admin mac_override");
    add(config, "lxc.seccomp.profile", seccomp_path);
    /* lxc.apparmor.profile stays unset: the kernel has no AppArmor, and setting it breaks CRIU restore.
     * lxc.signal.halt stays at liblxc's SIGPWR, which busybox init and systemd both take as "power off". */
    add(config, "lxc.log.file", spec->log_file);
    add(config, "lxc.log.level", "INFO");
    if (spec->console_log != NULL)
        add(config, "lxc.console.logfile", spec->console_log);

    if (!spec->privileged) {
        const FerryIdmap *map = &spec->idmap;
        if (map->range == 0 || (guint64)map->host_base + map->range > G_MAXUINT32) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid id map %u:%u", map->host_base,
                        map->range);
            return NULL;
        }
        g_autofree char *uid_map = g_strdup_printf("u 0 %u %u", map->host_base, map->range);
        g_autofree char *gid_map = g_strdup_printf("g 0 %u %u", map->host_base, map->range);
        add(config, "lxc.idmap", uid_map);
        add(config, "lxc.idmap", gid_map);
    }

    /* Device access: only the standard devices, for privileged containers above all (an unprivileged one
     * cannot open host devices anyway, but the same list keeps mknod'ed nodes useless). */
    CgroupVersion devices = controller_version("devices");
    if (devices != CGROUP_NONE) {
        const char *prefix = devices == CGROUP_V1 ? "lxc.cgroup.devices" : "lxc.cgroup2.devices";
        g_autofree char *deny_key = g_strconcat(prefix, ".deny", NULL);
        g_autofree char *allow_key = g_strconcat(prefix, ".allow", NULL);
        add(config, deny_key, "a");
        for (gsize i = 0; i < G_N_ELEMENTS(allowed_devices); i++)
            add(config, allow_key, allowed_devices[i]);
    }

    if (spec->memory_limit_bytes < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid memory limit %" G_GINT64_FORMAT,
                    spec->memory_limit_bytes);
        return NULL;
    }
    if (spec->memory_limit_bytes > 0) {
        g_autofree char *limit = g_strdup_printf("%" G_GINT64_FORMAT, spec->memory_limit_bytes);
        if (!add_cgroup_limit(config, "memory", "lxc.cgroup.memory.limit_in_bytes", "lxc.cgroup2.memory.max",
                              limit, error))
            return NULL;
    }

    g_autofree char *cpus = NULL;
    if (spec->cpuset != NULL) {
        if (!check_value("CPU list", spec->cpuset, error) || !check_cpuset(spec->cpuset, error))
            return NULL;
        cpus = g_strdup(spec->cpuset);
    } else if (spec->cpu_count < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid CPU count %" G_GINT64_FORMAT,
                    spec->cpu_count);
        return NULL;
    } else if (spec->cpu_count > 0) {
        cpus = ferry_lxc_first_cpus(spec->cpu_count, error);
        if (cpus == NULL)
            return NULL;
    }
    if (cpus != NULL &&
        !add_cgroup_limit(config, "cpuset", "lxc.cgroup.cpuset.cpus", "lxc.cgroup2.cpuset.cpus", cpus, error))
        return NULL;

    for (gsize i = 0; i < spec->n_mounts; i++) {
        const FerryContainerMount *mount = &spec->mounts[i];
        struct stat st;
        if (mount->source == NULL || mount->source[0] != '/' || mount->path == NULL || mount->path[0] != '/' ||
            !check_value("mount source", mount->source, error) || !check_value("mount path", mount->path, error))
            return NULL;
        if (stat(mount->source, &st) < 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Disk device source \"%s\" doesn't exist",
                        mount->source);
            return NULL;
        }
        /* Spaces separate the fields of an fstab line: write them as \040. liblxc mounts beneath the rootfs
         * without following the container's symlinks out of it. */
        g_autofree char *source = escape_fstab(mount->source);
        g_autofree char *target = escape_fstab(mount->path + 1);
        g_autofree char *entry = g_strdup_printf("%s %s none bind,create=%s%s 0 0", source, target,
                                                 S_ISDIR(st.st_mode) ? "dir" : "file", mount->readonly ? ",ro" : "");
        add(config, "lxc.mount.entry", entry);
    }

    for (const char *const *env = spec->environment; env != NULL && *env != NULL; env++) {
        const char *equals = strchr(*env, '=');
        if (equals == NULL || equals == *env || strpbrk(*env, "\n\r") != NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid environment entry \"%s\"", *env);
            return NULL;
        }
        add(config, "lxc.environment", *env);
    }
    return g_string_free(g_steal_pointer(&config), FALSE);
}

static gboolean ensure_parent_dir(const char *path, GError **error)
{
    g_autofree char *dir = g_path_get_dirname(path);
    if (g_mkdir_with_parents(dir, 0700) < 0) {
        ferry_set_error_errno(error, errno, "Failed to create \"%s\"", dir);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_container_write_config(const FerryContainerSpec *spec, GError **error)
{
    g_return_val_if_fail(spec != NULL, FALSE);
    if (!ferry_lxc_check_name(spec->lxcpath, spec->lxc_name, error))
        return FALSE;
    g_autofree char *dir = g_build_filename(spec->lxcpath, spec->lxc_name, NULL);
    g_autofree char *config_path = g_build_filename(dir, CONFIG_FILE, NULL);
    g_autofree char *seccomp_path = g_build_filename(dir, SECCOMP_FILE, NULL);
    g_autofree char *config = render_config(spec, seccomp_path, error);
    if (config == NULL) {
        g_prefix_error(error, "Failed to write the config of container \"%s\": ", spec->lxc_name);
        return FALSE;
    }
    /* Search-only for others: liblxc makes an unprivileged container's root walk to its directory. */
    if (g_mkdir_with_parents(dir, 0711) < 0) {
        ferry_set_error_errno(error, errno, "Failed to create \"%s\"", dir);
        return FALSE;
    }
    if (!ensure_parent_dir(spec->log_file, error) ||
        (spec->console_log != NULL && !ensure_parent_dir(spec->console_log, error)))
        return FALSE;
    if (!g_file_set_contents_full(seccomp_path, seccomp_policy, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600,
                                  error) ||
        !g_file_set_contents_full(config_path, config, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, error)) {
        g_prefix_error(error, "Failed to write the config of container \"%s\": ", spec->lxc_name);
        return FALSE;
    }
    return TRUE;
}

/* Removes what is beneath dir_fd (the container's directory holds a few of ferry's files, so depth and
 * size are small), without following symlinks. */
static gboolean remove_contents(int dir_fd, const char *path, GError **error)
{
    int fd = dup(dir_fd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (dir == NULL) {
        if (fd >= 0)
            close(fd);
        ferry_set_error_errno(error, errno, "Failed to read \"%s\"", path);
        return FALSE;
    }
    gboolean ok = TRUE;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        g_autofree char *child = g_build_filename(path, entry->d_name, NULL);
        if (unlinkat(dir_fd, entry->d_name, 0) == 0)
            continue;
        if (errno != EISDIR) {
            ferry_set_error_errno(error, errno, "Failed to remove \"%s\"", child);
            ok = FALSE;
            break;
        }
        g_auto(FerryLxcFd) child_fd =
            openat(dir_fd, entry->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (child_fd < 0) {
            ferry_set_error_errno(error, errno, "Failed to open \"%s\"", child);
            ok = FALSE;
            break;
        }
        if (!remove_contents(child_fd, child, error)) {
            ok = FALSE;
            break;
        }
        if (unlinkat(dir_fd, entry->d_name, AT_REMOVEDIR) < 0) {
            ferry_set_error_errno(error, errno, "Failed to remove \"%s\"", child);
            ok = FALSE;
            break;
        }
    }
    closedir(dir);
    return ok;
}

gboolean ferry_container_destroy_config(const char *lxcpath, const char *name, GError **error)
{
    if (!ferry_lxc_check_name(lxcpath, name, error))
        return FALSE;
    g_autoptr(FerryLxcContainer) c = ferry_lxc_open(lxcpath, name, error);
    if (c == NULL)
        return FALSE;
    if (ferry_lxc_is_running(c)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Container \"%s\" is running", name);
        return FALSE;
    }
    g_autofree char *dir = g_build_filename(lxcpath, name, NULL);
    g_auto(FerryLxcFd) dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir_fd < 0) {
        if (errno == ENOENT)
            return TRUE;
        ferry_set_error_errno(error, errno, "Failed to open \"%s\"", dir);
        return FALSE;
    }
    if (!remove_contents(dir_fd, dir, error))
        return FALSE;
    if (rmdir(dir) < 0 && errno != ENOENT) {
        ferry_set_error_errno(error, errno, "Failed to remove \"%s\"", dir);
        return FALSE;
    }
    return TRUE;
}
