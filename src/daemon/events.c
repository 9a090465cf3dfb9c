#include "events.h"

#include "json.h"

typedef struct {
    SoupWebsocketConnection *connection;
    char **types;
    char *project;
} Subscriber;

struct _FerryEvents {
    GMainContext *main_context;
    GList *subscribers; /* main thread only */
};

typedef struct {
    FerryEvents *events;
    char *type;
    char *project;
    char *text;
} PendingEvent;

static void subscriber_free(Subscriber *subscriber)
{
    g_object_unref(subscriber->connection);
    g_strfreev(subscriber->types);
    g_free(subscriber->project);
    g_free(subscriber);
}

FerryEvents *ferry_events_new(GMainContext *main_context)
{
    FerryEvents *events = g_new0(FerryEvents, 1);
    events->main_context = main_context;
    return events;
}

void ferry_events_free(FerryEvents *events)
{
    if (events == NULL)
        return;
    for (GList *l = events->subscribers; l != NULL; l = l->next) {
        Subscriber *subscriber = l->data;
        if (soup_websocket_connection_get_state(subscriber->connection) == SOUP_WEBSOCKET_STATE_OPEN)
            soup_websocket_connection_close(subscriber->connection, SOUP_WEBSOCKET_CLOSE_GOING_AWAY, NULL);
        subscriber_free(subscriber);
    }
    g_list_free(events->subscribers);
    g_free(events);
}

static void on_closed(SoupWebsocketConnection *connection, gpointer user_data)
{
    FerryEvents *events = user_data;
    for (GList *l = events->subscribers; l != NULL; l = l->next) {
        Subscriber *subscriber = l->data;
        if (subscriber->connection == connection) {
            events->subscribers = g_list_delete_link(events->subscribers, l);
            g_signal_handlers_disconnect_by_data(connection, events);
            subscriber_free(subscriber);
            return;
        }
    }
}

void ferry_events_subscribe(FerryEvents *events, SoupWebsocketConnection *connection, const char *types,
                            const char *project)
{
    Subscriber *subscriber = g_new0(Subscriber, 1);
    subscriber->connection = g_object_ref(connection);
    subscriber->types = types != NULL && *types != '\0' ? g_strsplit(types, ",", -1) : NULL;
    subscriber->project = g_strdup(project);
    /* Events flow one way; keepalive pings find dead clients. */
    soup_websocket_connection_set_keepalive_interval(connection, 30);
    g_signal_connect(connection, "closed", G_CALLBACK(on_closed), events);
    events->subscribers = g_list_append(events->subscribers, subscriber);
}

static gboolean wants(const Subscriber *subscriber, const PendingEvent *event)
{
    if (subscriber->project != NULL && event->project != NULL && !g_str_equal(subscriber->project, event->project))
        return FALSE;
    if (subscriber->types == NULL)
        return TRUE;
    return g_strv_contains((const char *const *)subscriber->types, event->type);
}

static gboolean deliver(gpointer user_data)
{
    PendingEvent *event = user_data;
    for (GList *l = event->events->subscribers; l != NULL; l = l->next) {
        Subscriber *subscriber = l->data;
        if (soup_websocket_connection_get_state(subscriber->connection) == SOUP_WEBSOCKET_STATE_OPEN &&
            wants(subscriber, event))
            soup_websocket_connection_send_text(subscriber->connection, event->text);
    }
    return G_SOURCE_REMOVE;
}

static void pending_free(gpointer data)
{
    PendingEvent *event = data;
    g_free(event->type);
    g_free(event->project);
    g_free(event->text);
    g_free(event);
}

void ferry_events_emit(FerryEvents *events, const char *type, const char *project, json_t *metadata)
{
    g_autofree char *timestamp = ferry_json_timestamp(g_get_real_time());
    g_autoptr(json_t) event = json_pack("{s:s, s:s, s:o, s:s, s:s}", "type", type, "timestamp", timestamp,
                                        "metadata", metadata, "location", "none", "project",
                                        project != NULL ? project : "default");
    PendingEvent *pending = g_new0(PendingEvent, 1);
    pending->events = events;
    pending->type = g_strdup(type);
    pending->project = g_strdup(project);
    pending->text = ferry_json_dump(event);
    g_main_context_invoke_full(events->main_context, G_PRIORITY_DEFAULT, deliver, pending, pending_free);
}

void ferry_events_lifecycle(FerryEvents *events, const char *project, const char *action, const char *source)
{
    json_t *metadata = json_pack("{s:s, s:s, s:{}, s:{s:s, s:s, s:s}}", "action", action, "source", source,
                                 "context", "requestor", "username", "", "protocol", "", "address", "");
    ferry_events_emit(events, "lifecycle", project, metadata);
}
