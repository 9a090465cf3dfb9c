/* dir pools: volumes as plain directories, copies by cp -a. Needs root (mknod, chown, bind mounts). */
#include "storage_scenarios.h"

#include "error.h"

#include <string.h>
#include <sys/stat.h>

static const StorageDriverChecks dir_checks = {
    .copies_are_processes = TRUE,
};

static gboolean is_mountpoint(const char *path)
{
    struct stat st, parent;
    g_autofree char *up = g_build_filename(path, "..", NULL);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(stat(up, &parent), ==, 0);
    g_autofree char *mountinfo = NULL;
    g_assert_true(g_file_get_contents("/proc/self/mountinfo", &mountinfo, NULL, NULL));
    g_autofree char *needle = g_strdup_printf(" %s ", path);
    return strstr(mountinfo, needle) != NULL;
}

static FerryPool *create_pool(const char *name, GHashTable *config)
{
    const StorageTestDirs *dirs = storage_test_dirs();
    g_autofree char *storage_dir = g_build_filename(dirs->pools_dir, name, NULL);
    g_autoptr(GError) error = NULL;
    FerryPool *pool = ferry_pool_create(name, "dir", config, storage_dir, dirs->disks_dir, &error);
    g_assert_no_error(error);
    g_assert_nonnull(pool);
    return pool;
}

static void test_dir_pool(void)
{
    if (!storage_test_begin())
        return;
    const StorageTestDirs *dirs = storage_test_dirs();
    g_autoptr(GHashTable) config = storage_test_config_new();
    g_autoptr(FerryPool) pool = create_pool("default", config);

    /* Like Incus, the source is filled in with the pool's own directory. */
    g_autofree char *storage_dir = g_build_filename(dirs->pools_dir, "default", NULL);
    g_assert_cmpstr(g_hash_table_lookup(config, "source"), ==, storage_dir);
    g_assert_false(g_hash_table_contains(config, "size"));
    g_assert_cmpstr(ferry_pool_get_mount_path(pool), ==, storage_dir);
    static const char *const base[] = {"containers", "containers-snapshots", "images", "custom",
                                       "custom-snapshots"};
    for (size_t i = 0; i < G_N_ELEMENTS(base); i++) {
        g_autofree char *path = g_build_filename(storage_dir, base[i], NULL);
        g_assert_true(g_file_test(path, G_FILE_TEST_IS_DIR));
    }

    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_pool_mount(pool, &error));
    g_assert_no_error(error);

    storage_scenario_copy(pool, &dir_checks);
    storage_scenario_snapshots(pool, &dir_checks);
    storage_scenario_hostile(pool);

    /* Creating over an existing pool directory is refused. */
    g_autoptr(GHashTable) again_config = storage_test_config_new();
    g_autoptr(FerryPool) again =
        ferry_pool_create("default", "dir", again_config, storage_dir, dirs->disks_dir, &error);
    g_assert_null(again);
    storage_assert_error(error, FERRY_ERROR_CONFLICT);
    g_clear_error(&error);

    /* A handle loaded from the stored config sees the same pool. */
    g_autoptr(FerryPool) loaded = ferry_pool_load("default", "dir", config, storage_dir, &error);
    g_assert_no_error(error);
    g_assert_true(ferry_pool_create_volume(loaded, FERRY_VOLUME_CUSTOM, "v", &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_volume_exists(pool, FERRY_VOLUME_CUSTOM, "v"));
    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_CUSTOM, "v", &error));
    g_assert_no_error(error);

    storage_scenario_pool_delete(pool);
}

