#include "json.h"

#include "error.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

json_t *ferry_json_parse(const char *text, gsize length, GError **error)
{
    json_error_t json_error;
    json_t *value = json_loadb(text, length, JSON_REJECT_DUPLICATES, &json_error);
    if (value == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid JSON at line %d, column %d: %s",
                    json_error.line, json_error.column, json_error.text);
        return NULL;
    }
    return value;
}

char *ferry_json_dump(const json_t *value)
{
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    /* jansson uses malloc; hand back g_malloc memory so callers can use g_autofree. */
    char *copy = g_strdup(text != NULL ? text : "null");
    free(text);
    return copy;
}

const char *ferry_json_get_string(const json_t *object, const char *key)
{
    json_t *member = json_object_get(object, key);
    return json_is_string(member) ? json_string_value(member) : NULL;
}

gboolean ferry_json_get_bool(const json_t *object, const char *key, gboolean fallback)
{
    json_t *member = json_object_get(object, key);
    return json_is_boolean(member) ? json_is_true(member) : fallback;
}

gboolean ferry_json_check_string_map(const json_t *object, const char *key, GError **error)
{
    json_t *member = json_object_get(object, key);
    if (member == NULL || json_is_null(member))
        return TRUE;
    if (!json_is_object(member)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Field \"%s\" must be an object", key);
        return FALSE;
    }
    const char *name;
    json_t *value;
    json_object_foreach(member, name, value) {
        if (!json_is_string(value)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Value of \"%s.%s\" must be a string", key,
                        name);
            return FALSE;
        }
    }
    return TRUE;
}

json_t *ferry_json_object_or_empty(const json_t *object, const char *key)
{
    json_t *member = json_object_get(object, key);
    return json_is_object(member) ? json_deep_copy(member) : json_object();
}

json_t *ferry_json_array_or_empty(const json_t *object, const char *key)
{
    json_t *member = json_object_get(object, key);
    return json_is_array(member) ? json_deep_copy(member) : json_array();
}

char *ferry_json_timestamp(gint64 unix_usec)
{
    if (unix_usec <= 0)
        return g_strdup(FERRY_JSON_ZERO_TIME);
    g_autoptr(GDateTime) utc = g_date_time_new_from_unix_utc(unix_usec / G_USEC_PER_SEC);
    g_autofree char *seconds = g_date_time_format(utc, "%Y-%m-%dT%H:%M:%S");
    return g_strdup_printf("%s.%06dZ", seconds, (int)(unix_usec % G_USEC_PER_SEC));
}

gboolean ferry_parse_size(const char *text, gint64 *bytes_out)
{
    static const struct {
        const char *suffix;
        gint64 multiplier;
    } units[] = {
        {"KiB", 1LL << 10}, {"MiB", 1LL << 20}, {"GiB", 1LL << 30}, {"TiB", 1LL << 40}, {"PiB", 1LL << 50},
        {"kB", 1000LL},     {"KB", 1000LL},     {"MB", 1000000LL},  {"GB", 1000000000LL},
        {"TB", 1000000000000LL}, {"PB", 1000000000000000LL}, {"B", 1},
    };
    if (text == NULL || *text == '\0')
        return FALSE;
    char *end = NULL;
    errno = 0;
    double number = g_ascii_strtod(text, &end);
    if (errno != 0 || end == text || number < 0)
        return FALSE;
    gint64 multiplier = 1;
    if (*end != '\0') {
        gboolean known = FALSE;
        for (gsize i = 0; i < G_N_ELEMENTS(units); i++) {
            if (g_str_equal(end, units[i].suffix)) {
                multiplier = units[i].multiplier;
                known = TRUE;
                break;
            }
        }
        if (!known)
            return FALSE;
    } else if (strchr(text, '.') != NULL) {
        return FALSE; /* a bare byte count must be an integer */
    }
    double bytes = number * (double)multiplier;
    if (bytes > (double)G_MAXINT64)
        return FALSE;
    *bytes_out = (gint64)bytes;
    return TRUE;
}

gboolean ferry_secret_equal(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return FALSE;
    gsize length_a = strlen(a);
    gsize length_b = strlen(b);
    /* Compare every byte of the expected secret whatever the input, so timing says nothing about where
     * the first difference is. */
    unsigned char difference = (unsigned char)(length_a != length_b);
    for (gsize i = 0; i < length_a; i++)
        difference |= (unsigned char)a[i] ^ (unsigned char)(i < length_b ? b[i] : 0);
    return difference == 0;
}

char *ferry_random_secret(void)
{
    guint8 bytes[32];
    gsize filled = 0;
    while (filled < sizeof(bytes)) {
        ssize_t got = getrandom(bytes + filled, sizeof(bytes) - filled, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            g_error("getrandom failed: %s", g_strerror(errno)); /* no entropy: nothing safe to do */
        }
        filled += (gsize)got;
    }
    GString *hex = g_string_sized_new(64);
    for (gsize i = 0; i < sizeof(bytes); i++)
        g_string_append_printf(hex, "%02x", bytes[i]);
    return g_string_free(hex, FALSE);
}
