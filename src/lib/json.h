/* jansson helpers shared by daemon and CLI. */
#pragma once

#include <glib.h>
#include <jansson.h>

G_BEGIN_DECLS

G_DEFINE_AUTOPTR_CLEANUP_FUNC(json_t, json_decref)

/* Parse a JSON document; errors are FERRY_ERROR_INVALID and name the line and column. */
json_t *ferry_json_parse(const char *text, gsize length, GError **error);

/* Compact serialisation (caller frees with g_free). */
char *ferry_json_dump(const json_t *value);

/* String member or NULL when absent or not a string. */
const char *ferry_json_get_string(const json_t *object, const char *key);

/* Boolean member, default when absent; NULL/absent is not an error. */
gboolean ferry_json_get_bool(const json_t *object, const char *key, gboolean fallback);

/* Check that member key, when present, is a string→string object (Incus config maps).
 * Missing member is fine. Error names the key. */
gboolean ferry_json_check_string_map(const json_t *object, const char *key, GError **error);

/* A deep copy of object[key], or an empty object/array when absent. */
json_t *ferry_json_object_or_empty(const json_t *object, const char *key);
json_t *ferry_json_array_or_empty(const json_t *object, const char *key);

/* RFC 3339 timestamp with nanoseconds and 'Z'/offset, as Go's time.Time marshals (Incus's format). */
char *ferry_json_timestamp(gint64 unix_usec);
/* The zero time, which Incus sends for unset timestamps. */
#define FERRY_JSON_ZERO_TIME "0001-01-01T00:00:00Z"

/* Parse a size in Incus's syntax ("512MiB", "1GB", "1024", "2GiB") into bytes; FALSE when invalid. */
gboolean ferry_parse_size(const char *text, gint64 *bytes_out);

/* Constant-time comparison of two strings (secrets); FALSE when lengths differ. */
gboolean ferry_secret_equal(const char *a, const char *b);

/* 32 random bytes as 64 lowercase hex characters, from the kernel's CSPRNG. */
char *ferry_random_secret(void);

G_END_DECLS
