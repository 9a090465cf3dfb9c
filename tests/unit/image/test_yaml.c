/* ferry_yaml_parse / ferry_yaml_emit: typing, errors, hostile documents, Incus-style output, round trips. */
#include "error.h"
#include "yaml.h"

#include <glib/gstdio.h>
#include <string.h>

static json_t *parse_ok(const char *text)
{
    g_autoptr(GError) error = NULL;
    json_t *value = ferry_yaml_parse(text, strlen(text), &error);
    g_assert_no_error(error);
    g_assert_nonnull(value);
    return value;
}

static void assert_json(json_t *value, const char *expected_json)
{
    json_error_t json_error;
    g_autoptr(json_t) expected = json_loads(expected_json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &json_error);
    g_assert_nonnull(expected);
    if (!json_equal(value, expected)) {
        g_autofree char *got = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
        g_error("got %s, expected %s", got, expected_json);
    }
}

static void assert_parse_error(const char *text, const char *fragment)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_t) value = ferry_yaml_parse(text, strlen(text), &error);
    g_assert_null(value);
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    if (strstr(error->message, fragment) == NULL)
        g_error("error \"%s\" lacks \"%s\"", error->message, fragment);
}

static char *emit_ok(json_t *value)
{
    g_autoptr(GError) error = NULL;
    char *text = ferry_yaml_emit(value, &error);
    g_assert_no_error(error);
    g_assert_nonnull(text);
    return text;
}

static void assert_round_trip(json_t *value)
{
    g_autofree char *text = emit_ok(value);
    g_autoptr(GError) error = NULL;
    g_autoptr(json_t) back = ferry_yaml_parse(text, strlen(text), &error);
    if (back == NULL)
        g_error("re-parse of\n%s\nfailed: %s", text, error->message);
    if (!json_equal(value, back)) {
        g_autofree char *want = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
        g_autofree char *got = json_dumps(back, JSON_ENCODE_ANY | JSON_COMPACT);
        g_error("round trip of %s through\n%s\ngave %s", want, text, got);
    }
}

static void test_parse_mapping(void)
{
    g_autoptr(json_t) value = parse_ok("# comment\n"
                                       "name: c1\n"
                                       "architecture: x86_64\n"
                                       "config:\n"
                                       "  limits.cpu: 2\n"
                                       "  image.release: \"22.04\"\n"
                                       "profiles:\n"
                                       "- default\n"
                                       "- web\n"
                                       "devices: {}\n"
                                       "ephemeral: false\n"
                                       "flow: {a: [1, two, {b: null}]}\n");
    assert_json(value, "{\"name\":\"c1\",\"architecture\":\"x86_64\","
                       "\"config\":{\"limits.cpu\":2,\"image.release\":\"22.04\"},"
                       "\"profiles\":[\"default\",\"web\"],\"devices\":{},\"ephemeral\":false,"
                       "\"flow\":{\"a\":[1,\"two\",{\"b\":null}]}}");
    /* keys keep the document's order */
    const char *expected[] = {"name", "architecture", "config", "profiles", "devices", "ephemeral", "flow"};
    guint i = 0;
    const char *key;
    json_t *member;
    json_object_foreach (value, key, member)
        g_assert_cmpstr(key, ==, expected[i++]);
}

static void test_parse_scalars(void)
{
    static const struct {
        const char *yaml;
        const char *json;
    } cases[] = {
        {"v: ~", "null"},          {"v: null", "null"},       {"v: NULL", "null"},
        {"v:", "null"},            {"v: true", "true"},       {"v: false", "false"},
        {"v: True", "\"True\""},   {"v: yes", "\"yes\""},     {"v: on", "\"on\""},
        {"v: 0", "0"},             {"v: -17", "-17"},
        {"v: 9223372036854775807", "9223372036854775807"},
        {"v: 9223372036854775808", "\"9223372036854775808\""}, {"v: 0755", "\"0755\""},
        {"v: -0", "\"-0\""},       {"v: +1", "\"+1\""},       {"v: 0x10", "\"0x10\""},
        {"v: 1.5", "1.5"},         {"v: 22.04", "22.04"},     {"v: 20.10", "\"20.10\""},
        {"v: 1e5", "\"1e5\""},     {"v: .inf", "\".inf\""},   {"v: 1.0", "1.0"},
        {"v: \"true\"", "\"true\""}, {"v: '123'", "\"123\""}, {"v: !!str 123", "\"123\""},
        {"v: !!int 0123", "123"},  {"v: !!float 1", "1.0"},   {"v: !!bool true", "true"},
        {"v: ''", "\"\""},         {"v: \"a\\0b\"", "\"a\\u0000b\""},
        {"v: |\n  l1\n  l2\n", "\"l1\\nl2\\n\""}, {"v: >-\n  f1\n  f2\n", "\"f1 f2\""},
        {"v: héllo wörld", "\"héllo wörld\""},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(json_t) value = parse_ok(cases[i].yaml);
        g_autofree char *expected = g_strdup_printf("{\"v\": %s}", cases[i].json);
        assert_json(value, expected);
    }
}

