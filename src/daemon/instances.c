#include "instances.h"

#include "error.h"
#include "events.h"
#include "idmap.h"
#include "image_archive.h"
#include "instance_config.h"
#include "json.h"
#include "lxc_runtime.h"
#include "names.h"
#include "pool.h"

#include <fcntl.h>
#include <glib/gstdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

GHashTable *ferry_instances_string_map(json_t *object)
{
    GHashTable *table = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    const char *key;
    json_t *value;
    if (json_is_object(object)) {
        json_object_foreach(object, key, value) {
            if (json_is_string(value))
                g_hash_table_replace(table, g_strdup(key), g_strdup(json_string_value(value)));
        }
    }
    return table;
}

char *ferry_instance_volume_name(const char *project, const char *name)
{
    return g_strdup_printf("%s_%s", project, name);
}

static char *lxc_path(FerryDaemon *daemon)
{
    return ferry_daemon_path(daemon, "containers", NULL);
}

static char *instance_rootfs(FerryPool *pool, const char *volume)
{
    g_autofree char *volume_path = ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, volume);
    return g_build_filename(volume_path, "rootfs", NULL);
}

static char *instance_url(const char *project, const char *name)
{
    if (g_str_equal(project, "default"))
        return g_strdup_printf("/1.0/instances/%s", name);
    return g_strdup_printf("/1.0/instances/%s?project=%s", name, project);
}

static void lifecycle(FerryDaemon *daemon, const char *project, const char *name, const char *action)
{
    g_autofree char *url = instance_url(project, name);
    ferry_events_lifecycle(daemon->events, project, action, url);
}

const char *ferry_instance_status(FerryDaemon *daemon, const char *project, const char *name, int *code_out)
{
    g_autofree char *lxcpath = lxc_path(daemon);
    g_autofree char *lxc_name = ferry_instance_volume_name(project, name);
    int code;
    const char *status;
    switch (ferry_container_status(lxcpath, lxc_name, NULL)) {
    case FERRY_CONTAINER_RUNNING:
        code = 103;
        status = "Running";
        break;
    case FERRY_CONTAINER_FROZEN:
        code = 110;
        status = "Frozen";
        break;
    case FERRY_CONTAINER_ERROR:
        code = 112;
        status = "Error";
        break;
    case FERRY_CONTAINER_STOPPED:
    default:
        code = 102;
        status = "Stopped";
        break;
    }
    if (code_out != NULL)
        *code_out = code;
    return status;
}

/* Pool of an instance: the root disk of its expanded devices. */
static FerryPool *instance_pool(FerryDaemon *daemon, const char *project, json_t *doc, GError **error)
{
    g_autoptr(json_t) devices = NULL;
    if (!ferry_config_expand(daemon->db, project, json_object_get(doc, "profiles"), NULL,
                             json_object_get(doc, "devices"), NULL, &devices, error))
        return NULL;
    json_t *root = NULL;
    if (!ferry_devices_find_root(devices, NULL, &root, error))
        return NULL;
    return ferry_daemon_get_pool(daemon, ferry_json_get_string(root, "pool"), error);
}

/* Pool recorded when the volume was created; profiles may change later but the data stays where it is. */
FerryPool *ferry_instance_get_pool(FerryDaemon *daemon, const char *project, json_t *doc, GError **error)
{
    const char *pool_name = ferry_json_get_string(doc, "pool");
    if (pool_name != NULL)
        return ferry_daemon_get_pool(daemon, pool_name, error);
    return instance_pool(daemon, project, doc, error);
}

static json_t *load_instance(FerryDaemon *daemon, const char *project, const char *name, GError **error)
{
    return ferry_db_get(daemon->db, FERRY_KIND_INSTANCE, project, "", name, error);
}

json_t *ferry_snapshot_render(FerryDaemon *daemon, const char *project, const char *instance, const char *snapshot,
                              GError **error)
{
    g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_SNAPSHOT, project, instance, snapshot, error);
    if (doc == NULL)
        return NULL;
    g_autofree char *created = ferry_json_timestamp(
        ferry_db_created_at(daemon->db, FERRY_KIND_SNAPSHOT, project, instance, snapshot));
    json_t *snap = json_object();
    json_object_set_new(snap, "name", json_string(snapshot));
    json_object_set_new(snap, "architecture", json_string(ferry_json_get_string(doc, "architecture") ?: "x86_64"));
    /* A snapshot keeps the values its profiles had when it was taken. */
    static const char *const copied[] = {"config", "devices", "expanded_config", "expanded_devices"};
    for (gsize i = 0; i < G_N_ELEMENTS(copied); i++)
        json_object_set_new(snap, copied[i], ferry_json_object_or_empty(doc, copied[i]));
    json_object_set_new(snap, "profiles", ferry_json_array_or_empty(doc, "profiles"));
    json_object_set_new(snap, "ephemeral", json_false());
    json_object_set_new(snap, "stateful", json_boolean(ferry_json_get_bool(doc, "stateful", FALSE)));
    json_object_set_new(snap, "created_at", json_string(ferry_json_get_string(doc, "created_at") ?: created));
    json_object_set_new(snap, "last_used_at", json_string(FERRY_JSON_ZERO_TIME));
    json_object_set_new(snap, "expires_at", json_string(ferry_json_get_string(doc, "expires_at") ?: FERRY_JSON_ZERO_TIME));
    json_object_set_new(snap, "description", json_string(ferry_json_get_string(doc, "description") ?: ""));
    json_object_set_new(snap, "type", json_string("container"));
    json_object_set_new(snap, "location", json_string("none"));
    json_object_set_new(snap, "size", json_integer(-1));
    return snap;
}

json_t *ferry_instance_render_state(FerryDaemon *daemon, const char *project, const char *name, GError **error)
{
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL)
        return NULL;
    g_autofree char *lxcpath = lxc_path(daemon);
    g_autofree char *lxc_name = ferry_instance_volume_name(project, name);
    int code = 0;
    const char *status = ferry_instance_status(daemon, project, name, &code);
    pid_t pid = 0;
    ferry_container_status(lxcpath, lxc_name, &pid);
    FerryContainerUsage usage = {0};
    if (code == 103 || code == 110)
        ferry_container_usage(lxcpath, lxc_name, &usage, NULL);
    guint64 disk_usage = 0;
    FerryPool *pool = ferry_instance_get_pool(daemon, project, doc, NULL);
    if (pool != NULL)
        ferry_pool_volume_usage(pool, FERRY_VOLUME_CONTAINER, lxc_name, &disk_usage, NULL);
    gboolean active = code == 103 || code == 110;
    /* Containers here have no network device: only their loopback, shown as Incus shows it. */
    json_t *network = json_pack("{s:{s:{}, s:[], s:s, s:s, s:i, s:s, s:s}}", "lo", "counters", "addresses",
                                "host_name", "", "hwaddr", "", "mtu", 65536, "state", active ? "up" : "down", "type",
                                "loopback");
    return json_pack("{s:s, s:i, s:{s:{s:I, s:I}}, s:{s:I, s:I, s:I, s:I}, s:{s:I}, s:o, s:I, s:I}", "status",
                     status, "status_code", code, "disk", "root", "usage", (json_int_t)disk_usage, "total",
                     (json_int_t)0, "memory", "usage", (json_int_t)usage.memory_usage, "usage_peak",
                     (json_int_t)MAX(usage.memory_peak, 0), "swap_usage", (json_int_t)0, "swap_usage_peak",
                     (json_int_t)0, "cpu", "usage", (json_int_t)usage.cpu_usage_ns, "network", network, "pid",
                     (json_int_t)(active ? pid : 0), "processes", (json_int_t)(code == 103 ? usage.processes : 0));
}

