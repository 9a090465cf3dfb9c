/* btrfs pools: loop file, block device and directory sources; volumes as subvolumes, copies as snapshots.
 * Needs root (loop devices, mounts, btrfs ioctls). Loop files are 300 MiB, about btrfs's minimum. */
#include "storage_scenarios.h"

#include "error.h"
#include "pool_private.h"

#include <fcntl.h>
#include <linux/btrfs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOOP_SIZE "300MiB"

static gboolean subvolume_info(const char *path, struct btrfs_ioctl_get_subvol_info_args *info)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    memset(info, 0, sizeof(*info));
    /* Some kernels return 1, not 0, on success. */
    int rc = ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, info);
    close(fd);
    return rc >= 0;
}

static void assert_subvolume(const char *path)
{
    struct stat st;
    g_assert_cmpint(lstat(path, &st), ==, 0);
    g_assert_true(S_ISDIR(st.st_mode));
    g_assert_cmpuint(st.st_ino, ==, 256);
}

static gboolean is_readonly(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    guint64 flags = 0;
    g_assert_cmpint(ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags), ==, 0);
    close(fd);
    return (flags & BTRFS_SUBVOL_RDONLY) != 0;
}

/* dst must be a snapshot of src (not a copy): its parent UUID is src's UUID. */
static void check_snapshot_of(const char *src, const char *dst, gboolean readonly)
{
    assert_subvolume(src);
    assert_subvolume(dst);
    struct btrfs_ioctl_get_subvol_info_args src_info, dst_info;
    g_assert_true(subvolume_info(src, &src_info));
    g_assert_true(subvolume_info(dst, &dst_info));
    g_assert_cmpmem(dst_info.parent_uuid, 16, src_info.uuid, 16);
    g_assert_cmpint(is_readonly(dst), ==, readonly);
    if (readonly) {
        g_autofree char *probe = g_build_filename(dst, "probe", NULL);
        g_assert_false(g_file_set_contents(probe, "x", 1, NULL));
    }
}

static void check_restored(const char *volume)
{
    assert_subvolume(volume);
    g_assert_false(is_readonly(volume));
}

static const StorageDriverChecks btrfs_checks = {
    .check_copy = check_snapshot_of,
    .check_restored = check_restored,
    .copies_are_processes = FALSE,
    .pool_total_max = 300 * 1024 * 1024,
};

static gboolean is_mountpoint(const char *path)
{
    g_autofree char *mountinfo = NULL;
    g_assert_true(g_file_get_contents("/proc/self/mountinfo", &mountinfo, NULL, NULL));
    g_autofree char *needle = g_strdup_printf(" %s ", path);
    return strstr(mountinfo, needle) != NULL;
}

static guint loop_devices_for(const char *file)
{
    g_autoptr(GPtrArray) devices = ferry_loop_devices_for_file(file);
    return devices->len;
}

static FerryPool *create_pool(const char *name, GHashTable *config, GError **error)
{
    const StorageTestDirs *dirs = storage_test_dirs();
    g_autofree char *storage_dir = g_build_filename(dirs->pools_dir, name, NULL);
    return ferry_pool_create(name, "btrfs", config, storage_dir, dirs->disks_dir, error);
}

static void run(const char *const *argv)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *err = NULL;
    gint status;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
                               NULL, NULL, NULL, &err, &status, &error));
    g_assert_no_error(error);
    if (!g_spawn_check_wait_status(status, NULL))
        g_error("%s failed: %s", argv[0], err);
}

