/* ferry info: an instance's state, resources and snapshots, or the server's environment. */
#include "cli.h"
#include "output.h"

#include "error.h"

#include <stdio.h>
#include <string.h>

static gint64 member_int(json_t *object, const char *key)
{
    json_t *value = json_object_get(object, key);
    return json_is_integer(value) ? json_integer_value(value) : 0;
}

static void print_date_line(const char *label, json_t *object, const char *key)
{
    g_autofree char *date = cli_format_date(ferry_json_get_string(object, key));
    if (*date != '\0')
        printf("%s: %s\n", label, date);
}

static int compare_keys(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char **)a, *(const char **)b);
}

static void print_network(json_t *network)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    const char *name;
    json_t *net;
    json_object_foreach(network, name, net) g_ptr_array_add(names, (gpointer)name);
    g_ptr_array_sort(names, compare_keys);
    if (names->len == 0)
        return;
    printf("  Network usage:\n");
    for (guint i = 0; i < names->len; i++) {
        name = g_ptr_array_index(names, i);
        net = json_object_get(network, name);
        json_t *counters = json_object_get(net, "counters");
        g_autofree char *state = g_ascii_strup(ferry_json_get_string(net, "state") ?: "", -1);
        printf("    %s:\n      Type: %s\n      State: %s\n", name, ferry_json_get_string(net, "type") ?: "",
               state);
        const char *host = ferry_json_get_string(net, "host_name");
        if (host != NULL && *host)
            printf("      Host interface: %s\n", host);
        const char *hwaddr = ferry_json_get_string(net, "hwaddr");
        if (hwaddr != NULL && *hwaddr)
            printf("      MAC address: %s\n", hwaddr);
        if (member_int(net, "mtu") != 0)
            printf("      MTU: %" G_GINT64_FORMAT "\n", member_int(net, "mtu"));
        g_autofree char *received = cli_format_size(member_int(counters, "bytes_received"), FALSE, 2);
        g_autofree char *sent = cli_format_size(member_int(counters, "bytes_sent"), FALSE, 2);
        printf("      Bytes received: %s\n      Bytes sent: %s\n", received, sent);
        printf("      Packets received: %" G_GINT64_FORMAT "\n      Packets sent: %" G_GINT64_FORMAT "\n",
               member_int(counters, "packets_received"), member_int(counters, "packets_sent"));
        printf("      IP addresses:\n");
        gsize a;
        json_t *address;
        json_array_foreach(json_object_get(net, "addresses"), a, address)
        {
            const char *family = ferry_json_get_string(address, "family") ?: "";
            printf("        %s:%s%s/%s (%s)\n", family, strcmp(family, "inet") == 0 ? "  " : " ",
                   ferry_json_get_string(address, "address") ?: "",
                   ferry_json_get_string(address, "netmask") ?: "",
                   ferry_json_get_string(address, "scope") ?: "");
        }
    }
}

static void print_resources(json_t *state)
{
    printf("\nResources:\n  Processes: %" G_GINT64_FORMAT "\n", member_int(state, "processes"));

    g_autoptr(GString) disks = g_string_new(NULL);
    const char *name;
    json_t *disk;
    json_object_foreach(json_object_get(state, "disk"), name, disk)
    {
        if (member_int(disk, "usage") != 0) {
            g_autofree char *usage = cli_format_size(member_int(disk, "usage"), TRUE, 2);
            g_string_append_printf(disks, "    %s: %s\n", name, usage);
        }
    }
    if (disks->len > 0)
        printf("  Disk usage:\n%s", disks->str);

    gint64 cpu = member_int(json_object_get(state, "cpu"), "usage");
    if (cpu != 0)
        printf("  CPU usage:\n    CPU usage (in seconds): %" G_GINT64_FORMAT "\n", cpu / 1000000000);

    json_t *memory = json_object_get(state, "memory");
    static const struct {
        const char *key;
        const char *label;
    } memory_lines[] = {
        {"usage", "Memory (current)"},
        {"usage_peak", "Memory (peak)"},
        {"swap_usage", "Swap (current)"},
        {"swap_usage_peak", "Swap (peak)"},
    };
    g_autoptr(GString) memory_text = g_string_new(NULL);
    for (gsize i = 0; i < G_N_ELEMENTS(memory_lines); i++) {
        gint64 value = member_int(memory, memory_lines[i].key);
        if (value != 0) {
            g_autofree char *size = cli_format_size(value, TRUE, 2);
            g_string_append_printf(memory_text, "    %s: %s\n", memory_lines[i].label, size);
        }
    }
    if (memory_text->len > 0)
        printf("  Memory usage:\n%s", memory_text->str);

    json_t *network = json_object_get(state, "network");
    if (json_is_object(network))
        print_network(network);
}