static void test_dir_pool_source(void)
{
    if (!storage_test_begin())
        return;
    const StorageTestDirs *dirs = storage_test_dirs();
    g_autoptr(GError) error = NULL;
    g_autofree char *storage_dir = g_build_filename(dirs->pools_dir, "ext", NULL);

    /* Bad sources: missing, not empty, inside $FERRY_DIR. */
    g_autofree char *missing = g_build_filename(dirs->external, "missing", NULL);
    g_autofree char *full = g_build_filename(dirs->external, "full", NULL);
    g_assert_cmpint(g_mkdir_with_parents(full, 0755), ==, 0);
    g_autofree char *full_file = g_build_filename(full, "f", NULL);
    storage_test_write_file(full_file, "x");
    g_autofree char *inside = g_build_filename(dirs->ferry_dir, "elsewhere", NULL);
    g_assert_cmpint(g_mkdir_with_parents(inside, 0755), ==, 0);
    const char *const bad_sources[] = {missing, full, inside};
    for (size_t i = 0; i < G_N_ELEMENTS(bad_sources); i++) {
        g_autoptr(GHashTable) config = storage_test_config("source", bad_sources[i], NULL);
        g_autoptr(FerryPool) pool =
            ferry_pool_create("ext", "dir", config, storage_dir, dirs->disks_dir, &error);
        g_assert_null(pool);
        storage_assert_error(error, FERRY_ERROR_INVALID);
        g_clear_error(&error);
        g_assert_false(storage_test_exists(storage_dir)); /* nothing left behind */
    }
    g_autoptr(GHashTable) bad_config = storage_test_config("bogus", "1", NULL);
    g_autoptr(FerryPool) bad_pool =
        ferry_pool_create("ext", "dir", bad_config, storage_dir, dirs->disks_dir, &error);
    g_assert_null(bad_pool);
    storage_assert_error(error, FERRY_ERROR_INVALID);
    g_assert_cmpstr(error->message, ==, "Invalid pool configuration key \"bogus\"");
    g_clear_error(&error);

    /* A good one: bind-mounted at the mount path. */
    g_autofree char *source = g_build_filename(dirs->external, "src", NULL);
    g_assert_cmpint(g_mkdir_with_parents(source, 0755), ==, 0);
    g_autoptr(GHashTable) config = storage_test_config("source", source, "rsync.bwlimit", "50MiB", NULL);
    g_autoptr(FerryPool) pool = create_pool("ext", config);
    g_assert_cmpstr(g_hash_table_lookup(config, "source"), ==, source);
    g_assert_cmpstr(g_hash_table_lookup(config, "volatile.initial_source"), ==, source);
    g_assert_true(is_mountpoint(storage_dir));
    g_assert_true(ferry_pool_create_volume(pool, FERRY_VOLUME_CONTAINER, "default_c1", &error));
    g_assert_no_error(error);
    g_autofree char *in_source = g_build_filename(source, "containers", "default_c1", NULL);
    g_assert_true(g_file_test(in_source, G_FILE_TEST_IS_DIR));

    /* Unmount and mount again (daemon restart); mounting twice is harmless. */
    g_assert_true(ferry_pool_unmount(pool, &error));
    g_assert_no_error(error);
    g_assert_false(is_mountpoint(storage_dir));
    g_assert_false(ferry_pool_volume_exists(pool, FERRY_VOLUME_CONTAINER, "default_c1"));
    guint64 used, total;
    g_assert_false(ferry_pool_usage(pool, &used, &total, &error));
    storage_assert_error(error, FERRY_ERROR_INTERNAL);
    g_clear_error(&error);
    g_assert_true(ferry_pool_unmount(pool, &error));
    g_assert_no_error(error);
    g_autoptr(FerryPool) loaded = ferry_pool_load("ext", "dir", config, storage_dir, &error);
    g_assert_no_error(error);
    g_assert_true(ferry_pool_mount(loaded, &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_mount(loaded, &error));
    g_assert_no_error(error);
    g_assert_true(ferry_pool_volume_exists(pool, FERRY_VOLUME_CONTAINER, "default_c1"));
    g_assert_true(ferry_pool_usage(pool, &used, &total, &error));
    g_assert_no_error(error);

    g_assert_true(ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, "default_c1", &error));
    g_assert_no_error(error);
    storage_scenario_pool_delete(pool);
    /* The user's directory stays, emptied of ferry's directories. */
    g_assert_true(g_file_test(source, G_FILE_TEST_IS_DIR));
    g_autoptr(GDir) left = g_dir_open(source, 0, NULL);
    g_assert_null(g_dir_read_name(left));
}

static void test_dir_pool_source_gone(void)
{
    if (!storage_test_begin())
        return;
    const StorageTestDirs *dirs = storage_test_dirs();
    g_autoptr(GError) error = NULL;
    g_autofree char *source = g_build_filename(dirs->external, "vanishing", NULL);
    g_assert_cmpint(g_mkdir_with_parents(source, 0755), ==, 0);
    g_autoptr(GHashTable) config = storage_test_config("source", source, NULL);
    g_autoptr(FerryPool) pool = create_pool("gone", config);
    g_assert_true(ferry_pool_unmount(pool, &error));
    g_assert_no_error(error);

    /* The disk went away: mount says so, delete forgets the pool. */
    const char *argv[] = {"rm", "-rf", "--", source, NULL};
    g_assert_true(
        g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL));
    g_assert_false(ferry_pool_mount(pool, &error));
    storage_assert_error(error, FERRY_ERROR_NOT_FOUND);
    g_clear_error(&error);
    g_assert_true(ferry_pool_delete(pool, &error));
    g_assert_no_error(error);
    g_assert_false(storage_test_exists(ferry_pool_get_mount_path(pool)));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/storage/dir/pool", test_dir_pool);
    g_test_add_func("/storage/dir/source", test_dir_pool_source);
    g_test_add_func("/storage/dir/source-gone", test_dir_pool_source_gone);
    return g_test_run();
}
