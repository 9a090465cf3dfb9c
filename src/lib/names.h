/* Validation of user-chosen names, with Incus's rules and messages. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Instance names are hostnames: 1-63 of [a-zA-Z0-9-], not starting with a digit or '-', not ending in '-'. */
gboolean ferry_validate_instance_name(const char *name, GError **error);
/* Snapshot names: non-empty, at most 255 bytes, no '/', not "." or "..", no whitespace. */
gboolean ferry_validate_snapshot_name(const char *name, GError **error);
/* Profiles, projects, storage pools, image aliases: non-empty, at most 255 bytes, no '/', '?', '&', '+',
 * no whitespace or control characters, not "." or "..". what names the kind ("profile", "project", ...). */
gboolean ferry_validate_entity_name(const char *what, const char *name, GError **error);

G_END_DECLS
