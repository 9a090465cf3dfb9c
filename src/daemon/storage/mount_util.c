/* Mount points, bind mounts, unmounting and loop devices of the storage pools. */
#include "pool_private.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <unistd.h>

gboolean ferry_path_is_mountpoint(const char *path, gboolean *result, GError **error)
{
    struct statx stx;
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_INO, &stx) < 0) {
        if (errno == ENOENT) {
            *result = FALSE;
            return TRUE;
        }
        ferry_set_error_errno(error, errno, "Failed to stat \"%s\"", path);
        return FALSE;
    }
    if (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) {
        *result = (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
        return TRUE;
    }

    /* Kernels before 5.8: a different device than the parent's (misses a bind mount of the same fs). */
    g_autofree char *parent = g_path_get_dirname(path);
    struct stat st, parent_st;
    if (lstat(path, &st) < 0 || stat(parent, &parent_st) < 0) {
        ferry_set_error_errno(error, errno, "Failed to stat \"%s\"", path);
        return FALSE;
    }
    *result = st.st_dev != parent_st.st_dev || st.st_ino == parent_st.st_ino;
    return TRUE;
}

gboolean ferry_bind_mount(const char *source, const char *target, GError **error)
{
    if (mount(source, target, NULL, MS_BIND, NULL) < 0) {
        ferry_set_error_errno(error, errno, "Failed to bind-mount \"%s\" on \"%s\"", source, target);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_unmount(const char *path, GError **error)
{
    /* A process that just left the pool (a cp, a container's last file) can hold it for a moment. */
    for (int attempt = 0;; attempt++) {
        gboolean mounted;
        if (!ferry_path_is_mountpoint(path, &mounted, error))
            return FALSE;
        if (!mounted)
            return TRUE;
        if (umount2(path, UMOUNT_NOFOLLOW) == 0)
            continue; /* something may be stacked below: unmount until nothing is left */
        if (errno == EINVAL)
            return TRUE;
        if (errno != EBUSY || attempt >= 20) {
            if (errno == EBUSY)
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Failed to unmount \"%s\": %s", path,
                            g_strerror(errno));
            else
                ferry_set_error_errno(error, errno, "Failed to unmount \"%s\"", path);
            return FALSE;
        }
        g_usleep(50 * G_TIME_SPAN_MILLISECOND);
    }
}

GPtrArray *ferry_loop_devices_for_file(const char *file)
{
    g_autoptr(GPtrArray) devices = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *wanted = realpath(file, NULL);
    if (wanted == NULL)
        wanted = g_strdup(file);

    g_autoptr(GDir) dir = g_dir_open("/sys/block", 0, NULL);
    if (dir == NULL)
        return g_steal_pointer(&devices);
    const char *entry;
    while ((entry = g_dir_read_name(dir)) != NULL) {
        if (!g_str_has_prefix(entry, "loop"))
            continue;
        g_autofree char *attr = g_strdup_printf("/sys/block/%s/loop/backing_file", entry);
        g_autofree char *backing = NULL;
        if (!g_file_get_contents(attr, &backing, NULL, NULL))
            continue; /* not attached */
        g_strchomp(backing);
        /* The kernel appends " (deleted)" once the file is unlinked. */
        if (g_str_has_suffix(backing, " (deleted)"))
            backing[strlen(backing) - strlen(" (deleted)")] = '\0';
        if (g_strcmp0(backing, wanted) == 0)
            g_ptr_array_add(devices, g_strdup_printf("/dev/%s", entry));
    }
    return g_steal_pointer(&devices);
}

gboolean ferry_loop_detach_file(const char *file, GError **error)
{
    /* Autoclear detaches when the last user (the mount) goes; the kernel may finish that a moment after
     * umount2 returns. Only a device still attached after that is cleared by hand. */
    for (int attempt = 0; attempt < 20; attempt++) {
        g_autoptr(GPtrArray) devices = ferry_loop_devices_for_file(file);
        if (devices->len == 0)
            return TRUE;
        g_usleep(50 * G_TIME_SPAN_MILLISECOND);
    }

    g_autoptr(GPtrArray) devices = ferry_loop_devices_for_file(file);
    for (guint i = 0; i < devices->len; i++) {
        const char *device = devices->pdata[i];
        int fd = open(device, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || ioctl(fd, LOOP_CLR_FD, 0) < 0) {
            int saved = errno;
            if (fd >= 0)
                close(fd);
            if (saved == ENXIO)
                continue; /* detached meanwhile */
            ferry_set_error_errno(error, saved, "Failed to detach loop device %s", device);
            return FALSE;
        }
        close(fd);
    }
    return TRUE;
}
