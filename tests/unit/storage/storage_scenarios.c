/* Volume and snapshot scenarios every driver must pass; the driver's tests add their own checks through
 * StorageDriverChecks. */
#include "storage_scenarios.h"

#include "error.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *volume_path(FerryPool *pool, FerryVolumeType type, const char *volume)
{
    char *path = ferry_pool_volume_path(pool, type, volume);
    g_assert_nonnull(path);
    return path;
}

static char *snapshot_path(FerryPool *pool, FerryVolumeType type, const char *volume, const char *snapshot)
{
    char *path = ferry_pool_snapshot_path(pool, type, volume, snapshot);
    g_assert_nonnull(path);
    return path;
}

/* Entries of dir whose name starts with prefix: staging leftovers must never survive an operation. */
static guint count_prefixed(const char *dir, const char *prefix)
{
    g_autoptr(GDir) handle = g_dir_open(dir, 0, NULL);
    guint count = 0;
    const char *entry;
    while (handle != NULL && (entry = g_dir_read_name(handle)) != NULL)
        if (g_str_has_prefix(entry, prefix))
            count++;
    return count;
}

static void assert_no_staging(FerryPool *pool)
{
    static const char *const dirs[] = {"containers", "containers-snapshots", "images", "custom",
                                       "custom-snapshots"};
    for (size_t i = 0; i < G_N_ELEMENTS(dirs); i++) {
        g_autofree char *path = g_build_filename(ferry_pool_get_mount_path(pool), dirs[i], NULL);
        g_assert_cmpuint(count_prefixed(path, ".ferry-tmp-"), ==, 0);
    }
}