static void test_parse_empty(void)
{
    const char *empties[] = {"", "\n", "# only a comment\n", "---\n", "~\n", "null\n", "---\n...\n"};
    for (guint i = 0; i < G_N_ELEMENTS(empties); i++) {
        g_autoptr(json_t) value = parse_ok(empties[i]);
        assert_json(value, "{}");
    }
    g_autoptr(json_t) scalar = parse_ok("just text\n");
    assert_json(scalar, "\"just text\"");
    g_autoptr(json_t) list = parse_ok("- 1\n- x\n");
    assert_json(list, "[1, \"x\"]");
}

static void test_parse_errors(void)
{
    assert_parse_error("a: b\n c: d\n", "line 2");
    assert_parse_error("a: [1, 2\n", "Invalid YAML at line");
    assert_parse_error("key: \"unterminated\n",
                       "Invalid YAML at line 2, column 1: while scanning a quoted scalar");
    assert_parse_error("a: 1\na: 2\n", "duplicate mapping key \"a\"");
    assert_parse_error("a: 1\n---\nb: 2\n", "multiple documents");
    assert_parse_error("? [a, b]\n: c\n", "complex mapping keys");
    assert_parse_error("v: !custom x\n", "unsupported tag");
    assert_parse_error("v: !!int abc\n", "invalid value for tag");
    assert_parse_error("v: !!binary aGVsbG8=\n", "unsupported tag");
    assert_parse_error("\t- tab indent\n- x\n", "Invalid YAML");
    assert_parse_error("a: \"\\xZZ\"\n", "Invalid YAML");

    /* error positions are 1-based */
    g_autoptr(GError) error = NULL;
    g_autoptr(json_t) value = ferry_yaml_parse("a: 1\nb: 2\na: 3\n", 15, &error);
    g_assert_null(value);
    g_assert_cmpstr(error->message, ==, "Invalid YAML at line 3, column 1: duplicate mapping key \"a\"");

    /* invalid UTF-8 and embedded NUL bytes */
    g_clear_error(&error);
    g_assert_null(ferry_yaml_parse("a: \xff\xfe\n", 7, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    g_clear_error(&error);
    g_assert_null(ferry_yaml_parse("a: b\0c\n", 7, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
}

static void test_parse_hostile(void)
{
    assert_parse_error("a: &x 1\nb: *x\n", "anchors and aliases are not supported");
    assert_parse_error("a: &x [1, 2]\n", "anchors and aliases are not supported");
    assert_parse_error("a: *x\n", "Invalid YAML");

    /* billion laughs */
    assert_parse_error("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
                       "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                       "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                       "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n",
                       "anchors and aliases are not supported");

    /* 64 levels are fine, 65 are not, flow or block */
    g_autoptr(GString) ok = g_string_new(NULL);
    g_autoptr(GString) deep = g_string_new(NULL);
    for (int i = 0; i < 64; i++)
        g_string_append_c(ok, '[');
    for (int i = 0; i < 64; i++)
        g_string_append_c(ok, ']');
    g_autoptr(json_t) nested = parse_ok(ok->str);
    g_assert_true(json_is_array(nested));
    for (int i = 0; i < 65; i++)
        g_string_append_c(deep, '[');
    for (int i = 0; i < 65; i++)
        g_string_append_c(deep, ']');
    assert_parse_error(deep->str, "nested deeper than 64");

    g_string_truncate(deep, 0);
    for (int i = 0; i < 65; i++) {
        for (int j = 0; j < i; j++)
            g_string_append(deep, "  ");
        g_string_append_printf(deep, "k%d:\n", i);
    }
    for (int j = 0; j < 65; j++)
        g_string_append(deep, "  ");
    g_string_append(deep, "x: 1\n");
    assert_parse_error(deep->str, "nested deeper than 64");

    /* a megabyte of opening brackets fails fast instead of recursing */
    g_autofree char *brackets = g_strnfill(1024 * 1024, '[');
    assert_parse_error(brackets, "nested deeper than 64");
}

static void test_parse_file(void)
{
    g_autoptr(GError) error = NULL;
    g_assert_null(ferry_yaml_parse_file("/nonexistent/ferry.yaml", &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND);
    g_clear_error(&error);

    g_autofree char *dir = g_dir_make_tmp("ferry-yaml-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "f.yaml", NULL);
    g_assert_true(g_file_set_contents(path, "a: 1\n", -1, NULL));
    g_autoptr(json_t) value = ferry_yaml_parse_file(path, &error);
    g_assert_no_error(error);
    assert_json(value, "{\"a\": 1}");
    g_assert_true(g_file_set_contents(path, "a: [\n", -1, NULL));
    g_assert_null(ferry_yaml_parse_file(path, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    g_assert_true(strstr(error->message, path) != NULL);
    g_unlink(path);
    g_rmdir(dir);
}

static void test_emit_incus_style(void)
{
    g_autoptr(json_t) value = json_loads("{\"architecture\":\"x86_64\","
                                         "\"config\":{\"image.os\":\"Debian\",\"image.release\":\"12\","
                                         "\"image.version\":\"22.04\",\"boot.autostart\":\"true\","
                                         "\"limits.memory\":\"512MiB\",\"user.note\":\"a: b\","
                                         "\"user.script\":\"#!/bin/sh\\necho hi\\n\",\"user.empty\":\"\"},"
                                         "\"devices\":{},\"ephemeral\":false,\"profiles\":[\"default\"],"
                                         "\"stateful\":false,\"description\":\"\",\"count\":3,"
                                         "\"ratio\":0.5,\"nothing\":null,\"list\":[]}",
                                         0, NULL);
    g_assert_nonnull(value);
    g_autofree char *text = emit_ok(value);
    g_assert_cmpstr(text, ==,
                    "architecture: x86_64\n"
                    "config:\n"
                    "  image.os: Debian\n"
                    "  image.release: \"12\"\n"
                    "  image.version: \"22.04\"\n"
                    "  boot.autostart: \"true\"\n"
                    "  limits.memory: 512MiB\n"
                    "  user.note: 'a: b'\n"
                    "  user.script: |\n"
                    "    #!/bin/sh\n"
                    "    echo hi\n"
                    "  user.empty: \"\"\n"
                    "devices: {}\n"
                    "ephemeral: false\n"
                    "profiles:\n"
                    "- default\n"
                    "stateful: false\n"
                    "description: \"\"\n"
                    "count: 3\n"
                    "ratio: 0.5\n"
                    "nothing: null\n"
                    "list: []\n");
    assert_round_trip(value);

    g_autoptr(json_t) empty = json_object();
    g_autofree char *empty_text = emit_ok(empty);
    g_assert_cmpstr(empty_text, ==, "{}\n");

    /* long strings are not folded */
    g_autofree char *long_string = g_strnfill(300, 'x');
    g_autoptr(json_t) long_value = json_pack("{s:s}", "k", long_string);
    g_autofree char *long_text = emit_ok(long_value);
    g_autofree char *expected_long = g_strdup_printf("k: %s\n", long_string);
    g_assert_cmpstr(long_text, ==, expected_long);
}

static const char *const tricky_strings[] = {
    "", " ", "true", "false", "True", "yes", "No", "ON", "off", "y", "n", "null", "Null", "~", "123", "-5",
    "0755", "0x1F", "0o17", "0b101", "1_000", "12:30", "1:20:30", "22.04", "20.10", "1e5", "1.5e+10",
    ".5", "-.inf", ".NaN", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "<<", "=", "a: b", "a:b",
    "- x", "-", "?", "? x", ":", "#c", "a #c", "a# c", "&anchor", "*alias", "!tag", "%x", "@x", "`x",
    "'q'", "\"dq\"", "{a}", "[a]", "a, b", "|", ">", "line\n", "multi\nline", "multi\nline\n",
    "trailing space \nx", "\n", "\n\n", "x\n\n", " leading", "trailing ", "tab\there", "\ttab",
    "ünïcödé ✓", "\x01\x02 control", "cr\r\nlf", "back\\slash", "\xc2\x85 next line", "\xe2\x80\xa8 ls",
    "\xef\xbb\xbf bom", "---", "...", "--- x", "x ---", "a\"b'c", "  indented\n  block\n",
};

static void test_round_trip_strings(void)
{
    for (guint i = 0; i < G_N_ELEMENTS(tricky_strings); i++) {
        const char *s = tricky_strings[i];
        g_autoptr(json_t) as_value = json_pack("{s:s}", "key", s);
        assert_round_trip(as_value);
        g_autoptr(json_t) as_key = json_pack("{s:s}", s, "value");
        assert_round_trip(as_key);
        g_autoptr(json_t) in_list = json_pack("[s,{s:[s]}]", s, s, s);
        assert_round_trip(in_list);
        g_autoptr(json_t) top = json_string(s);
        if (!g_str_equal(s, "null") && !g_str_equal(s, "~") && *s != '\0')
            assert_round_trip(top);
    }
    g_autoptr(json_t) nul = json_pack("{s:s#}", "k", "a\0b", (int)3);
    assert_round_trip(nul);
}

static void test_round_trip_numbers(void)
{
    const double reals[] = {0.1, 1.0, -2.5, 1e100, 1e-300, 123456789.123456789, 5e-324, -0.0, 3.0e20};
    for (guint i = 0; i < G_N_ELEMENTS(reals); i++) {
        g_autoptr(json_t) value = json_pack("{s:f}", "r", reals[i]);
        assert_round_trip(value);
    }
    const json_int_t ints[] = {0, 1, -1, G_MAXINT64, G_MININT64, 1000000};
    for (guint i = 0; i < G_N_ELEMENTS(ints); i++) {
        g_autoptr(json_t) value = json_pack("{s:I}", "i", ints[i]);
        assert_round_trip(value);
    }
    g_autoptr(json_t) bools = json_pack("[b,b,n]", 1, 0);
    assert_round_trip(bools);
}

/* Random documents over the tricky strings: emit and parse back. */
static json_t *random_value(GRand *rand, int depth)
{
    int kind = g_rand_int_range(rand, 0, depth > 6 ? 5 : 8);
    switch (kind) {
    case 0:
        return json_string(tricky_strings[g_rand_int_range(rand, 0, G_N_ELEMENTS(tricky_strings))]);
    case 1:
        return json_integer(g_rand_int_range(rand, -100000, 100000));
    case 2:
        return json_real(g_rand_double_range(rand, -1e6, 1e6));
    case 3:
        return json_boolean(g_rand_boolean(rand));
    case 4:
        return json_null();
    case 5: {
        json_t *array = json_array();
        int n = g_rand_int_range(rand, 0, 4);
        for (int i = 0; i < n; i++)
            json_array_append_new(array, random_value(rand, depth + 1));
        return array;
    }
    default: {
        json_t *object = json_object();
        int n = g_rand_int_range(rand, 0, 4);
        for (int i = 0; i < n; i++) {
            const char *key = tricky_strings[g_rand_int_range(rand, 0, G_N_ELEMENTS(tricky_strings))];
            json_object_set_new(object, key, random_value(rand, depth + 1));
        }
        return object;
    }
    }
}

static void test_round_trip_random(void)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(20240501);
    for (int i = 0; i < 3000; i++) {
        g_autoptr(json_t) value = json_object();
        json_object_set_new(value, "v", random_value(rand, 0));
        assert_round_trip(value);
    }
}

static void test_emit_depth(void)
{
    g_autoptr(json_t) root = json_array();
    json_t *current = root;
    for (int i = 1; i < 64; i++) {
        json_t *child = json_array();
        json_array_append_new(current, child);
        current = child;
    }
    assert_round_trip(root);
    json_array_append_new(current, json_array());
    g_autoptr(GError) error = NULL;
    g_autofree char *text = ferry_yaml_emit(root, &error);
    g_assert_null(text);
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
}

static void test_scalar_text(void)
{
    g_autoptr(json_t) value = parse_ok("a: 22.04\nb: 12\nc: true\nd:\ne: x\nf: [1]\n");
    const char *expected[] = {"22.04", "12", "true", "", "x", NULL};
    const char *keys[] = {"a", "b", "c", "d", "e", "f"};
    for (guint i = 0; i < G_N_ELEMENTS(keys); i++) {
        g_autofree char *text = ferry_yaml_scalar_text(json_object_get(value, keys[i]));
        g_assert_cmpstr(text, ==, expected[i]);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/yaml/parse/mapping", test_parse_mapping);
    g_test_add_func("/yaml/parse/scalars", test_parse_scalars);
    g_test_add_func("/yaml/parse/empty", test_parse_empty);
    g_test_add_func("/yaml/parse/errors", test_parse_errors);
    g_test_add_func("/yaml/parse/hostile", test_parse_hostile);
    g_test_add_func("/yaml/parse/file", test_parse_file);
    g_test_add_func("/yaml/emit/incus-style", test_emit_incus_style);
    g_test_add_func("/yaml/emit/depth", test_emit_depth);
    g_test_add_func("/yaml/round-trip/strings", test_round_trip_strings);
    g_test_add_func("/yaml/round-trip/numbers", test_round_trip_numbers);
    g_test_add_func("/yaml/round-trip/random", test_round_trip_random);
    g_test_add_func("/yaml/scalar-text", test_scalar_text);
    return g_test_run();
}
