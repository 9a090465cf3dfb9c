/* ferry list: instances as a table (or csv, json, yaml, compact), with Incus's column letters. */
#include "cli.h"
#include "list.h"
#include "output.h"

#include "error.h"

#include <stdio.h>
#include <string.h>

static int compare_strings_desc(gconstpointer a, gconstpointer b)
{
    return -strcmp(*(const char **)a, *(const char **)b);
}

/* "10.0.3.5 (eth0)" lines for an address family, global scope only, newest-first as Incus sorts them. */
static char *addresses(json_t *instance, const char *family)
{
    json_t *state = json_object_get(instance, "state");
    json_t *network = json_object_get(state, "network");
    if (!json_is_object(network) || g_strcmp0(ferry_json_get_string(instance, "status"), "Running") != 0)
        return g_strdup("");
    g_autoptr(GPtrArray) found = g_ptr_array_new_with_free_func(g_free);
    const char *iface;
    json_t *net;
    json_object_foreach(network, iface, net)
    {
        if (g_strcmp0(ferry_json_get_string(net, "type"), "loopback") == 0)
            continue;
        gsize i;
        json_t *address;
        json_array_foreach(json_object_get(net, "addresses"), i, address)
        {
            const char *scope = ferry_json_get_string(address, "scope");
            if (g_strcmp0(scope, "link") == 0 || g_strcmp0(scope, "local") == 0)
                continue;
            if (g_strcmp0(ferry_json_get_string(address, "family"), family) != 0)
                continue;
            g_ptr_array_add(found,
                            g_strdup_printf("%s (%s)", ferry_json_get_string(address, "address"), iface));
        }
    }
    g_ptr_array_sort(found, compare_strings_desc);
    g_ptr_array_add(found, NULL);
    return g_strjoinv("\n", (char **)found->pdata);
}

