/* Instances: the actions behind /1.0/instances (create, start, stop, delete, rename, snapshots), shared by the
 * REST handlers and (later) migration. Each action is synchronous and meant to run inside an operation. */
#pragma once

#include <gio/gio.h>
#include <jansson.h>

#include "daemon.h"
#include "operations.h"

G_BEGIN_DECLS

/* A JSON string->string object as a GHashTable (NULL/non-object -> empty table). */
GHashTable *ferry_instances_string_map(json_t *object);

/* The pool holding an instance's volume (doc: its database document). */
FerryPool *ferry_instance_get_pool(FerryDaemon *daemon, const char *project, json_t *doc, GError **error);

/* Volume name and liblxc name of an instance: "<project>_<name>". */
char *ferry_instance_volume_name(const char *project, const char *name);

/* Incus's status names/codes for a container: Running 103, Stopped 102, Frozen 110, Error 112. */
const char *ferry_instance_status(FerryDaemon *daemon, const char *project, const char *name, int *code_out);

/* The full Incus Instance object (recursion >= 2 adds state and snapshots). */
json_t *ferry_instance_render(FerryDaemon *daemon, const char *project, const char *name, int recursion,
                              GError **error);
json_t *ferry_instance_render_state(FerryDaemon *daemon, const char *project, const char *name, GError **error);
json_t *ferry_snapshot_render(FerryDaemon *daemon, const char *project, const char *instance, const char *snapshot,
                              GError **error);

/* Check a create request before any work (name, project, profiles, config, devices, pool, image) and insert
 * the instance row; returns the stored document. The caller runs ferry_instance_create_finish in an operation
 * and ferry_instance_create_abort if anything fails. */
json_t *ferry_instance_create_prepare(FerryDaemon *daemon, const char *project, json_t *request, GError **error);
gboolean ferry_instance_create_finish(FerryDaemon *daemon, FerryOperation *op, const char *project, const char *name,
                                      json_t *request, GError **error);
void ferry_instance_create_abort(FerryDaemon *daemon, const char *project, const char *name);

gboolean ferry_instance_start(FerryDaemon *daemon, const char *project, const char *name, GError **error);
gboolean ferry_instance_stop(FerryDaemon *daemon, const char *project, const char *name, gboolean force,
                             int timeout_seconds, GError **error);
gboolean ferry_instance_delete(FerryDaemon *daemon, const char *project, const char *name, GError **error);
gboolean ferry_instance_rename(FerryDaemon *daemon, const char *project, const char *name, const char *new_name,
                               GError **error);
/* Replace writable fields (config, devices, profiles, description, ephemeral) after validation. */
gboolean ferry_instance_update(FerryDaemon *daemon, const char *project, const char *name, json_t *changes,
                               gboolean patch, GError **error);

gboolean ferry_snapshot_create(FerryDaemon *daemon, const char *project, const char *name, const char *snapshot,
                               GError **error);
gboolean ferry_snapshot_delete(FerryDaemon *daemon, const char *project, const char *name, const char *snapshot,
                               GError **error);
gboolean ferry_snapshot_rename(FerryDaemon *daemon, const char *project, const char *name, const char *snapshot,
                               const char *new_name, GError **error);
gboolean ferry_snapshot_restore(FerryDaemon *daemon, const char *project, const char *name, const char *snapshot,
                                GError **error);
/* The next free "snapN" name. */
char *ferry_snapshot_next_name(FerryDaemon *daemon, const char *project, const char *name);

/* Resolve an image source {"alias"|"fingerprint"} in project to its fingerprint (404 when unknown). */
char *ferry_image_resolve(FerryDaemon *daemon, const char *project, json_t *source, GError **error);
/* Path of a stored image tarball. */
char *ferry_image_path(FerryDaemon *daemon, const char *fingerprint);

/* After a restart: forget half-created instances and other leftovers of interrupted actions. */
void ferry_instances_recover(FerryDaemon *daemon);

G_END_DECLS

G_BEGIN_DECLS

/* Keys of a source instance's config that travel with a copy: the user's keys, plus the volatile keys that
 * describe the data itself (base image, on-disk id map). Everything else volatile is the source's own. */
json_t *ferry_instance_config_for_copy(json_t *config);

/* Same-server copy (source type "copy"): request is the POST /1.0/instances body; source.source is "name" or
 * "name/snapshot" in source.project (default: the target project). Prepare checks everything and inserts the
 * new row; finish copies the data (copy-on-write where the pool can) and the snapshots unless instance_only. */
json_t *ferry_instance_copy_prepare(FerryDaemon *daemon, const char *project, json_t *request, GError **error);
gboolean ferry_instance_copy_finish(FerryDaemon *daemon, FerryOperation *op, const char *project, const char *name,
                                    json_t *request, GError **error);

G_END_DECLS

G_BEGIN_DECLS

/* A new instance whose data arrives from elsewhere (migration): validate the request as for any new instance
 * and insert its row marked "creating" (claimed). The data's owner calls ferry_instance_creation_done or
 * ferry_instance_create_abort. */
json_t *ferry_instance_prepare_new(FerryDaemon *daemon, const char *project, json_t *request, GError **error);
/* Mark a "creating" instance complete, merging config_updates (e.g. volatile.last_state.idmap) into its config;
 * lifecycle "instance-created"; starts it when start is set. */
gboolean ferry_instance_creation_done(FerryDaemon *daemon, const char *project, const char *name,
                                      json_t *config_updates, gboolean start, GError **error);

G_END_DECLS
