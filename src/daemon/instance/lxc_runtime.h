/* Containers on liblxc: the generated config, start/stop/status/usage, and exec.
 *
 * liblxc forks (start double-forks a monitor, attach forks into the namespaces) and refuses to start a
 * container from a multithreaded process, so start and exec run in a helper process: ferryd re-executes
 * itself as `<helper> forkstart|forkexec ...` and main() hands those argv to the *_main entry points below.
 * Status, usage, stop and freeze only talk to the container's monitor over its command socket and run
 * in-process. */
#pragma once

#include "idmap.h"

#include <gio/gio.h>
#include <sys/types.h>

G_BEGIN_DECLS

/* A host path bind-mounted into the container (a "disk" device with a source). */
typedef struct {
    const char *source;  /* absolute host path; must exist */
    const char *path;    /* absolute path inside the container */
    gboolean readonly;
} FerryContainerMount;

typedef struct {
    const char *lxcpath;  /* $FERRY_DIR/containers; like the rootfs's, its directories must be searchable
                           * by idmap.host_base (o+x): liblxc checks that for unprivileged containers */
    const char *lxc_name; /* "<project>_<instance>" */
    const char *rootfs;   /* absolute path of the volume's rootfs directory; its parent directories must be
                           * searchable by idmap.host_base for an unprivileged container */
    const char *hostname;
    const char *log_file;    /* liblxc log (level INFO); its directory is created if missing */
    const char *console_log; /* container console output (lxc.console.logfile), may be NULL */
    gboolean privileged;     /* FALSE: lxc.idmap u/g 0 idmap.host_base idmap.range; the rootfs must have
                              * been shifted by the caller (ferry_idmap_shift_tree) */
    FerryIdmap idmap;
    gint64 memory_limit_bytes; /* 0 = unlimited */
    const char *cpuset;        /* NULL, or a CPU list ("0-1", "0,2"): the container's CPUs */
    gint64 cpu_count;          /* limits.cpu as a count: the first N CPUs the daemon may use; 0 = none.
                                * Ignored when cpuset is set */
    /* "KEY=VALUE", NULL-terminated, may be NULL: lxc.environment, which liblxc gives init and every exec'd
     * command (as Incus's environment.*) */
    const char *const *environment;
    const FerryContainerMount *mounts; /* n_mounts bind mounts (disk devices with a source) */
    gsize n_mounts;
} FerryContainerSpec;

/* Writes <lxcpath>/<lxc_name>/config (and the seccomp policy next to it), replacing any previous one;
 * directories it creates are mode 0711.
 * FERRY_ERROR_INVALID for a value that cannot go into a liblxc config (a newline, a bad CPU list...). */
gboolean ferry_container_write_config(const FerryContainerSpec *spec, GError **error);

/* Removes <lxcpath>/<name> (config, seccomp policy). FERRY_ERROR_CONFLICT if the container is running;
 * succeeds if there is nothing to remove. */
gboolean ferry_container_destroy_config(const char *lxcpath, const char *name, GError **error);

/* Starts the container by running `<helper_binary> forkstart <lxcpath> <name>` and waiting for it: the helper
 * returns once the container is RUNNING (the monitor stays behind as a daemon) or has failed to start, in
 * which case the error carries the liblxc errors of this start attempt. FERRY_ERROR_CONFLICT if it already
 * runs, FERRY_ERROR_NOT_FOUND if it has no config. */
gboolean ferry_container_start(const char *lxcpath, const char *name, const char *helper_binary,
                               GError **error);

/* Incus semantics (doInstanceStatePut): force or timeout_seconds == 0 kills the container at once; otherwise
 * the halt signal (lxc.signal.halt, SIGPWR by default) is sent and the call waits timeout_seconds
 * (< 0: forever) for the container to stop. A clean shutdown that times out fails and leaves the container
 * running (`Failed shutting down instance, status is "Running": ...`): the caller decides whether to force.
 * A frozen container is thawed first. Stopping a stopped container succeeds. */
gboolean ferry_container_stop(const char *lxcpath, const char *name, gboolean force, int timeout_seconds,
                              GError **error);

typedef enum {
    FERRY_CONTAINER_STOPPED,
    FERRY_CONTAINER_RUNNING, /* also while starting or stopping */
    FERRY_CONTAINER_FROZEN,  /* also while freezing */
    FERRY_CONTAINER_ERROR,   /* liblxc could not tell */
} FerryContainerStatus;

/* The container's state; *init_pid_out (may be NULL) is its init's pid in the host's pid namespace, or 0
 * when it is not running. */
FerryContainerStatus ferry_container_status(const char *lxcpath, const char *name, pid_t *init_pid_out);

typedef struct {
    gint64 memory_usage; /* bytes, current */
    gint64 memory_peak;  /* bytes, highest since start; -1 when the kernel does not track it */
    gint64 processes;    /* tasks in the container */
    gint64 cpu_usage_ns; /* CPU time consumed since start */
} FerryContainerUsage;

/* Resource usage from the container's cgroups (v1 or v2, whichever holds each controller).
 * FERRY_ERROR_CONFLICT if it is not running. */
gboolean ferry_container_usage(const char *lxcpath, const char *name, FerryContainerUsage *out,
                               GError **error);

/* Freezes (cgroup freezer) / thaws every process of a running container; both wait until done. */
/* Change the limits of a running container in place (limits.memory, limits.cpu), as Incus applies them live. */
gboolean ferry_container_apply_limits(const char *lxcpath, const char *name, gint64 memory_limit_bytes,
                                      const char *cpuset, gint64 cpu_count, GError **error);

gboolean ferry_container_freeze(const char *lxcpath, const char *name, GError **error);
gboolean ferry_container_unfreeze(const char *lxcpath, const char *name, GError **error);

/* Runs argv in the running container, as uid:gid (container ids) in cwd (NULL: "/"), with the environment
 * envp (NULL: empty; liblxc adds lxc.environment and container=lxc), by spawning `<helper_binary> forkexec
 * <lxcpath> <name> <uid> <gid> <cwd> <tty|notty> -- argv...` with stdin_fd/stdout_fd/stderr_fd as its stdio
 * (-1: /dev/null). The environment reaches the helper through an inherited memfd, never through the helper's
 * own environment or argv. The command attaches to all of the container's namespaces and its cgroup and
 * leads a session of its own inside it; when interactive, stdin_fd must be a terminal (a pty slave) and
 * becomes its controlling terminal.
 * The caller reaps *pid_out (waitpid, g_child_watch_add); its exit status is the command's: its exit code,
 * 128+signal if killed, 127 if it was not found, 126 if it could not be executed, 255 if the helper could not
 * attach (the reason is on stderr_fd). HUP, INT, QUIT, TERM, USR1 and USR2 sent to the helper are forwarded
 * to the command; killing the helper with SIGKILL kills the command. */
gboolean ferry_container_exec_spawn(const char *lxcpath, const char *name, const char *helper_binary,
                                    const char *const *argv, const char *const *envp, const char *cwd,
                                    guint32 uid, guint32 gid, int stdin_fd, int stdout_fd, int stderr_fd,
                                    gboolean interactive, GPid *pid_out, GError **error);

/* Entry points for ferryd's main() when argv[1] is "forkstart" / "forkexec"; they return the process's exit
 * status. Never called inside the daemon itself. */
int ferry_container_forkstart_main(int argc, char **argv);
int ferry_container_forkexec_main(int argc, char **argv);

G_END_DECLS
