/* The `dir` driver: volumes are plain directories, copies are cp -a --reflink=auto (copy-on-write where the
 * filesystem can, e.g. xfs or btrfs underneath). */
#include "pool_private.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The source, when it is not the mount path itself, is bind-mounted there. */
static gboolean uses_bind_mount(FerryPool *pool)
{
    const char *source = g_hash_table_lookup(pool->config, "source");
    return source != NULL && source[0] != '\0' && g_strcmp0(source, pool->mount_path) != 0;
}

static gboolean dir_mount(FerryPool *pool, GError **error)
{
    if (!uses_bind_mount(pool))
        return TRUE;
    gboolean mounted;
    if (!ferry_path_is_mountpoint(pool->mount_path, &mounted, error))
        return FALSE;
    if (mounted)
        return TRUE;
    const char *source = g_hash_table_lookup(pool->config, "source");
    struct stat st;
    if (stat(source, &st) < 0 || !S_ISDIR(st.st_mode)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Source directory \"%s\" is missing", source);
        return FALSE;
    }
    if (g_mkdir_with_parents(pool->mount_path, 0711) < 0) {
        ferry_set_error_errno(error, errno, "Failed to create \"%s\"", pool->mount_path);
        return FALSE;
    }
    return ferry_bind_mount(source, pool->mount_path, error);
}

static gboolean dir_unmount(FerryPool *pool, GError **error)
{
    if (!uses_bind_mount(pool))
        return TRUE;
    return ferry_unmount(pool->mount_path, error);
}

static gboolean dir_create(FerryPool *pool, const char *disks_dir, GError **error)
{
    const char *source = g_hash_table_lookup(pool->config, "source");
    if (source == NULL || source[0] == '\0') {
        g_hash_table_replace(pool->config, g_strdup("source"), g_strdup(pool->mount_path));
        return TRUE;
    }
    if (!ferry_storage_check_source_location(pool, source, error) ||
        !ferry_storage_check_empty_dir(source, error))
        return FALSE;
    return dir_mount(pool, error);
}

static gboolean dir_destroy(FerryPool *pool, GError **error)
{
    return TRUE;
}

static gboolean dir_source_missing(FerryPool *pool)
{
    const char *source = g_hash_table_lookup(pool->config, "source");
    struct stat st;
    return source != NULL && source[0] != '\0' && stat(source, &st) < 0 && errno == ENOENT;
}

static gboolean dir_create_volume(int parent_fd, const char *name, GError **error)
{
    if (mkdirat(parent_fd, name, 0711) < 0) {
        if (errno == EEXIST)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Storage volume \"%s\" already exists",
                        name);
        else
            ferry_set_error_errno(error, errno, "Failed to create storage volume \"%s\"", name);
        return FALSE;
    }
    /* mkdirat applied the umask. */
    if (fchmodat(parent_fd, name, 0711, 0) < 0) {
        ferry_set_error_errno(error, errno, "Failed to set the mode of storage volume \"%s\"", name);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_storage_copy_tree_cp(const char *src_path, const char *dst_path, GCancellable *cancellable,
                                    GError **error)
{
    /* -a: no symlink followed, owners/modes/times/xattrs (ACLs, capabilities)/hard links/special files kept;
     * holes are kept by cp's default --sparse=auto. -T: dst_path is the copy, even when it exists. */
    const char *argv[] = {"cp", "-a", "--reflink=auto", "-T", "--", src_path, dst_path, NULL};
    if (!ferry_storage_spawn(argv, cancellable, error)) {
        g_prefix_error(error, "Failed to copy \"%s\": ", src_path);
        return FALSE;
    }
    return TRUE;
}

static gboolean dir_copy_tree(const char *src_path, int dst_parent_fd, const char *dst_name,
                              const char *dst_path, gboolean readonly, GCancellable *cancellable,
                              GError **error)
{
    return ferry_storage_copy_tree_cp(src_path, dst_path, cancellable, error);
}

/* Directories are made anew (with their owners, modes, times and xattrs); everything else is hard-linked. */
static gboolean dir_share_tree(const char *src_path, int dst_parent_fd, const char *dst_name, const char *dst_path,
                               GCancellable *cancellable, GError **error)
{
    const char *argv[] = {"cp", "-a", "--link", "-T", "--", src_path, dst_path, NULL};
    if (!ferry_storage_spawn(argv, cancellable, error)) {
        g_prefix_error(error, "Failed to link a copy of \"%s\": ", src_path);
        return FALSE;
    }
    return TRUE;
}

const FerryPoolDriver ferry_pool_driver_dir = {
    .name = "dir",
    .rules = NULL,
    .create = dir_create,
    .mount = dir_mount,
    .unmount = dir_unmount,
    .destroy = dir_destroy,
    .source_missing = dir_source_missing,
    .create_volume = dir_create_volume,
    .copy_tree = dir_copy_tree,
    .share_tree = dir_share_tree,
};
