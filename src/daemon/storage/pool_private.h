/* Internals of the storage module: the pool struct, the driver table and the helpers the drivers share.
 * Not for use outside src/daemon/storage (and its unit tests). */
#pragma once

#include "pool.h"
#include "tree.h"

#include <sys/stat.h>

G_BEGIN_DECLS

/* Prefix of every entry an operation builds before renaming it into place; names starting with it are
 * refused as volume names, ignored by "is the pool empty" and swept by ferry_pool_cleanup_staging. */
#define FERRY_STAGING_PREFIX ".ferry-tmp-"

typedef struct _FerryPoolDriver FerryPoolDriver;

struct _FerryPool {
    char *name;
    const FerryPoolDriver *driver;
    GHashTable *config; /* owned copy */
    char *mount_path;
};

struct _FerryPoolDriver {
    const char *name;
    /* Driver-only config keys; NULL-terminated. */
    const struct _FerryConfigRule *rules;
    /* Make the backing storage (filling in pool->config) and mount it at pool->mount_path, which exists and
     * is empty. On failure undo everything it did. */
    gboolean (*create)(FerryPool *pool, const char *disks_dir, GError **error);
    gboolean (*mount)(FerryPool *pool, GError **error);
    gboolean (*unmount)(FerryPool *pool, GError **error);
    /* After unmount: remove what create made besides the mount path (loop file, subvolume). */
    gboolean (*destroy)(FerryPool *pool, GError **error);
    /* TRUE if the backing storage is gone (loop file, device or source directory missing), so that delete
     * can forget the pool. */
    gboolean (*source_missing)(FerryPool *pool);
    gboolean (*create_volume)(int parent_fd, const char *name, GError **error);
    /* Make dst_parent_fd/dst_name (not existing; dst_path is its path) a copy of src_path.
     * readonly: the copy is a snapshot and should be made read-only where the driver can. */
    gboolean (*copy_tree)(const char *src_path, int dst_parent_fd, const char *dst_name, const char *dst_path,
                          gboolean readonly, GCancellable *cancellable, GError **error);
    /* Like copy_tree, but the copy may share files with src_path (see ferry_pool_stage_volume); NULL: the
     * driver's copies already share (copy_tree is used). */
    gboolean (*share_tree)(const char *src_path, int dst_parent_fd, const char *dst_name, const char *dst_path,
                           GCancellable *cancellable, GError **error);
};

typedef gboolean (*FerryConfigCheck)(const char *value, GError **error);

typedef struct _FerryConfigRule {
    const char *key;
    FerryConfigCheck check; /* NULL: any value */
} FerryConfigRule;

extern const FerryPoolDriver ferry_pool_driver_dir;
extern const FerryPoolDriver ferry_pool_driver_btrfs;

const FerryPoolDriver *ferry_pool_find_driver(const char *name, GError **error);

gboolean ferry_config_check_size(const char *value, GError **error);
gboolean ferry_config_check_bool(const char *value, GError **error);
/* TRUE for Incus's true spellings (true, 1, yes, on; any case). */
gboolean ferry_config_is_true(const char *value);

/* --- pool.c helpers for the drivers --- */
/* An external source directory must not lie inside $FERRY_DIR (the mount path's grandparent): another
 * pool's data or ferry's own files would become volumes. */
gboolean ferry_storage_check_source_location(FerryPool *pool, const char *source, GError **error);
/* Existing directory with nothing in it (400 otherwise). */
gboolean ferry_storage_check_empty_dir(const char *path, GError **error);
/* cp -a --reflink=auto -T src dst. */
gboolean ferry_storage_copy_tree_cp(const char *src_path, const char *dst_path, GCancellable *cancellable,
                                    GError **error);

/* --- spawn.c: child processes with explicit argv; stderr ends up in the error. --- */
gboolean ferry_storage_spawn(const char *const *argv, GCancellable *cancellable, GError **error);

/* --- mount_util.c --- */
/* TRUE if path is the root of a mount (bind mounts included). Missing path: FALSE. */
gboolean ferry_path_is_mountpoint(const char *path, gboolean *result, GError **error);
gboolean ferry_bind_mount(const char *source, const char *target, GError **error);
/* Unmount if mounted; retries a busy mount for a moment, then 409. */
gboolean ferry_unmount(const char *path, GError **error);
/* Detach every loop device backed by file (normally none: autoclear did it on unmount). */
gboolean ferry_loop_detach_file(const char *file, GError **error);
/* Names (/dev/loopN) of loop devices backed by file. */
GPtrArray *ferry_loop_devices_for_file(const char *file);

/* --- tree.c (tree.h): dirfd walks that never follow symlinks nor cross mounts. --- */

/* --- btrfs_subvolume.c: btrfs ioctls on dirfds. --- */
gboolean ferry_btrfs_is_filesystem(int fd);
/* The fd is the root of a subvolume (inode 256 on btrfs). */
gboolean ferry_btrfs_is_subvolume_fd(int fd);
gboolean ferry_btrfs_is_subvolume_stat(int fs_fd, const struct stat *st);
gboolean ferry_btrfs_subvolume_create(int parent_fd, const char *name, GError **error);
/* Snapshot src_fd's subvolume to parent_fd/name with its nested subvolumes; read-only if asked. */
gboolean ferry_btrfs_snapshot(int src_fd, int parent_fd, const char *name, gboolean readonly, GError **error);
/* Delete parent_fd/name, a subvolume, with every subvolume nested in it (read-only ones too). */
gboolean ferry_btrfs_subvolume_delete(int parent_fd, const char *name, GError **error);
gboolean ferry_btrfs_set_readonly(int fd, gboolean readonly, GError **error);

G_END_DECLS
