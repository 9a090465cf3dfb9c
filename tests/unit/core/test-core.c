/* Unit tests of the daemon core that need no daemon: database, JSON helpers, names, routing. */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "db.h"
#include "error.h"
#include "json.h"
#include "names.h"
#include "router.h"

static char *temp_dir(void)
{
    g_autoptr(GError) error = NULL;
    char *dir = g_dir_make_tmp("ferry-core-XXXXXX", &error);
    g_assert_no_error(error);
    return dir;
}

static void remove_tree(const char *dir)
{
    g_autofree char *command = g_strdup_printf("rm -rf '%s'", dir);
    g_assert_cmpint(system(command), ==, 0);
}

static void test_db_crud(void)
{
    g_autofree char *dir = temp_dir();
    g_autofree char *path = g_build_filename(dir, "db", "ferry.db", NULL);
    g_autoptr(GError) error = NULL;
    FerryDb *db = ferry_db_open(path, &error);
    g_assert_no_error(error);
    g_assert_cmpint(ferry_db_schema_version(db), ==, ferry_db_schema_latest());

    g_autoptr(json_t) doc = json_pack("{s:s}", "description", "first");
    g_assert_true(ferry_db_create(db, FERRY_KIND_INSTANCE, "default", "", "c1", doc, &error));
    g_assert_false(ferry_db_create(db, FERRY_KIND_INSTANCE, "default", "", "c1", doc, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT);
    g_assert_cmpstr(error->message, ==, "Instance \"c1\" already exists");
    g_clear_error(&error);
    /* Same name in another project is a different instance. */
    g_assert_true(ferry_db_create(db, FERRY_KIND_INSTANCE, "other", "", "c1", doc, &error));

    g_autoptr(json_t) snap = json_object();
    g_assert_true(ferry_db_create(db, FERRY_KIND_SNAPSHOT, "default", "c1", "snap0", snap, &error));
    g_assert_true(ferry_db_rename(db, FERRY_KIND_INSTANCE, "default", "", "c1", "c2", &error));
    /* Renaming an instance carries its snapshots. */
    g_assert_true(ferry_db_exists(db, FERRY_KIND_SNAPSHOT, "default", "c2", "snap0"));
    g_assert_false(ferry_db_exists(db, FERRY_KIND_SNAPSHOT, "default", "c1", "snap0"));

    g_assert_null(ferry_db_get(db, FERRY_KIND_INSTANCE, "default", "", "c1", &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND);
    g_clear_error(&error);

    g_autoptr(json_t) list = ferry_db_list(db, FERRY_KIND_INSTANCE, NULL, "");
    g_assert_cmpint(json_array_size(list), ==, 2);
    g_assert_true(ferry_db_delete(db, FERRY_KIND_INSTANCE, "default", "", "c2", &error));
    g_assert_false(ferry_db_exists(db, FERRY_KIND_SNAPSHOT, "default", "c2", "snap0"));

    g_autoptr(json_t) with_profiles = json_pack("{s:[s, s]}", "profiles", "default", "web");
    g_assert_true(ferry_db_create(db, FERRY_KIND_INSTANCE, "default", "", "w1", with_profiles, &error));
    g_autoptr(GPtrArray) users = ferry_db_instances_using_profile(db, "default", "web");
    g_assert_cmpuint(users->len, ==, 1);
    g_assert_cmpstr(users->pdata[0], ==, "w1");

    g_assert_true(ferry_db_config_set(db, "core.https_address", "127.0.0.1:8443", &error));
    g_autofree char *address = ferry_db_config_get(db, "core.https_address");
    g_assert_cmpstr(address, ==, "127.0.0.1:8443");
    ferry_db_close(db);

    /* Reopening keeps the data and does not re-run schema updates. */
    db = ferry_db_open(path, &error);
    g_assert_no_error(error);
    g_assert_true(ferry_db_exists(db, FERRY_KIND_INSTANCE, "other", "", "c1"));
    ferry_db_close(db);
    remove_tree(dir);
}

static void test_db_refuses_newer_schema(void)
{
    g_autofree char *dir = temp_dir();
    g_autofree char *path = g_build_filename(dir, "ferry.db", NULL);
    g_autoptr(GError) error = NULL;
    FerryDb *db = ferry_db_open(path, &error);
    g_assert_no_error(error);
    ferry_db_close(db);
    g_autofree char *command = g_strdup_printf("sqlite3 '%s' 'PRAGMA user_version = 999'", path);
    if (system(command) != 0) {
        g_test_skip("sqlite3 CLI not available");
        remove_tree(dir);
        return;
    }
    g_assert_null(ferry_db_open(path, &error));
    g_assert_nonnull(strstr(error->message, "newer"));
    remove_tree(dir);
}

static void test_sizes(void)
{
    gint64 bytes = 0;
    g_assert_true(ferry_parse_size("512MiB", &bytes));
    g_assert_cmpint(bytes, ==, 512LL << 20);
    g_assert_true(ferry_parse_size("1GB", &bytes));
    g_assert_cmpint(bytes, ==, 1000000000LL);
    g_assert_true(ferry_parse_size("4096", &bytes));
    g_assert_cmpint(bytes, ==, 4096);
    g_assert_false(ferry_parse_size("abc", &bytes));
    g_assert_false(ferry_parse_size("12XB", &bytes));
    g_assert_false(ferry_parse_size("", &bytes));
    g_assert_false(ferry_parse_size("-5MiB", &bytes));
}

static void test_secrets(void)
{
    g_autofree char *a = ferry_random_secret();
    g_autofree char *b = ferry_random_secret();
    g_assert_cmpuint(strlen(a), ==, 64);
    g_assert_cmpstr(a, !=, b);
    g_assert_true(ferry_secret_equal(a, a));
    g_assert_false(ferry_secret_equal(a, b));
    g_assert_false(ferry_secret_equal(a, "short"));
    g_assert_false(ferry_secret_equal(a, NULL));
}

static void test_names(void)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_validate_instance_name("c1", &error));
    g_assert_true(ferry_validate_instance_name("web-01", &error));
    const char *bad[] = {"", "1abc", "-a", "a-", "a_b", "a.b", "a/b",
                         "a234567890123456789012345678901234567890123456789012345678901234"};
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_assert_false(ferry_validate_instance_name(bad[i], &error));
        g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
        g_clear_error(&error);
    }
    g_assert_true(ferry_validate_snapshot_name("snap0", &error));
    g_assert_false(ferry_validate_snapshot_name("a/b", &error));
    g_clear_error(&error);
    g_assert_false(ferry_validate_entity_name("profile", "..", &error));
    g_clear_error(&error);
    g_assert_false(ferry_validate_entity_name("profile", "has space", &error));
    g_clear_error(&error);
}