json_t *ferry_instance_render(FerryDaemon *daemon, const char *project, const char *name, int recursion,
                              GError **error)
{
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL)
        return NULL;
    g_autoptr(json_t) expanded_config = NULL;
    g_autoptr(json_t) expanded_devices = NULL;
    if (!ferry_config_expand(daemon->db, project, json_object_get(doc, "profiles"), json_object_get(doc, "config"),
                             json_object_get(doc, "devices"), &expanded_config, &expanded_devices, NULL)) {
        expanded_config = json_deep_copy(json_object_get(doc, "config"));
        expanded_devices = json_deep_copy(json_object_get(doc, "devices"));
    }
    int code = 0;
    const char *status = ferry_instance_status(daemon, project, name, &code);
    if (ferry_json_get_bool(doc, "creating", FALSE)) {
        status = "Stopped";
        code = 102;
    }
    g_autofree char *created =
        ferry_json_timestamp(ferry_db_created_at(daemon->db, FERRY_KIND_INSTANCE, project, "", name));
    g_autofree char *last_used = g_strdup(ferry_json_get_string(doc, "last_used_at"));
    json_t *instance = json_object();
    json_object_set_new(instance, "name", json_string(name));
    json_object_set_new(instance, "architecture",
                        json_string(ferry_json_get_string(doc, "architecture") ?: "x86_64"));
    json_object_set(instance, "config", json_object_get(doc, "config"));
    json_object_set(instance, "devices", json_object_get(doc, "devices"));
    json_object_set(instance, "profiles", json_object_get(doc, "profiles"));
    json_object_set_new(instance, "ephemeral", json_boolean(ferry_json_get_bool(doc, "ephemeral", FALSE)));
    json_object_set_new(instance, "stateful", json_false());
    json_object_set_new(instance, "description", json_string(ferry_json_get_string(doc, "description") ?: ""));
    json_object_set_new(instance, "created_at", json_string(created));
    json_object_set_new(instance, "status", json_string(status));
    json_object_set_new(instance, "status_code", json_integer(code));
    json_object_set_new(instance, "last_used_at", json_string(last_used != NULL ? last_used : FERRY_JSON_ZERO_TIME));
    json_object_set_new(instance, "location", json_string("none"));
    json_object_set_new(instance, "type", json_string("container"));
    json_object_set_new(instance, "project", json_string(project));
    json_object_set(instance, "expanded_config", expanded_config);
    json_object_set(instance, "expanded_devices", expanded_devices);
    if (recursion >= 2) {
        json_t *state = ferry_instance_render_state(daemon, project, name, NULL);
        json_object_set_new(instance, "state", state != NULL ? state : json_null());
        json_t *snapshots = json_array();
        g_autoptr(GPtrArray) names = ferry_db_list_names(daemon->db, FERRY_KIND_SNAPSHOT, project, name);
        for (guint i = 0; i < names->len; i++) {
            json_t *snapshot = ferry_snapshot_render(daemon, project, name, names->pdata[i], NULL);
            if (snapshot != NULL)
                json_array_append_new(snapshots, snapshot);
        }
        json_object_set_new(instance, "snapshots", snapshots);
        json_object_set_new(instance, "backups", json_array());
    }
    return instance;
}

char *ferry_image_path(FerryDaemon *daemon, const char *fingerprint)
{
    return ferry_daemon_path(daemon, "images", fingerprint, NULL);
}

char *ferry_image_resolve(FerryDaemon *daemon, const char *project, json_t *source, GError **error)
{
    const char *alias = ferry_json_get_string(source, "alias");
    const char *fingerprint = ferry_json_get_string(source, "fingerprint");
    if (alias != NULL && *alias != '\0') {
        g_autoptr(json_t) row = ferry_db_get(daemon->db, FERRY_KIND_IMAGE_ALIAS, project, "", alias, NULL);
        if (row == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Image \"%s\" not found", alias);
            return NULL;
        }
        return g_strdup(ferry_json_get_string(row, "target"));
    }
    if (fingerprint == NULL || *fingerprint == '\0') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Image source needs an alias or a fingerprint");
        return NULL;
    }
    g_autoptr(GPtrArray) names = ferry_db_list_names(daemon->db, FERRY_KIND_IMAGE, project, "");
    char *match = NULL;
    for (guint i = 0; i < names->len; i++) {
        if (!g_str_has_prefix(names->pdata[i], fingerprint))
            continue;
        if (match != NULL) {
            g_free(match);
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Image fingerprint prefix \"%s\" is ambiguous",
                        fingerprint);
            return NULL;
        }
        match = g_strdup(names->pdata[i]);
    }
    if (match == NULL)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Image \"%s\" not found", fingerprint);
    return match;
}

/* Random names like Incus's ("sincere-mullet") are a client nicety; the server only needs a free one. */
static char *generate_name(FerryDaemon *daemon, const char *project)
{
    static const char *const adjectives[] = {"amber", "brisk", "calm", "deft", "eager", "fair", "glad", "hardy",
                                             "keen", "lucid", "merry", "noble", "quick", "sunny", "tidy", "vivid"};
    static const char *const nouns[] = {"otter", "heron", "ferry", "tern", "pike", "barge", "gull", "raft",
                                        "skiff", "wharf", "delta", "reef", "cove", "dune", "fjord", "harbor"};
    for (;;) {
        char *name = g_strdup_printf("%s-%s", adjectives[g_random_int_range(0, G_N_ELEMENTS(adjectives))],
                                     nouns[g_random_int_range(0, G_N_ELEMENTS(nouns))]);
        if (!ferry_db_exists(daemon->db, FERRY_KIND_INSTANCE, project, "", name))
            return name;
        g_free(name);
    }
}

/* Everything a new instance needs checked before any data moves: project, name, profiles, config, devices, a
 * root disk on an existing pool. base_config/base_devices/base_profiles come from a copy's source (NULL for a
 * new instance); the request's values override them. Returns the document to store (without "creating"). */
static json_t *validate_new_instance(FerryDaemon *daemon, const char *project, json_t *request, json_t *base_config,
                                     json_t *base_devices, json_t *base_profiles, gboolean allow_volatile,
                                     FerryPool **pool_out, GError **error)
{
    if (!ferry_db_exists(daemon->db, FERRY_KIND_PROJECT, "", "", project)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Project \"%s\" not found", project);
        return NULL;
    }
    const char *type = ferry_json_get_string(request, "type");
    if (type != NULL && *type != '\0' && !g_str_equal(type, "container")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                    "Instance type \"%s\" is not supported yet (containers only)", type);
        return NULL;
    }
    const char *name = ferry_json_get_string(request, "name");
    if (name == NULL || *name == '\0') {
        g_autofree char *generated = generate_name(daemon, project);
        json_object_set_new(request, "name", json_string(generated));
        name = ferry_json_get_string(request, "name");
    }
    if (!ferry_validate_instance_name(name, error))
        return NULL;
    if (ferry_db_exists(daemon->db, FERRY_KIND_INSTANCE, project, "", name)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Instance \"%s\" already exists", name);
        return NULL;
    }
    if (!ferry_json_check_string_map(request, "config", error))
        return NULL;
    json_t *profiles = json_object_get(request, "profiles");
    g_autoptr(json_t) profile_list = NULL;
    if (json_is_array(profiles))
        profile_list = json_deep_copy(profiles);
    else if (profiles != NULL && !json_is_null(profiles)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid profiles: must be a list of names");
        return NULL;
    } else if (base_profiles != NULL)
        profile_list = json_deep_copy(base_profiles);
    else
        profile_list = json_pack("[s]", "default");
    g_autoptr(json_t) requested_config = ferry_json_object_or_empty(request, "config");
    g_autoptr(json_t) requested_devices = ferry_json_object_or_empty(request, "devices");
    if (!ferry_config_validate(requested_config, FALSE, allow_volatile, error) ||
        !ferry_devices_validate(requested_devices, FALSE, error))
        return NULL;
    g_autoptr(json_t) config = base_config != NULL ? json_deep_copy(base_config) : json_object();
    json_object_update(config, requested_config);
    g_autoptr(json_t) devices = base_devices != NULL ? json_deep_copy(base_devices) : json_object();
    json_object_update(devices, requested_devices);
    g_autoptr(json_t) expanded_config = NULL;
    g_autoptr(json_t) expanded_devices = NULL;
    if (!ferry_config_expand(daemon->db, project, profile_list, config, devices, &expanded_config, &expanded_devices,
                             error) ||
        !ferry_config_validate(expanded_config, FALSE, TRUE, error) ||
        !ferry_devices_validate(expanded_devices, FALSE, error))
        return NULL;
    json_t *root = NULL;
    if (!ferry_devices_find_root(expanded_devices, NULL, &root, error))
        return NULL;
    FerryPool *pool = ferry_daemon_get_pool(daemon, ferry_json_get_string(root, "pool"), error);
    if (pool == NULL)
        return NULL;
    *pool_out = pool;
    const char *architecture = ferry_json_get_string(request, "architecture");
    if (architecture == NULL || *architecture == '\0')
        architecture = "x86_64";
    return json_pack("{s:s, s:s, s:O, s:O, s:O, s:b, s:s, s:s}", "type", "container", "architecture",
                     architecture, "config", config, "devices", devices,
                     "profiles", profile_list, "ephemeral", ferry_json_get_bool(request, "ephemeral", FALSE),
                     "description", ferry_json_get_string(request, "description") ?: "", "pool",
                     ferry_pool_get_name(pool));
}