static gboolean print_snapshots(json_t *snapshots, GError **error)
{
    if (!json_is_array(snapshots) || json_array_size(snapshots) == 0)
        return TRUE;
    printf("\nSnapshots:\n");
    g_autoptr(GPtrArray) rows = cli_rows_new();
    gsize i;
    json_t *snapshot;
    json_array_foreach(snapshots, i, snapshot)
    {
        const char *full = ferry_json_get_string(snapshot, "name") ?: "";
        const char *slash = strrchr(full, '/');
        g_autofree char *taken = cli_format_date(ferry_json_get_string(snapshot, "created_at"));
        g_autofree char *expires = cli_format_date(ferry_json_get_string(snapshot, "expires_at"));
        cli_rows_add(rows, slash != NULL ? slash + 1 : full, *taken ? taken : " ", *expires ? expires : " ",
                     ferry_json_get_bool(snapshot, "stateful", FALSE) ? "YES" : "NO", NULL);
    }
    static const char *const headers[] = {"NAME", "TAKEN AT", "EXPIRES AT", "STATEFUL", NULL};
    return cli_print_list("table", headers, rows, snapshots, error);
}

static int instance_info(FerryClient *client, const char *name, gboolean show_log, GError **error)
{
    g_autofree char *base = ferry_api_path("instances", name, NULL);
    g_autofree char *path = g_strconcat(base, "?recursion=1", NULL);
    g_autoptr(json_t) instance = ferry_client_get(client, path, NULL, error);
    if (instance == NULL)
        return -1;
    json_t *state = json_object_get(instance, "state");
    if (!json_is_object(state)) {
        /* A server without instance_get_full: fetch the state on its own. */
        g_autofree char *state_path = ferry_api_path("instances", name, "state", NULL);
        json_t *fetched = ferry_client_get(client, state_path, NULL, NULL);
        if (fetched != NULL)
            json_object_set_new(instance, "state", fetched);
        state = json_object_get(instance, "state");
    }

    const char *type = ferry_json_get_string(instance, "type");
    if (type == NULL || *type == '\0')
        type = "container";
    g_autofree char *status = g_ascii_strup(ferry_json_get_string(instance, "status") ?: "", -1);
    printf("Name: %s\n", ferry_json_get_string(instance, "name"));
    printf("Description: %s\n", ferry_json_get_string(instance, "description") ?: "");
    printf("Status: %s\n", status);
    printf(ferry_json_get_bool(instance, "ephemeral", FALSE) ? "Type: %s (ephemeral)\n" : "Type: %s\n", type);
    printf("Architecture: %s\n", ferry_json_get_string(instance, "architecture") ?: "");
    gint64 pid = member_int(state, "pid");
    if (pid != 0)
        printf("PID: %" G_GINT64_FORMAT "\n", pid);
    print_date_line("Created", instance, "created_at");
    print_date_line("Last Used", instance, "last_used_at");
    if (pid != 0) {
        print_date_line("Started", state, "started_at");
        print_resources(state);
    }
    if (!print_snapshots(json_object_get(instance, "snapshots"), error))
        return -1;

    if (show_log) {
        g_autofree char *log_path = ferry_api_path("instances", name, "logs", "lxc.log", NULL);
        g_autoptr(GBytes) log = ferry_client_get_raw(client, log_path, error);
        if (log == NULL)
            return -1;
        gsize length = 0;
        const char *text = g_bytes_get_data(log, &length);
        printf("\nLog:\n\n%.*s\n", (int)length, text);
    }
    return 0;
}

int cli_cmd_info(Cli *cli, int argc, char **argv, GError **error)
{
    gboolean show_log = FALSE, resources = FALSE;
    const CliOption options[] = {
        {"show-log", 0, CLI_OPT_BOOL, &show_log, NULL, "Show the instance's last 100 log lines?"},
        {"resources", 0, CLI_OPT_BOOL, &resources, NULL, "Show the resources available to the server"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 0, 1, error))
        return -1;
    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = args->len > 0
                                        ? cli_connect_name(cli, g_ptr_array_index(args, 0), &name, error)
                                        : cli_connect(cli, NULL, error);
    if (client == NULL)
        return -1;
    if (name != NULL && *name != '\0')
        return instance_info(client, name, show_log, error);

    g_autoptr(json_t) server = ferry_client_get(client, resources ? "/1.0/resources" : "/1.0", NULL, error);
    if (server == NULL)
        return -1;
    return cli_print_yaml(server, error) ? 0 : -1;
}
