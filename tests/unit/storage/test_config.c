/* Pool config validation and Incus size syntax; no root needed. */
#include "storage_test.h"

#include "error.h"
#include "pool.h"

static void test_driver_names(void)
{
    const char *const *names = ferry_pool_driver_names();
    g_assert_cmpstr(names[0], ==, "dir");
    g_assert_cmpstr(names[1], ==, "btrfs");
    g_assert_null(names[2]);
}

static void test_parse_size(void)
{
    static const struct {
        const char *text;
        guint64 bytes;
    } good[] = {
        {"", 0},
        {"0", 0},
        {"1048576", 1048576},
        {"512B", 512},
        {"10 bytes", 10},
        {"500MiB", 500ULL << 20},
        {"5GiB", 5ULL << 30},
        {"2TiB", 2ULL << 40},
        {"10GB", 10000000000ULL},
        {"3kB", 3000},
        {"7EiB", 7ULL << 60},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
        g_autoptr(GError) error = NULL;
        guint64 bytes = 1;
        g_assert_true(ferry_pool_parse_size(good[i].text, &bytes, &error));
        g_assert_no_error(error);
        g_assert_cmpuint(bytes, ==, good[i].bytes);
    }

    static const char *const bad[] = {
        "abc", "GiB", "5 GiB", "5gib", "-5", "5.5GiB", "5GiBx", "8EiB", "99999999999999999999"};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) error = NULL;
        guint64 bytes;
        g_assert_false(ferry_pool_parse_size(bad[i], &bytes, &error));
        storage_assert_error(error, FERRY_ERROR_INVALID);
    }
}

static void test_validate_ok(void)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_pool_validate_config("dir", NULL, &error));
    g_assert_no_error(error);

    g_autoptr(GHashTable) dir =
        storage_test_config("source", "/srv/pool", "rsync.bwlimit", "10MiB", "rsync.compression", "false",
                            "volume.size", "10GiB", "volume.security.shifted", "yes", "user.note", "anything",
                            "volume.snapshots.schedule", "@daily", NULL);
    g_assert_true(ferry_pool_validate_config("dir", dir, &error));
    g_assert_no_error(error);

    g_autoptr(GHashTable) btrfs =
        storage_test_config("size", "5GiB", "btrfs.mount_options", "compress=zstd,noatime", "source", "",
                            "source.wipe", "true", NULL);
    g_assert_true(ferry_pool_validate_config("btrfs", btrfs, &error));
    g_assert_no_error(error);
}

static void test_validate_errors(void)
{
    static const struct {
        const char *driver;
        const char *key;
        const char *value;
        const char *message;
    } cases[] = {
        {"dir", "bogus", "1", "Invalid pool configuration key \"bogus\""},
        {"dir", "size", "5GiB", "Invalid pool configuration key \"size\""}, /* dir pools have no size */
        {"dir", "btrfs.mount_options", "x", "Invalid pool configuration key \"btrfs.mount_options\""},
        {"btrfs", "size", "abc", "Invalid value for pool configuration key \"size\": Invalid size \"abc\""},
        {"btrfs", "volume.size", "12 parsecs", "Invalid value for pool configuration key \"volume.size\""},
        {"dir", "rsync.compression", "maybe",
         "Invalid value for pool configuration key \"rsync.compression\""},
        {"dir", "volume.initial.uid", "root",
         "Invalid value for pool configuration key \"volume.initial.uid\""},
        {"btrfs", "source", "relative/path", "Invalid value for pool configuration key \"source\""},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GHashTable) config = storage_test_config(cases[i].key, cases[i].value, NULL);
        g_autoptr(GError) error = NULL;
        g_assert_false(ferry_pool_validate_config(cases[i].driver, config, &error));
        storage_assert_error(error, FERRY_ERROR_INVALID);
        if (!g_str_has_prefix(error->message, cases[i].message))
            g_error("case %zu: message \"%s\" does not start with \"%s\"", i, error->message,
                    cases[i].message);
    }

    g_autoptr(GError) error = NULL;
    g_assert_false(ferry_pool_validate_config("zfs", NULL, &error));
    storage_assert_error(error, FERRY_ERROR_INVALID);
    g_assert_cmpstr(error->message, ==, "Unknown storage driver \"zfs\"");
}