/* A subvolume holding a file and a subvolume of its own, like docker's inside a container. */
static void make_nested(const char *volume)
{
    g_autofree char *lib = g_build_filename(volume, "rootfs", "var", "lib", NULL);
    g_assert_cmpint(g_mkdir_with_parents(lib, 0755), ==, 0);
    int fd = open(lib, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_btrfs_subvolume_create(fd, "docker", &error));
    g_assert_no_error(error);
    close(fd);
    g_autofree char *docker = g_build_filename(lib, "docker", NULL);
    g_autofree char *file = g_build_filename(docker, "layer", NULL);
    storage_test_write_file(file, "nested");
    fd = open(docker, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_assert_true(ferry_btrfs_subvolume_create(fd, "inner", &error));
    g_assert_no_error(error);
    close(fd);
    g_autofree char *inner_file = g_build_filename(docker, "inner", "deep", NULL);
    storage_test_write_file(inner_file, "deeper");
}

static void check_nested(const char *volume, gboolean readonly)
{
    g_autofree char *docker = g_build_filename(volume, "rootfs", "var", "lib", "docker", NULL);
    assert_subvolume(docker);
    g_assert_cmpint(is_readonly(docker), ==, readonly);
    g_autofree char *file = g_build_filename(docker, "layer", NULL);
    g_autofree char *contents = storage_test_read_file(file);
    g_assert_cmpstr(contents, ==, "nested");
    g_autofree char *inner = g_build_filename(docker, "inner", NULL);
    assert_subvolume(inner);
    g_autofree char *inner_file = g_build_filename(inner, "deep", NULL);
    g_autofree char *inner_contents = storage_test_read_file(inner_file);
    g_assert_cmpstr(inner_contents, ==, "deeper");
}

static void scenario_nested(FerryPool *pool)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_pool_create_volume(pool, FERRY_VOLUME_CONTAINER, "default_n1", &error));
    g_assert_no_error(error);
    g_autofree char *n1 = ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, "default_n1");
    make_nested(n1);

    g_assert_true(ferry_pool_copy_volume(pool, FERRY_VOLUME_CONTAINER, "default_n1", FERRY_VOLUME_CONTAINER,
                                         "default_n2", NULL, &error));
    g_assert_no_error(error);
    g_autofree char *n2 = ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, "default_n2");
    check_nested(n2, FALSE);

    g_assert_true(ferry_pool_create_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_n1", "s", &error));
    g_assert_no_error(error);
    g_autofree char *snap = ferry_pool_snapshot_path(pool, FERRY_VOLUME_CONTAINER, "default_n1", "s");
    check_nested(snap, TRUE);
    g_assert_true(is_readonly(snap));

    g_autofree char *layer = g_build_filename(n1, "rootfs", "var", "lib", "docker", "layer", NULL);
    storage_test_write_file(layer, "changed");
    g_assert_true(ferry_pool_restore_snapshot(pool, FERRY_VOLUME_CONTAINER, "default_n1", "s", &error));
    g_assert_no_error(error);
    check_nested(n1, FALSE);

    guint64 bytes = 0;
    g_assert_true(ferry_pool_volume_usage(pool, FERRY_VOLUME_CONTAINER, "default_n1", &bytes, &error));
    g_assert_no_error(error);

    /* Deleting walks into read-only snapshots with nested subvolumes too. */
    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, "default_n1", &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, "default_n2", &error));
    g_assert_no_error(error);
    g_assert_false(storage_test_exists(n1));
    g_assert_false(storage_test_exists(snap));
}

