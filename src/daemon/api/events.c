/* GET /1.0/events: a websocket that streams events. */
#include "api.h"

#include "events.h"
#include "server.h"

typedef struct {
    FerryEvents *events;
    char *types;
    char *project;
} Subscription;

static void subscription_free(gpointer data)
{
    Subscription *subscription = data;
    g_free(subscription->types);
    g_free(subscription->project);
    g_free(subscription);
}

static void on_connected(SoupWebsocketConnection *connection, gpointer user_data)
{
    Subscription *subscription = user_data;
    ferry_events_subscribe(subscription->events, connection, subscription->types, subscription->project);
}

FerryResponse *api_events_get(FerryRequest *request)
{
    Subscription *subscription = g_new0(Subscription, 1);
    subscription->events = request->daemon->events;
    subscription->types = g_strdup(ferry_request_query(request, "type"));
    /* all-projects=true (or no project given) subscribes to every project. */
    const char *project = ferry_request_query(request, "project");
    const char *all = ferry_request_query(request, "all-projects");
    subscription->project = project != NULL && (all == NULL || !g_str_equal(all, "true")) ? g_strdup(project) : NULL;
    GError *error = NULL;
    if (!ferry_server_accept_websocket(request->msg, on_connected, subscription, subscription_free, &error)) {
        subscription_free(subscription);
        return ferry_response_error(error);
    }
    return ferry_response_handled();
}