static void test_load_and_paths(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GHashTable) config = storage_test_config("source", "/nonexistent/pool", NULL);
    g_autoptr(FerryPool) pool =
        ferry_pool_load("p1", "dir", config, "/nonexistent/ferry/storage-pools/p1/", &error);
    g_assert_no_error(error);
    g_assert_nonnull(pool);
    g_assert_cmpstr(ferry_pool_get_name(pool), ==, "p1");
    g_assert_cmpstr(ferry_pool_get_driver(pool), ==, "dir");
    g_assert_cmpstr(ferry_pool_get_mount_path(pool), ==, "/nonexistent/ferry/storage-pools/p1");
    g_assert_cmpstr(g_hash_table_lookup(ferry_pool_get_config(pool), "source"), ==, "/nonexistent/pool");

    g_autofree char *vol = ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, "default_c1");
    g_assert_cmpstr(vol, ==, "/nonexistent/ferry/storage-pools/p1/containers/default_c1");
    g_autofree char *img = ferry_pool_volume_path(pool, FERRY_VOLUME_IMAGE, "abc123");
    g_assert_cmpstr(img, ==, "/nonexistent/ferry/storage-pools/p1/images/abc123");
    g_autofree char *custom = ferry_pool_volume_path(pool, FERRY_VOLUME_CUSTOM, "data");
    g_assert_cmpstr(custom, ==, "/nonexistent/ferry/storage-pools/p1/custom/data");
    g_autofree char *snap = ferry_pool_snapshot_path(pool, FERRY_VOLUME_CONTAINER, "default_c1", "snap0");
    g_assert_cmpstr(snap, ==, "/nonexistent/ferry/storage-pools/p1/containers-snapshots/default_c1/snap0");
    g_autofree char *csnap = ferry_pool_snapshot_path(pool, FERRY_VOLUME_CUSTOM, "data", "s");
    g_assert_cmpstr(csnap, ==, "/nonexistent/ferry/storage-pools/p1/custom-snapshots/data/s");

    g_assert_null(ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, "../etc"));
    g_assert_null(ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, ".."));
    g_assert_null(ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, ""));
    g_assert_null(ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, ".ferry-tmp-x"));
    g_assert_null(ferry_pool_snapshot_path(pool, FERRY_VOLUME_IMAGE, "abc", "s"));
    g_assert_false(ferry_pool_volume_exists(pool, FERRY_VOLUME_CONTAINER, "default_c1"));

    /* Name checks come before any I/O. */
    g_assert_false(ferry_pool_create_volume(pool, FERRY_VOLUME_CONTAINER, "a/b", &error));
    storage_assert_error(error, FERRY_ERROR_INVALID);
    g_clear_error(&error);
    g_assert_false(ferry_pool_create_snapshot(pool, FERRY_VOLUME_IMAGE, "abc", "s", &error));
    storage_assert_error(error, FERRY_ERROR_INVALID);
    g_clear_error(&error);

    g_autoptr(FerryPool) bad = ferry_pool_load("p/1", "dir", NULL, "/x", &error);
    g_assert_null(bad);
    storage_assert_error(error, FERRY_ERROR_INVALID);
    g_clear_error(&error);
    g_autoptr(FerryPool) bad_driver = ferry_pool_load("p1", "lvm", NULL, "/x", &error);
    g_assert_null(bad_driver);
    storage_assert_error(error, FERRY_ERROR_INVALID);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/storage/config/driver-names", test_driver_names);
    g_test_add_func("/storage/config/parse-size", test_parse_size);
    g_test_add_func("/storage/config/validate-ok", test_validate_ok);
    g_test_add_func("/storage/config/validate-errors", test_validate_errors);
    g_test_add_func("/storage/config/load-and-paths", test_load_and_paths);
    return g_test_run();
}