static char *column_value(char column, json_t *instance)
{
    json_t *state = json_object_get(instance, "state");
    gboolean running = g_strcmp0(ferry_json_get_string(instance, "status"), "Running") == 0;
    switch (column) {
    case 'n':
        return g_strdup(ferry_json_get_string(instance, "name"));
    case 'a':
        return g_strdup(ferry_json_get_string(instance, "architecture") ?: "");
    case 'N':
        if (!running)
            return g_strdup("");
        return g_strdup_printf("%" JSON_INTEGER_FORMAT,
                               json_integer_value(json_object_get(state, "processes")));
    case 's':
        return g_ascii_strup(ferry_json_get_string(instance, "status") ?: "", -1);
    case '4':
        return addresses(instance, "inet");
    case '6':
        return addresses(instance, "inet6");
    case 't': {
        g_autofree char *type = g_ascii_strup(ferry_json_get_string(instance, "type") ?: "container", -1);
        if (ferry_json_get_bool(instance, "ephemeral", FALSE))
            return g_strdup_printf("%s (EPHEMERAL)", type);
        return g_steal_pointer(&type);
    }
    case 'S': {
        json_t *snapshots = json_object_get(instance, "snapshots");
        return g_strdup_printf("%zu", json_is_array(snapshots) ? json_array_size(snapshots) : (gsize)0);
    }
    case 'L':
        return g_strdup(ferry_json_get_string(instance, "location") ?: "");
    case 'e':
        return g_strdup(ferry_json_get_string(instance, "project") ?: "");
    case 'd':
        return g_strdup(ferry_json_get_string(instance, "description") ?: "");
    case 'c':
        return cli_format_date(ferry_json_get_string(instance, "created_at"));
    case 'l':
        return cli_format_date(ferry_json_get_string(instance, "last_used_at"));
    case 'p':
        if (!running)
            return g_strdup("");
        return g_strdup_printf("%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(state, "pid")));
    case 'P': {
        g_autoptr(GPtrArray) names = g_ptr_array_new();
        gsize i;
        json_t *profile;
        json_array_foreach(json_object_get(instance, "profiles"), i, profile)
            g_ptr_array_add(names, (gpointer)json_string_value(profile));
        g_ptr_array_add(names, NULL);
        return g_strjoinv("\n", (char **)names->pdata);
    }
    case 'b': {
        json_t *devices = json_object_get(instance, "expanded_devices");
        const char *name;
        json_t *device;
        json_object_foreach(devices, name, device)
        {
            if (g_strcmp0(ferry_json_get_string(device, "type"), "disk") == 0 &&
                g_strcmp0(ferry_json_get_string(device, "path"), "/") == 0)
                return g_strdup(ferry_json_get_string(device, "pool") ?: "");
        }
        return g_strdup("");
    }
    case 'f':
    case 'F': {
        const char *fingerprint =
            ferry_json_get_string(json_object_get(instance, "config"), "volatile.base_image") ?: "";
        return column == 'f' ? g_strndup(fingerprint, 12) : g_strdup(fingerprint);
    }
    case 'm': {
        json_t *usage = json_object_get(json_object_get(state, "memory"), "usage");
        if (!running || !json_is_integer(usage))
            return g_strdup("");
        return cli_format_size(json_integer_value(usage), TRUE, 2);
    }
    case 'M': {
        json_t *memory = json_object_get(state, "memory");
        json_t *usage = json_object_get(memory, "usage");
        json_t *total = json_object_get(memory, "total");
        if (!running || !json_is_integer(usage) || !json_is_integer(total) || json_integer_value(total) <= 0)
            return g_strdup("");
        return g_strdup_printf("%.1f%%",
                               (double)json_integer_value(usage) * 100.0 / (double)json_integer_value(total));
    }
    case 'D': {
        json_t *usage = json_object_get(json_object_get(json_object_get(state, "disk"), "root"), "usage");
        if (!json_is_integer(usage))
            return g_strdup("");
        return cli_format_size(json_integer_value(usage), TRUE, 2);
    }
    case 'u': {
        json_t *usage = json_object_get(json_object_get(state, "cpu"), "usage");
        if (!running || !json_is_integer(usage))
            return g_strdup("");
        return g_strdup_printf("%" JSON_INTEGER_FORMAT "s", json_integer_value(usage) / 1000000000);
    }
    default:
        return g_strdup("");
    }
}

static const char *column_header(char column)
{
    switch (column) {
    case 'n':
        return "NAME";
    case 'a':
        return "ARCHITECTURE";
    case 'N':
        return "PROCESSES";
    case 's':
        return "STATE";
    case '4':
        return "IPV4";
    case '6':
        return "IPV6";
    case 't':
        return "TYPE";
    case 'S':
        return "SNAPSHOTS";
    case 'L':
        return "LOCATION";
    case 'e':
        return "PROJECT";
    case 'd':
        return "DESCRIPTION";
    case 'c':
        return "CREATED AT";
    case 'l':
        return "LAST USED AT";
    case 'p':
        return "PID";
    case 'P':
        return "PROFILES";
    case 'b':
        return "STORAGE POOL";
    case 'f':
        return "BASE IMAGE";
    case 'F':
        return "BASE IMAGE";
    case 'm':
        return "MEMORY USAGE";
    case 'M':
        return "MEMORY USAGE%";
    case 'D':
        return "DISK USAGE";
    case 'u':
        return "CPU USAGE";
    default:
        return NULL;
    }
}

/* A filter is a name regular expression (anchored at the start, as Incus does) or key=value on the
 * expanded configuration (or on status/type/name). */
static gboolean matches(json_t *instance, GPtrArray *filters, guint first)
{
    for (guint i = first; filters != NULL && i < filters->len; i++) {
        const char *filter = g_ptr_array_index(filters, i);
        const char *equals = strchr(filter, '=');
        if (equals == NULL) {
            g_autofree char *pattern = g_strdup_printf("^%s", filter);
            g_autoptr(GRegex) regex = g_regex_new(pattern, 0, 0, NULL);
            const char *name = ferry_json_get_string(instance, "name");
            gboolean hit =
                regex != NULL ? g_regex_match(regex, name, 0, NULL) : g_str_has_prefix(name, filter);
            if (!hit)
                return FALSE;
            continue;
        }
        g_autofree char *key = g_strndup(filter, equals - filter);
        const char *wanted = equals + 1;
        const char *value = NULL;
        if (strcmp(key, "status") == 0 || strcmp(key, "type") == 0 || strcmp(key, "name") == 0 ||
            strcmp(key, "location") == 0 || strcmp(key, "project") == 0)
            value = ferry_json_get_string(instance, key);
        else
            value = ferry_json_get_string(json_object_get(instance, "expanded_config"), key);
        if (value == NULL || g_ascii_strcasecmp(value, wanted) != 0)
            return FALSE;
    }
    return TRUE;
}

char *cli_list_render(json_t *instances, const char *columns, const char *format, GPtrArray *filters,
                      guint first_filter, GError **error)
{
    g_autoptr(GPtrArray) headers = g_ptr_array_new();
    g_autoptr(GString) letters = g_string_new(NULL);
    for (const char *c = columns; *c != '\0'; c++) {
        if (*c == ',')
            continue;
        const char *header = column_header(*c);
        if (header == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Unknown column shorthand char '%c' in '%s'",
                        *c, columns);
            return NULL;
        }
        g_ptr_array_add(headers, (gpointer)header);
        g_string_append_c(letters, *c);
    }
    g_ptr_array_add(headers, NULL);

    g_autoptr(GPtrArray) rows = cli_rows_new();
    g_autoptr(json_t) shown = json_array();
    gsize i;
    json_t *instance;
    json_array_foreach(instances, i, instance)
    {
        if (!matches(instance, filters, first_filter))
            continue;
        json_array_append(shown, instance);
        char **row = g_new0(char *, letters->len + 1);
        for (gsize c = 0; c < letters->len; c++)
            row[c] = column_value(letters->str[c], instance);
        g_ptr_array_add(rows, row);
    }
    cli_rows_sort(rows);
    return cli_render_list(format, (const char *const *)headers->pdata, rows, shown, error);
}

