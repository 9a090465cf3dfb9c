/* The CLI's client configuration: config.yml, remotes, [remote:]name[/snapshot], trust tokens. */
#include "conf.h"
#include "json.h"

#include <glib/gstdio.h>
#include <string.h>

#define FERRY_ERROR_QUARK g_quark_from_static_string("ferry-error-quark")

static const char *const sample_yaml = "default-remote: b\n"
                                       "remotes:\n"
                                       "  b:\n"
                                       "    addr: https://10.0.0.2:8443\n"
                                       "    protocol: incus\n"
                                       "    public: false\n"
                                       "    project: web\n"
                                       "aliases:\n"
                                       "  ll: list -c ns\n";

static void test_default_config(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CliConfig) config = cli_config_load_text("/nonexistent", NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(cli_config_default_remote(config), ==, "local");
    json_t *local = cli_config_remote(config, "local");
    g_assert_nonnull(local);
    g_assert_cmpstr(ferry_json_get_string(local, "addr"), ==, "unix://");
    g_assert_true(cli_config_remote_is_static("local"));
    g_assert_false(cli_config_remote_is_static("b"));
}

static void test_round_trip(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("ferry-conf-XXXXXX", &error);
    g_autofree char *nested = g_build_filename(dir, "sub", NULL);
    g_autoptr(CliConfig) config = cli_config_load_text(nested, sample_yaml, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(cli_config_default_remote(config), ==, "b");
    g_assert_nonnull(cli_config_remote(config, "local"));
    g_assert_true(cli_config_save(config, &error));
    g_assert_no_error(error);

    g_autoptr(CliConfig) again = cli_config_load(nested, &error);
    g_assert_no_error(error);
    g_assert_true(json_equal(config->doc, again->doc));
    json_t *b = cli_config_remote(again, "b");
    g_assert_cmpstr(ferry_json_get_string(b, "project"), ==, "web");
    g_assert_false(ferry_json_get_bool(b, "public", TRUE));
    /* Keys ferry doesn't use survive. */
    g_assert_cmpstr(ferry_json_get_string(json_object_get(again->doc, "aliases"), "ll"), ==, "list -c ns");

    g_autofree char *path = g_build_filename(nested, "config.yml", NULL);
    g_unlink(path);
    g_rmdir(nested);
    g_rmdir(dir);
}

static void test_bad_config(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CliConfig) config = cli_config_load_text("/x", "remotes:\n  b:\n    protocol: incus\n", &error);
    g_assert_null(config);
    g_assert_error(error, FERRY_ERROR_QUARK, 400);
}

static void test_default_remote_fallback(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CliConfig) config = cli_config_load_text("/x", "default-remote: gone\n", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(cli_config_default_remote(config), ==, "local");
}

static void test_parse_remote(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CliConfig) config = cli_config_load_text("/x", sample_yaml, &error);
    static const struct {
        const char *raw, *remote, *name;
    } cases[] = {
        {"c1", "b", "c1"},
        {"b:c1", "b", "c1"},
        {"local:c1", "local", "c1"},
        {"b:", "b", ""},
        {"b:c1/snap0", "b", "c1/snap0"},
        {"c1/snap:0", "b", "c1/snap:0"},
        {"", "b", ""},
    };
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *remote = NULL, *name = NULL;
        g_assert_true(cli_config_parse_remote(config, cases[i].raw, &remote, &name, &error));
        g_assert_no_error(error);
        g_assert_cmpstr(remote, ==, cases[i].remote);
        g_assert_cmpstr(name, ==, cases[i].name);
    }
    g_autofree char *remote = NULL, *name = NULL;
    g_assert_false(cli_config_parse_remote(config, "nope:c1", &remote, &name, &error));
    g_assert_error(error, FERRY_ERROR_QUARK, 404);
    g_assert_cmpstr(error->message, ==, "The remote \"nope\" doesn't exist");
}

static void test_split_snapshot(void)
{
    g_autofree char *instance = NULL, *snapshot = NULL;
    cli_split_snapshot("c1/snap0", &instance, &snapshot);
    g_assert_cmpstr(instance, ==, "c1");
    g_assert_cmpstr(snapshot, ==, "snap0");
    g_autofree char *instance2 = NULL, *snapshot2 = NULL;
    cli_split_snapshot("c1", &instance2, &snapshot2);
    g_assert_cmpstr(instance2, ==, "c1");
    g_assert_null(snapshot2);
}

