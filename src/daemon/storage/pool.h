/* Storage pools and their volumes: the `dir` and `btrfs` drivers behind one API.
 *
 * A pool is a directory tree at its mount path ($FERRY_DIR/storage-pools/<pool>):
 *   containers/<vol>                    instance volumes, named "<project>_<instance>"
 *   containers-snapshots/<vol>/<snap>
 *   images/<fingerprint>                unpacked images, the copy-on-write source of instances
 *   custom/<vol>
 *   custom-snapshots/<vol>/<snap>
 * On btrfs every volume and snapshot is a subvolume (snapshots read-only); on dir they are plain directories.
 *
 * Every operation on a volume builds its result beside the target under a ".ferry-tmp-" name and renames it
 * into place, so a failure or a cancellation never leaves a half-made volume under a real name. Rename and
 * exchange are rename(2)/renameat2(2): atomic and cheap, which is what a migration sink needs to receive into
 * a staging volume and swap it in.
 *
 * Volume contents are attacker-controlled (a container's rootfs): walks (usage, delete) go through dirfds,
 * never follow a symlink and never cross into another mount.
 *
 * Errors are FERRY_ERROR with HTTP-status codes: 400 bad name or config, 404 missing volume/snapshot,
 * 409 name taken or pool not empty, 499 cancelled, 500 anything the system refused.
 * Functions are safe to call from worker threads; callers serialise operations on the same volume. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef enum {
    FERRY_VOLUME_CONTAINER,
    FERRY_VOLUME_IMAGE,
    FERRY_VOLUME_CUSTOM,
} FerryVolumeType;

typedef struct _FerryPool FerryPool;

/* {"dir", "btrfs", NULL} */
const char *const *ferry_pool_driver_names(void);

/* Check a pool config for a driver, as Incus does: known keys only (user.* is free), each value of the right
 * shape. dir: source, source.wipe, volatile.initial_source, rsync.bwlimit, rsync.compression and the volume.*
 * defaults (size, snapshots.expiry, snapshots.schedule, snapshots.pattern, security.shifted,
 * security.unmapped, security.shared, initial.uid, initial.gid, initial.mode). btrfs: those plus size and
 * btrfs.mount_options. Unknown key: 400 'Invalid pool configuration key "x"'; bad value: 400
 * 'Invalid value for pool configuration key "x": ...'. Unknown driver: 400. config may be NULL. */
gboolean ferry_pool_validate_config(const char *driver, GHashTable *config, GError **error);

/* Parse an Incus size ("5GiB", "500MiB", "10GB", "1048576", "" = 0) into bytes. 400 on a bad value. */
gboolean ferry_pool_parse_size(const char *value, guint64 *bytes_out, GError **error);

/* Create a pool's storage and mount it. storage_dir is the mount path ($FERRY_DIR/storage-pools/<name>),
 * disks_dir holds loop files ($FERRY_DIR/disks).
 * dir:   source (optional) is an existing empty directory outside $FERRY_DIR, bind-mounted at the mount path
 *        (a bind mount rather than a symlink, so every path under the pool is a real directory that dirfd
 *        walks with RESOLVE_NO_SYMLINKS can cross, and statvfs reports the source's filesystem); without it,
 *        the mount path itself holds the pool.
 * btrfs: source is an empty directory on btrfs or a path to create as a subvolume on btrfs (bind-mounted),
 *        or a block device (formatted with mkfs.btrfs; an existing filesystem is refused unless
 *        source.wipe=true), or empty: a sparse loop file <disks_dir>/<name>.img of `size` (default 5GiB),
 *        formatted and loop-mounted (loop device with autoclear: unmounting detaches it).
 * config must own its strings (g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free)): it is filled
 * in as Incus does (source; size for loop pools, removed otherwise; volatile.initial_source) so the caller
 * can store it. On failure nothing is left behind. */
FerryPool *ferry_pool_create(const char *name, const char *driver, GHashTable *config,
                             const char *storage_dir, const char *disks_dir, GError **error);

/* A handle on an existing pool from its stored config. No side effects (no mount, no I/O). */
FerryPool *ferry_pool_load(const char *name, const char *driver, GHashTable *config, const char *storage_dir,
                           GError **error);

/* Mount at daemon start (loop file, block device or bind mount); already mounted is success. Also recreates
 * missing base directories. */
gboolean ferry_pool_mount(FerryPool *pool, GError **error);
/* Unmount (a loop device detaches itself); not mounted is success. 409 if busy. */
gboolean ferry_pool_unmount(FerryPool *pool, GError **error);
/* Refuse (409) if any volume or snapshot exists; else remove leftovers of interrupted operations, unmount,
 * detach the loop device, remove the loop file, a subvolume ferry created and the mount path. A block device
 * or an external source directory is left (emptied of ferry's directories). A pool whose backing storage
 * is already gone is deleted without complaint. The handle stays valid only for ferry_pool_free(). */
gboolean ferry_pool_delete(FerryPool *pool, GError **error);

/* Remove ".ferry-tmp-*" leftovers of operations interrupted by a crash. Call at daemon start, after mount,
 * before any operation runs. */
gboolean ferry_pool_cleanup_staging(FerryPool *pool, GError **error);

void ferry_pool_free(FerryPool *pool);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryPool, ferry_pool_free)

const char *ferry_pool_get_name(FerryPool *pool);
const char *ferry_pool_get_driver(FerryPool *pool);
const char *ferry_pool_get_mount_path(FerryPool *pool);
/* The pool's own copy of its config (filled in by create). Do not modify. */
GHashTable *ferry_pool_get_config(FerryPool *pool);