int cli_cmd_list(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *format = NULL;
    g_autofree char *columns = NULL;
    gboolean all_projects = FALSE, fast = FALSE;
    const CliOption options[] = {
        {"all-projects", 0, CLI_OPT_BOOL, &all_projects, NULL, "Display instances from all projects"},
        {"columns", 'c', CLI_OPT_STRING, &columns, "COLUMNS", "Columns"},
        {"fast", 0, CLI_OPT_BOOL, &fast, NULL, "Fast mode (same as --columns=nsacPt)"},
        {"format", 'f', CLI_OPT_STRING, &format, "FORMAT",
         "Format (csv|json|table|yaml|compact), use suffix \",noheader\" to disable headers and \",header\" "
         "to "
         "enable it if missing, e.g. csv,header"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error))
        return -1;
    if (format != NULL && !cli_format_check(format, error))
        return -1;

    /* The first argument may name a remote: "b:" alone, or "b:web" with a filter after the colon. */
    g_autofree char *remote = NULL;
    g_autofree char *first_rest = NULL;
    guint first_filter = 0;
    if (args->len > 0) {
        const char *first = g_ptr_array_index(args, 0);
        const char *colon = strchr(first, ':');
        /* As Incus: a first word with ':' and no '=' names a remote, which must exist ("nope:" is an error,
         * not a filter that matches nothing). */
        if (colon != NULL && strchr(first, '=') == NULL) {
            if (!cli_config_parse_remote(cli->config, first, &remote, &first_rest, error))
                return -1;
            if (*first_rest != '\0')
                g_ptr_array_index(args, 0) = first_rest;
            else
                first_filter = 1;
        }
    }
    if (fast && columns != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Can't specify --fast with --columns");
        return -1;
    }
    if (columns == NULL)
        columns = g_strdup(fast ? "nsacPt" : (all_projects ? "ens46tS" : "ns46tS"));

    g_autoptr(FerryClient) client = cli_connect(cli, remote, error);
    if (client == NULL)
        return -1;
    const char *path =
        all_projects ? "/1.0/instances?recursion=2&all-projects=true" : "/1.0/instances?recursion=2";
    g_autoptr(json_t) instances = ferry_client_get(client, path, NULL, error);
    if (instances == NULL)
        return -1;
    g_autofree char *text = cli_list_render(instances, columns, format, args, first_filter, error);
    if (text == NULL)
        return -1;
    fputs(text, stdout);
    return 0;
}
