/* Storage pools: lifecycle (create, load, mount, delete) and the volume operations common to all drivers.
 * The drivers (dir.c, btrfs.c) only make, copy and mount; naming, staging and renaming into place live here
 * so every driver gets the same atomicity. */
#include "pool_private.h"

#include "error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

typedef struct {
    const char *name;
    mode_t mode;
} BaseDir;

/* Volumes readable through their own modes; snapshots and images only by root, as Incus lays them out. */
static const BaseDir base_dirs[] = {
    {"containers", 0711}, {"containers-snapshots", 0700}, {"images", 0700},
    {"custom", 0711},     {"custom-snapshots", 0700},
};

static const char *volumes_dir(FerryVolumeType type)
{
    switch (type) {
    case FERRY_VOLUME_CONTAINER:
        return "containers";
    case FERRY_VOLUME_IMAGE:
        return "images";
    case FERRY_VOLUME_CUSTOM:
        return "custom";
    }
    return NULL;
}

static const char *snapshots_dir(FerryVolumeType type)
{
    switch (type) {
    case FERRY_VOLUME_CONTAINER:
        return "containers-snapshots";
    case FERRY_VOLUME_CUSTOM:
        return "custom-snapshots";
    case FERRY_VOLUME_IMAGE:
        return NULL;
    }
    return NULL;
}

/* Names become path components: exactly one, and never one of our staging names. */
static gboolean is_component(const char *name)
{
    return name != NULL && name[0] != '\0' && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 &&
           strchr(name, '/') == NULL && strlen(name) <= 255 && !g_str_has_prefix(name, FERRY_STAGING_PREFIX);
}

static gboolean check_name(const char *what, const char *name, GError **error)
{
    if (is_component(name))
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid %s name \"%s\"", what, name ? name : "");
    return FALSE;
}

static gboolean check_volume(FerryVolumeType type, const char *volume, GError **error)
{
    if (volumes_dir(type) == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid storage volume type %d", (int)type);
        return FALSE;
    }
    return check_name("storage volume", volume, error);
}

static gboolean check_snapshot(FerryVolumeType type, const char *volume, const char *snapshot, GError **error)
{
    if (!check_volume(type, volume, error))
        return FALSE;
    if (snapshots_dir(type) == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Image volumes have no snapshots");
        return FALSE;
    }
    return check_name("snapshot", snapshot, error);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static char *staging_name(void)
{
    g_autofree char *uuid = g_uuid_string_random();
    return g_strconcat(FERRY_STAGING_PREFIX, uuid, NULL);
}

static gboolean entry_exists(int dir_fd, const char *name)
{
    struct stat st;
    return dir_fd >= 0 && fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* The pool's base directories are ours (never inside a volume), so a plain path open is fine; O_NOFOLLOW
 * still refuses a symlink planted in their place. */
static int open_pool_dir(FerryPool *pool, const char *dir, GError **error)
{
    g_autofree char *path = g_build_filename(pool->mount_path, dir, NULL);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                        "Storage pool \"%s\" is not mounted (\"%s\" is missing)", pool->name, path);
        else
            ferry_set_error_errno(error, errno, "Failed to open \"%s\"", path);
    }
    return fd;
}

/* The snapshots directory of a volume, created on demand; -1 with no error when it is missing and
 * create is FALSE. */
static int open_volume_snapshots(FerryPool *pool, FerryVolumeType type, const char *volume, gboolean create,
                                 GError **error)
{
    int top = open_pool_dir(pool, snapshots_dir(type), error);
    if (top < 0)
        return -1;
    if (create && mkdirat(top, volume, 0700) < 0 && errno != EEXIST) {
        ferry_set_error_errno(error, errno, "Failed to create the snapshots directory of \"%s\"", volume);
        close(top);
        return -1;
    }
    int fd = openat(top, volume, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int saved = errno;
    close(top);
    if (fd < 0 && (create || saved != ENOENT))
        ferry_set_error_errno(error, saved, "Failed to open the snapshots directory of \"%s\"", volume);
    return fd;
}

static GHashTable *copy_config(GHashTable *config)
{
    GHashTable *copy = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    if (config == NULL)
        return copy;
    GHashTableIter iter;
    gpointer key, value;
    g_hash_table_iter_init(&iter, config);
    while (g_hash_table_iter_next(&iter, &key, &value))
        g_hash_table_replace(copy, g_strdup(key), g_strdup(value ? value : ""));
    return copy;
}

static FerryPool *pool_new(const char *name, const char *driver_name, GHashTable *config,
                           const char *storage_dir, GError **error)
{
    if (!check_name("storage pool", name, error))
        return NULL;
    const FerryPoolDriver *driver = ferry_pool_find_driver(driver_name, error);
    if (driver == NULL)
        return NULL;
    if (storage_dir == NULL || !g_path_is_absolute(storage_dir)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Storage pool directory \"%s\" is not absolute",
                    storage_dir ? storage_dir : "");
        return NULL;
    }
    FerryPool *pool = g_new0(FerryPool, 1);
    pool->name = g_strdup(name);
    pool->driver = driver;
    pool->config = copy_config(config);
    pool->mount_path = g_canonicalize_filename(storage_dir, "/");
    return pool;
}