static void test_routes(void)
{
    g_autoptr(GHashTable) params = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    gboolean known = FALSE;
    const FerryRoute *route = ferry_router_match("GET", "/1.0/instances/c1/snapshots/s%2F0", params, &known);
    g_assert_nonnull(route);
    g_assert_cmpstr(g_hash_table_lookup(params, "name"), ==, "c1");
    g_assert_cmpstr(g_hash_table_lookup(params, "snapshot"), ==, "s/0");
    /* The literal "aliases" route wins over the fingerprint capture. */
    g_hash_table_remove_all(params);
    route = ferry_router_match("GET", "/1.0/images/aliases", params, &known);
    g_assert_cmpstr(route->pattern, ==, "/1.0/images/aliases");
    /* Wrong method on a known path vs unknown path. */
    g_assert_null(ferry_router_match("DELETE", "/1.0", params, &known));
    g_assert_true(known);
    g_assert_null(ferry_router_match("GET", "/1.0/nothing", params, &known));
    g_assert_false(known);
    /* Only GET /1.0, the websocket (secret) and token redemption are open to untrusted clients. */
    route = ferry_router_match("GET", "/1.0", params, &known);
    g_assert_true(route->allow_untrusted);
    route = ferry_router_match("GET", "/1.0/instances", params, &known);
    g_assert_false(route->allow_untrusted);
    g_assert_true(ferry_router_is_upload("POST", "/1.0/images", "application/octet-stream"));
    g_assert_false(ferry_router_is_upload("POST", "/1.0/images", "application/json"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/core/db/crud", test_db_crud);
    g_test_add_func("/core/db/newer-schema", test_db_refuses_newer_schema);
    g_test_add_func("/core/json/sizes", test_sizes);
    g_test_add_func("/core/json/secrets", test_secrets);
    g_test_add_func("/core/names", test_names);
    g_test_add_func("/core/router", test_routes);
    return g_test_run();
}
