/* The daemon's state: paths, database, listeners, operations, events and loaded storage pools. */
#pragma once

#include <gio/gio.h>
#include <libsoup/soup.h>

#include "db.h"

G_BEGIN_DECLS

typedef struct _FerryOperations FerryOperations;
typedef struct _FerryEvents FerryEvents;
typedef struct _FerryPool FerryPool;

typedef struct _FerryDaemon {
    char *dir;            /* $FERRY_DIR */
    char *helper_binary;  /* our own executable, for forkstart/forkexec helpers */
    FerryDb *db;
    GMainContext *main_context;
    GMainLoop *loop;
    SoupServer *unix_server;
    SoupServer *https_server;
    char *https_address;  /* the address the HTTPS server listens on, "" when none */
    GTlsCertificate *server_certificate;
    char *server_certificate_pem;
    char *server_fingerprint;
    FerryOperations *operations;
    FerryEvents *events;
    GHashTable *pools;    /* name -> FerryPool*, loaded at start; guarded by pools_lock */
    GMutex pools_lock;
    GHashTable *busy_instances; /* "project/name" -> description of the action holding it */
    GMutex busy_lock;
    gint64 started_at;
    gboolean shutting_down;
} FerryDaemon;

FerryDaemon *ferry_daemon_new(const char *dir, const char *helper_binary, GError **error);
/* Open the database, load pools, start listeners. */
gboolean ferry_daemon_start(FerryDaemon *daemon, GError **error);
void ferry_daemon_free(FerryDaemon *daemon);

char *ferry_daemon_path(FerryDaemon *daemon, const char *first, ...) G_GNUC_NULL_TERMINATED;

/* (Re)start the HTTPS listener on address ("" or NULL stops it). */
gboolean ferry_daemon_set_https_address(FerryDaemon *daemon, const char *address, GError **error);

/* The pool named name (borrowed; pools live as long as the daemon or until removed). */
FerryPool *ferry_daemon_get_pool(FerryDaemon *daemon, const char *name, GError **error);
void ferry_daemon_add_pool(FerryDaemon *daemon, FerryPool *pool);
void ferry_daemon_remove_pool(FerryDaemon *daemon, const char *name);

/* Mark an instance busy for the duration of an action; 409 naming the running action if already busy. */
gboolean ferry_daemon_claim_instance(FerryDaemon *daemon, const char *project, const char *name, const char *action,
                                     GError **error);
void ferry_daemon_release_instance(FerryDaemon *daemon, const char *project, const char *name);

G_END_DECLS
