/* GET/PUT/PATCH /1.0: what the server is, and its own config. */
#include "api.h"

#include "error.h"
#include "events.h"
#include "ferry-config.h"
#include "json.h"
#include "trust.h"

#include <lxc/lxccontainer.h>
#include <sys/utsname.h>
#include <unistd.h>

/* The Incus API extensions whose behaviour ferry implements; clients check these before using a feature. */
static const char *const api_extensions[] = {
    "storage", "etag", "patch", "network", "profile_usedby", "container_push", "container_exec_recording",
    "certificate_update", "container_exec_signal_handling", "container_image_properties", "id_map",
    "container_stateless_copy", "container_only_migration", "storage_api", "event_lifecycle", "instances",
    "instance_all_projects", "container_full", "projects", "certificate_token", "container_exec_user_group_cwd",
    "api_os", "explicit_trust_token", "container_push_target", "migration_progress", "instance_snapshot_never",
    "operation_description", "image_profiles", "server_supported_storage_drivers", "api_filtering", "instance_create_start", "resources", "instance_allow_inconsistent_copy", "container_incremental_copy",
    /* export and import (api/backups.c) */
    "container_backup", "container_backup_override_pool", "backup_override_name", "backup_compression",
    "backup_compression_algorithm",
};

/* Server config keys users may set. */
static const char *const server_keys[] = {"core.https_address", "core.remote_token_expiry",
                                          "images.compression_algorithm", "migration.bandwidth",
                                          "migration.transport", NULL};

static json_t *extensions(void)
{
    json_t *list = json_array();
    for (gsize i = 0; i < G_N_ELEMENTS(api_extensions); i++)
        json_array_append_new(list, json_string(api_extensions[i]));
    return list;
}

static json_t *environment(FerryDaemon *daemon)
{
    struct utsname uts;
    uname(&uts);
    char hostname[256] = "ferry";
    gethostname(hostname, sizeof(hostname) - 1);
    json_t *drivers = json_array();
    static const char *const pool_drivers[] = {"dir", "btrfs"};
    for (gsize i = 0; i < G_N_ELEMENTS(pool_drivers); i++)
        json_array_append_new(drivers, json_pack("{s:s, s:s, s:b}", "Name", pool_drivers[i], "Version", "1",
                                                 "Remote", FALSE));
    return json_pack("{s:o, s:[s], s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:s, s:s, s:i, "
                     "s:s, s:s, s:s, s:o}",
                     "addresses", ferry_trust_server_addresses(daemon), "architectures", "x86_64", "certificate",
                     daemon->server_certificate_pem, "certificate_fingerprint", daemon->server_fingerprint, "driver",
                     "lxc", "driver_version", lxc_get_version(), "firewall", "none", "kernel", uts.sysname,
                     "kernel_architecture", uts.machine, "kernel_version", uts.release, "os_name", "Debian GNU/Linux",
                     "os_version", "12", "project", "default", "server_clustered", FALSE, "server_event_mode",
                     "full-mesh", "server_name", hostname, "server_pid", (int)getpid(), "server", "ferry",
                     "server_version", FERRY_VERSION, "storage", "dir | btrfs", "storage_supported_drivers", drivers);
}

FerryResponse *api_server_get(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    json_t *server = json_pack("{s:o, s:s, s:s, s:s, s:b, s:[s]}", "api_extensions", extensions(), "api_status",
                               "stable", "api_version", "1.0", "auth", request->trusted ? "trusted" : "untrusted",
                               "public", FALSE, "auth_methods", "tls");
    if (request->trusted) {
        json_object_set_new(server, "config", ferry_db_config_all(daemon->db));
        json_object_set_new(server, "environment", environment(daemon));
        json_object_set_new(server, "auth_user_method", json_string(request->via_unix_socket ? "unix" : "tls"));
        json_object_set_new(server, "auth_user_name",
                            json_string(request->via_unix_socket ? "root" : request->client_fingerprint));
    }
    FerryResponse *response = ferry_response_sync(server);
    /* The ETag is a hash of the config: untrusted clients see neither. */
    if (request->trusted) {
        g_autoptr(json_t) config = ferry_db_config_all(daemon->db);
        g_autofree char *etag = ferry_response_etag_of(config);
        ferry_response_set_etag(response, etag);
    }
    return response;
}

/* What the HTTPS listener can bind: checked before it is touched, so a bad value leaves the current one alone. */
static gboolean valid_listen_address(const char *address)
{
    guint64 port = 0;
    if (address[0] == ':')
        return g_ascii_string_to_unsigned(address + 1, 10, 1, G_MAXUINT16, &port, NULL);
    g_autoptr(GSocketConnectable) parsed = g_network_address_parse(address, 8443, NULL);
    if (parsed == NULL || g_network_address_get_port(G_NETWORK_ADDRESS(parsed)) == 0)
        return FALSE;
    const char *host = g_network_address_get_hostname(G_NETWORK_ADDRESS(parsed));
    g_autoptr(GInetAddress) ip = g_inet_address_new_from_string(host);
    return ip != NULL;
}