static void test_loop_pool(void)
{
    if (!storage_test_begin())
        return;
    const StorageTestDirs *dirs = storage_test_dirs();
    g_autoptr(GError) error = NULL;
    g_autoptr(GHashTable) config = storage_test_config("size", LOOP_SIZE, NULL);
    g_autoptr(FerryPool) pool = create_pool("bp", config, &error);
    g_assert_no_error(error);
    g_assert_nonnull(pool);

    /* Filled in as Incus does: the loop file as source, the size kept. */
    g_autofree char *image = g_build_filename(dirs->disks_dir, "bp.img", NULL);
    g_assert_cmpstr(g_hash_table_lookup(config, "source"), ==, image);
    g_assert_cmpstr(g_hash_table_lookup(config, "size"), ==, LOOP_SIZE);
    g_assert_false(g_hash_table_contains(config, "volatile.initial_source"));
    struct stat st;
    g_assert_cmpint(stat(image, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 300 * 1024 * 1024);
    g_assert_cmpint((gint64)st.st_blocks * 512, <, 100 * 1024 * 1024); /* sparse */
    g_assert_true(is_mountpoint(ferry_pool_get_mount_path(pool)));
    g_assert_cmpuint(loop_devices_for(image), ==, 1);

    storage_scenario_copy(pool, &btrfs_checks);
    storage_scenario_snapshots(pool, &btrfs_checks);
    storage_scenario_hostile(pool);
    scenario_nested(pool);

    /* Daemon restart: unmount detaches the loop device; mount from the stored config brings it back. */
    g_assert_true(ferry_pool_create_volume(pool, FERRY_VOLUME_CUSTOM, "persist", &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_unmount(pool, &error));
    g_assert_no_error(error);
    g_assert_false(is_mountpoint(ferry_pool_get_mount_path(pool)));
    g_assert_cmpuint(loop_devices_for(image), ==, 0);
    g_assert_false(ferry_pool_volume_exists(pool, FERRY_VOLUME_CUSTOM, "persist"));
    g_assert_false(ferry_pool_create_volume(pool, FERRY_VOLUME_CUSTOM, "x", &error));
    g_assert_nonnull(strstr(error->message, "is not mounted"));
    g_clear_error(&error);

    g_autofree char *storage_dir = g_build_filename(dirs->pools_dir, "bp", NULL);
    g_autoptr(FerryPool) loaded = ferry_pool_load("bp", "btrfs", config, storage_dir, &error);
    g_assert_no_error(error);
    g_assert_true(ferry_pool_mount(loaded, &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_mount(loaded, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(loop_devices_for(image), ==, 1);
    g_assert_true(ferry_pool_volume_exists(loaded, FERRY_VOLUME_CUSTOM, "persist"));
    g_assert_true(ferry_pool_delete_volume(loaded, FERRY_VOLUME_CUSTOM, "persist", &error));
    g_assert_no_error(error);

    /* Pool delete: refused with volumes, then unmounts, detaches and removes the loop file. */
    storage_scenario_pool_delete(loaded);
    g_assert_false(storage_test_exists(image));
    g_assert_cmpuint(loop_devices_for(image), ==, 0);
    g_assert_false(storage_test_exists(storage_dir));
}

static void test_default_size(void)
{
    if (!storage_test_begin())
        return;
    g_autoptr(GError) error = NULL;
    g_autoptr(GHashTable) config = storage_test_config_new();
    g_autoptr(FerryPool) pool = create_pool("big", config, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(g_hash_table_lookup(config, "size"), ==, "5GiB");
    guint64 used, total;
    g_assert_true(ferry_pool_usage(pool, &used, &total, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(total, >, 4ULL << 30);
    g_assert_cmpuint(total, <=, 5ULL << 30);
    g_assert_true(ferry_pool_delete(pool, &error));
    g_assert_no_error(error);

    /* A loop file in the way (a leftover) is not overwritten. */
    const StorageTestDirs *dirs = storage_test_dirs();
    g_autofree char *image = g_build_filename(dirs->disks_dir, "taken.img", NULL);
    storage_test_write_file(image, "someone's data");
    g_autoptr(GHashTable) taken_config = storage_test_config("size", LOOP_SIZE, NULL);
    g_autoptr(FerryPool) taken = create_pool("taken", taken_config, &error);
    g_assert_null(taken);
    storage_assert_error(error, FERRY_ERROR_CONFLICT);
    g_clear_error(&error);
    g_autofree char *contents = storage_test_read_file(image);
    g_assert_cmpstr(contents, ==, "someone's data");

    /* Too small for btrfs: mkfs.btrfs's own words, and nothing left behind. */
    g_autoptr(GHashTable) tiny_config = storage_test_config("size", "1MiB", NULL);
    g_autoptr(FerryPool) tiny = create_pool("tiny", tiny_config, &error);
    g_assert_null(tiny);
    storage_assert_error(error, FERRY_ERROR_INTERNAL);
    g_assert_nonnull(strstr(error->message, "Failed to create storage pool \"tiny\": Failed to format"));
    g_clear_error(&error);
    g_autofree char *tiny_image = g_build_filename(dirs->disks_dir, "tiny.img", NULL);
    g_assert_false(storage_test_exists(tiny_image));
    g_autofree char *tiny_dir = g_build_filename(dirs->pools_dir, "tiny", NULL);
    g_assert_false(storage_test_exists(tiny_dir));
}

static void test_source_not_btrfs(void)
{
    if (!storage_test_begin())
        return;
    const StorageTestDirs *dirs = storage_test_dirs();
    g_autoptr(GError) error = NULL;

    g_autofree char *existing = g_build_filename(dirs->external, "ext4dir", NULL);
    g_assert_cmpint(g_mkdir_with_parents(existing, 0755), ==, 0);
    g_autofree char *missing = g_build_filename(dirs->external, "new-subvolume", NULL);
    const char *const sources[] = {existing, missing};
    for (size_t i = 0; i < G_N_ELEMENTS(sources); i++) {
        g_autoptr(GHashTable) config = storage_test_config("source", sources[i], NULL);
        g_autoptr(FerryPool) pool = create_pool("nb", config, &error);
        g_assert_null(pool);
        storage_assert_error(error, FERRY_ERROR_INVALID);
        g_assert_nonnull(strstr(error->message, "is not on a btrfs filesystem (detected ext4)"));
        g_clear_error(&error);
    }
    g_assert_false(storage_test_exists(missing));
    g_autofree char *storage_dir = g_build_filename(dirs->pools_dir, "nb", NULL);
    g_assert_false(storage_test_exists(storage_dir));

    g_autoptr(GHashTable) bad_size = storage_test_config("size", "abc", NULL);
    g_autoptr(FerryPool) pool = create_pool("nb", bad_size, &error);
    g_assert_null(pool);
    storage_assert_error(error, FERRY_ERROR_INVALID);
    g_assert_cmpstr(error->message, ==,
                    "Invalid value for pool configuration key \"size\": Invalid size \"abc\"");
}

static char *attach_loop(const char *file)
{
    const char *argv[] = {"losetup", "--find", "--show", "--", file, NULL};
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    gint status;
    g_assert_true(
        g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, NULL));
    if (!g_spawn_check_wait_status(status, NULL))
        g_error("losetup failed: %s", err);
    return g_strstrip(g_steal_pointer(&out));
}

static void make_sparse(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 300 * 1024 * 1024), ==, 0);
    close(fd);
}

static void test_block_device(void)
{
    if (!storage_test_begin())
        return;
    const StorageTestDirs *dirs = storage_test_dirs();
    g_autoptr(GError) error = NULL;
    g_autofree char *backing = g_build_filename(dirs->external, "disk.img", NULL);
    make_sparse(backing);
    g_autofree char *device = attach_loop(backing);

    g_autoptr(GHashTable) config = storage_test_config("source", device, "size", "1GiB", NULL);
    g_autoptr(FerryPool) pool = create_pool("dev", config, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(g_hash_table_lookup(config, "source"), ==, device);
    g_assert_false(g_hash_table_contains(config, "size")); /* meaningless for a device */
    g_assert_true(is_mountpoint(ferry_pool_get_mount_path(pool)));
    g_assert_true(ferry_pool_create_volume(pool, FERRY_VOLUME_CONTAINER, "default_c1", &error));
    g_assert_no_error(error);
    g_autofree char *vol = ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, "default_c1");
    assert_subvolume(vol);
    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, "default_c1", &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_delete(pool, &error));
    g_assert_no_error(error);
    g_assert_false(is_mountpoint(ferry_pool_get_mount_path(pool)));
    g_assert_true(storage_test_exists(device)); /* the device is the user's */

    /* Now it holds a filesystem: not formatted again unless source.wipe says so. */
    g_autoptr(GHashTable) again = storage_test_config("source", device, NULL);
    g_autoptr(FerryPool) refused = create_pool("dev", again, &error);
    g_assert_null(refused);
    g_assert_nonnull(strstr(error->message, "existing filesystem"));
    g_clear_error(&error);
    g_autoptr(GHashTable) wipe = storage_test_config("source", device, "source.wipe", "true", NULL);
    g_autoptr(FerryPool) wiped = create_pool("dev", wipe, &error);
    g_assert_no_error(error);
    g_assert_false(g_hash_table_contains(wipe, "source.wipe"));
    g_assert_true(ferry_pool_delete(wiped, &error));
    g_assert_no_error(error);
}

static void test_directory_source(void)
{
    if (!storage_test_begin())
        return;
    const StorageTestDirs *dirs = storage_test_dirs();
    g_autoptr(GError) error = NULL;

    /* A btrfs filesystem of the host's, outside $FERRY_DIR. */
    g_autofree char *backing = g_build_filename(dirs->external, "host.img", NULL);
    make_sparse(backing);
    run((const char *const[]){"mkfs.btrfs", "-q", "--", backing, NULL});
    g_autofree char *host = g_build_filename(dirs->external, "host", NULL);
    g_assert_cmpint(g_mkdir_with_parents(host, 0755), ==, 0);
    run((const char *const[]){"mount", "-o", "loop", "--", backing, host, NULL});

    /* A path that does not exist yet becomes a subvolume, bind-mounted at the mount path. */
    g_autofree char *source = g_build_filename(host, "ferry-pool", NULL);
    g_autoptr(GHashTable) config = storage_test_config("source", source, NULL);
    g_autoptr(FerryPool) pool = create_pool("onhost", config, &error);
    g_assert_no_error(error);
    assert_subvolume(source);
    g_assert_true(is_mountpoint(ferry_pool_get_mount_path(pool)));
    storage_scenario_copy(pool, &(StorageDriverChecks){.check_copy = check_snapshot_of});
    g_assert_true(ferry_pool_unmount(pool, &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_mount(pool, &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_delete(pool, &error));
    g_assert_no_error(error);
    g_assert_true(g_file_test(source, G_FILE_TEST_IS_DIR)); /* the user's, emptied */

    /* An existing, non-empty directory is refused. */
    g_autofree char *full = g_build_filename(host, "full", NULL);
    g_assert_cmpint(g_mkdir_with_parents(full, 0755), ==, 0);
    g_autofree char *file = g_build_filename(full, "f", NULL);
    storage_test_write_file(file, "x");
    g_autoptr(GHashTable) full_config = storage_test_config("source", full, NULL);
    g_autoptr(FerryPool) refused = create_pool("full", full_config, &error);
    g_assert_null(refused);
    storage_assert_error(error, FERRY_ERROR_INVALID);
    g_clear_error(&error);

    /* $FERRY_DIR on btrfs: the pool is a subvolume at its own mount path, nothing mounted. */
    g_autofree char *pools = g_build_filename(host, "ferry", "storage-pools", NULL);
    g_assert_cmpint(g_mkdir_with_parents(pools, 0711), ==, 0);
    g_autofree char *self_dir = g_build_filename(pools, "self", NULL);
    g_autofree char *disks = g_build_filename(host, "ferry", "disks", NULL);
    g_autoptr(GHashTable) self_config = storage_test_config("source", self_dir, NULL);
    g_autoptr(FerryPool) self = ferry_pool_create("self", "btrfs", self_config, self_dir, disks, &error);
    g_assert_no_error(error);
    assert_subvolume(self_dir);
    g_assert_false(is_mountpoint(self_dir));
    storage_scenario_snapshots(
        self, &(StorageDriverChecks){.check_copy = check_snapshot_of, .check_restored = check_restored});
    g_assert_true(ferry_pool_delete(self, &error));
    g_assert_no_error(error);
    g_assert_false(storage_test_exists(self_dir));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/storage/btrfs/loop-pool", test_loop_pool);
    g_test_add_func("/storage/btrfs/default-size", test_default_size);
    g_test_add_func("/storage/btrfs/source-not-btrfs", test_source_not_btrfs);
    g_test_add_func("/storage/btrfs/block-device", test_block_device);
    g_test_add_func("/storage/btrfs/directory-source", test_directory_source);
    return g_test_run();
}
