/* Projects as other handlers see them: every per-project request first checks that its project exists. */
#pragma once

#include "daemon.h"

G_BEGIN_DECLS

/* TRUE if project exists; else 404 'Project "x" not found'. */
gboolean ferry_project_check_exists(FerryDaemon *daemon, const char *project, GError **error);

G_END_DECLS
