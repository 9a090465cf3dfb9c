/* Shared by the lxc_*.c files of the instance module; not part of its API. */
#pragma once

#include <glib.h>
#include <lxc/lxccontainer.h>

G_BEGIN_DECLS

typedef struct lxc_container FerryLxcContainer;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryLxcContainer, lxc_container_put)

typedef int FerryLxcFd;
static inline void ferry_lxc_fd_close(FerryLxcFd fd)
{
    if (fd >= 0)
        close(fd);
}
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(FerryLxcFd, ferry_lxc_fd_close, -1)

/* The lxcpath must be absolute and the name a single path component, as both end up in paths and in the
 * monitor's socket name. */
gboolean ferry_lxc_check_name(const char *lxcpath, const char *name, GError **error);

/* The liblxc handle of a container (defined or not). Inside ferryd, liblxc's own logging is silenced first:
 * the daemon never prints, and failures come back through GError. */
FerryLxcContainer *ferry_lxc_open(const char *lxcpath, const char *name, GError **error);

/* Whether the container's monitor answers and reports a state other than STOPPED. */
gboolean ferry_lxc_is_running(FerryLxcContainer *c);

/* The first count CPUs this process may use, as a cpuset list ("0-1"). */
char *ferry_lxc_first_cpus(gint64 count, GError **error);

G_END_DECLS
