#include "names.h"

#include "error.h"

#include <string.h>

gboolean ferry_validate_instance_name(const char *name, GError **error)
{
    if (name == NULL || *name == '\0') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid instance name: Name is empty");
        return FALSE;
    }
    gsize length = strlen(name);
    if (length > 63) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid instance name \"%s\": Name must be 1-63 characters long", name);
        return FALSE;
    }
    if (name[0] == '-' || g_ascii_isdigit(name[0]) || name[length - 1] == '-') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid instance name \"%s\": Name must not start with a digit or dash, nor end with a dash",
                    name);
        return FALSE;
    }
    for (const char *p = name; *p != '\0'; p++) {
        if (!g_ascii_isalnum(*p) && *p != '-') {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid instance name \"%s\": Name can only contain alphanumeric and hyphen characters",
                        name);
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean has_forbidden_char(const char *name, const char *forbidden)
{
    for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f || g_ascii_isspace(*p) || strchr(forbidden, *p) != NULL)
            return TRUE;
    }
    return FALSE;
}

gboolean ferry_validate_snapshot_name(const char *name, GError **error)
{
    if (name == NULL || *name == '\0' || strlen(name) > 255 || g_str_equal(name, ".") ||
        g_str_equal(name, "..") || has_forbidden_char(name, "/")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid snapshot name \"%s\": Name must be 1-255 characters without '/' or whitespace",
                    name != NULL ? name : "");
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_validate_entity_name(const char *what, const char *name, GError **error)
{
    if (name == NULL || *name == '\0' || strlen(name) > 255 || g_str_equal(name, ".") ||
        g_str_equal(name, "..") || has_forbidden_char(name, "/?&+\\\"'`$")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid %s name \"%s\": Name must be 1-255 characters without '/', quotes or whitespace",
                    what, name != NULL ? name : "");
        return FALSE;
    }
    return TRUE;
}