void ferry_pool_free(FerryPool *pool)
{
    if (pool == NULL)
        return;
    g_free(pool->name);
    g_hash_table_unref(pool->config);
    g_free(pool->mount_path);
    g_free(pool);
}

const char *ferry_pool_get_name(FerryPool *pool)
{
    return pool->name;
}

const char *ferry_pool_get_driver(FerryPool *pool)
{
    return pool->driver->name;
}

const char *ferry_pool_get_mount_path(FerryPool *pool)
{
    return pool->mount_path;
}

GHashTable *ferry_pool_get_config(FerryPool *pool)
{
    return pool->config;
}

/* --- helpers for the drivers --- */

gboolean ferry_storage_check_source_location(FerryPool *pool, const char *source, GError **error)
{
    g_autofree char *clean = g_canonicalize_filename(source, "/");
    if (strcmp(clean, pool->mount_path) == 0)
        return TRUE;
    g_autofree char *pools_dir = g_path_get_dirname(pool->mount_path);
    g_autofree char *ferry_dir = g_path_get_dirname(pools_dir);
    if (strcmp(clean, ferry_dir) == 0 ||
        (g_str_has_prefix(clean, ferry_dir) && clean[strlen(ferry_dir)] == '/') ||
        strcmp(ferry_dir, "/") == 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Source path \"%s\" is within the ferry directory", source);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_storage_check_empty_dir(const char *path, GError **error)
{
    g_autoptr(GError) local_error = NULL;
    g_autoptr(GDir) dir = g_dir_open(path, 0, &local_error);
    if (dir == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Source path \"%s\" is not a usable directory: %s", path, local_error->message);
        return FALSE;
    }
    if (g_dir_read_name(dir) != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Source path \"%s\" isn't empty", path);
        return FALSE;
    }
    return TRUE;
}

/* --- pool lifecycle --- */

static gboolean needs_mount(FerryPool *pool)
{
    const char *source = g_hash_table_lookup(pool->config, "source");
    return source != NULL && source[0] != '\0' && strcmp(source, pool->mount_path) != 0;
}

static gboolean ensure_base_dirs(FerryPool *pool, GError **error)
{
    int fd = open(pool->mount_path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "Failed to open \"%s\"", pool->mount_path);
        return FALSE;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(base_dirs); i++) {
        if (mkdirat(fd, base_dirs[i].name, base_dirs[i].mode) < 0) {
            if (errno == EEXIST)
                continue;
            ferry_set_error_errno(error, errno, "Failed to create \"%s/%s\"", pool->mount_path,
                                  base_dirs[i].name);
            close(fd);
            return FALSE;
        }
        if (fchmodat(fd, base_dirs[i].name, base_dirs[i].mode, 0) < 0) {
            ferry_set_error_errno(error, errno, "Failed to set the mode of \"%s/%s\"", pool->mount_path,
                                  base_dirs[i].name);
            close(fd);
            return FALSE;
        }
    }
    close(fd);
    return TRUE;
}

/* Remove base directories (they hold nothing but staging leftovers by now), unmount, let the driver remove
 * its backing storage, remove the mount path. */
static gboolean teardown(FerryPool *pool, GError **error)
{
    int fd = open(pool->mount_path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        for (size_t i = 0; i < G_N_ELEMENTS(base_dirs); i++) {
            if (!ferry_tree_delete(fd, base_dirs[i].name, error)) {
                close(fd);
                return FALSE;
            }
        }
        close(fd);
    }
    if (!pool->driver->unmount(pool, error) || !pool->driver->destroy(pool, error))
        return FALSE;
    if (rmdir(pool->mount_path) < 0 && errno != ENOENT) {
        ferry_set_error_errno(error, errno, "Failed to remove \"%s\"", pool->mount_path);
        return FALSE;
    }
    return TRUE;
}

static const char *const filled_keys[] = {"source", "size", "source.wipe", "volatile.initial_source"};

