/* btrfs subvolumes through the kernel's ioctls on dirfds rather than `btrfs subvolume ...`: the same
 * operations btrfs-progs performs, but relative to a directory fd we opened without following symlinks, so a
 * path inside a volume cannot be swapped for a symlink between finding a nested subvolume and deleting it;
 * and no process per subvolume. */
#include "pool_private.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <unistd.h>

#define BTRFS_SUBVOLUME_ROOT_INO 256

gboolean ferry_btrfs_is_filesystem(int fd)
{
    struct statfs sfs;
    return fstatfs(fd, &sfs) == 0 && sfs.f_type == BTRFS_SUPER_MAGIC;
}

gboolean ferry_btrfs_is_subvolume_stat(int fs_fd, const struct stat *st)
{
    return S_ISDIR(st->st_mode) && st->st_ino == BTRFS_SUBVOLUME_ROOT_INO && ferry_btrfs_is_filesystem(fs_fd);
}

gboolean ferry_btrfs_is_subvolume_fd(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && ferry_btrfs_is_subvolume_stat(fd, &st);
}

static gboolean check_name(const char *name, size_t max, GError **error)
{
    if (strlen(name) >= max) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Subvolume name \"%s\" is too long", name);
        return FALSE;
    }
    return TRUE;
}

static void set_ioctl_error(GError **error, int errnum, const char *what, const char *name)
{
    int code = errnum == EEXIST   ? FERRY_ERROR_CONFLICT
               : errnum == ENOENT ? FERRY_ERROR_NOT_FOUND
                                  : FERRY_ERROR_INTERNAL;
    g_set_error(error, FERRY_ERROR, code, "Failed to %s btrfs subvolume \"%s\": %s", what, name,
                g_strerror(errnum));
}

gboolean ferry_btrfs_subvolume_create(int parent_fd, const char *name, GError **error)
{
    struct btrfs_ioctl_vol_args args;
    memset(&args, 0, sizeof(args));
    if (!check_name(name, sizeof(args.name), error))
        return FALSE;
    g_strlcpy(args.name, name, sizeof(args.name));
    if (ioctl(parent_fd, BTRFS_IOC_SUBVOL_CREATE, &args) < 0) {
        set_ioctl_error(error, errno, "create", name);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_btrfs_set_readonly(int fd, gboolean readonly, GError **error)
{
    guint64 flags;
    if (ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) < 0) {
        ferry_set_error_errno(error, errno, "Failed to read btrfs subvolume flags");
        return FALSE;
    }
    guint64 wanted = readonly ? (flags | BTRFS_SUBVOL_RDONLY) : (flags & ~(guint64)BTRFS_SUBVOL_RDONLY);
    if (wanted != flags && ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &wanted) < 0) {
        ferry_set_error_errno(error, errno, "Failed to make btrfs subvolume %s",
                              readonly ? "read-only" : "writable");
        return FALSE;
    }
    return TRUE;
}

/* Whether the subvolume holds other subvolumes. Unknown (old kernel) counts as yes: the caller then walks. */
static gboolean has_nested_subvolumes(int fd)
{
    struct btrfs_ioctl_get_subvol_rootref_args args;
    memset(&args, 0, sizeof(args));
    if (ioctl(fd, BTRFS_IOC_GET_SUBVOL_ROOTREF, &args) < 0)
        return TRUE; /* EOVERFLOW: more than fit in one answer; anything else: cannot tell */
    return args.num_items > 0;
}

typedef struct {
    int dst_root_fd;
    gboolean readonly;
} NestedCopy;

/* A snapshot holds an empty directory where the source had a nested subvolume: replace it with a snapshot
 * of that subvolume, as Incus does, so that e.g. a container's docker or machined subvolumes come along. */
