#include "instance_config.h"

#include "error.h"
#include "json.h"

#include <string.h>

typedef gboolean (*ValueCheck)(const char *value, GError **error);

static gboolean check_bool(const char *value, GError **error)
{
    static const char *const accepted[] = {"true", "false", "1", "0", "yes", "no", "on", "off", ""};
    if (g_strv_contains(accepted, value))
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid value for a boolean \"%s\"", value);
    return FALSE;
}

static gboolean check_uint(const char *value, GError **error)
{
    guint64 number;
    if (*value == '\0' || g_ascii_string_to_unsigned(value, 10, 0, G_MAXINT64, &number, NULL))
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid value for an integer \"%s\"", value);
    return FALSE;
}

static gboolean check_percent(const char *value, GError **error)
{
    guint64 number;
    if (*value == '\0' || g_ascii_string_to_unsigned(value, 10, 0, 100, &number, NULL))
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid value \"%s\": must be an integer from 0 to 100",
                value);
    return FALSE;
}

static gboolean check_iterations(const char *value, GError **error)
{
    guint64 number;
    if (*value == '\0' || g_ascii_string_to_unsigned(value, 10, 1, 999, &number, NULL))
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid value \"%s\": must be an integer from 1 to 999",
                value);
    return FALSE;
}

static gboolean check_memory(const char *value, GError **error)
{
    if (*value == '\0')
        return TRUE;
    gsize length = strlen(value);
    if (value[length - 1] == '%') {
        g_autofree char *number = g_strndup(value, length - 1);
        guint64 percent;
        if (g_ascii_string_to_unsigned(number, 10, 1, 100, &percent, NULL))
            return TRUE;
    } else {
        gint64 bytes;
        if (ferry_parse_size(value, &bytes) && bytes > 0)
            return TRUE;
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                "Invalid value \"%s\": expected a size such as 512MiB or a percentage such as 50%%", value);
    return FALSE;
}

/* limits.cpu: a CPU count ("2") or a set of CPUs ("0-1,3"). */
static gboolean check_cpu(const char *value, GError **error)
{
    if (*value == '\0')
        return TRUE;
    guint64 count;
    if (g_ascii_string_to_unsigned(value, 10, 1, 4096, &count, NULL))
        return TRUE;
    g_auto(GStrv) ranges = g_strsplit(value, ",", -1);
    gboolean valid = TRUE;
    for (guint i = 0; ranges[i] != NULL && valid; i++) {
        g_auto(GStrv) ends = g_strsplit(ranges[i], "-", 2);
        guint64 low, high;
        valid = g_ascii_string_to_unsigned(ends[0], 10, 0, 4095, &low, NULL);
        if (valid && ends[1] != NULL)
            valid = g_ascii_string_to_unsigned(ends[1], 10, low, 4095, &high, NULL);
    }
    if (!valid)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid value \"%s\": expected a CPU count such as 2 or a CPU set such as 0-1,3", value);
    return valid;
}

static gboolean check_any(const char *value, GError **error)
{
    return TRUE;
}

static const struct {
    const char *key;
    ValueCheck check;
    gboolean instance_only; /* meaningless in a profile */
} known_keys[] = {
    {"limits.memory", check_memory, FALSE},
    {"limits.cpu", check_cpu, FALSE},
    {"limits.processes", check_uint, FALSE},
    {"security.privileged", check_bool, FALSE},
    {"security.nesting", check_bool, FALSE},
    {"security.protection.delete", check_bool, FALSE},
    {"boot.autostart", check_bool, FALSE},
    {"boot.autostart.delay", check_uint, FALSE},
    {"boot.autostart.priority", check_uint, FALSE},
    {"boot.host_shutdown_timeout", check_uint, FALSE},
    {"migration.stateful", check_bool, FALSE},
    {"migration.incremental.memory", check_bool, FALSE},
    {"migration.incremental.memory.goal", check_percent, FALSE},
    {"migration.incremental.memory.iterations", check_iterations, FALSE},
    {"raw.lxc", check_any, FALSE},
    {"linux.kernel_modules", check_any, FALSE},
    {"snapshots.pattern", check_any, FALSE},
    {"snapshots.expiry", check_any, FALSE},
    {"cloud-init.user-data", check_any, FALSE},
    {"user.meta-data", check_any, FALSE},
};

/* Free-form namespaces. */
static const char *const free_prefixes[] = {"environment.", "user.", "image.", "linux.sysctl."};

gboolean ferry_config_validate(json_t *config, gboolean is_profile, gboolean allow_volatile, GError **error)
{
    if (config == NULL || json_is_null(config))
        return TRUE;
    if (!json_is_object(config)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid config: must be an object");
        return FALSE;
    }
    const char *key;
    json_t *value;
    json_object_foreach(config, key, value) {
        if (!json_is_string(value)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid config: value of \"%s\" must be a string",
                        key);
            return FALSE;
        }
        const char *text = json_string_value(value);
        gboolean known = FALSE;
        for (gsize i = 0; i < G_N_ELEMENTS(free_prefixes) && !known; i++)
            known = g_str_has_prefix(key, free_prefixes[i]) && strlen(key) > strlen(free_prefixes[i]);
        if (!known && g_str_has_prefix(key, "volatile.")) {
            if (!allow_volatile || is_profile) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "Invalid config: Volatile key \"%s\" can't be set by users", key);
                return FALSE;
            }
            known = TRUE;
        }
        for (gsize i = 0; i < G_N_ELEMENTS(known_keys) && !known; i++) {
            if (!g_str_equal(key, known_keys[i].key))
                continue;
            known = TRUE;
            g_autoptr(GError) value_error = NULL;
            if (!known_keys[i].check(text, &value_error)) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid config: Invalid value for \"%s\": %s",
                            key, value_error->message);
                return FALSE;
            }
        }
        if (!known) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid config: Unknown configuration key: %s",
                        key);
            return FALSE;
        }
    }
    return TRUE;
}