FerryPool *ferry_pool_create(const char *name, const char *driver, GHashTable *config,
                             const char *storage_dir, const char *disks_dir, GError **error)
{
    if (!ferry_pool_validate_config(driver, config, error))
        return NULL;
    g_autoptr(FerryPool) pool = pool_new(name, driver, config, storage_dir, error);
    if (pool == NULL)
        return NULL;
    if (disks_dir == NULL || !g_path_is_absolute(disks_dir)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Disks directory \"%s\" is not absolute",
                    disks_dir ? disks_dir : "");
        return NULL;
    }

    struct stat st;
    if (lstat(pool->mount_path, &st) == 0) {
        gboolean mounted = FALSE;
        g_autoptr(GDir) dir = S_ISDIR(st.st_mode) ? g_dir_open(pool->mount_path, 0, NULL) : NULL;
        if (dir == NULL || g_dir_read_name(dir) != NULL ||
            !ferry_path_is_mountpoint(pool->mount_path, &mounted, NULL) || mounted) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT,
                        "Storage pool directory \"%s\" already exists and is in use", pool->mount_path);
            return NULL;
        }
    } else if (g_mkdir_with_parents(pool->mount_path, 0711) < 0) {
        ferry_set_error_errno(error, errno, "Failed to create \"%s\"", pool->mount_path);
        return NULL;
    }

    const char *source = g_hash_table_lookup(pool->config, "source");
    if (source != NULL && source[0] != '\0')
        g_hash_table_replace(pool->config, g_strdup("volatile.initial_source"), g_strdup(source));

    if (!pool->driver->create(pool, disks_dir, error)) {
        rmdir(pool->mount_path);
        g_prefix_error(error, "Failed to create storage pool \"%s\": ", pool->name);
        return NULL;
    }
    if (!ensure_base_dirs(pool, error)) {
        teardown(pool, NULL);
        g_prefix_error(error, "Failed to create storage pool \"%s\": ", pool->name);
        return NULL;
    }

    for (size_t i = 0; config != NULL && i < G_N_ELEMENTS(filled_keys); i++) {
        const char *value = g_hash_table_lookup(pool->config, filled_keys[i]);
        if (value != NULL)
            g_hash_table_replace(config, g_strdup(filled_keys[i]), g_strdup(value));
        else
            g_hash_table_remove(config, filled_keys[i]);
    }
    return g_steal_pointer(&pool);
}

FerryPool *ferry_pool_load(const char *name, const char *driver, GHashTable *config, const char *storage_dir,
                           GError **error)
{
    return pool_new(name, driver, config, storage_dir, error);
}

gboolean ferry_pool_mount(FerryPool *pool, GError **error)
{
    if (!pool->driver->mount(pool, error) || !ensure_base_dirs(pool, error)) {
        g_prefix_error(error, "Failed to mount storage pool \"%s\": ", pool->name);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_pool_unmount(FerryPool *pool, GError **error)
{
    if (!pool->driver->unmount(pool, error)) {
        g_prefix_error(error, "Failed to unmount storage pool \"%s\": ", pool->name);
        return FALSE;
    }
    return TRUE;
}

/* The first entry of a base directory that is not a staging leftover, or NULL. */
static char *first_volume(FerryPool *pool, const char *dir, GError **error)
{
    g_autofree char *path = g_build_filename(pool->mount_path, dir, NULL);
    g_autoptr(GError) local_error = NULL;
    g_autoptr(GDir) handle = g_dir_open(path, 0, &local_error);
    if (handle == NULL) {
        if (g_error_matches(local_error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
            return NULL;
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "%s", local_error->message);
        return NULL;
    }
    const char *entry;
    while ((entry = g_dir_read_name(handle)) != NULL)
        if (!g_str_has_prefix(entry, FERRY_STAGING_PREFIX))
            return g_strdup(entry);
    return NULL;
}

gboolean ferry_pool_delete(FerryPool *pool, GError **error)
{
    if (pool->driver->source_missing(pool)) {
        /* The backing storage is gone (loop file or disk removed by hand): nothing left to protect. */
        ferry_unmount(pool->mount_path, NULL);
        if (rmdir(pool->mount_path) < 0 && errno != ENOENT) {
            ferry_set_error_errno(error, errno, "Failed to remove \"%s\"", pool->mount_path);
            return FALSE;
        }
        return TRUE;
    }
    if (!ferry_pool_mount(pool, error))
        return FALSE;
    for (size_t i = 0; i < G_N_ELEMENTS(base_dirs); i++) {
        GError *local_error = NULL;
        g_autofree char *volume = first_volume(pool, base_dirs[i].name, &local_error);
        if (local_error != NULL) {
            g_propagate_prefixed_error(error, local_error,
                                       "Failed to delete storage pool \"%s\": ", pool->name);
            return FALSE;
        }
        if (volume != NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT,
                        "Storage pool \"%s\" is not empty: \"%s/%s\" exists", pool->name, base_dirs[i].name,
                        volume);
            return FALSE;
        }
    }
    if (!teardown(pool, error)) {
        g_prefix_error(error, "Failed to delete storage pool \"%s\": ", pool->name);
        return FALSE;
    }
    return TRUE;
}

static gboolean sweep_dir(int dir_fd, gboolean into_volumes, GError **error)
{
    int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "Failed to open a pool directory");
        return FALSE;
    }
    DIR *dir = fdopendir(fd);
    if (dir == NULL) {
        ferry_set_error_errno(error, errno, "Failed to read a pool directory");
        close(fd);
        return FALSE;
    }
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL)
        if (entry->d_name[0] != '.' || g_str_has_prefix(entry->d_name, FERRY_STAGING_PREFIX))
            g_ptr_array_add(names, g_strdup(entry->d_name));
    closedir(dir);

    for (guint i = 0; i < names->len; i++) {
        const char *name = names->pdata[i];
        if (g_str_has_prefix(name, FERRY_STAGING_PREFIX)) {
            if (!ferry_tree_delete(dir_fd, name, error))
                return FALSE;
        } else if (into_volumes) {
            int sub = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0)
                continue;
            gboolean ok = sweep_dir(sub, FALSE, error);
            close(sub);
            if (!ok)
                return FALSE;
        }
    }
    return TRUE;
}