/* Insert the row of an instance being created, marked "creating" and claimed, so a failure (or a restart)
 * can find and remove it with its volume. */
static gboolean insert_creating(FerryDaemon *daemon, const char *project, const char *name, json_t *doc,
                                GError **error)
{
    json_object_set_new(doc, "creating", json_true());
    /* A moved instance keeps its identity; anything else gets a new one. */
    json_t *config = json_object_get(doc, "config");
    if (ferry_json_get_string(config, "volatile.uuid") == NULL) {
        g_autofree char *uuid = g_uuid_string_random();
        json_object_set_new(config, "volatile.uuid", json_string(uuid));
    }
    if (!ferry_daemon_claim_instance(daemon, project, name, "create", error))
        return FALSE;
    if (!ferry_db_create(daemon->db, FERRY_KIND_INSTANCE, project, "", name, doc, error)) {
        ferry_daemon_release_instance(daemon, project, name);
        return FALSE;
    }
    return TRUE;
}

json_t *ferry_instance_create_prepare(FerryDaemon *daemon, const char *project, json_t *request, GError **error)
{
    json_t *source = json_object_get(request, "source");
    const char *source_type = source != NULL ? ferry_json_get_string(source, "type") : "none";
    if (source_type == NULL)
        source_type = "none";
    if (!g_str_equal(source_type, "image") && !g_str_equal(source_type, "none")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED, "Instance source \"%s\" is not supported yet",
                    source_type);
        return NULL;
    }
    /* Resolve the image first: an unknown image is the most likely mistake and says the most. */
    g_autofree char *fingerprint = NULL;
    g_autoptr(json_t) image = NULL;
    if (g_str_equal(source_type, "image")) {
        const char *server = ferry_json_get_string(source, "server");
        if (server != NULL && *server != '\0') {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                        "Images from remote image servers are not supported: import the image first");
            return NULL;
        }
        if (!ferry_db_exists(daemon->db, FERRY_KIND_PROJECT, "", "", project)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Project \"%s\" not found", project);
            return NULL;
        }
        fingerprint = ferry_image_resolve(daemon, project, source, error);
        if (fingerprint == NULL)
            return NULL;
        image = ferry_db_get(daemon->db, FERRY_KIND_IMAGE, project, "", fingerprint, error);
        if (image == NULL)
            return NULL;
        const char *requested_arch = ferry_json_get_string(request, "architecture");
        if ((requested_arch == NULL || *requested_arch == '\0') && ferry_json_get_string(image, "architecture"))
            json_object_set_new(request, "architecture", json_string(ferry_json_get_string(image, "architecture")));
    }
    FerryPool *pool = NULL;
    json_t *doc = validate_new_instance(daemon, project, request, NULL, NULL, NULL, FALSE, &pool, error);
    if (doc == NULL)
        return NULL;
    json_t *config = json_object_get(doc, "config");
    if (image != NULL) {
        /* Record what the image says about itself, as Incus does with image.* keys. */
        const char *key;
        json_t *value;
        json_object_foreach(json_object_get(image, "properties"), key, value) {
            g_autofree char *config_key = g_strdup_printf("image.%s", key);
            if (json_object_get(config, config_key) == NULL && json_is_string(value))
                json_object_set(config, config_key, value);
        }
        json_object_set_new(config, "volatile.base_image", json_string(fingerprint));
    }
    if (!insert_creating(daemon, project, ferry_json_get_string(request, "name"), doc, error)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

typedef struct {
    FerryOperation *op;
} UnpackProgress;

static void on_unpack_progress(guint64 done, guint64 total, gpointer user_data)
{
    UnpackProgress *progress = user_data;
    if (progress->op != NULL)
        ferry_operation_report_progress(progress->op, "create_instance_from_image_unpack_progress", "unpack", done,
                                        total);
}

/* Fill an empty instance volume from an image: on copy-on-write pools the image is unpacked once into an
 * image volume and each instance is a snapshot of it; elsewhere it is unpacked straight into the volume. */
static gboolean fill_from_image(FerryDaemon *daemon, FerryOperation *op, FerryPool *pool, const char *fingerprint,
                                const char *volume, const FerryIdmap *shift, GError **error)
{
    g_autofree char *tarball = ferry_image_path(daemon, fingerprint);
    GCancellable *cancellable = op != NULL ? ferry_operation_get_cancellable(op) : NULL;
    UnpackProgress progress = {op};
    if (g_str_equal(ferry_pool_get_driver(pool), "btrfs")) {
        if (!ferry_pool_volume_exists(pool, FERRY_VOLUME_IMAGE, fingerprint)) {
            g_autofree char *staging = g_strdup_printf("%s.unpacking", fingerprint);
            ferry_pool_delete_volume(pool, FERRY_VOLUME_IMAGE, staging, NULL);
            if (!ferry_pool_create_volume(pool, FERRY_VOLUME_IMAGE, staging, error))
                return FALSE;
            g_autofree char *staging_path = ferry_pool_volume_path(pool, FERRY_VOLUME_IMAGE, staging);
            if (!ferry_image_archive_unpack(tarball, staging_path, 0, 0, on_unpack_progress, &progress, cancellable,
                                            error) ||
                !ferry_pool_rename_volume(pool, FERRY_VOLUME_IMAGE, staging, fingerprint, error)) {
                ferry_pool_delete_volume(pool, FERRY_VOLUME_IMAGE, staging, NULL);
                return FALSE;
            }
        }
        if (!ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, volume, error) ||
            !ferry_pool_copy_volume(pool, FERRY_VOLUME_IMAGE, fingerprint, FERRY_VOLUME_CONTAINER, volume,
                                    cancellable, error))
            return FALSE;
        if (shift == NULL)
            return TRUE;
        g_autofree char *rootfs = instance_rootfs(pool, volume);
        return ferry_idmap_shift_tree(rootfs, shift->host_base, cancellable, error);
    }
    g_autofree char *path = ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, volume);
    guint32 base = shift != NULL ? shift->host_base : 0;
    return ferry_image_archive_unpack(tarball, path, base, base, on_unpack_progress, &progress, cancellable, error);
}

static FerryIdmap default_idmap(void)
{
    FerryIdmap map = {FERRY_IDMAP_DEFAULT_BASE, FERRY_IDMAP_DEFAULT_RANGE};
    return map;
}

