#include "daemon.h"

#include "error.h"
#include "events.h"
#include "instances.h"
#include "json.h"
#include "operations.h"
#include "pool.h"
#include "server.h"
#include "tls_cert.h"
#include "trust.h"

#include <glib/gstdio.h>
#include <stdarg.h>
#include <string.h>

char *ferry_daemon_path(FerryDaemon *daemon, const char *first, ...)
{
    va_list args;
    va_start(args, first);
    g_autoptr(GPtrArray) parts = g_ptr_array_new();
    g_ptr_array_add(parts, daemon->dir);
    for (const char *part = first; part != NULL; part = va_arg(args, const char *))
        g_ptr_array_add(parts, (gpointer)part);
    va_end(args);
    g_ptr_array_add(parts, NULL);
    return g_build_filenamev((char **)parts->pdata);
}

FerryDaemon *ferry_daemon_new(const char *dir, const char *helper_binary, GError **error)
{
    FerryDaemon *daemon = g_new0(FerryDaemon, 1);
    daemon->dir = g_canonicalize_filename(dir, NULL);
    daemon->helper_binary = g_strdup(helper_binary);
    daemon->main_context = g_main_context_ref_thread_default();
    daemon->loop = g_main_loop_new(daemon->main_context, FALSE);
    daemon->pools = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)ferry_pool_free);
    g_mutex_init(&daemon->pools_lock);
    daemon->busy_instances = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_mutex_init(&daemon->busy_lock);
    daemon->events = ferry_events_new(daemon->main_context);
    daemon->operations = ferry_operations_new(daemon);
    daemon->https_address = g_strdup("");
    daemon->started_at = g_get_real_time();
    return daemon;
}

static gboolean make_layout(FerryDaemon *daemon, GError **error)
{
    static const struct {
        const char *name;
        int mode;
    } dirs[] = {
        {"", 0711},          {"database", 0700}, {"containers", 0711}, {"storage-pools", 0711},
        {"images", 0700},    {"logs", 0700},     {"disks", 0700},      {"uploads", 0700},
        {"devices", 0711},
    };
    for (gsize i = 0; i < G_N_ELEMENTS(dirs); i++) {
        g_autofree char *path = ferry_daemon_path(daemon, dirs[i].name, NULL);
        if (g_mkdir_with_parents(path, dirs[i].mode) < 0) {
            ferry_set_error_errno(error, errno, "Failed to create %s", path);
            return FALSE;
        }
    }
    /* Uploads interrupted by a previous stop are garbage now. */
    g_autofree char *uploads = ferry_daemon_path(daemon, "uploads", NULL);
    g_autoptr(GDir) listing = g_dir_open(uploads, 0, NULL);
    const char *entry;
    while (listing != NULL && (entry = g_dir_read_name(listing)) != NULL) {
        g_autofree char *stale = g_build_filename(uploads, entry, NULL);
        g_unlink(stale);
    }
    return TRUE;
}

static gboolean load_server_certificate(FerryDaemon *daemon, GError **error)
{
    g_autofree char *cert_path = ferry_daemon_path(daemon, "server.crt", NULL);
    g_autofree char *key_path = ferry_daemon_path(daemon, "server.key", NULL);
    if (!ferry_tls_cert_ensure_files(FERRY_CERT_SERVER, cert_path, key_path, error))
        return FALSE;
    daemon->server_certificate = ferry_tls_cert_load(cert_path, key_path, error);
    if (daemon->server_certificate == NULL)
        return FALSE;
    daemon->server_certificate_pem = ferry_tls_cert_to_pem(daemon->server_certificate);
    daemon->server_fingerprint = ferry_tls_cert_fingerprint(daemon->server_certificate);
    return TRUE;
}

