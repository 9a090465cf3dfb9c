/* The `btrfs` driver: a subvolume per volume, snapshots as subvolume snapshots (read-only for volume
 * snapshots, writable for copies), so image -> instance and same-server copies cost no data.
 *
 * Where the filesystem comes from (config "source"):
 *   a regular file   loop file made by ferry (<disks>/<pool>.img), mounted with mount(8) -o loop: the loop
 *                    device is set up with autoclear, so unmounting detaches it and a failed mount leaves
 * none a block device   formatted at create, mounted directly a bare word      a filesystem UUID (how Incus
 * records block-device pools), mounted as UUID=<word> a directory      on an existing btrfs filesystem,
 * bind-mounted at the mount path (or, when it is the mount path itself, a subvolume there and no mount at
 * all) */
#include "pool_private.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define DEFAULT_LOOP_SIZE "5GiB"
#define DEFAULT_MOUNT_OPTIONS "user_subvol_rm_allowed"

static const FerryConfigRule btrfs_rules[] = {
    {"size", ferry_config_check_size},
    {"btrfs.mount_options", NULL},
    {NULL, NULL},
};

static const char *source_of(FerryPool *pool)
{
    const char *source = g_hash_table_lookup(pool->config, "source");
    return source ? source : "";
}

static const char *fs_name(long magic)
{
    switch (magic) {
    case EXT4_SUPER_MAGIC:
        return "ext4";
    case XFS_SUPER_MAGIC:
        return "xfs";
    case TMPFS_MAGIC:
        return "tmpfs";
    case OVERLAYFS_SUPER_MAGIC:
        return "overlayfs";
    case 0x2fc12fc1: /* not in linux/magic.h: ZFS is out of tree */
        return "zfs";
    case NFS_SUPER_MAGIC:
        return "nfs";
    default:
        return NULL;
    }
}

/* 400 unless path lies on btrfs, naming what it lies on instead. */
static gboolean check_on_btrfs(const char *path, GError **error)
{
    struct statfs sfs;
    if (statfs(path, &sfs) < 0) {
        ferry_set_error_errno(error, errno, "Failed to inspect \"%s\"", path);
        return FALSE;
    }
    if (sfs.f_type == BTRFS_SUPER_MAGIC)
        return TRUE;
    const char *name = fs_name(sfs.f_type);
    g_autofree char *detected = name ? g_strdup(name) : g_strdup_printf("magic 0x%lx", (long)sfs.f_type);
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                "Source \"%s\" is not on a btrfs filesystem (detected %s)", path, detected);
    return FALSE;
}

static char *mount_options(FerryPool *pool, gboolean loop)
{
    const char *options = g_hash_table_lookup(pool->config, "btrfs.mount_options");
    if (options == NULL || options[0] == '\0')
        options = DEFAULT_MOUNT_OPTIONS;
    return loop ? g_strconcat("loop,", options, NULL) : g_strdup(options);
}

static gboolean mount_filesystem(FerryPool *pool, const char *device, gboolean loop, GError **error)
{
    g_autofree char *options = mount_options(pool, loop);
    /* mount(8) rather than mount(2): it sets up the loop device (with autoclear) and knows which of the
     * user's options are flags and which go to btrfs. */
    const char *argv[] = {"mount", "-t", "btrfs", "-o", options, "--", device, pool->mount_path, NULL};
    if (!ferry_storage_spawn(argv, NULL, error)) {
        g_prefix_error(error, "Failed to mount storage pool \"%s\": ", pool->name);
        return FALSE;
    }
    return TRUE;
}

