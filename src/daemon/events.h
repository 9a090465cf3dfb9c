/* /1.0/events: websocket subscribers receive Incus-shaped events (operation, lifecycle, logging). */
#pragma once

#include <jansson.h>
#include <libsoup/soup.h>

G_BEGIN_DECLS

typedef struct _FerryEvents FerryEvents;

FerryEvents *ferry_events_new(GMainContext *main_context);
void ferry_events_free(FerryEvents *events);

/* Add a subscriber (main thread). types: comma-separated filter ("operation,lifecycle"), NULL/"" = all;
 * project NULL = every project. */
void ferry_events_subscribe(FerryEvents *events, SoupWebsocketConnection *connection, const char *types,
                            const char *project);

/* Publish from any thread; metadata is stolen. */
void ferry_events_emit(FerryEvents *events, const char *type, const char *project, json_t *metadata);

/* A lifecycle event ("instance-started", source "/1.0/instances/c1"). */
void ferry_events_lifecycle(FerryEvents *events, const char *project, const char *action, const char *source);

G_END_DECLS