/* A fresh server has the default project and an empty default profile, like Incus before `admin init`. */
static gboolean ensure_defaults(FerryDaemon *daemon, GError **error)
{
    if (!ferry_db_exists(daemon->db, FERRY_KIND_PROJECT, "", "", "default")) {
        g_autoptr(json_t) project =
            json_pack("{s:s, s:{s:s, s:s, s:s, s:s}}", "description", "Default ferry project", "config",
                      "features.images", "true", "features.profiles", "true", "features.storage.volumes", "true",
                      "features.networks", "true");
        if (!ferry_db_create(daemon->db, FERRY_KIND_PROJECT, "", "", "default", project, error))
            return FALSE;
    }
    if (!ferry_db_exists(daemon->db, FERRY_KIND_PROFILE, "default", "", "default")) {
        g_autoptr(json_t) profile =
            json_pack("{s:s, s:{}, s:{}}", "description", "Default ferry profile", "config", "devices");
        if (!ferry_db_create(daemon->db, FERRY_KIND_PROFILE, "default", "", "default", profile, error))
            return FALSE;
    }
    return TRUE;
}

static gboolean load_pools(FerryDaemon *daemon, GError **error)
{
    g_autoptr(json_t) pools = ferry_db_list(daemon->db, FERRY_KIND_POOL, "", "");
    g_autofree char *storage_root = ferry_daemon_path(daemon, "storage-pools", NULL);
    size_t index;
    json_t *doc;
    json_array_foreach(pools, index, doc) {
        const char *name = ferry_json_get_string(doc, "name");
        g_autoptr(GHashTable) config = ferry_instances_string_map(json_object_get(doc, "config"));
        g_autofree char *storage_dir = g_build_filename(storage_root, name, NULL);
        g_autoptr(GError) local_error = NULL;
        FerryPool *pool = ferry_pool_load(name, ferry_json_get_string(doc, "driver"), config, storage_dir,
                                          &local_error);
        if (pool == NULL || !ferry_pool_mount(pool, &local_error)) {
            /* One broken pool must not keep the server down; its instances will report the error. */
            g_warning("Storage pool \"%s\" unavailable: %s", name, local_error->message);
            if (pool != NULL)
                ferry_pool_free(pool);
            continue;
        }
        ferry_daemon_add_pool(daemon, pool);
    }
    return TRUE;
}

/* Port of an "ip:port" / "[ip]:port" / ":port" listen address, 0 when there is none. */
static guint port_of(const char *address)
{
    const char *colon = address != NULL ? strrchr(address, ':') : NULL;
    return colon != NULL ? (guint)g_ascii_strtoull(colon + 1, NULL, 10) : 0;
}

gboolean ferry_daemon_set_https_address(FerryDaemon *daemon, const char *address, GError **error)
{
    const char *wanted = address != NULL ? address : "";
    if (g_str_equal(wanted, daemon->https_address) && (daemon->https_server != NULL || *wanted == '\0'))
        return TRUE;
    SoupServer *replacement = NULL;
    if (*wanted != '\0') {
        replacement = ferry_server_new_https(daemon, wanted, error);
        /* Moving to another address on the same port (127.0.0.1:8443 -> 0.0.0.0:8443) needs the old listener
         * gone first; if the new one still fails, the old one comes back. */
        if (replacement == NULL && daemon->https_server != NULL && port_of(wanted) == port_of(daemon->https_address)) {
            soup_server_disconnect(daemon->https_server);
            g_clear_object(&daemon->https_server);
            g_autoptr(GError) retry_error = NULL;
            replacement = ferry_server_new_https(daemon, wanted, &retry_error);
            if (replacement != NULL)
                g_clear_error(error);
            else
                daemon->https_server = ferry_server_new_https(daemon, daemon->https_address, NULL);
        }
        if (replacement == NULL)
            return FALSE;
    }
    if (daemon->https_server != NULL) {
        soup_server_disconnect(daemon->https_server);
        g_clear_object(&daemon->https_server);
    }
    daemon->https_server = replacement;
    g_free(daemon->https_address);
    daemon->https_address = g_strdup(wanted);
    return TRUE;
}

gboolean ferry_daemon_start(FerryDaemon *daemon, GError **error)
{
    if (!make_layout(daemon, error) || !load_server_certificate(daemon, error))
        return FALSE;
    g_autofree char *db_path = ferry_daemon_path(daemon, "database", "ferry.db", NULL);
    daemon->db = ferry_db_open(db_path, error);
    if (daemon->db == NULL || !ensure_defaults(daemon, error) || !load_pools(daemon, error))
        return FALSE;
    ferry_instances_recover(daemon);

    g_autofree char *socket_path = ferry_daemon_path(daemon, "unix.socket", NULL);
    daemon->unix_server = ferry_server_new_unix(daemon, socket_path, error);
    if (daemon->unix_server == NULL)
        return FALSE;
    g_autofree char *https_address = ferry_db_config_get(daemon->db, "core.https_address");
    g_autoptr(GError) https_error = NULL;
    /* A busy port must not keep the unix socket down too: that is where the admin fixes the address. */
    if (https_address != NULL && !ferry_daemon_set_https_address(daemon, https_address, &https_error))
        g_warning("HTTPS listener not started: %s", https_error->message);
    ferry_trust_restore_tokens(daemon);
    return TRUE;
}