static gboolean btrfs_mount(FerryPool *pool, GError **error)
{
    const char *source = source_of(pool);
    if (source[0] == '\0' || strcmp(source, pool->mount_path) == 0)
        return TRUE; /* a subvolume at the mount path: nothing to mount */

    gboolean mounted;
    if (!ferry_path_is_mountpoint(pool->mount_path, &mounted, error))
        return FALSE;
    if (mounted)
        return TRUE;
    if (g_mkdir_with_parents(pool->mount_path, 0711) < 0) {
        ferry_set_error_errno(error, errno, "Failed to create \"%s\"", pool->mount_path);
        return FALSE;
    }

    if (source[0] != '/') {
        g_autofree char *tag = g_strconcat("UUID=", source, NULL);
        return mount_filesystem(pool, tag, FALSE, error);
    }
    struct stat st;
    if (stat(source, &st) < 0) {
        g_set_error(error, FERRY_ERROR, errno == ENOENT ? FERRY_ERROR_NOT_FOUND : FERRY_ERROR_INTERNAL,
                    "Source \"%s\" of storage pool \"%s\" is unavailable: %s", source, pool->name,
                    g_strerror(errno));
        return FALSE;
    }
    if (S_ISREG(st.st_mode))
        return mount_filesystem(pool, source, TRUE, error);
    if (S_ISBLK(st.st_mode))
        return mount_filesystem(pool, source, FALSE, error);
    if (S_ISDIR(st.st_mode))
        return check_on_btrfs(source, error) && ferry_bind_mount(source, pool->mount_path, error);
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Source \"%s\" is not a file, device or directory",
                source);
    return FALSE;
}

static gboolean is_regular_file(const char *path)
{
    struct stat st;
    return path[0] == '/' && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static gboolean btrfs_unmount(FerryPool *pool, GError **error)
{
    if (!ferry_unmount(pool->mount_path, error))
        return FALSE;
    const char *source = source_of(pool);
    if (is_regular_file(source))
        return ferry_loop_detach_file(source, error);
    return TRUE;
}

static gboolean mkfs(FerryPool *pool, const char *target, gboolean force, GError **error)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_ptr_array_add(argv, "mkfs.btrfs");
    g_ptr_array_add(argv, "-q");
    g_ptr_array_add(argv, "-L");
    g_ptr_array_add(argv, pool->name);
    if (force)
        g_ptr_array_add(argv, "-f");
    g_ptr_array_add(argv, "--");
    g_ptr_array_add(argv, (gpointer)target);
    g_ptr_array_add(argv, NULL);
    if (!ferry_storage_spawn((const char *const *)argv->pdata, NULL, error)) {
        g_prefix_error(error, "Failed to format \"%s\": ", target);
        return FALSE;
    }
    return TRUE;
}

static gboolean create_loop_pool(FerryPool *pool, const char *disks_dir, GError **error)
{
    const char *size_text = g_hash_table_lookup(pool->config, "size");
    if (size_text == NULL || size_text[0] == '\0') {
        g_hash_table_replace(pool->config, g_strdup("size"), g_strdup(DEFAULT_LOOP_SIZE));
        size_text = DEFAULT_LOOP_SIZE;
    }
    guint64 size;
    if (!ferry_pool_parse_size(size_text, &size, error))
        return FALSE;

    if (g_mkdir_with_parents(disks_dir, 0700) < 0) {
        ferry_set_error_errno(error, errno, "Failed to create \"%s\"", disks_dir);
        return FALSE;
    }
    g_autofree char *file = g_strdup_printf("%s/%s.img", disks_dir, pool->name);
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Loop file \"%s\" already exists", file);
        else
            ferry_set_error_errno(error, errno, "Failed to create loop file \"%s\"", file);
        return FALSE;
    }
    /* Sparse: the pool takes disk space as it fills. */
    int rc = ftruncate(fd, (off_t)size);
    int saved = errno;
    close(fd);
    if (rc < 0) {
        ferry_set_error_errno(error, saved, "Failed to size loop file \"%s\"", file);
        unlink(file);
        return FALSE;
    }
    g_hash_table_replace(pool->config, g_strdup("source"), g_strdup(file));
    if (!mkfs(pool, file, FALSE, error) || !btrfs_mount(pool, error)) {
        unlink(file);
        return FALSE;
    }
    return TRUE;
}