gboolean ferry_instance_create_finish(FerryDaemon *daemon, FerryOperation *op, const char *project, const char *name,
                                      json_t *request, GError **error)
{
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL)
        return FALSE;
    FerryPool *pool = ferry_instance_get_pool(daemon, project, doc, error);
    if (pool == NULL)
        return FALSE;
    g_autofree char *volume = ferry_instance_volume_name(project, name);
    if (!ferry_pool_create_volume(pool, FERRY_VOLUME_CONTAINER, volume, error))
        return FALSE;
    g_autoptr(json_t) expanded_config = NULL;
    if (!ferry_config_expand(daemon->db, project, json_object_get(doc, "profiles"), json_object_get(doc, "config"),
                             NULL, &expanded_config, NULL, error))
        return FALSE;
    gboolean privileged = ferry_config_bool(expanded_config, "security.privileged");
    FerryIdmap map = default_idmap();
    json_t *config = json_object_get(doc, "config");
    const char *fingerprint = ferry_json_get_string(config, "volatile.base_image");
    if (fingerprint != NULL) {
        if (!fill_from_image(daemon, op, pool, fingerprint, volume, privileged ? NULL : &map, error))
            return FALSE;
    } else {
        g_autofree char *rootfs =
            instance_rootfs(pool, volume);
        if (g_mkdir(rootfs, 0755) < 0) {
            ferry_set_error_errno(error, errno, "Failed to create %s", rootfs);
            return FALSE;
        }
        if (!privileged && lchown(rootfs, map.host_base, map.host_base) < 0) {
            ferry_set_error_errno(error, errno, "Failed to set the owner of %s", rootfs);
            return FALSE;
        }
    }
    g_autofree char *idmap_json = ferry_idmap_to_json(privileged ? NULL : &map);
    json_object_set_new(config, "volatile.last_state.idmap", json_string(idmap_json));
    json_object_set_new(config, "volatile.idmap.base", json_string(privileged ? "0" : "1000000"));
    json_object_del(doc, "creating");
    if (!ferry_db_update(daemon->db, FERRY_KIND_INSTANCE, project, "", name, doc, error))
        return FALSE;
    ferry_daemon_release_instance(daemon, project, name);
    lifecycle(daemon, project, name, "instance-created");
    if (ferry_json_get_bool(request, "start", FALSE))
        return ferry_instance_start(daemon, project, name, error);
    return TRUE;
}

void ferry_instance_create_abort(FerryDaemon *daemon, const char *project, const char *name)
{
    g_autoptr(json_t) doc = load_instance(daemon, project, name, NULL);
    if (doc == NULL) {
        ferry_daemon_release_instance(daemon, project, name);
        return;
    }
    /* Only undo a creation, never delete an instance that finished being created (start may have failed). */
    if (ferry_json_get_bool(doc, "creating", FALSE)) {
        g_autofree char *volume = ferry_instance_volume_name(project, name);
        FerryPool *pool = ferry_instance_get_pool(daemon, project, doc, NULL);
        if (pool != NULL)
            ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, volume, NULL);
        ferry_db_delete(daemon->db, FERRY_KIND_INSTANCE, project, "", name, NULL);
    }
    ferry_daemon_release_instance(daemon, project, name);
}

/* Disk devices are bind-mounted by the daemon into $FERRY_DIR/devices/<container>/<device> first, from the
 * host's side, and liblxc mounts that inside: the container's root (an unprivileged uid) could not reach a
 * source behind a directory only host root may traverse. */
static char *stage_disk_device(FerryDaemon *daemon, const char *lxc_name, const char *device, const char *source,
                               GError **error)
{
    struct stat st;
    if (source[0] != '/' || stat(source, &st) < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Disk device \"%s\": source \"%s\" doesn't exist",
                    device, source);
        return NULL;
    }
    g_autofree char *dir = ferry_daemon_path(daemon, "devices", lxc_name, NULL);
    if (g_mkdir_with_parents(dir, 0711) < 0) {
        ferry_set_error_errno(error, errno, "Failed to create %s", dir);
        return NULL;
    }
    char *target = g_build_filename(dir, device, NULL);
    umount2(target, MNT_DETACH);
    int fd = S_ISDIR(st.st_mode) ? (g_mkdir(target, 0700) < 0 && errno != EEXIST ? -1 : 0)
                                 : open(target, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (fd > 0)
        close(fd);
    if (fd < 0 || mount(source, target, NULL, MS_BIND | MS_REC, NULL) < 0) {
        ferry_set_error_errno(error, errno, "Failed to prepare disk device \"%s\" (%s)", device, source);
        g_free(target);
        return NULL;
    }
    return target;
}

/* Undo stage_disk_device for every device of a container (after it stopped, or a failed start). */
static void release_disk_devices(FerryDaemon *daemon, const char *lxc_name)
{
    g_autofree char *dir = ferry_daemon_path(daemon, "devices", lxc_name, NULL);
    g_autoptr(GDir) listing = g_dir_open(dir, 0, NULL);
    const char *entry;
    while (listing != NULL && (entry = g_dir_read_name(listing)) != NULL) {
        g_autofree char *target = g_build_filename(dir, entry, NULL);
        umount2(target, MNT_DETACH);
        g_remove(target);
    }
    g_rmdir(dir);
}

/* limits.memory and limits.cpu as the runtime takes them. */
static void limits_of(json_t *expanded_config, gint64 *memory_bytes, const char **cpuset, gint64 *cpu_count)
{
    *memory_bytes = 0;
    *cpuset = NULL;
    *cpu_count = 0;
    const char *memory = ferry_json_get_string(expanded_config, "limits.memory");
    if (memory != NULL && *memory != '\0') {
        gsize length = strlen(memory);
        if (memory[length - 1] == '%') {
            gint64 percent = g_ascii_strtoll(memory, NULL, 10);
            *memory_bytes = (gint64)sysconf(_SC_PHYS_PAGES) * (gint64)sysconf(_SC_PAGESIZE) / 100 * percent;
        } else {
            ferry_parse_size(memory, memory_bytes);
        }
    }
    const char *cpu = ferry_json_get_string(expanded_config, "limits.cpu");
    if (cpu != NULL && *cpu != '\0') {
        guint64 count;
        if (g_ascii_string_to_unsigned(cpu, 10, 1, 4096, &count, NULL))
            *cpu_count = (gint64)count;
        else
            *cpuset = cpu;
    }
}

/* liblxc config from the expanded instance config. */
static gboolean write_lxc_config(FerryDaemon *daemon, const char *project, const char *name, json_t *doc,
                                 FerryPool *pool, json_t *expanded_config, GError **error)
{
    g_autofree char *lxcpath = lxc_path(daemon);
    g_autofree char *lxc_name = ferry_instance_volume_name(project, name);
    g_autofree char *rootfs =
        instance_rootfs(pool, lxc_name);
    g_autofree char *log_dir = ferry_daemon_path(daemon, "logs", lxc_name, NULL);
    g_autofree char *log_file = g_build_filename(log_dir, "lxc.log", NULL);
    g_autofree char *console_log = g_build_filename(log_dir, "console.log", NULL);
    g_autoptr(GPtrArray) environment = g_ptr_array_new_with_free_func(g_free);
    const char *key;
    json_t *value;
    json_object_foreach(expanded_config, key, value) {
        if (g_str_has_prefix(key, "environment."))
            g_ptr_array_add(environment,
                            g_strdup_printf("%s=%s", key + strlen("environment."), json_string_value(value)));
    }
    g_ptr_array_add(environment, NULL);

    FerryContainerSpec spec = {
        .lxcpath = lxcpath,
        .lxc_name = lxc_name,
        .rootfs = rootfs,
        .hostname = name,
        .log_file = log_file,
        .console_log = console_log,
        .privileged = ferry_config_bool(expanded_config, "security.privileged"),
        .idmap = default_idmap(),
        .environment = (const char *const *)environment->pdata,
    };
    limits_of(expanded_config, &spec.memory_limit_bytes, &spec.cpuset, &spec.cpu_count);
    g_autoptr(json_t) expanded_devices = NULL;
    if (!ferry_config_expand(daemon->db, project, json_object_get(doc, "profiles"), NULL,
                             json_object_get(doc, "devices"), NULL, &expanded_devices, error))
        return FALSE;
    g_autoptr(GArray) mounts = g_array_new(FALSE, TRUE, sizeof(FerryContainerMount));
    g_autoptr(GPtrArray) staged = g_ptr_array_new_with_free_func(g_free);
    const char *device_name;
    json_t *device;
    json_object_foreach(expanded_devices, device_name, device) {
        const char *source = ferry_json_get_string(device, "source");
        const char *path = ferry_json_get_string(device, "path");
        if (g_strcmp0(ferry_json_get_string(device, "type"), "disk") != 0 || source == NULL || path == NULL ||
            g_str_equal(path, "/"))
            continue;
        char *stage = stage_disk_device(daemon, lxc_name, device_name, source, error);
        if (stage == NULL) {
            release_disk_devices(daemon, lxc_name);
            return FALSE;
        }
        g_ptr_array_add(staged, stage);
        FerryContainerMount mount = {stage, path, ferry_config_bool(device, "readonly")};
        g_array_append_val(mounts, mount);
    }
    spec.mounts = (const FerryContainerMount *)(void *)mounts->data;
    spec.n_mounts = mounts->len;
    if (!ferry_container_write_config(&spec, error)) {
        release_disk_devices(daemon, lxc_name);
        return FALSE;
    }
    return TRUE;
}

