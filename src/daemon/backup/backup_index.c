#include "backup_index.h"

#include "error.h"
#include "json.h"
#include "names.h"
#include "yaml.h"

#include <string.h>

void ferry_backup_index_free(FerryBackupIndex *index)
{
    if (index == NULL)
        return;
    g_free(index->name);
    g_free(index->backend);
    g_free(index->pool);
    g_free(index->type);
    g_clear_pointer(&index->snapshots, g_ptr_array_unref);
    json_decref(index->config);
    g_free(index);
}

static gboolean invalid(GError **error, const char *message)
{
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid backup index.yaml: %s", message);
    return FALSE;
}

/* A scalar as text (YAML typing may have made "1" an integer); NULL for a missing or null field. */
static char *scalar_field(json_t *object, const char *key)
{
    json_t *value = json_object_get(object, key);
    if (value == NULL || json_is_null(value))
        return NULL;
    return ferry_yaml_scalar_text(value);
}

/* Incus's config and device values are strings; a YAML writer that leaves 2 or true unquoted means the same
 * text. FALSE for a nested collection. */
static gboolean stringify_map(json_t *map)
{
    if (map == NULL || json_is_null(map))
        return TRUE;
    if (!json_is_object(map))
        return FALSE;
    const char *key;
    json_t *value;
    json_object_foreach(map, key, value)
    {
        if (json_is_string(value))
            continue;
        g_autofree char *text = ferry_yaml_scalar_text(value);
        if (text == NULL)
            return FALSE;
        json_object_set_new(map, key, json_string(text));
    }
    return TRUE;
}

/* config and devices of an instance or snapshot object, as strings. */
static gboolean stringify_instance(json_t *object)
{
    static const char *const maps[] = {"config", "expanded_config"};
    for (gsize i = 0; i < G_N_ELEMENTS(maps); i++) {
        if (!stringify_map(json_object_get(object, maps[i])))
            return FALSE;
    }
    static const char *const device_maps[] = {"devices", "expanded_devices"};
    for (gsize i = 0; i < G_N_ELEMENTS(device_maps); i++) {
        json_t *devices = json_object_get(object, device_maps[i]);
        if (devices == NULL || json_is_null(devices))
            continue;
        if (!json_is_object(devices))
            return FALSE;
        const char *name;
        json_t *device;
        json_object_foreach(devices, name, device)
        {
            if (!stringify_map(device))
                return FALSE;
        }
    }
    return TRUE;
}

FerryBackupIndex *ferry_backup_index_parse(const char *text, gsize length, GError **error)
{
    g_autoptr(GError) parse_error = NULL;
    g_autoptr(json_t) root = ferry_yaml_parse(text, length, &parse_error);
    if (root == NULL) {
        invalid(error, parse_error->message);
        return NULL;
    }
    if (!json_is_object(root) || json_object_size(root) == 0) {
        invalid(error, "not a mapping");
        return NULL;
    }
    g_autoptr(FerryBackupIndex) index = g_new0(FerryBackupIndex, 1);
    index->snapshots = g_ptr_array_new_with_free_func(g_free);
    index->name = scalar_field(root, "name");
    if (index->name == NULL || *index->name == '\0') {
        invalid(error, "no instance name");
        return NULL;
    }
    if (!ferry_validate_instance_name(index->name, NULL)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid backup index.yaml: bad instance name \"%s\"", index->name);
        return NULL;
    }
    index->backend = scalar_field(root, "backend");
    index->pool = scalar_field(root, "pool");
    index->type = scalar_field(root, "type");
    if (index->type == NULL || *index->type == '\0')
        index->type = g_strdup("container"); /* LXD's older backups have no type: containers only */
    if (!g_str_equal(index->type, "container")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                    "Backups of type \"%s\" are not supported (containers only)", index->type);
        return NULL;
    }
    json_t *optimized = json_object_get(root, "optimized");
    json_t *optimized_header = json_object_get(root, "optimized_header");
    if ((optimized != NULL && !json_is_boolean(optimized) && !json_is_null(optimized)) ||
        (optimized_header != NULL && !json_is_boolean(optimized_header) && !json_is_null(optimized_header))) {
        invalid(error, "\"optimized\" must be true or false");
        return NULL;
    }
    index->optimized = json_is_true(optimized);
    index->optimized_header = json_is_true(optimized_header);

    json_t *snapshots = json_object_get(root, "snapshots");
    if (snapshots != NULL && !json_is_null(snapshots) && !json_is_array(snapshots)) {
        invalid(error, "\"snapshots\" must be a list of names");
        return NULL;
    }
    size_t i;
    json_t *item;
    json_array_foreach(snapshots, i, item)
    {
        g_autofree char *snapshot = ferry_yaml_scalar_text(item);
        if (snapshot == NULL || !ferry_validate_snapshot_name(snapshot, NULL) ||
            strchr(snapshot, '/') != NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid backup index.yaml: bad snapshot name \"%s\"",
                        snapshot != NULL ? snapshot : "");
            return NULL;
        }
        for (guint j = 0; j < index->snapshots->len; j++) {
            if (g_str_equal(index->snapshots->pdata[j], snapshot)) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "Invalid backup index.yaml: snapshot \"%s\" is listed twice", snapshot);
                return NULL;
            }
        }
        g_ptr_array_add(index->snapshots, g_steal_pointer(&snapshot));
    }

    json_t *config = json_object_get(root, "config");
    if (!json_is_object(config) || !json_is_object(json_object_get(config, "container"))) {
        invalid(error, "no config.container (backups from before LXD 4.0 are not supported)");
        return NULL;
    }
    json_t *container = json_object_get(config, "container");
    if (!stringify_instance(container)) {
        invalid(error, "config.container has a bad config or devices");
        return NULL;
    }
    json_t *snapshot_configs = json_object_get(config, "snapshots");
    if (snapshot_configs != NULL && !json_is_null(snapshot_configs) && !json_is_array(snapshot_configs)) {
        invalid(error, "config.snapshots must be a list");
        return NULL;
    }
    json_array_foreach(snapshot_configs, i, item)
    {
        if (!json_is_object(item) || !json_is_string(json_object_get(item, "name")) ||
            !stringify_instance(item)) {
            invalid(error, "config.snapshots has an entry without a name or with a bad config");
            return NULL;
        }
    }
    index->config = json_incref(config);
    return g_steal_pointer(&index);
}

json_t *ferry_backup_index_snapshot_config(FerryBackupIndex *index, const char *snapshot)
{
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(index->config, "snapshots"), i, item)
    {
        if (g_strcmp0(ferry_json_get_string(item, "name"), snapshot) == 0)
            return item;
    }
    return NULL;
}

char *ferry_backup_index_render(const char *name, const char *backend, const char *pool, GPtrArray *snapshots,
                                gboolean optimized, json_t *config, GError **error)
{
    g_autoptr(json_t) root = json_object();
    json_object_set_new(root, "name", json_string(name));
    json_object_set_new(root, "backend", json_string(backend));
    json_object_set_new(root, "pool", json_string(pool));
    if (snapshots != NULL && snapshots->len > 0) {
        json_t *list = json_array();
        for (guint i = 0; i < snapshots->len; i++)
            json_array_append_new(list, json_string(snapshots->pdata[i]));
        json_object_set_new(root, "snapshots", list);
    }
    json_object_set_new(root, "optimized", json_boolean(optimized));
    json_object_set_new(root, "optimized_header", json_boolean(optimized));
    json_object_set_new(root, "type", json_string("container"));
    json_object_set(root, "config", config);
    return ferry_yaml_emit(root, error);
}