static gboolean copy_nested(FerryTreeEvent event, int dir_fd, const char *name, const char *relpath,
                            const struct stat *st, gboolean *descend, gpointer user_data, GError **error)
{
    NestedCopy *copy = user_data;
    if (event != FERRY_TREE_ENTER || !*descend || st->st_ino != BTRFS_SUBVOLUME_ROOT_INO)
        return TRUE;
    *descend = FALSE;

    g_autofree char *dst_dir = g_path_get_dirname(relpath);
    int dst_parent = ferry_open_dir_beneath(copy->dst_root_fd, dst_dir, error);
    if (dst_parent < 0)
        return FALSE;
    int src = ferry_open_dir_at(dir_fd, name, error);
    gboolean ok = src >= 0;
    if (ok && unlinkat(dst_parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
        ferry_set_error_errno(error, errno, "Failed to replace \"%s\" in the snapshot", relpath);
        ok = FALSE;
    }
    if (ok)
        ok = ferry_btrfs_snapshot(src, dst_parent, name, copy->readonly, error);
    if (src >= 0)
        close(src);
    close(dst_parent);
    return ok;
}

gboolean ferry_btrfs_snapshot(int src_fd, int parent_fd, const char *name, gboolean readonly, GError **error)
{
    gboolean nested = has_nested_subvolumes(src_fd);
    struct btrfs_ioctl_vol_args_v2 args;
    memset(&args, 0, sizeof(args));
    if (!check_name(name, sizeof(args.name), error))
        return FALSE;
    args.fd = src_fd;
    /* With nested subvolumes the snapshot must stay writable until they are put in. */
    args.flags = readonly && !nested ? BTRFS_SUBVOL_RDONLY : 0;
    g_strlcpy(args.name, name, sizeof(args.name));
    if (ioctl(parent_fd, BTRFS_IOC_SNAP_CREATE_V2, &args) < 0) {
        set_ioctl_error(error, errno, "snapshot into", name);
        return FALSE;
    }
    if (!nested)
        return TRUE;

    int dst = ferry_open_dir_at(parent_fd, name, error);
    if (dst < 0)
        return FALSE;
    NestedCopy copy = {dst, readonly};
    gboolean ok = ferry_tree_walk(src_fd, copy_nested, &copy, error);
    if (ok && readonly)
        ok = ferry_btrfs_set_readonly(dst, TRUE, error);
    close(dst);
    return ok;
}

static gboolean delete_nested(FerryTreeEvent event, int dir_fd, const char *name, const char *relpath,
                              const struct stat *st, gboolean *descend, gpointer user_data, GError **error)
{
    if (event != FERRY_TREE_ENTER || !*descend || st->st_ino != BTRFS_SUBVOLUME_ROOT_INO)
        return TRUE;
    *descend = FALSE;
    return ferry_btrfs_subvolume_delete(dir_fd, name, error);
}

static gboolean destroy(int parent_fd, const char *name, int *errnum)
{
    struct btrfs_ioctl_vol_args args;
    memset(&args, 0, sizeof(args));
    g_strlcpy(args.name, name, sizeof(args.name));
    if (ioctl(parent_fd, BTRFS_IOC_SNAP_DESTROY, &args) == 0)
        return TRUE;
    *errnum = errno;
    return FALSE;
}

gboolean ferry_btrfs_subvolume_delete(int parent_fd, const char *name, GError **error)
{
    struct btrfs_ioctl_vol_args args;
    if (!check_name(name, sizeof(args.name), error))
        return FALSE;
    int errnum = 0;
    if (destroy(parent_fd, name, &errnum) || errnum == ENOENT)
        return TRUE;
    if (errnum != ENOTEMPTY) {
        set_ioctl_error(error, errnum, "delete", name);
        return FALSE;
    }

    /* It holds subvolumes: delete those first, which needs this one writable. */
    int fd = ferry_open_dir_at(parent_fd, name, error);
    if (fd < 0)
        return FALSE;
    gboolean ok =
        ferry_btrfs_set_readonly(fd, FALSE, error) && ferry_tree_walk(fd, delete_nested, NULL, error);
    close(fd);
    if (!ok) {
        g_prefix_error(error, "Failed to delete btrfs subvolume \"%s\": ", name);
        return FALSE;
    }
    if (!destroy(parent_fd, name, &errnum) && errnum != ENOENT) {
        set_ioctl_error(error, errnum, "delete", name);
        return FALSE;
    }
    return TRUE;
}
