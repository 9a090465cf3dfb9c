/* REST handlers, one file per resource. Each returns a FerryResponse (see response.h). */
#pragma once

#include "response.h"
#include "router.h"

G_BEGIN_DECLS

/* server_info.c: /1.0 */
FerryResponse *api_server_get(FerryRequest *request);
FerryResponse *api_server_put(FerryRequest *request);   /* PUT and PATCH */
FerryResponse *api_resources_get(FerryRequest *request);

/* certificates.c: /1.0/certificates */
FerryResponse *api_certificates_get(FerryRequest *request);
FerryResponse *api_certificates_post(FerryRequest *request);
FerryResponse *api_certificate_get(FerryRequest *request);
FerryResponse *api_certificate_put(FerryRequest *request);
FerryResponse *api_certificate_delete(FerryRequest *request);

/* events.c: /1.0/events */
FerryResponse *api_events_get(FerryRequest *request);

/* operations.c: /1.0/operations */
FerryResponse *api_operations_get(FerryRequest *request);
FerryResponse *api_operation_get(FerryRequest *request);
FerryResponse *api_operation_delete(FerryRequest *request);
FerryResponse *api_operation_wait(FerryRequest *request);
FerryResponse *api_operation_websocket(FerryRequest *request);

/* instances.c: /1.0/instances */
FerryResponse *api_instances_get(FerryRequest *request);
FerryResponse *api_instances_post(FerryRequest *request);
FerryResponse *api_instance_get(FerryRequest *request);
FerryResponse *api_instance_put(FerryRequest *request);
FerryResponse *api_instance_patch(FerryRequest *request);
FerryResponse *api_instance_delete(FerryRequest *request);
FerryResponse *api_instance_post(FerryRequest *request);  /* rename (migration later) */
FerryResponse *api_instance_logs_get(FerryRequest *request);
FerryResponse *api_instance_log_get(FerryRequest *request);

/* instance_state.c: /1.0/instances/{name}/state */
FerryResponse *api_instance_state_get(FerryRequest *request);
FerryResponse *api_instance_state_put(FerryRequest *request);

/* snapshots.c: /1.0/instances/{name}/snapshots */
FerryResponse *api_snapshots_get(FerryRequest *request);
FerryResponse *api_snapshots_post(FerryRequest *request);
FerryResponse *api_snapshot_get(FerryRequest *request);
FerryResponse *api_snapshot_put(FerryRequest *request);
FerryResponse *api_snapshot_post(FerryRequest *request);   /* rename */
FerryResponse *api_snapshot_delete(FerryRequest *request);

/* backups.c: /1.0/instances/{name}/backups, and backup import (octet-stream POST /1.0/instances) */
FerryResponse *api_backups_get(FerryRequest *request);
FerryResponse *api_backups_post(FerryRequest *request);
FerryResponse *api_backup_get(FerryRequest *request);
FerryResponse *api_backup_post(FerryRequest *request);     /* rename */
FerryResponse *api_backup_delete(FerryRequest *request);
FerryResponse *api_backup_export(FerryRequest *request);
FerryResponse *api_backup_import(FerryRequest *request);
/* Called when a request's headers are in (server.c): takes over an import whose client waits for "100 Continue"
 * and extracts the body as it arrives; FALSE leaves the request to the normal path. */
gboolean api_backup_import_stream(FerryDaemon *daemon, SoupServerMessage *msg);

/* exec.c: /1.0/instances/{name}/exec */
FerryResponse *api_instance_exec(FerryRequest *request);

/* images.c: /1.0/images */
FerryResponse *api_images_get(FerryRequest *request);
FerryResponse *api_images_post(FerryRequest *request);
FerryResponse *api_image_get(FerryRequest *request);
FerryResponse *api_image_put(FerryRequest *request);       /* PUT and PATCH */
FerryResponse *api_image_delete(FerryRequest *request);
FerryResponse *api_image_export(FerryRequest *request);
FerryResponse *api_image_aliases_get(FerryRequest *request);
FerryResponse *api_image_aliases_post(FerryRequest *request);
FerryResponse *api_image_alias_get(FerryRequest *request);
FerryResponse *api_image_alias_put(FerryRequest *request); /* PUT and PATCH */
FerryResponse *api_image_alias_post(FerryRequest *request); /* rename */
FerryResponse *api_image_alias_delete(FerryRequest *request);

/* profiles.c: /1.0/profiles */
FerryResponse *api_profiles_get(FerryRequest *request);
FerryResponse *api_profiles_post(FerryRequest *request);
FerryResponse *api_profile_get(FerryRequest *request);
FerryResponse *api_profile_put(FerryRequest *request);     /* PUT (replace) */
FerryResponse *api_profile_patch(FerryRequest *request);
FerryResponse *api_profile_post(FerryRequest *request);    /* rename */
FerryResponse *api_profile_delete(FerryRequest *request);

/* projects.c: /1.0/projects */
FerryResponse *api_projects_get(FerryRequest *request);
FerryResponse *api_projects_post(FerryRequest *request);
FerryResponse *api_project_get(FerryRequest *request);
FerryResponse *api_project_put(FerryRequest *request);
FerryResponse *api_project_patch(FerryRequest *request);
FerryResponse *api_project_post(FerryRequest *request);    /* rename */
FerryResponse *api_project_delete(FerryRequest *request);

/* storage.c: /1.0/storage-pools */
FerryResponse *api_pools_get(FerryRequest *request);
FerryResponse *api_pools_post(FerryRequest *request);
FerryResponse *api_pool_get(FerryRequest *request);
FerryResponse *api_pool_put(FerryRequest *request);
FerryResponse *api_pool_patch(FerryRequest *request);
FerryResponse *api_pool_delete(FerryRequest *request);
FerryResponse *api_pool_resources_get(FerryRequest *request);
FerryResponse *api_volumes_get(FerryRequest *request);
FerryResponse *api_volumes_type_get(FerryRequest *request);
FerryResponse *api_volume_get(FerryRequest *request);

/* networks.c: ferry manages no networks; the list exists because clients ask for it. */
FerryResponse *api_networks_get(FerryRequest *request);

G_END_DECLS
