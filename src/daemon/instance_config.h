/* Instance configuration: which keys exist, what values they take, and how profiles expand into an instance. */
#pragma once

#include <glib.h>
#include <jansson.h>

#include "db.h"

G_BEGIN_DECLS

/* Validate instance (or profile) config. volatile.* keys are accepted only when allow_volatile (the daemon's
 * own writes); users get 400 "Invalid config: Unknown configuration key: x" / "Invalid value for config key
 * \"limits.memory\": ..." */
gboolean ferry_config_validate(json_t *config, gboolean is_profile, gboolean allow_volatile, GError **error);
/* Validate devices: each has a known "type" and the keys that type needs. */
gboolean ferry_devices_validate(json_t *devices, gboolean is_profile, GError **error);

/* Expanded config and devices: profiles applied in order, then the instance's own. profiles that don't exist
 * give 404 "Profile \"x\" not found". Either out argument may be NULL. */
gboolean ferry_config_expand(FerryDb *db, const char *project, json_t *profiles, json_t *config, json_t *devices,
                             json_t **expanded_config_out, json_t **expanded_devices_out, GError **error);

/* The root disk device (name and object, borrowed from devices) or 400 naming the problem. */
gboolean ferry_devices_find_root(json_t *expanded_devices, const char **name_out, json_t **device_out,
                                 GError **error);

/* A boolean config value as Incus reads them ("true", "1", "yes", "on"). */
gboolean ferry_config_bool(json_t *config, const char *key);

G_END_DECLS