/* Make the rootfs owners match the wanted map (privileged <-> unprivileged switch). */
static gboolean reconcile_idmap(FerryDaemon *daemon, const char *project, const char *name, json_t *doc,
                                FerryPool *pool, gboolean privileged, GError **error)
{
    json_t *config = json_object_get(doc, "config");
    const char *last = ferry_json_get_string(config, "volatile.last_state.idmap");
    FerryIdmap current = default_idmap();
    gboolean currently_privileged = FALSE;
    if (last != NULL && !ferry_idmap_from_json(last, &current, &currently_privileged, error))
        return FALSE;
    if (currently_privileged == privileged)
        return TRUE;
    g_autofree char *volume = ferry_instance_volume_name(project, name);
    g_autofree char *rootfs =
        instance_rootfs(pool, volume);
    FerryIdmap wanted = default_idmap();
    gint64 delta = privileged ? -(gint64)current.host_base : (gint64)wanted.host_base;
    if (!ferry_idmap_shift_tree(rootfs, delta, NULL, error)) {
        g_prefix_error(error, "Failed to remap the root filesystem: ");
        return FALSE;
    }
    g_autofree char *idmap_json = ferry_idmap_to_json(privileged ? NULL : &wanted);
    json_object_set_new(config, "volatile.last_state.idmap", json_string(idmap_json));
    return ferry_db_update(daemon->db, FERRY_KIND_INSTANCE, project, "", name, doc, error);
}

gboolean ferry_instance_start(FerryDaemon *daemon, const char *project, const char *name, GError **error)
{
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL)
        return FALSE;
    int code = 0;
    ferry_instance_status(daemon, project, name, &code);
    if (code == 103) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "The instance is already running");
        return FALSE;
    }
    FerryPool *pool = ferry_instance_get_pool(daemon, project, doc, error);
    if (pool == NULL)
        return FALSE;
    g_autoptr(json_t) expanded_config = NULL;
    if (!ferry_config_expand(daemon->db, project, json_object_get(doc, "profiles"), json_object_get(doc, "config"),
                             NULL, &expanded_config, NULL, error))
        return FALSE;
    gboolean privileged = ferry_config_bool(expanded_config, "security.privileged");
    /* The volume directory must let the container's root (an unprivileged uid) through to the rootfs; data
     * received from Incus keeps Incus's 0100. */
    g_autofree char *lxc_name = ferry_instance_volume_name(project, name);
    g_autofree char *volume_path = ferry_pool_volume_path(pool, FERRY_VOLUME_CONTAINER, lxc_name);
    if (g_chmod(volume_path, 0711) < 0) {
        ferry_set_error_errno(error, errno, "Failed to set the mode of %s", volume_path);
        return FALSE;
    }
    if (!reconcile_idmap(daemon, project, name, doc, pool, privileged, error) ||
        !write_lxc_config(daemon, project, name, doc, pool, expanded_config, error))
        return FALSE;
    g_autofree char *lxcpath = lxc_path(daemon);
    if (!ferry_container_start(lxcpath, lxc_name, daemon->helper_binary, error)) {
        release_disk_devices(daemon, lxc_name);
        g_prefix_error(error, "Failed to start instance \"%s\": ", name);
        return FALSE;
    }
    json_t *config = json_object_get(doc, "config");
    json_object_set_new(config, "volatile.last_state.power", json_string("RUNNING"));
    g_autofree char *now = ferry_json_timestamp(g_get_real_time());
    json_object_set_new(doc, "last_used_at", json_string(now));
    ferry_db_update(daemon->db, FERRY_KIND_INSTANCE, project, "", name, doc, NULL);
    lifecycle(daemon, project, name, "instance-started");
    return TRUE;
}

gboolean ferry_instance_stop(FerryDaemon *daemon, const char *project, const char *name, gboolean force,
                             int timeout_seconds, GError **error)
{
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL)
        return FALSE;
    int code = 0;
    ferry_instance_status(daemon, project, name, &code);
    if (code == 102) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "The instance is already stopped");
        return FALSE;
    }
    g_autofree char *lxcpath = lxc_path(daemon);
    g_autofree char *lxc_name = ferry_instance_volume_name(project, name);
    if (!ferry_container_stop(lxcpath, lxc_name, force, timeout_seconds, error)) {
        g_prefix_error(error, "Failed to stop instance \"%s\": ", name);
        return FALSE;
    }
    release_disk_devices(daemon, lxc_name);
    json_object_set_new(json_object_get(doc, "config"), "volatile.last_state.power", json_string("STOPPED"));
    ferry_db_update(daemon->db, FERRY_KIND_INSTANCE, project, "", name, doc, NULL);
    lifecycle(daemon, project, name, force ? "instance-stopped" : "instance-shutdown");
    if (ferry_json_get_bool(doc, "ephemeral", FALSE))
        return ferry_instance_delete(daemon, project, name, error);
    return TRUE;
}

gboolean ferry_instance_delete(FerryDaemon *daemon, const char *project, const char *name, GError **error)
{
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL)
        return FALSE;
    int code = 0;
    ferry_instance_status(daemon, project, name, &code);
    if (code != 102) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "The instance is currently running, stop it first");
        return FALSE;
    }
    if (ferry_config_bool(json_object_get(doc, "config"), "security.protection.delete")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Instance is protected from being deleted (security.protection.delete)");
        return FALSE;
    }
    FerryPool *pool = ferry_instance_get_pool(daemon, project, doc, error);
    if (pool == NULL)
        return FALSE;
    g_autofree char *volume = ferry_instance_volume_name(project, name);
    /* Data first, then the record: a failure part-way leaves a row that can be deleted again, never a row
     * pointing at nothing that blocks the name. */
    if (!ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, volume, error))
        return FALSE;
    g_autofree char *lxcpath = lxc_path(daemon);
    release_disk_devices(daemon, volume);
    ferry_container_destroy_config(lxcpath, volume, NULL);
    g_autofree char *log_dir = ferry_daemon_path(daemon, "logs", volume, NULL);
    g_autofree char *console_log = g_build_filename(log_dir, "console.log", NULL);
    g_autofree char *lxc_log = g_build_filename(log_dir, "lxc.log", NULL);
    g_unlink(console_log);
    g_unlink(lxc_log);
    g_rmdir(log_dir);
    if (!ferry_db_delete(daemon->db, FERRY_KIND_INSTANCE, project, "", name, error))
        return FALSE;
    lifecycle(daemon, project, name, "instance-deleted");
    return TRUE;
}