static gboolean create_device_pool(FerryPool *pool, const char *device, GError **error)
{
    /* An existing filesystem or partition table makes mkfs.btrfs refuse; source.wipe=true says to go on. */
    gboolean wipe = ferry_config_is_true(g_hash_table_lookup(pool->config, "source.wipe"));
    g_hash_table_remove(pool->config, "source.wipe");
    return mkfs(pool, device, wipe, error) && btrfs_mount(pool, error);
}

/* The mount path itself as a subvolume, for $FERRY_DIR on btrfs. */
static gboolean create_subvolume_pool(FerryPool *pool, GError **error)
{
    g_autofree char *parent = g_path_get_dirname(pool->mount_path);
    g_autofree char *base = g_path_get_basename(pool->mount_path);
    if (!check_on_btrfs(parent, error))
        return FALSE;
    int parent_fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (parent_fd < 0) {
        ferry_set_error_errno(error, errno, "Failed to open \"%s\"", parent);
        return FALSE;
    }
    /* The generic code made the (empty) mount path; the subvolume takes its place. */
    gboolean ok = TRUE;
    if (unlinkat(parent_fd, base, AT_REMOVEDIR) < 0) {
        ferry_set_error_errno(error, errno, "Failed to replace \"%s\" by a subvolume", pool->mount_path);
        ok = FALSE;
    }
    if (ok && !ferry_btrfs_subvolume_create(parent_fd, base, error)) {
        mkdirat(parent_fd, base, 0711);
        ok = FALSE;
    }
    if (ok && fchmodat(parent_fd, base, 0711, 0) < 0) {
        ferry_set_error_errno(error, errno, "Failed to set the mode of \"%s\"", pool->mount_path);
        ferry_btrfs_subvolume_delete(parent_fd, base, NULL);
        mkdirat(parent_fd, base, 0711);
        ok = FALSE;
    }
    close(parent_fd);
    return ok;
}

/* An external directory on btrfs: used if it exists (and is empty), else made a subvolume. */
static gboolean create_directory_pool(FerryPool *pool, const char *source, GError **error)
{
    if (!ferry_storage_check_source_location(pool, source, error))
        return FALSE;
    struct stat st;
    gboolean created = FALSE;
    if (stat(source, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Source \"%s\" is not a directory, block device or loop file", source);
            return FALSE;
        }
        if (!check_on_btrfs(source, error) || !ferry_storage_check_empty_dir(source, error))
            return FALSE;
    } else if (errno == ENOENT) {
        g_autofree char *parent = g_path_get_dirname(source);
        g_autofree char *base = g_path_get_basename(source);
        if (stat(parent, &st) < 0 || !S_ISDIR(st.st_mode)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Parent directory of source \"%s\" is missing", source);
            return FALSE;
        }
        if (!check_on_btrfs(parent, error))
            return FALSE;
        int parent_fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (parent_fd < 0) {
            ferry_set_error_errno(error, errno, "Failed to open \"%s\"", parent);
            return FALSE;
        }
        gboolean ok = ferry_btrfs_subvolume_create(parent_fd, base, error);
        close(parent_fd);
        if (!ok)
            return FALSE;
        created = TRUE;
    } else {
        ferry_set_error_errno(error, errno, "Failed to inspect source \"%s\"", source);
        return FALSE;
    }

    if (btrfs_mount(pool, error))
        return TRUE;
    if (created) {
        g_autofree char *parent = g_path_get_dirname(source);
        g_autofree char *base = g_path_get_basename(source);
        int parent_fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (parent_fd >= 0) {
            ferry_btrfs_subvolume_delete(parent_fd, base, NULL);
            close(parent_fd);
        }
    }
    return FALSE;
}

static gboolean btrfs_create(FerryPool *pool, const char *disks_dir, GError **error)
{
    g_autofree char *source = g_strdup(source_of(pool));
    g_autofree char *loop_file = g_strdup_printf("%s/%s.img", disks_dir, pool->name);
    if (source[0] == '\0' || strcmp(source, loop_file) == 0)
        return create_loop_pool(pool, disks_dir, error);

    /* size only means something for a loop file. */
    g_hash_table_remove(pool->config, "size");
    if (source[0] != '/') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Source \"%s\" is not an absolute path", source);
        return FALSE;
    }
    if (strcmp(source, pool->mount_path) == 0)
        return create_subvolume_pool(pool, error);
    struct stat st;
    if (stat(source, &st) == 0 && S_ISBLK(st.st_mode))
        return create_device_pool(pool, source, error);
    return create_directory_pool(pool, source, error);
}

