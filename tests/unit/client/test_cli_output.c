/* List output as Incus renders it, progress lines and sizes. */
#include "list.h"
#include "output.h"
#include "cli.h"

#include "json.h"

#include <string.h>

static GPtrArray *sample_rows(void)
{
    GPtrArray *rows = cli_rows_new();
    cli_rows_add(rows, "grand-puffin", "STOPPED", "", "", "CONTAINER", "0", NULL);
    cli_rows_add(rows, "c1", "RUNNING", "", "", "CONTAINER", "0", NULL);
    cli_rows_sort(rows);
    return rows;
}

static const char *const list_headers[] = {"NAME", "STATE", "IPV4", "IPV6", "TYPE", "SNAPSHOTS", NULL};

/* Both expectations are `incus list` output (6.0.4) for the same two instances. */
static void test_table(void)
{
    g_autoptr(GPtrArray) rows = sample_rows();
    g_autoptr(GError) error = NULL;
    g_autofree char *text = cli_render_list(NULL, list_headers, rows, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(text, ==,
                    "+--------------+---------+------+------+-----------+-----------+\n"
                    "|     NAME     |  STATE  | IPV4 | IPV6 |   TYPE    | SNAPSHOTS |\n"
                    "+--------------+---------+------+------+-----------+-----------+\n"
                    "| c1           | RUNNING |      |      | CONTAINER | 0         |\n"
                    "+--------------+---------+------+------+-----------+-----------+\n"
                    "| grand-puffin | STOPPED |      |      | CONTAINER | 0         |\n"
                    "+--------------+---------+------+------+-----------+-----------+\n");
}

static void test_compact(void)
{
    g_autoptr(GPtrArray) rows = sample_rows();
    g_autoptr(GError) error = NULL;
    g_autofree char *text = cli_render_list("compact", list_headers, rows, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(text, ==,
                    "      NAME       STATE   IPV4  IPV6    TYPE     SNAPSHOTS  \n"
                    "  c1            RUNNING              CONTAINER  0          \n"
                    "  grand-puffin  STOPPED              CONTAINER  0          \n");
}

static void test_empty_table(void)
{
    g_autoptr(GPtrArray) rows = cli_rows_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *text = cli_render_list("table", list_headers, rows, NULL, &error);
    g_assert_cmpstr(text, ==,
                    "+------+-------+------+------+------+-----------+\n"
                    "| NAME | STATE | IPV4 | IPV6 | TYPE | SNAPSHOTS |\n"
                    "+------+-------+------+------+------+-----------+\n");
}

static void test_multiline_cell(void)
{
    g_autoptr(GPtrArray) rows = cli_rows_new();
    cli_rows_add(rows, "c1", "10.0.0.2 (eth0)\n10.0.0.1 (eth1)", NULL);
    static const char *const headers[] = {"NAME", "IPV4", NULL};
    g_autoptr(GError) error = NULL;
    g_autofree char *text = cli_render_list("table", headers, rows, NULL, &error);
    g_assert_cmpstr(text, ==,
                    "+------+-----------------+\n"
                    "| NAME |      IPV4       |\n"
                    "+------+-----------------+\n"
                    "| c1   | 10.0.0.2 (eth0) |\n"
                    "|      | 10.0.0.1 (eth1) |\n"
                    "+------+-----------------+\n");
}

static void test_csv(void)
{
    g_autoptr(GPtrArray) rows = cli_rows_new();
    cli_rows_add(rows, "a,b", "say \"hi\"", " lead", "two\nlines", "", NULL);
    static const char *const headers[] = {"A", "B", "C", "D", "E", NULL};
    g_autoptr(GError) error = NULL;
    g_autofree char *plain = cli_render_list("csv", headers, rows, NULL, &error);
    g_assert_cmpstr(plain, ==, "\"a,b\",\"say \"\"hi\"\"\",\" lead\",\"two\nlines\",\n");
    g_autofree char *with_header = cli_render_list("csv,header", headers, rows, NULL, &error);
    g_assert_true(g_str_has_prefix(with_header, "A,B,C,D,E\n"));
    g_autofree char *no_header = cli_render_list("table,noheader", headers, rows, NULL, &error);
    g_assert_null(strstr(no_header, "| A "));
}

static void test_json_yaml(void)
{
    g_autoptr(GPtrArray) rows = cli_rows_new();
    g_autoptr(json_t) raw = json_pack("[{s:s}]", "name", "c1");
    g_autoptr(GError) error = NULL;
    g_autofree char *json_text = cli_render_list("json", list_headers, rows, raw, &error);
    g_assert_cmpstr(json_text, ==, "[{\"name\":\"c1\"}]\n");
    g_autofree char *yaml_text = cli_render_list("yaml", list_headers, rows, raw, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(yaml_text, ==, "- name: c1\n");
}

static void test_bad_format(void)
{
    g_autoptr(GError) error = NULL;
    g_assert_false(cli_format_check("xml", &error));
    g_assert_cmpstr(error->message, ==, "Invalid format \"xml\"");
    g_clear_error(&error);
    g_assert_false(cli_format_check("csv,sideways", &error));
    g_assert_true(cli_format_check("csv,noheader", NULL));
}

static const char *const instances_json =
    "[{\"name\":\"web\",\"status\":\"Running\",\"type\":\"container\",\"ephemeral\":true,"
    "  \"snapshots\":[{\"name\":\"s0\"},{\"name\":\"s1\"}],"
    "  \"state\":{\"pid\":42,\"network\":{"
    "    "
    "\"lo\":{\"type\":\"loopback\",\"addresses\":[{\"family\":\"inet\",\"address\":\"127.0.0.1\",\"scope\":"
    "\"local\"}]},"
    "    \"eth0\":{\"type\":\"broadcast\",\"addresses\":["
    "      {\"family\":\"inet\",\"address\":\"10.0.3.5\",\"scope\":\"global\"},"
    "      {\"family\":\"inet6\",\"address\":\"fe80::1\",\"scope\":\"link\"},"
    "      {\"family\":\"inet6\",\"address\":\"fd42::5\",\"scope\":\"global\"}]}}}},"
    " {\"name\":\"db\",\"status\":\"Stopped\",\"type\":\"container\",\"snapshots\":null,"
    "  \"expanded_config\":{\"user.role\":\"database\"},\"state\":{\"pid\":0}}]";

static void test_list_render(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_t) instances = ferry_json_parse(instances_json, strlen(instances_json), &error);
    g_assert_no_error(error);
    g_autofree char *text = cli_list_render(instances, "ns46tSp", "csv", NULL, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(text, ==,
                    "db,STOPPED,,,CONTAINER,0,\n"
                    "web,RUNNING,10.0.3.5 (eth0),fd42::5 (eth0),CONTAINER (EPHEMERAL),2,42\n");

    /* Filters: a name prefix (regular expression) and key=value on the expanded config. */
    g_autoptr(GPtrArray) filters = g_ptr_array_new();
    g_ptr_array_add(filters, "w.b");
    g_autofree char *by_name = cli_list_render(instances, "n", "csv", filters, 0, &error);
    g_assert_cmpstr(by_name, ==, "web\n");
    g_ptr_array_index(filters, 0) = "user.role=database";
    g_autofree char *by_config = cli_list_render(instances, "n", "csv", filters, 0, &error);
    g_assert_cmpstr(by_config, ==, "db\n");

    g_autofree char *bad = cli_list_render(instances, "nX", "csv", NULL, 0, &error);
    g_assert_null(bad);
    g_assert_cmpstr(error->message, ==, "Unknown column shorthand char 'X' in 'nX'");
}

static void test_sizes(void)
{
    g_autofree char *a = cli_format_size(0, TRUE, 2);
    g_assert_cmpstr(a, ==, "0B");
    g_autofree char *b = cli_format_size(1536, TRUE, 2);
    g_assert_cmpstr(b, ==, "1.50KiB");
    g_autofree char *c = cli_format_size(12300000, FALSE, 2);
    g_assert_cmpstr(c, ==, "12.30MB");
}

static void test_progress_format(void)
{
    FerryProgress known = {"Unpack", NULL, 500000000, 2000000000, 10000000};
    g_autofree char *line = cli_progress_format(NULL, &known);
    g_assert_cmpstr(line, ==, "Unpack: 25% (500.00MB/2.00GB, 10.00MB/s, ETA 2m30s)");

    FerryProgress unknown_total = {NULL, NULL, 1234567, -1, -1};
    g_autofree char *line2 = cli_progress_format("Transferring", &unknown_total);
    g_assert_cmpstr(line2, ==, "Transferring: 1.23MB");

    FerryProgress text = {NULL, "Unpacking image: 15% (68.58MB/s)", -1, -1, -1};
    g_autofree char *line3 = cli_progress_format("Retrieving image", &text);
    g_assert_cmpstr(line3, ==, "Retrieving image: Unpacking image: 15% (68.58MB/s)");
}

static void test_progress_from_operation(void)
{
    FerryProgress progress;
    g_autoptr(json_t) ferry_op =
        json_pack("{s:{s:{s:I, s:I, s:I, s:s}}}", "metadata", "progress", "done", (json_int_t)10, "total",
                  (json_int_t)100, "rate", (json_int_t)5, "stage", "fs");
    g_assert_true(ferry_progress_from_operation(ferry_op, &progress));
    g_assert_cmpint(progress.done, ==, 10);
    g_assert_cmpint(progress.total, ==, 100);
    g_assert_cmpint(progress.rate, ==, 5);
    g_assert_cmpstr(progress.stage, ==, "fs");

    /* Incus 6.0: a "progress" object of strings next to the text. */
    g_autoptr(json_t) incus_op =
        json_pack("{s:{s:s, s:{s:s, s:s, s:s}}}", "metadata", "create_instance_from_image_unpack_progress",
                  "Unpacking image: 15%", "progress", "stage", "create_instance_from_image_unpack", "percent",
                  "15", "speed", "68580000");
    g_assert_true(ferry_progress_from_operation(incus_op, &progress));
    g_assert_cmpstr(progress.text, ==, "Unpacking image: 15%");
    g_assert_null(progress.stage);
    g_assert_cmpint(progress.done, ==, -1);

    g_autoptr(json_t) none = json_pack("{s:{s:s}}", "metadata", "id", "x");
    g_assert_false(ferry_progress_from_operation(none, &progress));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_setenv("TZ", "UTC", TRUE);
    g_test_add_func("/cli_output/table", test_table);
    g_test_add_func("/cli_output/compact", test_compact);
    g_test_add_func("/cli_output/empty", test_empty_table);
    g_test_add_func("/cli_output/multiline", test_multiline_cell);
    g_test_add_func("/cli_output/csv", test_csv);
    g_test_add_func("/cli_output/json-yaml", test_json_yaml);
    g_test_add_func("/cli_output/bad-format", test_bad_format);
    g_test_add_func("/cli_output/list", test_list_render);
    g_test_add_func("/cli_output/sizes", test_sizes);
    g_test_add_func("/cli_output/progress-format", test_progress_format);
    g_test_add_func("/cli_output/progress-from-operation", test_progress_from_operation);
    return g_test_run();
}