static gboolean validate_server_key(const char *key, const char *value, GError **error)
{
    if (!g_strv_contains(server_keys, key) && !g_str_has_prefix(key, "user.")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid config: Unknown server configuration key: %s",
                    key);
        return FALSE;
    }
    if (g_str_equal(key, "core.https_address") && *value != '\0' && !valid_listen_address(value)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid value for \"core.https_address\": \"%s\" is not IP:port (a literal IP address, "
                    "port 1-65535) or :port",
                    value);
        return FALSE;
    }
    if (g_str_equal(key, "core.remote_token_expiry") && *value != '\0') {
        g_autoptr(GDateTime) now = g_date_time_new_now_utc();
        g_autoptr(GDateTime) expiry = ferry_trust_expiry_after(now, value, error);
        if (expiry == NULL) {
            g_prefix_error(error, "Invalid value for \"core.remote_token_expiry\": ");
            return FALSE;
        }
    }
    if (g_str_equal(key, "migration.transport") && *value != '\0' && !g_str_equal(value, "native") &&
        !g_str_equal(value, "rsync")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid value for \"migration.transport\": \"%s\" (expected \"native\" or \"rsync\")", value);
        return FALSE;
    }
    if (g_str_equal(key, "migration.bandwidth") && *value != '\0') {
        gint64 bytes;
        if (!ferry_parse_size(value, &bytes)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid value for \"migration.bandwidth\": \"%s\" is not a size such as 100MB", value);
            return FALSE;
        }
    }
    return TRUE;
}

FerryResponse *api_server_put(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    gboolean patch = g_str_equal(request->method, "PATCH");
    GError *error = NULL;
    if (request->body == NULL || !ferry_json_check_string_map(request->body, "config", &error)) {
        if (error == NULL)
            g_set_error(&error, FERRY_ERROR, FERRY_ERROR_INVALID, "Missing request body");
        return ferry_response_error(error);
    }
    json_t *requested = json_object_get(request->body, "config");
    g_autoptr(json_t) current = ferry_db_config_all(daemon->db);
    g_autoptr(json_t) wanted = patch ? json_deep_copy(current) : json_object();
    if (json_is_object(requested))
        json_object_update(wanted, requested);
    const char *key;
    json_t *value;
    json_object_foreach(wanted, key, value) {
        if (!validate_server_key(key, json_string_value(value), &error))
            return ferry_response_error(error);
    }
    /* The listener is the one change that can fail for reasons outside the request: do it first. */
    const char *address = ferry_json_get_string(wanted, "core.https_address");
    if (!ferry_daemon_set_https_address(daemon, address != NULL ? address : "", &error)) {
        error->code = FERRY_ERROR_INVALID;
        return ferry_response_error(error);
    }
    json_object_foreach(current, key, value) {
        if (json_object_get(wanted, key) == NULL)
            ferry_db_config_set(daemon->db, key, NULL, NULL);
    }
    json_object_foreach(wanted, key, value) {
        const char *text = json_string_value(value);
        if (!ferry_db_config_set(daemon->db, key, *text != '\0' ? text : NULL, &error))
            return ferry_response_error(error);
    }
    ferry_events_lifecycle(daemon->events, NULL, "config-updated", "/1.0");
    return ferry_response_sync(NULL);
}

/* GET /1.0/resources: what this host offers, in the shape of Incus's resources API (CPU and memory). */
FerryResponse *api_resources_get(FerryRequest *request)
{
    guint cpus = g_get_num_processors();
    json_t *cores = json_array();
    for (guint i = 0; i < cpus; i++)
        json_array_append_new(cores, json_pack("{s:i, s:[{s:i, s:b, s:i}]}", "core", (int)i, "threads", "id", (int)i,
                                               "online", TRUE, "thread", 0));
    gint64 page = sysconf(_SC_PAGESIZE);
    gint64 total = (gint64)sysconf(_SC_PHYS_PAGES) * page;
    gint64 available = (gint64)sysconf(_SC_AVPHYS_PAGES) * page;
    return ferry_response_sync(json_pack("{s:{s:s, s:i, s:[{s:i, s:o}]}, s:{s:I, s:I}}", "cpu", "architecture",
                                         "x86_64", "total", (int)cpus, "sockets", "socket", 0, "cores", cores,
                                         "memory", "total", (json_int_t)total, "used",
                                         (json_int_t)(total - available)));
}