gboolean ferry_pool_cleanup_staging(FerryPool *pool, GError **error)
{
    for (size_t i = 0; i < G_N_ELEMENTS(base_dirs); i++) {
        int fd = open_pool_dir(pool, base_dirs[i].name, error);
        if (fd < 0)
            return FALSE;
        /* Snapshots are staged inside their volume's snapshots directory. */
        gboolean ok = sweep_dir(fd, g_str_has_suffix(base_dirs[i].name, "-snapshots"), error);
        close(fd);
        if (!ok) {
            g_prefix_error(error, "Failed to clean up storage pool \"%s\": ", pool->name);
            return FALSE;
        }
    }
    return TRUE;
}

/* --- paths --- */

char *ferry_pool_volume_path(FerryPool *pool, FerryVolumeType type, const char *volume)
{
    if (volumes_dir(type) == NULL || !is_component(volume))
        return NULL;
    return g_build_filename(pool->mount_path, volumes_dir(type), volume, NULL);
}

char *ferry_pool_snapshot_path(FerryPool *pool, FerryVolumeType type, const char *volume,
                               const char *snapshot)
{
    if (snapshots_dir(type) == NULL || !is_component(volume) || !is_component(snapshot))
        return NULL;
    return g_build_filename(pool->mount_path, snapshots_dir(type), volume, snapshot, NULL);
}

static gboolean is_directory(const char *path)
{
    struct stat st;
    return path != NULL && lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

gboolean ferry_pool_volume_exists(FerryPool *pool, FerryVolumeType type, const char *volume)
{
    g_autofree char *path = ferry_pool_volume_path(pool, type, volume);
    return is_directory(path);
}

gboolean ferry_pool_snapshot_exists(FerryPool *pool, FerryVolumeType type, const char *volume,
                                    const char *snapshot)
{
    g_autofree char *path = ferry_pool_snapshot_path(pool, type, volume, snapshot);
    return is_directory(path);
}

/* --- volumes --- */

static void set_volume_not_found(GError **error, const char *volume)
{
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Storage volume \"%s\" not found", volume);
}

static void set_volume_exists(GError **error, const char *volume)
{
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Storage volume \"%s\" already exists", volume);
}

static void set_snapshot_not_found(GError **error, const char *volume, const char *snapshot)
{
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Snapshot \"%s/%s\" not found", volume, snapshot);
}

static void set_snapshot_exists(GError **error, const char *volume, const char *snapshot)
{
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Snapshot \"%s/%s\" already exists", volume,
                snapshot);
}

gboolean ferry_pool_create_volume(FerryPool *pool, FerryVolumeType type, const char *volume, GError **error)
{
    if (!check_volume(type, volume, error))
        return FALSE;
    int fd = open_pool_dir(pool, volumes_dir(type), error);
    if (fd < 0)
        return FALSE;
    gboolean ok = pool->driver->create_volume(fd, volume, error);
    close(fd);
    return ok;
}

/* Build dst_dir_fd/name as a copy of src_path under a staging name, then rename it into place: on any
 * failure (or cancellation) the staging entry goes and name was never touched. */
static gboolean copy_into_place(FerryPool *pool, const char *src_path, int dst_dir_fd,
                                const char *dst_dir_path, const char *name, gboolean readonly, gboolean share,
                                GCancellable *cancellable, GError **error)
{
    g_autofree char *staging = staging_name();
    g_autofree char *staging_path = g_build_filename(dst_dir_path, staging, NULL);
    gboolean copied = share && pool->driver->share_tree != NULL
                          ? pool->driver->share_tree(src_path, dst_dir_fd, staging, staging_path, cancellable, error)
                          : pool->driver->copy_tree(src_path, dst_dir_fd, staging, staging_path, readonly,
                                                    cancellable, error);
    if (!copied) {
        ferry_tree_delete(dst_dir_fd, staging, NULL);
        return FALSE;
    }
    if (renameat2(dst_dir_fd, staging, dst_dir_fd, name, RENAME_NOREPLACE) < 0) {
        int saved = errno;
        ferry_tree_delete(dst_dir_fd, staging, NULL);
        if (saved == EEXIST)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "\"%s\" already exists", name);
        else
            ferry_set_error_errno(error, saved, "Failed to move the copy into place as \"%s\"", name);
        return FALSE;
    }
    return TRUE;
}

