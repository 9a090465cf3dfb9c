/* Run an action on one instance as an operation, holding the instance's busy claim while it runs. */
#pragma once

#include "api.h"

typedef gboolean (*InstanceAction)(FerryDaemon *daemon, const char *project, const char *name, json_t *args,
                                   GError **error);

/* 404 when the instance doesn't exist, 409 when it is busy; args is stolen. */
FerryResponse *ferry_api_instance_action(FerryRequest *request, const char *description, const char *busy_label,
                                         InstanceAction action, json_t *args);