/* Paths, whether or not the volume exists. NULL for a name that is not a single path component. */
char *ferry_pool_volume_path(FerryPool *pool, FerryVolumeType type, const char *volume);
char *ferry_pool_snapshot_path(FerryPool *pool, FerryVolumeType type, const char *volume,
                               const char *snapshot);
gboolean ferry_pool_volume_exists(FerryPool *pool, FerryVolumeType type, const char *volume);
gboolean ferry_pool_snapshot_exists(FerryPool *pool, FerryVolumeType type, const char *volume,
                                    const char *snapshot);

/* An empty volume (btrfs: a subvolume), mode 0711. 409 if it exists. */
gboolean ferry_pool_create_volume(FerryPool *pool, FerryVolumeType type, const char *volume, GError **error);

/* A new volume dst with src's content: a writable snapshot on btrfs (nested subvolumes included), else
 * cp -a --reflink=auto (owners, modes, xattrs, ACLs, hard links, holes, device nodes kept). Snapshots of src
 * are not copied (see ferry_pool_copy_snapshot). Image -> instance and same-server copy. 404/409. */
gboolean ferry_pool_copy_volume(FerryPool *pool, FerryVolumeType src_type, const char *src,
                                FerryVolumeType dst_type, const char *dst, GCancellable *cancellable,
                                GError **error);
/* A copy of src as dst for a writer that never changes an existing file in place (it builds a new file and
 * renames it over the old one): it may share the files themselves with src. dir: a tree of hard links (cp -a
 * --link), so no data is copied; btrfs: a snapshot. Anything else writing into dst would change src too. */
gboolean ferry_pool_stage_volume(FerryPool *pool, FerryVolumeType type, const char *src, const char *dst,
                                 GCancellable *cancellable, GError **error);
/* A new volume dst_volume (same type) with the content of volume's snapshot. */
gboolean ferry_pool_copy_snapshot_to_volume(FerryPool *pool, FerryVolumeType type, const char *volume,
                                            const char *snapshot, const char *dst_volume,
                                            GCancellable *cancellable, GError **error);
/* A new snapshot dst_volume/dst_snapshot with the content of volume/snapshot: copying an instance with its
 * snapshots. dst_volume need not exist yet (copy snapshots first, oldest first, then the volume). */
gboolean ferry_pool_copy_snapshot(FerryPool *pool, FerryVolumeType type, const char *volume,
                                  const char *snapshot, const char *dst_volume, const char *dst_snapshot,
                                  GCancellable *cancellable, GError **error);

/* Delete a volume and all its snapshots (btrfs: nested subvolumes too). 404 if neither exists. */
gboolean ferry_pool_delete_volume(FerryPool *pool, FerryVolumeType type, const char *volume, GError **error);
/* Take a volume (without snapshots) out of use at once and delete its data on a thread of its own: for the
 * old data a refresh replaced, which nobody waits for. A crash midway leaves a staging name the next start
 * sweeps away. */
gboolean ferry_pool_discard_volume(FerryPool *pool, FerryVolumeType type, const char *volume, GError **error);
/* rename(2) of the volume and of its snapshots directory; 404 if old is missing, 409 if new is taken. */
gboolean ferry_pool_rename_volume(FerryPool *pool, FerryVolumeType type, const char *old_name,
                                  const char *new_name, GError **error);
/* Atomically swap the contents of two existing volumes of a type (renameat2 RENAME_EXCHANGE): a staging
 * volume received by a migration or refresh replaces the live one in one step, and the old content is then
 * deleted under the staging name. Snapshot directories are not swapped. */
gboolean ferry_pool_exchange_volumes(FerryPool *pool, FerryVolumeType type, const char *a, const char *b,
                                     GError **error);

/* btrfs: read-only subvolume snapshot; dir: cp -a --reflink=auto. Image volumes have no snapshots (400). */
gboolean ferry_pool_create_snapshot(FerryPool *pool, FerryVolumeType type, const char *volume,
                                    const char *snapshot, GError **error);
gboolean ferry_pool_delete_snapshot(FerryPool *pool, FerryVolumeType type, const char *volume,
                                    const char *snapshot, GError **error);
gboolean ferry_pool_rename_snapshot(FerryPool *pool, FerryVolumeType type, const char *volume,
                                    const char *old_name, const char *new_name, GError **error);
/* The volume's content becomes the snapshot's: the restored copy is built beside the volume and exchanged
 * with it in one renameat2, so a failure leaves the volume as it was. */
/* Move a snapshot from one volume to another (a refresh received it beside the live volume). rename(2):
 * atomic and cheap on every driver. 409 if the target volume already has a snapshot of that name. */
gboolean ferry_pool_move_snapshot(FerryPool *pool, FerryVolumeType type, const char *from_volume,
                                  const char *snapshot, const char *to_volume, GError **error);
gboolean ferry_pool_restore_snapshot(FerryPool *pool, FerryVolumeType type, const char *volume,
                                     const char *snapshot, GError **error);

/* Disk blocks used by the volume (st_blocks, hard-linked files once, nested btrfs subvolumes included, other
 * mounts excluded). Extents shared with snapshots or other volumes count in full, as du counts them. */
gboolean ferry_pool_volume_usage(FerryPool *pool, FerryVolumeType type, const char *volume,
                                 guint64 *bytes_out, GError **error);
/* statvfs of the mounted pool (for a loop pool: its own filesystem). */
/* Disk blocks of one snapshot (a migration sends each snapshot whole: its size bounds the bytes to move). */
gboolean ferry_pool_snapshot_usage(FerryPool *pool, FerryVolumeType type, const char *volume, const char *snapshot,
                                   guint64 *bytes_out, GError **error);
gboolean ferry_pool_usage(FerryPool *pool, guint64 *used, guint64 *total, GError **error);

G_END_DECLS