gboolean ferry_instance_rename(FerryDaemon *daemon, const char *project, const char *name, const char *new_name,
                               GError **error)
{
    if (!ferry_validate_instance_name(new_name, error))
        return FALSE;
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL)
        return FALSE;
    if (ferry_db_exists(daemon->db, FERRY_KIND_INSTANCE, project, "", new_name)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Name \"%s\" already in use", new_name);
        return FALSE;
    }
    int code = 0;
    ferry_instance_status(daemon, project, name, &code);
    if (code != 102) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Renaming of running instance not allowed");
        return FALSE;
    }
    FerryPool *pool = ferry_instance_get_pool(daemon, project, doc, error);
    if (pool == NULL)
        return FALSE;
    g_autofree char *old_volume = ferry_instance_volume_name(project, name);
    g_autofree char *new_volume = ferry_instance_volume_name(project, new_name);
    if (!ferry_pool_rename_volume(pool, FERRY_VOLUME_CONTAINER, old_volume, new_volume, error))
        return FALSE;
    if (!ferry_db_rename(daemon->db, FERRY_KIND_INSTANCE, project, "", name, new_name, error)) {
        ferry_pool_rename_volume(pool, FERRY_VOLUME_CONTAINER, new_volume, old_volume, NULL);
        return FALSE;
    }
    g_autofree char *lxcpath = lxc_path(daemon);
    ferry_container_destroy_config(lxcpath, old_volume, NULL);
    g_autofree char *old_logs = ferry_daemon_path(daemon, "logs", old_volume, NULL);
    g_autofree char *new_logs = ferry_daemon_path(daemon, "logs", new_volume, NULL);
    g_rename(old_logs, new_logs);
    lifecycle(daemon, project, new_name, "instance-renamed");
    return TRUE;
}

gboolean ferry_instance_update(FerryDaemon *daemon, const char *project, const char *name, json_t *changes,
                               gboolean patch, GError **error)
{
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL)
        return FALSE;
    if (!ferry_json_check_string_map(changes, "config", error))
        return FALSE;
    json_t *config = json_object_get(doc, "config");
    g_autoptr(json_t) new_config = NULL;
    json_t *requested_config = json_object_get(changes, "config");
    if (patch) {
        new_config = json_deep_copy(config);
        if (json_is_object(requested_config))
            json_object_update(new_config, requested_config);
    } else {
        new_config = json_is_object(requested_config) ? json_deep_copy(requested_config) : json_object();
    }
    /* Users can't set volatile keys, but PUT sends back what GET showed: keep ours, ignore theirs. */
    const char *key;
    json_t *value;
    void *tmp;
    json_object_foreach_safe(new_config, tmp, key, value) {
        if (g_str_has_prefix(key, "volatile."))
            json_object_del(new_config, key);
    }
    if (!ferry_config_validate(new_config, FALSE, FALSE, error))
        return FALSE;
    json_object_foreach(config, key, value) {
        if (g_str_has_prefix(key, "volatile."))
            json_object_set(new_config, key, value);
    }
    g_autoptr(json_t) new_devices = NULL;
    json_t *requested_devices = json_object_get(changes, "devices");
    if (patch) {
        new_devices = json_deep_copy(json_object_get(doc, "devices"));
        if (json_is_object(requested_devices))
            json_object_update(new_devices, requested_devices);
    } else {
        new_devices = json_is_object(requested_devices) ? json_deep_copy(requested_devices) : json_object();
    }
    if (!ferry_devices_validate(new_devices, FALSE, error))
        return FALSE;
    json_t *profiles = json_object_get(changes, "profiles");
    g_autoptr(json_t) new_profiles = json_is_array(profiles) ? json_deep_copy(profiles)
                                     : patch ? json_deep_copy(json_object_get(doc, "profiles"))
                                             : json_array();
    g_autoptr(json_t) expanded_devices = NULL;
    g_autoptr(json_t) expanded_config = NULL;
    if (!ferry_config_expand(daemon->db, project, new_profiles, new_config, new_devices, &expanded_config,
                             &expanded_devices, error) ||
        !ferry_devices_find_root(expanded_devices, NULL, NULL, error))
        return FALSE;
    json_object_set(doc, "config", new_config);
    json_object_set(doc, "devices", new_devices);
    json_object_set(doc, "profiles", new_profiles);
    const char *description = ferry_json_get_string(changes, "description");
    if (description != NULL || !patch)
        json_object_set_new(doc, "description", json_string(description != NULL ? description : ""));
    json_t *ephemeral = json_object_get(changes, "ephemeral");
    if (json_is_boolean(ephemeral))
        json_object_set(doc, "ephemeral", ephemeral);
    if (!ferry_db_update(daemon->db, FERRY_KIND_INSTANCE, project, "", name, doc, error))
        return FALSE;
    /* Limits take effect at once on a running container, as in Incus; the rest at the next start. */
    int code = 0;
    ferry_instance_status(daemon, project, name, &code);
    if (code == 103) {
        gint64 memory = 0, cpus = 0;
        const char *cpuset = NULL;
        limits_of(expanded_config, &memory, &cpuset, &cpus);
        g_autofree char *lxcpath = lxc_path(daemon);
        g_autofree char *lxc_name = ferry_instance_volume_name(project, name);
        if (!ferry_container_apply_limits(lxcpath, lxc_name, memory, cpuset, cpus, error))
            return FALSE;
    }
    lifecycle(daemon, project, name, "instance-updated");
    return TRUE;
}

char *ferry_snapshot_next_name(FerryDaemon *daemon, const char *project, const char *name)
{
    for (int i = 0;; i++) {
        char *candidate = g_strdup_printf("snap%d", i);
        if (!ferry_db_exists(daemon->db, FERRY_KIND_SNAPSHOT, project, name, candidate))
            return candidate;
        g_free(candidate);
    }
}

gboolean ferry_snapshot_create(FerryDaemon *daemon, const char *project, const char *name, const char *snapshot,
                               GError **error)
{
    if (!ferry_validate_snapshot_name(snapshot, error))
        return FALSE;
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL)
        return FALSE;
    FerryPool *pool = ferry_instance_get_pool(daemon, project, doc, error);
    if (pool == NULL)
        return FALSE;
    g_autoptr(json_t) expanded_config = NULL;
    g_autoptr(json_t) expanded_devices = NULL;
    if (!ferry_config_expand(daemon->db, project, json_object_get(doc, "profiles"), json_object_get(doc, "config"),
                             json_object_get(doc, "devices"), &expanded_config, &expanded_devices, error))
        return FALSE;
    g_autoptr(json_t) snap = json_pack("{s:O, s:O, s:O, s:O, s:O, s:O, s:b}", "architecture",
                                       json_object_get(doc, "architecture"), "config", json_object_get(doc, "config"),
                                       "devices", json_object_get(doc, "devices"), "profiles",
                                       json_object_get(doc, "profiles"), "expanded_config", expanded_config,
                                       "expanded_devices", expanded_devices, "stateful", FALSE);
    /* Record first so a name clash is found before any data is copied; undo on failure. */
    if (!ferry_db_create(daemon->db, FERRY_KIND_SNAPSHOT, project, name, snapshot, snap, error))
        return FALSE;
    g_autofree char *volume = ferry_instance_volume_name(project, name);
    if (!ferry_pool_create_snapshot(pool, FERRY_VOLUME_CONTAINER, volume, snapshot, error)) {
        ferry_db_delete(daemon->db, FERRY_KIND_SNAPSHOT, project, name, snapshot, NULL);
        return FALSE;
    }
    g_autofree char *url = g_strdup_printf("/1.0/instances/%s/snapshots/%s", name, snapshot);
    ferry_events_lifecycle(daemon->events, project, "instance-snapshot-created", url);
    return TRUE;
}