static gboolean copy_volume(FerryPool *pool, FerryVolumeType src_type, const char *src, FerryVolumeType dst_type,
                            const char *dst, gboolean share, GCancellable *cancellable, GError **error)
{
    if (!check_volume(src_type, src, error) || !check_volume(dst_type, dst, error))
        return FALSE;
    g_autofree char *src_path = ferry_pool_volume_path(pool, src_type, src);
    if (!is_directory(src_path)) {
        set_volume_not_found(error, src);
        return FALSE;
    }
    int fd = open_pool_dir(pool, volumes_dir(dst_type), error);
    if (fd < 0)
        return FALSE;
    gboolean ok = TRUE;
    if (entry_exists(fd, dst)) {
        set_volume_exists(error, dst);
        ok = FALSE;
    }
    g_autofree char *dst_dir = g_build_filename(pool->mount_path, volumes_dir(dst_type), NULL);
    if (ok)
        ok = copy_into_place(pool, src_path, fd, dst_dir, dst, FALSE, share, cancellable, error);
    close(fd);
    if (!ok)
        g_prefix_error(error, "Failed to copy storage volume \"%s\" to \"%s\": ", src, dst);
    return ok;
}

gboolean ferry_pool_copy_volume(FerryPool *pool, FerryVolumeType src_type, const char *src,
                                FerryVolumeType dst_type, const char *dst, GCancellable *cancellable,
                                GError **error)
{
    return copy_volume(pool, src_type, src, dst_type, dst, FALSE, cancellable, error);
}

gboolean ferry_pool_stage_volume(FerryPool *pool, FerryVolumeType type, const char *src, const char *dst,
                                 GCancellable *cancellable, GError **error)
{
    return copy_volume(pool, type, src, type, dst, TRUE, cancellable, error);
}

gboolean ferry_pool_copy_snapshot_to_volume(FerryPool *pool, FerryVolumeType type, const char *volume,
                                            const char *snapshot, const char *dst_volume,
                                            GCancellable *cancellable, GError **error)
{
    if (!check_snapshot(type, volume, snapshot, error) || !check_volume(type, dst_volume, error))
        return FALSE;
    g_autofree char *src_path = ferry_pool_snapshot_path(pool, type, volume, snapshot);
    if (!is_directory(src_path)) {
        set_snapshot_not_found(error, volume, snapshot);
        return FALSE;
    }
    int fd = open_pool_dir(pool, volumes_dir(type), error);
    if (fd < 0)
        return FALSE;
    gboolean ok = TRUE;
    if (entry_exists(fd, dst_volume)) {
        set_volume_exists(error, dst_volume);
        ok = FALSE;
    }
    g_autofree char *dst_dir = g_build_filename(pool->mount_path, volumes_dir(type), NULL);
    if (ok)
        ok = copy_into_place(pool, src_path, fd, dst_dir, dst_volume, FALSE, FALSE, cancellable, error);
    close(fd);
    if (!ok)
        g_prefix_error(error, "Failed to copy snapshot \"%s/%s\" to \"%s\": ", volume, snapshot, dst_volume);
    return ok;
}

/* Snapshot dst_volume/dst_snapshot from src_path. Staged inside the volume's snapshots directory: a
 * read-only btrfs snapshot can be renamed within its directory but not moved to another one. */
static gboolean snapshot_from(FerryPool *pool, FerryVolumeType type, const char *src_path,
                              const char *dst_volume, const char *dst_snapshot, GCancellable *cancellable,
                              GError **error)
{
    int fd = open_volume_snapshots(pool, type, dst_volume, TRUE, error);
    if (fd < 0)
        return FALSE;
    gboolean ok = TRUE;
    if (entry_exists(fd, dst_snapshot)) {
        set_snapshot_exists(error, dst_volume, dst_snapshot);
        ok = FALSE;
    }
    g_autofree char *dst_dir = g_build_filename(pool->mount_path, snapshots_dir(type), dst_volume, NULL);
    if (ok)
        ok = copy_into_place(pool, src_path, fd, dst_dir, dst_snapshot, TRUE, FALSE, cancellable, error);
    close(fd);
    if (!ok)
        rmdir(dst_dir); /* made for this snapshot and still empty: it would read as a volume's remains */
    return ok;
}

gboolean ferry_pool_copy_snapshot(FerryPool *pool, FerryVolumeType type, const char *volume,
                                  const char *snapshot, const char *dst_volume, const char *dst_snapshot,
                                  GCancellable *cancellable, GError **error)
{
    if (!check_snapshot(type, volume, snapshot, error) ||
        !check_snapshot(type, dst_volume, dst_snapshot, error))
        return FALSE;
    g_autofree char *src_path = ferry_pool_snapshot_path(pool, type, volume, snapshot);
    if (!is_directory(src_path)) {
        set_snapshot_not_found(error, volume, snapshot);
        return FALSE;
    }
    if (!snapshot_from(pool, type, src_path, dst_volume, dst_snapshot, cancellable, error)) {
        g_prefix_error(error, "Failed to copy snapshot \"%s/%s\" to \"%s/%s\": ", volume, snapshot,
                       dst_volume, dst_snapshot);
        return FALSE;
    }
    return TRUE;
}