void ferry_daemon_free(FerryDaemon *daemon)
{
    if (daemon == NULL)
        return;
    daemon->shutting_down = TRUE;
    ferry_operations_free(daemon->operations);
    if (daemon->https_server != NULL)
        soup_server_disconnect(daemon->https_server);
    g_clear_object(&daemon->https_server);
    if (daemon->unix_server != NULL) {
        soup_server_disconnect(daemon->unix_server);
        g_autofree char *socket_path = ferry_daemon_path(daemon, "unix.socket", NULL);
        g_unlink(socket_path);
    }
    g_clear_object(&daemon->unix_server);
    ferry_events_free(daemon->events);
    /* Pools stay mounted: running containers keep using them after we exit. */
    g_hash_table_unref(daemon->pools);
    g_mutex_clear(&daemon->pools_lock);
    g_hash_table_unref(daemon->busy_instances);
    g_mutex_clear(&daemon->busy_lock);
    ferry_db_close(daemon->db);
    g_clear_object(&daemon->server_certificate);
    g_free(daemon->server_certificate_pem);
    g_free(daemon->server_fingerprint);
    g_free(daemon->https_address);
    g_main_loop_unref(daemon->loop);
    g_main_context_unref(daemon->main_context);
    g_free(daemon->helper_binary);
    g_free(daemon->dir);
    g_free(daemon);
}

FerryPool *ferry_daemon_get_pool(FerryDaemon *daemon, const char *name, GError **error)
{
    g_mutex_lock(&daemon->pools_lock);
    FerryPool *pool = name != NULL ? g_hash_table_lookup(daemon->pools, name) : NULL;
    g_mutex_unlock(&daemon->pools_lock);
    if (pool == NULL) {
        if (name != NULL && ferry_db_exists(daemon->db, FERRY_KIND_POOL, "", "", name))
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE, "Storage pool \"%s\" is unavailable", name);
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Storage pool \"%s\" not found",
                        name != NULL ? name : "");
    }
    return pool;
}

void ferry_daemon_add_pool(FerryDaemon *daemon, FerryPool *pool)
{
    g_mutex_lock(&daemon->pools_lock);
    g_hash_table_replace(daemon->pools, g_strdup(ferry_pool_get_name(pool)), pool);
    g_mutex_unlock(&daemon->pools_lock);
}

void ferry_daemon_remove_pool(FerryDaemon *daemon, const char *name)
{
    g_mutex_lock(&daemon->pools_lock);
    g_hash_table_remove(daemon->pools, name);
    g_mutex_unlock(&daemon->pools_lock);
}

gboolean ferry_daemon_claim_instance(FerryDaemon *daemon, const char *project, const char *name, const char *action,
                                     GError **error)
{
    g_autofree char *key = g_strdup_printf("%s/%s", project, name);
    g_mutex_lock(&daemon->busy_lock);
    const char *holder = g_hash_table_lookup(daemon->busy_instances, key);
    if (holder != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Instance \"%s\" is busy running a \"%s\" operation",
                    name, holder);
        g_mutex_unlock(&daemon->busy_lock);
        return FALSE;
    }
    g_hash_table_insert(daemon->busy_instances, g_steal_pointer(&key), g_strdup(action));
    g_mutex_unlock(&daemon->busy_lock);
    return TRUE;
}

void ferry_daemon_release_instance(FerryDaemon *daemon, const char *project, const char *name)
{
    g_autofree char *key = g_strdup_printf("%s/%s", project, name);
    g_mutex_lock(&daemon->busy_lock);
    g_hash_table_remove(daemon->busy_instances, key);
    g_mutex_unlock(&daemon->busy_lock);
}