gboolean ferry_snapshot_delete(FerryDaemon *daemon, const char *project, const char *name, const char *snapshot,
                               GError **error)
{
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL || !ferry_db_exists(daemon->db, FERRY_KIND_SNAPSHOT, project, name, snapshot)) {
        if (doc != NULL)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Snapshot \"%s/%s\" not found", name, snapshot);
        return FALSE;
    }
    FerryPool *pool = ferry_instance_get_pool(daemon, project, doc, error);
    if (pool == NULL)
        return FALSE;
    g_autofree char *volume = ferry_instance_volume_name(project, name);
    if (ferry_pool_snapshot_exists(pool, FERRY_VOLUME_CONTAINER, volume, snapshot) &&
        !ferry_pool_delete_snapshot(pool, FERRY_VOLUME_CONTAINER, volume, snapshot, error))
        return FALSE;
    if (!ferry_db_delete(daemon->db, FERRY_KIND_SNAPSHOT, project, name, snapshot, error))
        return FALSE;
    g_autofree char *url = g_strdup_printf("/1.0/instances/%s/snapshots/%s", name, snapshot);
    ferry_events_lifecycle(daemon->events, project, "instance-snapshot-deleted", url);
    return TRUE;
}

gboolean ferry_snapshot_rename(FerryDaemon *daemon, const char *project, const char *name, const char *snapshot,
                               const char *new_name, GError **error)
{
    if (!ferry_validate_snapshot_name(new_name, error))
        return FALSE;
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL)
        return FALSE;
    if (!ferry_db_exists(daemon->db, FERRY_KIND_SNAPSHOT, project, name, snapshot)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Snapshot \"%s/%s\" not found", name, snapshot);
        return FALSE;
    }
    if (ferry_db_exists(daemon->db, FERRY_KIND_SNAPSHOT, project, name, new_name)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Name \"%s\" already in use", new_name);
        return FALSE;
    }
    FerryPool *pool = ferry_instance_get_pool(daemon, project, doc, error);
    if (pool == NULL)
        return FALSE;
    g_autofree char *volume = ferry_instance_volume_name(project, name);
    if (!ferry_pool_rename_snapshot(pool, FERRY_VOLUME_CONTAINER, volume, snapshot, new_name, error))
        return FALSE;
    if (!ferry_db_rename(daemon->db, FERRY_KIND_SNAPSHOT, project, name, snapshot, new_name, error)) {
        ferry_pool_rename_snapshot(pool, FERRY_VOLUME_CONTAINER, volume, new_name, snapshot, NULL);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_snapshot_restore(FerryDaemon *daemon, const char *project, const char *name, const char *snapshot,
                                GError **error)
{
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL)
        return FALSE;
    g_autoptr(json_t) snap = ferry_db_get(daemon->db, FERRY_KIND_SNAPSHOT, project, name, snapshot, error);
    if (snap == NULL)
        return FALSE;
    int code = 0;
    ferry_instance_status(daemon, project, name, &code);
    gboolean was_running = code == 103;
    if (was_running && !ferry_instance_stop(daemon, project, name, TRUE, -1, error))
        return FALSE;
    FerryPool *pool = ferry_instance_get_pool(daemon, project, doc, error);
    if (pool == NULL)
        return FALSE;
    g_autofree char *volume = ferry_instance_volume_name(project, name);
    if (!ferry_pool_restore_snapshot(pool, FERRY_VOLUME_CONTAINER, volume, snapshot, error))
        return FALSE;
    /* The configuration comes back too, keeping our own volatile bookkeeping about the data on disk. */
    json_t *config = json_deep_copy(json_object_get(snap, "config"));
    const char *key;
    json_t *value;
    json_object_foreach(json_object_get(doc, "config"), key, value) {
        if (g_str_has_prefix(key, "volatile."))
            json_object_set(config, key, value);
    }
    json_object_set_new(doc, "config", config);
    json_object_set(doc, "devices", json_object_get(snap, "devices"));
    json_object_set(doc, "profiles", json_object_get(snap, "profiles"));
    if (!ferry_db_update(daemon->db, FERRY_KIND_INSTANCE, project, "", name, doc, error))
        return FALSE;
    lifecycle(daemon, project, name, "instance-restored");
    if (was_running)
        return ferry_instance_start(daemon, project, name, error);
    return TRUE;
}

void ferry_instances_recover(FerryDaemon *daemon)
{
    g_autoptr(json_t) instances = ferry_db_list(daemon->db, FERRY_KIND_INSTANCE, NULL, "");
    size_t index;
    json_t *doc;
    json_array_foreach(instances, index, doc) {
        const char *doc_project = ferry_json_get_string(doc, "project");
        /* A refresh or backup import interrupted by a crash leaves its staging copy beside the instance volume. */
        FerryPool *pool = ferry_instance_get_pool(daemon, doc_project != NULL ? doc_project : "default", doc, NULL);
        static const char *const staged_by[] = {"refresh", "import"};
        for (gsize i = 0; pool != NULL && i < G_N_ELEMENTS(staged_by); i++) {
            g_autofree char *volume = ferry_instance_volume_name(doc_project != NULL ? doc_project : "default",
                                                                 ferry_json_get_string(doc, "name"));
            g_autofree char *staging = g_strdup_printf("%s.%s", volume, staged_by[i]);
            if (ferry_pool_volume_exists(pool, FERRY_VOLUME_CONTAINER, staging)) {
                g_message("Removing the staging copy of an interrupted %s of \"%s\"", staged_by[i],
                          ferry_json_get_string(doc, "name"));
                ferry_pool_delete_volume(pool, FERRY_VOLUME_CONTAINER, staging, NULL);
            }
        }
        if (!ferry_json_get_bool(doc, "creating", FALSE))
            continue;
        const char *project = ferry_json_get_string(doc, "project");
        const char *name = ferry_json_get_string(doc, "name");
        g_message("Removing instance \"%s\" (project \"%s\") left half-created by an interrupted operation", name,
                  project != NULL ? project : "default");
        ferry_instance_create_abort(daemon, project != NULL ? project : "default", name);
    }
    g_mutex_lock(&daemon->pools_lock);
    GHashTableIter iter;
    gpointer pool;
    g_hash_table_iter_init(&iter, daemon->pools);
    while (g_hash_table_iter_next(&iter, NULL, &pool))
        ferry_pool_cleanup_staging(pool, NULL);
    g_mutex_unlock(&daemon->pools_lock);
}

json_t *ferry_instance_config_for_copy(json_t *config)
{
    /* Incus keeps only the volatile keys that describe the data; the copy gets its own identity. */
    static const char *const kept_volatile[] = {"volatile.base_image", "volatile.last_state.idmap",
                                                "volatile.idmap.base", NULL};
    json_t *copy = json_object();
    const char *key;
    json_t *value;
    json_object_foreach(config, key, value) {
        if (!g_str_has_prefix(key, "volatile.") || g_strv_contains(kept_volatile, key))
            json_object_set(copy, key, value);
    }
    return copy;
}

/* Parse source.source "name[/snapshot]"; returns the instance name, sets *snapshot_out (or NULL). */
static char *split_source(const char *source, char **snapshot_out)
{
    const char *slash = strchr(source, '/');
    *snapshot_out = slash != NULL ? g_strdup(slash + 1) : NULL;
    return slash != NULL ? g_strndup(source, slash - source) : g_strdup(source);
}