void storage_scenario_copy(FerryPool *pool, const StorageDriverChecks *checks)
{
    g_autoptr(GError) error = NULL;

    /* An image volume, then an instance from it, as image -> instance does. */
    g_assert_true(ferry_pool_create_volume(pool, FERRY_VOLUME_IMAGE, "fp1", &error));
    g_assert_no_error(error);
    g_autofree char *image = volume_path(pool, FERRY_VOLUME_IMAGE, "fp1");
    struct stat st;
    g_assert_cmpint(stat(image, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 07777, ==, 0711);
    storage_test_populate(image);

    g_assert_false(ferry_pool_create_volume(pool, FERRY_VOLUME_IMAGE, "fp1", &error));
    storage_assert_error(error, FERRY_ERROR_CONFLICT);
    g_clear_error(&error);

    g_assert_true(ferry_pool_copy_volume(pool, FERRY_VOLUME_IMAGE, "fp1", FERRY_VOLUME_CONTAINER,
                                         "default_c1", NULL, &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_volume_exists(pool, FERRY_VOLUME_CONTAINER, "default_c1"));
    g_autofree char *c1 = volume_path(pool, FERRY_VOLUME_CONTAINER, "default_c1");
    storage_test_check_populated(c1);
    if (checks->check_copy != NULL)
        checks->check_copy(image, c1, FALSE);

    /* Same-server copy of an instance; the copy is independent of its source. */
    g_assert_true(ferry_pool_copy_volume(pool, FERRY_VOLUME_CONTAINER, "default_c1", FERRY_VOLUME_CONTAINER,
                                         "default_c2", NULL, &error));
    g_assert_no_error(error);
    g_autofree char *c2 = volume_path(pool, FERRY_VOLUME_CONTAINER, "default_c2");
    storage_test_check_populated(c2);
    g_autofree char *c2_meta = g_build_filename(c2, "metadata.yaml", NULL);
    storage_test_write_file(c2_meta, "changed\n");
    g_autofree char *c1_meta = g_build_filename(c1, "metadata.yaml", NULL);
    g_autofree char *c1_yaml = storage_test_read_file(c1_meta);
    g_assert_cmpstr(c1_yaml, ==, "architecture: x86_64\n");

    /* Copy errors: missing source, taken target, already-cancelled copy (leaves nothing behind). */
    g_assert_false(ferry_pool_copy_volume(pool, FERRY_VOLUME_CONTAINER, "nope", FERRY_VOLUME_CONTAINER, "x",
                                          NULL, &error));
    storage_assert_error(error, FERRY_ERROR_NOT_FOUND);
    g_clear_error(&error);
    g_assert_false(ferry_pool_copy_volume(pool, FERRY_VOLUME_CONTAINER, "default_c1", FERRY_VOLUME_CONTAINER,
                                          "default_c2", NULL, &error));
    storage_assert_error(error, FERRY_ERROR_CONFLICT);
    g_clear_error(&error);
    if (checks->copies_are_processes) {
        g_autoptr(GCancellable) cancellable = g_cancellable_new();
        g_cancellable_cancel(cancellable);
        g_assert_false(ferry_pool_copy_volume(pool, FERRY_VOLUME_CONTAINER, "default_c1",
                                              FERRY_VOLUME_CONTAINER, "default_c3", cancellable, &error));
        storage_assert_error(error, FERRY_ERROR_CANCELLED);
        g_clear_error(&error);
        g_assert_false(ferry_pool_volume_exists(pool, FERRY_VOLUME_CONTAINER, "default_c3"));
    }
    assert_no_staging(pool);

    /* Usage: the 1 MiB file once (hard link not twice), the sparse file by its one extent. */
    guint64 bytes = 0;
    g_assert_true(ferry_pool_volume_usage(pool, FERRY_VOLUME_CONTAINER, "default_c1", &bytes, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(bytes, >=, 1024 * 1024 + 4096);
    g_assert_cmpuint(bytes, <, 1024 * 1024 + 512 * 1024);
    g_assert_false(ferry_pool_volume_usage(pool, FERRY_VOLUME_CONTAINER, "nope", &bytes, &error));
    storage_assert_error(error, FERRY_ERROR_NOT_FOUND);
    g_clear_error(&error);

    guint64 used = 0, total = 0;
    g_assert_true(ferry_pool_usage(pool, &used, &total, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(total, >, 0);
    g_assert_cmpuint(used, >, 0);
    g_assert_cmpuint(used, <=, total);
    if (checks->pool_total_max != 0)
        g_assert_cmpuint(total, <=, checks->pool_total_max);

    /* Rename, delete. */
    g_assert_true(ferry_pool_rename_volume(pool, FERRY_VOLUME_CONTAINER, "default_c2", "default_c9", &error));
    g_assert_no_error(error);
    g_assert_false(ferry_pool_volume_exists(pool, FERRY_VOLUME_CONTAINER, "default_c2"));
    g_assert_true(ferry_pool_volume_exists(pool, FERRY_VOLUME_CONTAINER, "default_c9"));
    g_assert_false(
        ferry_pool_rename_volume(pool, FERRY_VOLUME_CONTAINER, "default_c9", "default_c1", &error));
    storage_assert_error(error, FERRY_ERROR_CONFLICT);
    g_clear_error(&error);
    g_assert_false(ferry_pool_rename_volume(pool, FERRY_VOLUME_CONTAINER, "gone", "x", &error));
    storage_assert_error(error, FERRY_ERROR_NOT_FOUND);
    g_clear_error(&error);

    /* Exchange: a staging volume swapped in for a live one. */
    g_assert_true(
        ferry_pool_exchange_volumes(pool, FERRY_VOLUME_CONTAINER, "default_c1", "default_c9", &error));
    g_assert_no_error(error);
    g_autofree char *c1_yaml_now = storage_test_read_file(c1_meta);
    g_assert_cmpstr(c1_yaml_now, ==, "changed\n");
    g_assert_true(
        ferry_pool_exchange_volumes(pool, FERRY_VOLUME_CONTAINER, "default_c1", "default_c9", &error));
    g_assert_no_error(error);

    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, "default_c9", &error));
    g_assert_no_error(error);
    g_assert_false(ferry_pool_volume_exists(pool, FERRY_VOLUME_CONTAINER, "default_c9"));
    g_assert_false(ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, "default_c9", &error));
    storage_assert_error(error, FERRY_ERROR_NOT_FOUND);
    g_clear_error(&error);

    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, "default_c1", &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_IMAGE, "fp1", &error));
    g_assert_no_error(error);
    assert_no_staging(pool);
}

void storage_scenario_snapshots(FerryPool *pool, const StorageDriverChecks *checks)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_pool_create_volume(pool, FERRY_VOLUME_CONTAINER, "default_s1", &error));
    g_assert_no_error(error);
    g_autofree char *vol = volume_path(pool, FERRY_VOLUME_CONTAINER, "default_s1");
    storage_test_populate(vol);

    g_assert_true(ferry_pool_create_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap0", &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_snapshot_exists(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap0"));
    g_autofree char *snap0 = snapshot_path(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap0");
    storage_test_check_populated(snap0);
    if (checks->check_copy != NULL)
        checks->check_copy(vol, snap0, TRUE);
    g_assert_false(ferry_pool_create_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap0", &error));
    storage_assert_error(error, FERRY_ERROR_CONFLICT);
    g_clear_error(&error);
    g_assert_false(ferry_pool_create_snapshot(pool, FERRY_VOLUME_CONTAINER, "nope", "snap0", &error));
    storage_assert_error(error, FERRY_ERROR_NOT_FOUND);
    g_clear_error(&error);

    /* Change the volume, then restore: the content really reverts. */
    g_autofree char *meta = g_build_filename(vol, "metadata.yaml", NULL);
    storage_test_write_file(meta, "changed\n");
    g_autofree char *added = g_build_filename(vol, "rootfs", "added", NULL);
    storage_test_write_file(added, "new");
    g_autofree char *hardlink = g_build_filename(vol, "rootfs", "hardlink", NULL);
    g_assert_cmpint(unlink(hardlink), ==, 0);

    g_assert_true(
        ferry_pool_rename_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap0", "snap1", &error));
    g_assert_no_error(error);
    g_assert_false(ferry_pool_snapshot_exists(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap0"));
    g_assert_true(ferry_pool_snapshot_exists(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap1"));
    g_assert_true(ferry_pool_create_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap2", &error));
    g_assert_no_error(error);
    g_assert_false(
        ferry_pool_rename_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap1", "snap2", &error));
    storage_assert_error(error, FERRY_ERROR_CONFLICT);
    g_clear_error(&error);
    g_assert_false(
        ferry_pool_rename_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_s1", "nope", "x", &error));
    storage_assert_error(error, FERRY_ERROR_NOT_FOUND);
    g_clear_error(&error);

    g_assert_true(ferry_pool_restore_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap1", &error));
    g_assert_no_error(error);
    storage_test_check_populated(vol);
    g_assert_false(storage_test_exists(added));
    if (checks->check_restored != NULL)
        checks->check_restored(vol);
    /* The restored volume is writable even when snapshots are read-only. */
    storage_test_write_file(meta, "after restore\n");
    g_assert_false(ferry_pool_restore_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_s1", "nope", &error));
    storage_assert_error(error, FERRY_ERROR_NOT_FOUND);
    g_clear_error(&error);

    /* snap2 holds the changed content; a new instance from it. */
    g_assert_true(ferry_pool_copy_snapshot_to_volume(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap2",
                                                     "default_from_snap", NULL, &error));
    g_assert_no_error(error);
    g_autofree char *from_snap = volume_path(pool, FERRY_VOLUME_CONTAINER, "default_from_snap");
    g_autofree char *from_meta = g_build_filename(from_snap, "metadata.yaml", NULL);
    g_autofree char *from_yaml = storage_test_read_file(from_meta);
    g_assert_cmpstr(from_yaml, ==, "changed\n");
    storage_test_write_file(from_meta, "writable\n");

    /* Copy a snapshot to another volume's snapshot (copy with snapshots: snapshots first). */
    g_assert_true(ferry_pool_copy_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap1",
                                           "default_copy", "snap1", NULL, &error));
    g_assert_no_error(error);
    g_autofree char *copied_snap = snapshot_path(pool, FERRY_VOLUME_CONTAINER, "default_copy", "snap1");
    storage_test_check_populated(copied_snap);
    g_autofree char *snap1 = snapshot_path(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap1");
    if (checks->check_copy != NULL)
        checks->check_copy(snap1, copied_snap, TRUE);

    if (checks->copies_are_processes) {
        g_autoptr(GCancellable) cancellable = g_cancellable_new();
        g_cancellable_cancel(cancellable);
        g_assert_false(ferry_pool_copy_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap1",
                                                "default_cancelled", "snap1", cancellable, &error));
        storage_assert_error(error, FERRY_ERROR_CANCELLED);
        g_clear_error(&error);
        g_autofree char *cancelled_dir = g_build_filename(ferry_pool_get_mount_path(pool),
                                                          "containers-snapshots", "default_cancelled", NULL);
        g_assert_false(storage_test_exists(cancelled_dir));
    }

    /* Renaming a volume carries its snapshots. */
    g_assert_true(ferry_pool_rename_volume(pool, FERRY_VOLUME_CONTAINER, "default_s1", "default_s2", &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_snapshot_exists(pool, FERRY_VOLUME_CONTAINER, "default_s2", "snap1"));
    g_assert_true(ferry_pool_snapshot_exists(pool, FERRY_VOLUME_CONTAINER, "default_s2", "snap2"));
    g_assert_false(ferry_pool_snapshot_exists(pool, FERRY_VOLUME_CONTAINER, "default_s1", "snap1"));

    g_assert_true(ferry_pool_delete_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_s2", "snap2", &error));
    g_assert_no_error(error);
    g_assert_false(ferry_pool_snapshot_exists(pool, FERRY_VOLUME_CONTAINER, "default_s2", "snap2"));
    g_assert_false(ferry_pool_delete_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_s2", "snap2", &error));
    storage_assert_error(error, FERRY_ERROR_NOT_FOUND);
    g_clear_error(&error);

    /* Custom volumes have snapshots too; images do not. */
    g_assert_true(ferry_pool_create_volume(pool, FERRY_VOLUME_CUSTOM, "data", &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_create_snapshot(pool, FERRY_VOLUME_CUSTOM, "data", "s", &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_snapshot_exists(pool, FERRY_VOLUME_CUSTOM, "data", "s"));
    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_CUSTOM, "data", &error));
    g_assert_no_error(error);
    g_autofree char *custom_snaps =
        g_build_filename(ferry_pool_get_mount_path(pool), "custom-snapshots", "data", NULL);
    g_assert_false(storage_test_exists(custom_snaps));

    /* Deleting a volume deletes its snapshots directory. */
    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, "default_s2", &error));
    g_assert_no_error(error);
    g_autofree char *snaps_dir =
        g_build_filename(ferry_pool_get_mount_path(pool), "containers-snapshots", "default_s2", NULL);
    g_assert_false(storage_test_exists(snaps_dir));
    /* A volume whose only remains are snapshots is still deletable. */
    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, "default_copy", &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, "default_from_snap", &error));
    g_assert_no_error(error);
    assert_no_staging(pool);
}

void storage_scenario_hostile(FerryPool *pool)
{
    g_autoptr(GError) error = NULL;
    const StorageTestDirs *dirs = storage_test_dirs();

    /* Outside the pool: a big file a symlink in the volume points at, and a directory it points into. */
    g_autofree char *outside = g_build_filename(dirs->external, "precious", NULL);
    g_assert_cmpint(g_mkdir_with_parents(outside, 0755), ==, 0);
    g_autofree char *precious = g_build_filename(outside, "data", NULL);
    g_autofree char *big = g_malloc0(4 * 1024 * 1024);
    memset(big, 'p', 4 * 1024 * 1024);
    g_assert_true(g_file_set_contents(precious, big, 4 * 1024 * 1024, NULL));

    g_assert_true(ferry_pool_create_volume(pool, FERRY_VOLUME_CONTAINER, "default_evil", &error));
    g_assert_no_error(error);
    g_autofree char *vol = volume_path(pool, FERRY_VOLUME_CONTAINER, "default_evil");
    g_autofree char *link_dir = g_build_filename(vol, "escape", NULL);
    g_assert_cmpint(symlink(outside, link_dir), ==, 0);
    g_autofree char *link_file = g_build_filename(vol, "escape-file", NULL);
    g_assert_cmpint(symlink(precious, link_file), ==, 0);

    guint64 bytes = 0;
    g_assert_true(ferry_pool_volume_usage(pool, FERRY_VOLUME_CONTAINER, "default_evil", &bytes, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(bytes, <, 1024 * 1024); /* the symlinked file and directory are not counted */

    /* Snapshotted before the deep tree: cp, like rsync, stops at PATH_MAX. */
    g_assert_true(ferry_pool_create_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_evil", "s", &error));
    g_assert_no_error(error);

    /* A tree deeper than any fd limit would allow one fd per level. */
    int fd = open(vol, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    for (int depth = 0; depth < 3000; depth++) {
        g_assert_cmpint(mkdirat(fd, "d", 0755), ==, 0);
        int next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(next, >=, 0);
        close(fd);
        fd = next;
    }
    g_assert_cmpint(symlinkat("/", fd, "root-link"), ==, 0);
    close(fd);

    guint64 deep_bytes = 0;
    g_assert_true(ferry_pool_volume_usage(pool, FERRY_VOLUME_CONTAINER, "default_evil", &deep_bytes, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(deep_bytes, >=, bytes);

    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, "default_evil", &error));
    g_assert_no_error(error);
    g_assert_false(ferry_pool_volume_exists(pool, FERRY_VOLUME_CONTAINER, "default_evil"));
    g_autofree char *kept = storage_test_read_file(precious);
    g_assert_cmpuint(strlen(kept), ==, 4 * 1024 * 1024);
    g_assert_true(storage_test_exists("/etc/passwd"));
}

void storage_scenario_pool_delete(FerryPool *pool)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_pool_create_volume(pool, FERRY_VOLUME_CUSTOM, "keep", &error));
    g_assert_no_error(error);
    g_assert_false(ferry_pool_delete(pool, &error));
    storage_assert_error(error, FERRY_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "custom/keep"));
    g_clear_error(&error);
    g_assert_true(ferry_pool_volume_exists(pool, FERRY_VOLUME_CUSTOM, "keep"));

    /* A leftover of an interrupted operation neither blocks deletion nor survives cleanup. */
    g_autofree char *leftover =
        g_build_filename(ferry_pool_get_mount_path(pool), "containers", ".ferry-tmp-crashed", "rootfs", NULL);
    g_assert_cmpint(g_mkdir_with_parents(leftover, 0755), ==, 0);
    g_assert_true(ferry_pool_cleanup_staging(pool, &error));
    g_assert_no_error(error);
    g_assert_false(storage_test_exists(leftover));
    g_assert_cmpint(g_mkdir_with_parents(leftover, 0755), ==, 0);

    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_CUSTOM, "keep", &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_delete(pool, &error));
    g_assert_no_error(error);
    g_assert_false(storage_test_exists(ferry_pool_get_mount_path(pool)));
}
