/* Pool config validation with Incus's keys and value syntax. */
#include "pool_private.h"

#include "error.h"

#include <string.h>

static const struct {
    const char *suffix;
    guint64 multiplier;
} size_suffixes[] = {
    {"", 1},
    {"B", 1},
    {" bytes", 1},
    {"kB", 1000ULL},
    {"MB", 1000ULL * 1000},
    {"GB", 1000ULL * 1000 * 1000},
    {"TB", 1000ULL * 1000 * 1000 * 1000},
    {"PB", 1000ULL * 1000 * 1000 * 1000 * 1000},
    {"EB", 1000ULL * 1000 * 1000 * 1000 * 1000 * 1000},
    {"KiB", 1ULL << 10},
    {"MiB", 1ULL << 20},
    {"GiB", 1ULL << 30},
    {"TiB", 1ULL << 40},
    {"PiB", 1ULL << 50},
    {"EiB", 1ULL << 60},
};

gboolean ferry_pool_parse_size(const char *value, guint64 *bytes_out, GError **error)
{
    if (value == NULL || value[0] == '\0') {
        *bytes_out = 0;
        return TRUE;
    }
    size_t digits = strspn(value, "0123456789");
    if (digits == 0 || digits > 19) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid size \"%s\"", value);
        return FALSE;
    }
    g_autofree char *number = g_strndup(value, digits);
    guint64 n = g_ascii_strtoull(number, NULL, 10);
    const char *suffix = value + digits;
    for (size_t i = 0; i < G_N_ELEMENTS(size_suffixes); i++) {
        if (strcmp(suffix, size_suffixes[i].suffix) != 0)
            continue;
        if (n > G_MAXINT64 / size_suffixes[i].multiplier) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Size \"%s\" is too large", value);
            return FALSE;
        }
        *bytes_out = n * size_suffixes[i].multiplier;
        return TRUE;
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid size \"%s\"", value);
    return FALSE;
}

gboolean ferry_config_check_size(const char *value, GError **error)
{
    guint64 ignored;
    return ferry_pool_parse_size(value, &ignored, error);
}

static const char *const true_words[] = {"true", "1", "yes", "on"};
static const char *const false_words[] = {"false", "0", "no", "off"};

gboolean ferry_config_is_true(const char *value)
{
    for (size_t i = 0; value != NULL && i < G_N_ELEMENTS(true_words); i++)
        if (g_ascii_strcasecmp(value, true_words[i]) == 0)
            return TRUE;
    return FALSE;
}

gboolean ferry_config_check_bool(const char *value, GError **error)
{
    if (value[0] == '\0' || ferry_config_is_true(value))
        return TRUE;
    for (size_t i = 0; i < G_N_ELEMENTS(false_words); i++)
        if (g_ascii_strcasecmp(value, false_words[i]) == 0)
            return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid value \"%s\" (expected true or false)",
                value);
    return FALSE;
}

static gboolean check_int64(const char *value, GError **error)
{
    gint64 ignored;
    if (value[0] == '\0' || g_ascii_string_to_signed(value, 10, G_MININT64, G_MAXINT64, &ignored, NULL))
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid integer \"%s\"", value);
    return FALSE;
}

static gboolean check_absolute_or_uuid(const char *value, GError **error)
{
    /* Relative paths would resolve against the daemon's cwd; a bare word is a filesystem UUID (Incus
     * stores block-device pools that way). */
    if (value[0] == '\0' || value[0] == '/' || strchr(value, '/') == NULL)
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Source \"%s\" is not an absolute path", value);
    return FALSE;
}

static const FerryConfigRule common_rules[] = {
    {"source", check_absolute_or_uuid},
    {"source.wipe", ferry_config_check_bool},
    {"volatile.initial_source", NULL},
    {"rsync.bwlimit", ferry_config_check_size},
    {"rsync.compression", ferry_config_check_bool},
    {"volume.size", ferry_config_check_size},
    {"volume.snapshots.expiry", NULL},
    {"volume.snapshots.schedule", NULL},
    {"volume.snapshots.pattern", NULL},
    {"volume.security.shifted", ferry_config_check_bool},
    {"volume.security.unmapped", ferry_config_check_bool},
    {"volume.security.shared", ferry_config_check_bool},
    {"volume.initial.uid", check_int64},
    {"volume.initial.gid", check_int64},
    {"volume.initial.mode", check_int64},
    {NULL, NULL},
};

static const FerryConfigRule *find_rule(const FerryConfigRule *rules, const char *key)
{
    for (; rules != NULL && rules->key != NULL; rules++)
        if (strcmp(rules->key, key) == 0)
            return rules;
    return NULL;
}

static int compare_keys(gconstpointer a, gconstpointer b, gpointer unused)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const FerryPoolDriver *const drivers[] = {&ferry_pool_driver_dir, &ferry_pool_driver_btrfs};

const FerryPoolDriver *ferry_pool_find_driver(const char *name, GError **error)
{
    for (size_t i = 0; name != NULL && i < G_N_ELEMENTS(drivers); i++)
        if (strcmp(drivers[i]->name, name) == 0)
            return drivers[i];
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Unknown storage driver \"%s\"", name ? name : "");
    return NULL;
}

const char *const *ferry_pool_driver_names(void)
{
    static const char *const names[] = {"dir", "btrfs", NULL};
    return names;
}

gboolean ferry_pool_validate_config(const char *driver_name, GHashTable *config, GError **error)
{
    const FerryPoolDriver *driver = ferry_pool_find_driver(driver_name, error);
    if (driver == NULL)
        return FALSE;
    if (config == NULL)
        return TRUE;

    /* Sorted so that the error for a config with several bad keys is always the same one. */
    g_autofree const char **keys = (const char **)g_hash_table_get_keys_as_array(config, NULL);
    g_qsort_with_data(keys, g_hash_table_size(config), sizeof(*keys), compare_keys, NULL);
    for (const char **key = keys; *key != NULL; key++) {
        if (g_str_has_prefix(*key, "user."))
            continue;
        const FerryConfigRule *rule = find_rule(common_rules, *key);
        if (rule == NULL)
            rule = find_rule(driver->rules, *key);
        if (rule == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid pool configuration key \"%s\"",
                        *key);
            return FALSE;
        }
        const char *value = g_hash_table_lookup(config, *key);
        if (rule->check != NULL && !rule->check(value ? value : "", error)) {
            g_prefix_error(error, "Invalid value for pool configuration key \"%s\": ", *key);
            return FALSE;
        }
    }
    return TRUE;
}