json_t *ferry_instance_copy_prepare(FerryDaemon *daemon, const char *project, json_t *request, GError **error)
{
    json_t *source = json_object_get(request, "source");
    const char *source_name = ferry_json_get_string(source, "source");
    const char *source_project = ferry_json_get_string(source, "project");
    if (source_project == NULL || *source_project == '\0')
        source_project = project;
    if (source_name == NULL || *source_name == '\0') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Copy needs the source instance in \"source.source\"");
        return NULL;
    }
    g_autofree char *snapshot = NULL;
    g_autofree char *instance = split_source(source_name, &snapshot);
    g_autoptr(json_t) origin = NULL;
    if (snapshot != NULL) {
        if (ferry_json_get_bool(source, "refresh", FALSE)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "A snapshot can't be the source of a refresh");
            return NULL;
        }
        origin = ferry_db_get(daemon->db, FERRY_KIND_SNAPSHOT, source_project, instance, snapshot, error);
    } else {
        origin = ferry_db_get(daemon->db, FERRY_KIND_INSTANCE, source_project, "", instance, error);
    }
    if (origin == NULL)
        return NULL;
    g_autoptr(json_t) base_config = ferry_instance_config_for_copy(json_object_get(origin, "config"));
    FerryPool *pool = NULL;
    json_t *doc = validate_new_instance(daemon, project, request, base_config, json_object_get(origin, "devices"),
                                        json_object_get(origin, "profiles"), TRUE, &pool, error);
    if (doc == NULL)
        return NULL;
    json_object_set(doc, "architecture", json_object_get(origin, "architecture") ?: json_string("x86_64"));
    if (!insert_creating(daemon, project, ferry_json_get_string(request, "name"), doc, error)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* Copy a directory tree between pools (different filesystems): the real rsync, locally, keeping everything
 * ferry's volumes carry. */
static gboolean copy_tree(const char *from, const char *to, GCancellable *cancellable, GError **error)
{
    g_autofree char *source = g_strdup_printf("%s/", from);
    g_autoptr(GSubprocess) rsync = g_subprocess_new(
        G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_PIPE, error, "rsync", "-aHAX", "--numeric-ids",
        "--devices", "--sparse", "--delete", source, to, NULL);
    if (rsync == NULL)
        return FALSE;
    g_autofree char *stderr_text = NULL;
    if (!g_subprocess_communicate_utf8(rsync, NULL, cancellable, NULL, &stderr_text, error))
        return FALSE;
    if (!g_subprocess_get_successful(rsync)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Copying %s failed: %s", from,
                    stderr_text != NULL ? g_strstrip(stderr_text) : "rsync failed");
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_instance_copy_finish(FerryDaemon *daemon, FerryOperation *op, const char *project, const char *name,
                                    json_t *request, GError **error)
{
    GCancellable *cancellable = op != NULL ? ferry_operation_get_cancellable(op) : NULL;
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL)
        return FALSE;
    json_t *source = json_object_get(request, "source");
    const char *source_project = ferry_json_get_string(source, "project");
    if (source_project == NULL || *source_project == '\0')
        source_project = project;
    g_autofree char *snapshot = NULL;
    g_autofree char *instance = split_source(ferry_json_get_string(source, "source"), &snapshot);
    g_autoptr(json_t) origin = load_instance(daemon, source_project, instance, error);
    if (origin == NULL)
        return FALSE;
    FerryPool *from = ferry_instance_get_pool(daemon, source_project, origin, error);
    FerryPool *to = from != NULL ? ferry_instance_get_pool(daemon, project, doc, error) : NULL;
    if (to == NULL)
        return FALSE;
    g_autofree char *from_volume = ferry_instance_volume_name(source_project, instance);
    g_autofree char *to_volume = ferry_instance_volume_name(project, name);
    gboolean instance_only = ferry_json_get_bool(source, "instance_only", FALSE) || snapshot != NULL;
    g_autoptr(GPtrArray) snapshots = instance_only
                                         ? g_ptr_array_new_with_free_func(g_free)
                                         : ferry_db_list_names(daemon->db, FERRY_KIND_SNAPSHOT, source_project, instance);

    if (from == to) {
        /* Same pool: copy-on-write where the driver can (btrfs snapshots, reflinks). */
        gboolean copied = snapshot != NULL ? ferry_pool_copy_snapshot_to_volume(to, FERRY_VOLUME_CONTAINER, from_volume,
                                                                                snapshot, to_volume, cancellable, error)
                                           : ferry_pool_copy_volume(to, FERRY_VOLUME_CONTAINER, from_volume,
                                                                    FERRY_VOLUME_CONTAINER, to_volume, cancellable,
                                                                    error);
        if (!copied)
            return FALSE;
        for (guint i = 0; i < snapshots->len; i++) {
            if (!ferry_pool_copy_snapshot(to, FERRY_VOLUME_CONTAINER, from_volume, snapshots->pdata[i], to_volume,
                                          snapshots->pdata[i], cancellable, error))
                return FALSE;
        }
    } else {
        /* Another pool: each snapshot is copied into the new volume and snapshotted there, oldest first, so
         * rsync only moves each snapshot's differences; then the instance itself. */
        if (!ferry_pool_create_volume(to, FERRY_VOLUME_CONTAINER, to_volume, error))
            return FALSE;
        g_autofree char *to_path = ferry_pool_volume_path(to, FERRY_VOLUME_CONTAINER, to_volume);
        for (guint i = 0; i < snapshots->len; i++) {
            g_autofree char *snapshot_path =
                ferry_pool_snapshot_path(from, FERRY_VOLUME_CONTAINER, from_volume, snapshots->pdata[i]);
            if (!copy_tree(snapshot_path, to_path, cancellable, error) ||
                !ferry_pool_create_snapshot(to, FERRY_VOLUME_CONTAINER, to_volume, snapshots->pdata[i], error))
                return FALSE;
        }
        g_autofree char *from_path = snapshot != NULL
                                         ? ferry_pool_snapshot_path(from, FERRY_VOLUME_CONTAINER, from_volume, snapshot)
                                         : ferry_pool_volume_path(from, FERRY_VOLUME_CONTAINER, from_volume);
        if (!copy_tree(from_path, to_path, cancellable, error))
            return FALSE;
    }
    for (guint i = 0; i < snapshots->len; i++) {
        g_autoptr(json_t) snap =
            ferry_db_get(daemon->db, FERRY_KIND_SNAPSHOT, source_project, instance, snapshots->pdata[i], error);
        if (snap == NULL)
            return FALSE;
        if (ferry_json_get_string(snap, "created_at") == NULL) {
            g_autofree char *created = ferry_json_timestamp(ferry_db_created_at(
                daemon->db, FERRY_KIND_SNAPSHOT, source_project, instance, snapshots->pdata[i]));
            json_object_set_new(snap, "created_at", json_string(created));
        }
        if (!ferry_db_create(daemon->db, FERRY_KIND_SNAPSHOT, project, name, snapshots->pdata[i], snap, error))
            return FALSE;
    }
    json_object_del(doc, "creating");
    if (!ferry_db_update(daemon->db, FERRY_KIND_INSTANCE, project, "", name, doc, error))
        return FALSE;
    ferry_daemon_release_instance(daemon, project, name);
    lifecycle(daemon, project, name, "instance-created");
    if (ferry_json_get_bool(request, "start", FALSE))
        return ferry_instance_start(daemon, project, name, error);
    return TRUE;
}

json_t *ferry_instance_prepare_new(FerryDaemon *daemon, const char *project, json_t *request, GError **error)
{
    FerryPool *pool = NULL;
    /* Incus clients send the source's volatile keys along with a move, and the data they describe. */
    json_t *doc = validate_new_instance(daemon, project, request, NULL, NULL, NULL, TRUE, &pool, error);
    if (doc == NULL)
        return NULL;
    if (!insert_creating(daemon, project, ferry_json_get_string(request, "name"), doc, error)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

gboolean ferry_instance_creation_done(FerryDaemon *daemon, const char *project, const char *name,
                                      json_t *config_updates, gboolean start, GError **error)
{
    g_autoptr(json_t) doc = load_instance(daemon, project, name, error);
    if (doc == NULL)
        return FALSE;
    if (json_is_object(config_updates))
        json_object_update(json_object_get(doc, "config"), config_updates);
    json_object_del(doc, "creating");
    if (!ferry_db_update(daemon->db, FERRY_KIND_INSTANCE, project, "", name, doc, error))
        return FALSE;
    ferry_daemon_release_instance(daemon, project, name);
    lifecycle(daemon, project, name, "instance-created");
    return start ? ferry_instance_start(daemon, project, name, error) : TRUE;
}