static const char *const disk_keys[] = {"type", "path", "source", "pool", "size", "size.state", "readonly",
                                        "required", "shift", "propagation", "recursive", "boot.priority", NULL};

gboolean ferry_devices_validate(json_t *devices, gboolean is_profile, GError **error)
{
    if (devices == NULL || json_is_null(devices))
        return TRUE;
    if (!json_is_object(devices)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid devices: must be an object");
        return FALSE;
    }
    const char *name;
    json_t *device;
    json_object_foreach(devices, name, device) {
        if (!json_is_object(device) || !ferry_json_check_string_map(devices, name, error)) {
            g_clear_error(error);
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid devices: Device \"%s\" must be a map of strings", name);
            return FALSE;
        }
        const char *type = ferry_json_get_string(device, "type");
        if (type == NULL || *type == '\0') {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid devices: Missing device type for device \"%s\"",
                        name);
            return FALSE;
        }
        if (g_str_equal(type, "none"))
            continue;
        if (!g_str_equal(type, "disk")) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid devices: Device \"%s\": device type \"%s\" is not supported by ferry (supported: "
                        "disk, none)",
                        name, type);
            return FALSE;
        }
        const char *key;
        json_t *value;
        json_object_foreach(device, key, value) {
            if (!g_strv_contains(disk_keys, key)) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "Invalid devices: Device \"%s\": Unknown disk device key \"%s\"", name, key);
                return FALSE;
            }
        }
        const char *path = ferry_json_get_string(device, "path");
        if (path == NULL || path[0] != '/') {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid devices: Device \"%s\": Disk devices need an absolute \"path\"", name);
            return FALSE;
        }
        gint64 bytes;
        const char *size = ferry_json_get_string(device, "size");
        if (size != NULL && *size != '\0' && !ferry_parse_size(size, &bytes)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid devices: Device \"%s\": Invalid size \"%s\"", name, size);
            return FALSE;
        }
        if (g_str_equal(path, "/")) {
            if (ferry_json_get_string(device, "pool") == NULL) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "Invalid devices: Root disk device \"%s\" needs a \"pool\"", name);
                return FALSE;
            }
        } else if (ferry_json_get_string(device, "source") == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid devices: Device \"%s\": Disk devices other than the root need a \"source\"", name);
            return FALSE;
        }
    }
    return TRUE;
}

gboolean ferry_config_expand(FerryDb *db, const char *project, json_t *profiles, json_t *config, json_t *devices,
                             json_t **expanded_config_out, json_t **expanded_devices_out, GError **error)
{
    g_autoptr(json_t) expanded_config = json_object();
    g_autoptr(json_t) expanded_devices = json_object();
    size_t index;
    json_t *profile_name;
    json_array_foreach(profiles, index, profile_name) {
        const char *name = json_string_value(profile_name);
        if (name == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid profiles: names must be strings");
            return FALSE;
        }
        g_autoptr(json_t) profile = ferry_db_get(db, FERRY_KIND_PROFILE, project, "", name, error);
        if (profile == NULL)
            return FALSE;
        json_object_update(expanded_config, json_object_get(profile, "config"));
        json_object_update(expanded_devices, json_object_get(profile, "devices"));
    }
    if (json_is_object(config))
        json_object_update(expanded_config, config);
    if (json_is_object(devices))
        json_object_update(expanded_devices, devices);
    /* A "none" device masks the profile device of the same name. */
    const char *name;
    json_t *device;
    void *tmp;
    json_object_foreach_safe(expanded_devices, tmp, name, device) {
        const char *type = ferry_json_get_string(device, "type");
        if (type != NULL && g_str_equal(type, "none"))
            json_object_del(expanded_devices, name);
    }
    if (expanded_config_out != NULL)
        *expanded_config_out = g_steal_pointer(&expanded_config);
    if (expanded_devices_out != NULL)
        *expanded_devices_out = g_steal_pointer(&expanded_devices);
    return TRUE;
}

gboolean ferry_devices_find_root(json_t *expanded_devices, const char **name_out, json_t **device_out,
                                 GError **error)
{
    const char *found_name = NULL;
    json_t *found = NULL;
    const char *name;
    json_t *device;
    json_object_foreach(expanded_devices, name, device) {
        const char *type = ferry_json_get_string(device, "type");
        const char *path = ferry_json_get_string(device, "path");
        if (type == NULL || !g_str_equal(type, "disk") || path == NULL || !g_str_equal(path, "/"))
            continue;
        if (found != NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Failed detecting root disk device: More than one root device found");
            return FALSE;
        }
        found_name = name;
        found = device;
    }
    if (found == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Failed detecting root disk device: No root device could be found (add one with a profile "
                    "or -d root,path=/,pool=<pool> — `ferry admin init --auto` sets up the default profile)");
        return FALSE;
    }
    if (name_out != NULL)
        *name_out = found_name;
    if (device_out != NULL)
        *device_out = found;
    return TRUE;
}

gboolean ferry_config_bool(json_t *config, const char *key)
{
    const char *value = ferry_json_get_string(config, key);
    return value != NULL && (g_str_equal(value, "true") || g_str_equal(value, "1") || g_str_equal(value, "yes") ||
                             g_str_equal(value, "on"));
}