typedef struct {
    int dir_fd;
    char *name;
} Discard;

static gpointer discard_thread(gpointer data)
{
    Discard *discard = data;
    /* A failure leaves a staging name, which the next start sweeps away. */
    ferry_tree_delete(discard->dir_fd, discard->name, NULL);
    close(discard->dir_fd);
    g_free(discard->name);
    g_free(discard);
    return NULL;
}

gboolean ferry_pool_discard_volume(FerryPool *pool, FerryVolumeType type, const char *volume, GError **error)
{
    if (!check_volume(type, volume, error))
        return FALSE;
    int fd = open_pool_dir(pool, volumes_dir(type), error);
    if (fd < 0)
        return FALSE;
    g_autofree char *trash = staging_name();
    if (renameat(fd, volume, fd, trash) < 0) {
        int saved = errno;
        close(fd);
        if (saved == ENOENT) {
            set_volume_not_found(error, volume);
            return FALSE;
        }
        ferry_set_error_errno(error, saved, "Failed to discard storage volume \"%s\"", volume);
        return FALSE;
    }
    Discard *discard = g_new0(Discard, 1);
    discard->dir_fd = fd;
    discard->name = g_steal_pointer(&trash);
    g_thread_unref(g_thread_new("ferry-discard", discard_thread, discard));
    return TRUE;
}

gboolean ferry_pool_delete_volume(FerryPool *pool, FerryVolumeType type, const char *volume, GError **error)
{
    if (!check_volume(type, volume, error))
        return FALSE;
    int fd = open_pool_dir(pool, volumes_dir(type), error);
    if (fd < 0)
        return FALSE;
    int snaps_fd = -1;
    if (snapshots_dir(type) != NULL) {
        snaps_fd = open_pool_dir(pool, snapshots_dir(type), error);
        if (snaps_fd < 0) {
            close(fd);
            return FALSE;
        }
    }

    gboolean ok = TRUE;
    gboolean has_volume = entry_exists(fd, volume);
    gboolean has_snapshots = entry_exists(snaps_fd, volume);
    if (!has_volume && !has_snapshots) {
        set_volume_not_found(error, volume);
        ok = FALSE;
    }
    /* Snapshots first: a failure then leaves the volume usable rather than a volume-less snapshot list. */
    if (ok && has_snapshots)
        ok = ferry_tree_delete(snaps_fd, volume, error);
    if (ok && has_volume)
        ok = ferry_tree_delete(fd, volume, error);
    close_fd(&snaps_fd);
    close(fd);
    if (!ok && (has_volume || has_snapshots))
        g_prefix_error(error, "Failed to delete storage volume \"%s\": ", volume);
    return ok;
}

gboolean ferry_pool_rename_volume(FerryPool *pool, FerryVolumeType type, const char *old_name,
                                  const char *new_name, GError **error)
{
    if (!check_volume(type, old_name, error) || !check_volume(type, new_name, error))
        return FALSE;
    int fd = open_pool_dir(pool, volumes_dir(type), error);
    if (fd < 0)
        return FALSE;
    int snaps_fd = snapshots_dir(type) ? open_pool_dir(pool, snapshots_dir(type), error) : -1;
    if (snapshots_dir(type) != NULL && snaps_fd < 0) {
        close(fd);
        return FALSE;
    }

    gboolean ok = FALSE;
    if (!entry_exists(fd, old_name)) {
        set_volume_not_found(error, old_name);
    } else if (entry_exists(fd, new_name) || entry_exists(snaps_fd, new_name)) {
        set_volume_exists(error, new_name);
    } else if (renameat2(fd, old_name, fd, new_name, RENAME_NOREPLACE) < 0) {
        if (errno == EEXIST)
            set_volume_exists(error, new_name);
        else
            ferry_set_error_errno(error, errno, "Failed to rename storage volume \"%s\" to \"%s\"", old_name,
                                  new_name);
    } else if (entry_exists(snaps_fd, old_name) &&
               renameat2(snaps_fd, old_name, snaps_fd, new_name, RENAME_NOREPLACE) < 0) {
        int saved = errno;
        renameat2(fd, new_name, fd, old_name, RENAME_NOREPLACE); /* back to how it was */
        ferry_set_error_errno(error, saved, "Failed to rename the snapshots of \"%s\" to \"%s\"", old_name,
                              new_name);
    } else {
        ok = TRUE;
    }
    close_fd(&snaps_fd);
    close(fd);
    return ok;
}

