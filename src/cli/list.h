/* Rendering of `ferry list` (shared with the unit tests). */
#pragma once

#include <glib.h>
#include <jansson.h>

G_BEGIN_DECLS

/* instances: GET /1.0/instances?recursion=2; columns: Incus letters ("ns46tS"); filters from first_filter on.
 */
char *cli_list_render(json_t *instances, const char *columns, const char *format, GPtrArray *filters,
                      guint first_filter, GError **error);

G_END_DECLS