static void test_unix_socket_path(void)
{
    g_setenv("FERRY_DIR", "/srv/ferry", TRUE);
    g_autofree char *bare = cli_unix_socket_path("unix://");
    g_assert_cmpstr(bare, ==, "/srv/ferry/unix.socket");
    g_autofree char *explicit_path = cli_unix_socket_path("unix:///run/x.socket");
    g_assert_cmpstr(explicit_path, ==, "/run/x.socket");
    g_unsetenv("FERRY_DIR");
    g_autofree char *fallback = cli_unix_socket_path("unix://");
    g_assert_cmpstr(fallback, ==, "/var/lib/ferry/unix.socket");
}

/* A token as `incus config trust add` printed it (Incus 6.0.4, this machine). */
static const char *const incus_token = "eyJjbGllbnRfbmFtZSI6ImluY3VzbWFkZSIsImZpbmdlcnByaW50IjoiYTIyYTlkMzdkY"
                                       "zhlMzAwYjllOWJhY2IzNDg3Mzg5ZTI3YzM5NzMzN2"
                                       "RjNGY2ODEzZmJmYzgwNTg5ZDVlM2U1OCIsImFkZHJlc3NlcyI6WyIxMjcuMC4wLjE6ODQ"
                                       "5OSJdLCJzZWNyZXQiOiIwODQ5MWIwZTI4Yzc1ZDUx"
                                       "YTgyYmEwMGEzZTk0NDQ3MDc0Y2E4MzQ2ODJkMmIxN2EzNGRhMjZkZTllODY4NDdkIiwiZ"
                                       "XhwaXJlc19hdCI6IjAwMDEtMDEtMDFUMDA6MDA6MD"
                                       "BaIn0=";

static void test_token_decode(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_t) token = cli_token_decode(incus_token, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(ferry_json_get_string(token, "client_name"), ==, "incusmade");
    g_assert_cmpstr(ferry_json_get_string(token, "fingerprint"), ==,
                    "a22a9d37dc8e300b9e9bacb3487389e27c397337dc4f6813fbfc80589d5e3e58");
    g_assert_cmpstr(json_string_value(json_array_get(json_object_get(token, "addresses"), 0)), ==,
                    "127.0.0.1:8499");
    g_assert_cmpstr(ferry_json_get_string(token, "secret"), ==,
                    "08491b0e28c75d51a82ba00a3e94447074ca834682d2b17a34da26de9e86847d");

    /* Whitespace around a pasted token is fine. */
    g_autofree char *padded = g_strdup_printf("  %s\n", incus_token);
    g_autoptr(json_t) again = cli_token_decode(padded, &error);
    g_assert_no_error(error);
}

static void test_token_encode_matches_incus(void)
{
    g_autoptr(json_t) addresses = json_pack("[s]", "127.0.0.1:8499");
    g_autofree char *token =
        cli_token_encode("incusmade", "a22a9d37dc8e300b9e9bacb3487389e27c397337dc4f6813fbfc80589d5e3e58",
                         addresses, "08491b0e28c75d51a82ba00a3e94447074ca834682d2b17a34da26de9e86847d", NULL);
    g_assert_cmpstr(token, ==, incus_token);
}

static void test_token_invalid(void)
{
    static const char *const bad[] = {
        "",
        "not a token!",
        "aGVsbG8=",                                     /* "hello" */
        "eyJzZWNyZXQiOiJ4In0=",                         /* {"secret":"x"} */
        "eyJzZWNyZXQiOiJ4IiwiZmluZ2VycHJpbnQiOiJ5In0=", /* no addresses */
        "https://127.0.0.1:8443",
    };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) token = cli_token_decode(bad[i], &error);
        g_assert_null(token);
        g_assert_error(error, FERRY_ERROR_QUARK, 400);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/cli_conf/default", test_default_config);
    g_test_add_func("/cli_conf/round-trip", test_round_trip);
    g_test_add_func("/cli_conf/bad", test_bad_config);
    g_test_add_func("/cli_conf/default-remote-fallback", test_default_remote_fallback);
    g_test_add_func("/cli_conf/parse-remote", test_parse_remote);
    g_test_add_func("/cli_conf/split-snapshot", test_split_snapshot);
    g_test_add_func("/cli_conf/unix-socket-path", test_unix_socket_path);
    g_test_add_func("/cli_conf/token/decode", test_token_decode);
    g_test_add_func("/cli_conf/token/encode", test_token_encode_matches_incus);
    g_test_add_func("/cli_conf/token/invalid", test_token_invalid);
    return g_test_run();
}