gboolean ferry_pool_exchange_volumes(FerryPool *pool, FerryVolumeType type, const char *a, const char *b,
                                     GError **error)
{
    if (!check_volume(type, a, error) || !check_volume(type, b, error))
        return FALSE;
    int fd = open_pool_dir(pool, volumes_dir(type), error);
    if (fd < 0)
        return FALSE;
    gboolean ok = FALSE;
    if (!entry_exists(fd, a))
        set_volume_not_found(error, a);
    else if (!entry_exists(fd, b))
        set_volume_not_found(error, b);
    else if (renameat2(fd, a, fd, b, RENAME_EXCHANGE) < 0)
        ferry_set_error_errno(error, errno, "Failed to exchange storage volumes \"%s\" and \"%s\"", a, b);
    else
        ok = TRUE;
    close(fd);
    return ok;
}

/* --- snapshots --- */

gboolean ferry_pool_create_snapshot(FerryPool *pool, FerryVolumeType type, const char *volume,
                                    const char *snapshot, GError **error)
{
    if (!check_snapshot(type, volume, snapshot, error))
        return FALSE;
    g_autofree char *src_path = ferry_pool_volume_path(pool, type, volume);
    if (!is_directory(src_path)) {
        set_volume_not_found(error, volume);
        return FALSE;
    }
    if (!snapshot_from(pool, type, src_path, volume, snapshot, NULL, error)) {
        g_prefix_error(error, "Failed to create snapshot \"%s/%s\": ", volume, snapshot);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_pool_delete_snapshot(FerryPool *pool, FerryVolumeType type, const char *volume,
                                    const char *snapshot, GError **error)
{
    if (!check_snapshot(type, volume, snapshot, error))
        return FALSE;
    g_autoptr(GError) local_error = NULL;
    int fd = open_volume_snapshots(pool, type, volume, FALSE, &local_error);
    if (fd < 0 || !entry_exists(fd, snapshot)) {
        if (local_error != NULL)
            g_propagate_error(error, g_steal_pointer(&local_error));
        else
            set_snapshot_not_found(error, volume, snapshot);
        close_fd(&fd);
        return FALSE;
    }
    gboolean ok = ferry_tree_delete(fd, snapshot, error);
    close(fd);
    if (!ok)
        g_prefix_error(error, "Failed to delete snapshot \"%s/%s\": ", volume, snapshot);
    return ok;
}

gboolean ferry_pool_rename_snapshot(FerryPool *pool, FerryVolumeType type, const char *volume,
                                    const char *old_name, const char *new_name, GError **error)
{
    if (!check_snapshot(type, volume, old_name, error) || !check_name("snapshot", new_name, error))
        return FALSE;
    g_autoptr(GError) local_error = NULL;
    int fd = open_volume_snapshots(pool, type, volume, FALSE, &local_error);
    gboolean ok = FALSE;
    if (fd < 0 || !entry_exists(fd, old_name)) {
        if (local_error != NULL)
            g_propagate_error(error, g_steal_pointer(&local_error));
        else
            set_snapshot_not_found(error, volume, old_name);
    } else if (renameat2(fd, old_name, fd, new_name, RENAME_NOREPLACE) < 0) {
        if (errno == EEXIST)
            set_snapshot_exists(error, volume, new_name);
        else
            ferry_set_error_errno(error, errno, "Failed to rename snapshot \"%s/%s\" to \"%s\"", volume,
                                  old_name, new_name);
    } else {
        ok = TRUE;
    }
    close_fd(&fd);
    return ok;
}

gboolean ferry_pool_move_snapshot(FerryPool *pool, FerryVolumeType type, const char *from_volume,
                                  const char *snapshot, const char *to_volume, GError **error)
{
    if (!check_snapshot(type, from_volume, snapshot, error) || !check_volume(type, to_volume, error))
        return FALSE;
    g_autoptr(GError) local_error = NULL;
    int from = open_volume_snapshots(pool, type, from_volume, FALSE, &local_error);
    int to = from >= 0 ? open_volume_snapshots(pool, type, to_volume, TRUE, &local_error) : -1;
    gboolean ok = FALSE;
    if (from < 0 || !entry_exists(from, snapshot)) {
        if (local_error != NULL)
            g_propagate_error(error, g_steal_pointer(&local_error));
        else
            set_snapshot_not_found(error, from_volume, snapshot);
    } else if (to < 0) {
        g_propagate_error(error, g_steal_pointer(&local_error));
    } else if (renameat2(from, snapshot, to, snapshot, RENAME_NOREPLACE) < 0) {
        /* Both directories are in the pool's snapshots tree: one filesystem, so this is a plain rename. */
        if (errno == EEXIST)
            set_snapshot_exists(error, to_volume, snapshot);
        else
            ferry_set_error_errno(error, errno, "Failed to move snapshot \"%s/%s\" to \"%s\"", from_volume,
                                  snapshot, to_volume);
    } else {
        ok = TRUE;
    }
    close_fd(&from);
    close_fd(&to);
    return ok;
}

gboolean ferry_pool_restore_snapshot(FerryPool *pool, FerryVolumeType type, const char *volume,
                                     const char *snapshot, GError **error)
{
    if (!check_snapshot(type, volume, snapshot, error))
        return FALSE;
    g_autofree char *snap_path = ferry_pool_snapshot_path(pool, type, volume, snapshot);
    if (!is_directory(snap_path)) {
        set_snapshot_not_found(error, volume, snapshot);
        return FALSE;
    }
    int fd = open_pool_dir(pool, volumes_dir(type), error);
    if (fd < 0)
        return FALSE;
    if (!entry_exists(fd, volume)) {
        set_volume_not_found(error, volume);
        close(fd);
        return FALSE;
    }

    g_autofree char *staging = staging_name();
    g_autofree char *staging_path = g_build_filename(pool->mount_path, volumes_dir(type), staging, NULL);
    gboolean ok = pool->driver->copy_tree(snap_path, fd, staging, staging_path, FALSE, NULL, error);
    if (ok && renameat2(fd, staging, fd, volume, RENAME_EXCHANGE) < 0) {
        if (errno != EINVAL) {
            ferry_set_error_errno(error, errno, "Failed to swap in the restored copy");
            ok = FALSE;
        } else {
            /* No RENAME_EXCHANGE on this filesystem: two renames, undone if the second fails. */
            g_autofree char *old = staging_name();
            if (renameat2(fd, volume, fd, old, RENAME_NOREPLACE) < 0) {
                ferry_set_error_errno(error, errno, "Failed to move \"%s\" aside", volume);
                ok = FALSE;
            } else if (renameat2(fd, staging, fd, volume, RENAME_NOREPLACE) < 0) {
                ferry_set_error_errno(error, errno, "Failed to swap in the restored copy");
                renameat2(fd, old, fd, volume, RENAME_NOREPLACE);
                ok = FALSE;
            } else {
                g_free(staging);
                staging = g_steal_pointer(&old);
            }
        }
    }
    /* Now the old content (or a failed copy). Should removing it fail, the volume is still restored and
     * ferry_pool_cleanup_staging takes the leftover at the next start. */
    ferry_tree_delete(fd, staging, NULL);
    close(fd);
    if (!ok)
        g_prefix_error(error, "Failed to restore \"%s\" from snapshot \"%s\": ", volume, snapshot);
    return ok;
}

/* --- usage --- */

gboolean ferry_pool_volume_usage(FerryPool *pool, FerryVolumeType type, const char *volume,
                                 guint64 *bytes_out, GError **error)
{
    if (!check_volume(type, volume, error))
        return FALSE;
    int dir_fd = open_pool_dir(pool, volumes_dir(type), error);
    if (dir_fd < 0)
        return FALSE;
    int fd = openat(dir_fd, volume, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(dir_fd);
    if (fd < 0) {
        if (errno == ENOENT)
            set_volume_not_found(error, volume);
        else
            ferry_set_error_errno(error, errno, "Failed to open storage volume \"%s\"", volume);
        return FALSE;
    }
    gboolean ok = ferry_tree_usage(fd, bytes_out, error);
    close(fd);
    if (!ok)
        g_prefix_error(error, "Failed to measure storage volume \"%s\": ", volume);
    return ok;
}

gboolean ferry_pool_snapshot_usage(FerryPool *pool, FerryVolumeType type, const char *volume, const char *snapshot,
                                   guint64 *bytes_out, GError **error)
{
    if (!check_snapshot(type, volume, snapshot, error))
        return FALSE;
    int snapshots_fd = open_volume_snapshots(pool, type, volume, FALSE, error);
    if (snapshots_fd < 0) {
        if (error != NULL && *error == NULL)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Snapshot \"%s/%s\" not found", volume, snapshot);
        return FALSE;
    }
    int fd = openat(snapshots_fd, snapshot, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(snapshots_fd);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "Failed to open snapshot \"%s/%s\"", volume, snapshot);
        return FALSE;
    }
    gboolean ok = ferry_tree_usage(fd, bytes_out, error);
    close(fd);
    return ok;
}

gboolean ferry_pool_usage(FerryPool *pool, guint64 *used, guint64 *total, GError **error)
{
    if (needs_mount(pool)) {
        gboolean mounted;
        if (!ferry_path_is_mountpoint(pool->mount_path, &mounted, error))
            return FALSE;
        if (!mounted) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Storage pool \"%s\" is not mounted",
                        pool->name);
            return FALSE;
        }
    }
    struct statvfs vfs;
    if (statvfs(pool->mount_path, &vfs) < 0) {
        ferry_set_error_errno(error, errno, "Failed to read the usage of storage pool \"%s\"", pool->name);
        return FALSE;
    }
    *total = (guint64)vfs.f_blocks * vfs.f_frsize;
    *used = (guint64)(vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize;
    return TRUE;
}
