/* Incus's ?filter= expressions (extension "api_filtering") on rendered objects:
 *   name eq c1 and status ne Stopped or config.user.x eq "a b"
 * Fields are dotted paths into the object; "and" binds tighter than "or"; values may be quoted. */
#pragma once

#include <glib.h>
#include <jansson.h>

G_BEGIN_DECLS

typedef struct _FerryFilter FerryFilter;

/* NULL/empty text = match everything (returns a filter that matches all). 400 on syntax errors. */
FerryFilter *ferry_filter_parse(const char *text, GError **error);
gboolean ferry_filter_match(const FerryFilter *filter, json_t *object);
void ferry_filter_free(FerryFilter *filter);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryFilter, ferry_filter_free)

G_END_DECLS