static gboolean btrfs_destroy(FerryPool *pool, GError **error)
{
    const char *source = source_of(pool);
    if (is_regular_file(source)) {
        if (unlink(source) < 0 && errno != ENOENT) {
            ferry_set_error_errno(error, errno, "Failed to remove loop file \"%s\"", source);
            return FALSE;
        }
        return TRUE;
    }
    if (strcmp(source, pool->mount_path) == 0) {
        g_autofree char *parent = g_path_get_dirname(pool->mount_path);
        g_autofree char *base = g_path_get_basename(pool->mount_path);
        int parent_fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (parent_fd < 0) {
            ferry_set_error_errno(error, errno, "Failed to open \"%s\"", parent);
            return FALSE;
        }
        gboolean ok = ferry_btrfs_subvolume_delete(parent_fd, base, error);
        close(parent_fd);
        return ok;
    }
    return TRUE; /* a block device or an external directory stays the user's */
}

static gboolean btrfs_source_missing(FerryPool *pool)
{
    const char *source = source_of(pool);
    if (source[0] == '\0')
        return FALSE;
    g_autofree char *path =
        source[0] == '/' ? g_strdup(source) : g_strconcat("/dev/disk/by-uuid/", source, NULL);
    struct stat st;
    return stat(path, &st) < 0 && errno == ENOENT;
}

static gboolean btrfs_create_volume(int parent_fd, const char *name, GError **error)
{
    g_autoptr(GError) local_error = NULL;
    if (!ferry_btrfs_subvolume_create(parent_fd, name, &local_error)) {
        if (g_error_matches(local_error, FERRY_ERROR, FERRY_ERROR_CONFLICT))
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Storage volume \"%s\" already exists",
                        name);
        else
            g_propagate_error(error, g_steal_pointer(&local_error));
        return FALSE;
    }
    if (fchmodat(parent_fd, name, 0711, 0) < 0) {
        ferry_set_error_errno(error, errno, "Failed to set the mode of storage volume \"%s\"", name);
        ferry_btrfs_subvolume_delete(parent_fd, name, NULL);
        return FALSE;
    }
    return TRUE;
}

static gboolean btrfs_copy_tree(const char *src_path, int dst_parent_fd, const char *dst_name,
                                const char *dst_path, gboolean readonly, GCancellable *cancellable,
                                GError **error)
{
    int src = open(src_path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (src < 0) {
        ferry_set_error_errno(error, errno, "Failed to open \"%s\"", src_path);
        return FALSE;
    }
    if (ferry_btrfs_is_subvolume_fd(src)) {
        gboolean ok = ferry_btrfs_snapshot(src, dst_parent_fd, dst_name, readonly, error);
        close(src);
        return ok;
    }
    close(src);

    /* Not a subvolume (e.g. received by rsync into a plain directory): copy into a fresh subvolume. */
    if (!ferry_btrfs_subvolume_create(dst_parent_fd, dst_name, error) ||
        !ferry_storage_copy_tree_cp(src_path, dst_path, cancellable, error))
        return FALSE;
    if (readonly) {
        int dst = ferry_open_dir_at(dst_parent_fd, dst_name, error);
        if (dst < 0)
            return FALSE;
        gboolean ok = ferry_btrfs_set_readonly(dst, TRUE, error);
        close(dst);
        return ok;
    }
    return TRUE;
}

const FerryPoolDriver ferry_pool_driver_btrfs = {
    .name = "btrfs",
    .rules = btrfs_rules,
    .create = btrfs_create,
    .mount = btrfs_mount,
    .unmount = btrfs_unmount,
    .destroy = btrfs_destroy,
    .source_missing = btrfs_source_missing,
    .create_volume = btrfs_create_volume,
    .copy_tree = btrfs_copy_tree,
};
