/* List output as Incus renders it: table (bordered, a line between rows, centred headers), compact, csv
 * (no header unless ",header"), json, yaml; a ",noheader" / ",header" suffix toggles the header. */
#pragma once

#include <glib.h>
#include <jansson.h>

G_BEGIN_DECLS

/* Rows are GStrv (one string per column; a cell may have several lines). */
GPtrArray *cli_rows_new(void);
void cli_rows_add(GPtrArray *rows, ...) G_GNUC_NULL_TERMINATED;
/* Add a string to a row and free it (GLib 2.74 has no g_strv_builder_take). */
static inline void cli_row_take(GStrvBuilder *row, char *cell)
{
    g_strv_builder_add(row, cell);
    g_free(cell);
}

/* Sort rows by their columns, left to right, in natural order ("c2" before "c10"), an empty cell after any
 * other: Incus sorts its lists this way. */
void cli_rows_sort(GPtrArray *rows);

/* Checks a --format value. */
gboolean cli_format_check(const char *format, GError **error);
/* The rendered text; raw is what json and yaml show. */
char *cli_render_list(const char *format, const char *const *headers, GPtrArray *rows, json_t *raw,
                      GError **error);
gboolean cli_print_list(const char *format, const char *const *headers, GPtrArray *rows, json_t *raw,
                        GError **error);

/* "1.23MiB" (IEC) or "1.23MB" (SI), as Incus's units.GetByteSizeString(IEC) with the given precision. */
char *cli_format_size(gint64 bytes, gboolean iec, int precision);
/* An RFC 3339 time as Incus shows dates in lists: "2006/01/02 15:04 MST" in local time; "" for zero. */
char *cli_format_date(const char *rfc3339);
/* Same from unix seconds. */
char *cli_format_unix_date(gint64 seconds);

G_END_DECLS
