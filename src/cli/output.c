#include "output.h"

#include "error.h"
#include "json.h"
#include "yaml.h"

#include <stdio.h>
#include <string.h>

GPtrArray *cli_rows_new(void)
{
    return g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
}

void cli_rows_add(GPtrArray *rows, ...)
{
    g_autoptr(GStrvBuilder) builder = g_strv_builder_new();
    va_list args;
    va_start(args, rows);
    for (const char *cell = va_arg(args, const char *); cell != NULL; cell = va_arg(args, const char *))
        g_strv_builder_add(builder, cell);
    va_end(args);
    g_ptr_array_add(rows, g_strv_builder_end(builder));
}

/* Natural order, as Incus sorts its lists: runs of digits compare by value ("c2" before "c10"; with the same
 * value, fewer leading zeros first), everything else byte by byte. */
static int compare_natural(const char *left, const char *right)
{
    while (*left != '\0' && *right != '\0') {
        if (g_ascii_isdigit(*left) && g_ascii_isdigit(*right)) {
            const char *l_start = left, *r_start = right;
            while (*l_start == '0')
                l_start++;
            while (*r_start == '0')
                r_start++;
            const char *l_end = l_start, *r_end = r_start;
            while (g_ascii_isdigit(*l_end))
                l_end++;
            while (g_ascii_isdigit(*r_end))
                r_end++;
            if (l_end - l_start != r_end - r_start)
                return (l_end - l_start) < (r_end - r_start) ? -1 : 1;
            int c = strncmp(l_start, r_start, l_end - l_start);
            if (c != 0)
                return c;
            if (l_start - left != r_start - right)
                return (l_start - left) < (r_start - right) ? -1 : 1;
            left = l_end;
            right = r_end;
            continue;
        }
        if (*left != *right)
            return (guchar)*left < (guchar)*right ? -1 : 1;
        left++;
        right++;
    }
    return *left == *right ? 0 : (*left == '\0' ? -1 : 1);
}

/* Column by column, left to right; an empty cell goes after any other (Incus's SortColumnsNaturally). */
static gint compare_rows(gconstpointer a, gconstpointer b)
{
    char **left = *(char ***)a;
    char **right = *(char ***)b;
    for (gsize i = 0; left[i] != NULL && right[i] != NULL; i++) {
        if (strcmp(left[i], right[i]) == 0)
            continue;
        if (*left[i] == '\0')
            return 1;
        if (*right[i] == '\0')
            return -1;
        return compare_natural(left[i], right[i]);
    }
    return 0;
}

void cli_rows_sort(GPtrArray *rows)
{
    g_ptr_array_sort(rows, compare_rows);
}

typedef enum { FORMAT_TABLE, FORMAT_COMPACT, FORMAT_CSV, FORMAT_JSON, FORMAT_YAML } Format;

static gboolean parse_format(const char *text, Format *format_out, gboolean *header_out, GError **error)
{
    g_auto(GStrv) parts = g_strsplit(text != NULL ? text : "table", ",", 2);
    const char *name = parts[0];
    const char *modifier = parts[1];
    if (strcmp(name, "table") == 0)
        *format_out = FORMAT_TABLE;
    else if (strcmp(name, "compact") == 0)
        *format_out = FORMAT_COMPACT;
    else if (strcmp(name, "csv") == 0)
        *format_out = FORMAT_CSV;
    else if (strcmp(name, "json") == 0)
        *format_out = FORMAT_JSON;
    else if (strcmp(name, "yaml") == 0)
        *format_out = FORMAT_YAML;
    else {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid format \"%s\"", name);
        return FALSE;
    }
    *header_out = *format_out != FORMAT_CSV;
    if (modifier != NULL) {
        if (strcmp(modifier, "header") == 0) {
            *header_out = TRUE;
        } else if (strcmp(modifier, "noheader") == 0) {
            *header_out = FALSE;
        } else {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid modifier \"%s\" on format \"%s\"",
                        modifier, name);
            return FALSE;
        }
    }
    return TRUE;
}

gboolean cli_format_check(const char *format, GError **error)
{
    Format f;
    gboolean header;
    return parse_format(format, &f, &header, error);
}

static gsize text_width(const char *text)
{
    return g_utf8_strlen(text, -1);
}

static void append_padded(GString *out, const char *text, gsize width, gboolean centre)
{
    gsize pad = width > text_width(text) ? width - text_width(text) : 0;
    gsize left = centre ? pad / 2 : 0;
    for (gsize i = 0; i < left; i++)
        g_string_append_c(out, ' ');
    g_string_append(out, text);
    for (gsize i = left; i < pad; i++)
        g_string_append_c(out, ' ');
}

static void append_rule(GString *out, const gsize *widths, gsize columns)
{
    g_string_append_c(out, '+');
    for (gsize c = 0; c < columns; c++) {
        for (gsize i = 0; i < widths[c] + 2; i++)
            g_string_append_c(out, '-');
        g_string_append_c(out, '+');
    }
    g_string_append_c(out, '\n');
}

/* One logical row, which spans as many lines as its tallest cell. */
static void append_row(GString *out, char **cells, const gsize *widths, gsize columns, gboolean bordered,
                       gboolean centre)
{
    g_autoptr(GPtrArray) split = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
    guint height = 1;
    for (gsize c = 0; c < columns; c++) {
        char **lines = g_strsplit(cells[c] != NULL ? cells[c] : "", "\n", -1);
        height = MAX(height, g_strv_length(lines));
        g_ptr_array_add(split, lines);
    }
    for (guint line = 0; line < height; line++) {
        g_string_append(out, bordered ? "|" : " ");
        for (gsize c = 0; c < columns; c++) {
            char **lines = g_ptr_array_index(split, c);
            const char *text = line < g_strv_length(lines) ? lines[line] : "";
            g_string_append_c(out, ' ');
            append_padded(out, text, widths[c], centre);
            g_string_append_c(out, ' ');
            if (bordered)
                g_string_append_c(out, '|');
            else if (c + 1 == columns)
                g_string_append_c(out, ' ');
        }
        g_string_append_c(out, '\n');
    }
}

static void render_table(GString *out, const char *const *headers, GPtrArray *rows, gboolean header,
                         gboolean bordered)
{
    gsize columns = g_strv_length((char **)headers);
    g_autofree gsize *widths = g_new0(gsize, columns);
    for (gsize c = 0; c < columns; c++) {
        if (header)
            widths[c] = text_width(headers[c]);
        for (guint r = 0; r < rows->len; r++) {
            char **row = g_ptr_array_index(rows, r);
            if (c >= g_strv_length(row))
                continue;
            g_auto(GStrv) lines = g_strsplit(row[c], "\n", -1);
            for (char **line = lines; *line != NULL; line++)
                widths[c] = MAX(widths[c], text_width(*line));
        }
    }
    if (bordered)
        append_rule(out, widths, columns);
    if (header) {
        append_row(out, (char **)headers, widths, columns, bordered, TRUE);
        if (bordered)
            append_rule(out, widths, columns);
    }
    for (guint r = 0; r < rows->len; r++) {
        char **row = g_ptr_array_index(rows, r);
        g_autofree char **cells = g_new0(char *, columns + 1);
        for (gsize c = 0; c < columns && c < g_strv_length(row); c++)
            cells[c] = row[c];
        append_row(out, cells, widths, columns, bordered, FALSE);
        if (bordered)
            append_rule(out, widths, columns);
    }
}

static void append_csv_field(GString *out, const char *field)
{
    gboolean quote = strpbrk(field, ",\"\r\n") != NULL || field[0] == ' ' || field[0] == '\t';
    if (!quote) {
        g_string_append(out, field);
        return;
    }
    g_string_append_c(out, '"');
    for (const char *c = field; *c != '\0'; c++) {
        if (*c == '"')
            g_string_append_c(out, '"');
        g_string_append_c(out, *c);
    }
    g_string_append_c(out, '"');
}

static void append_csv_row(GString *out, char **cells, gsize columns)
{
    for (gsize c = 0; c < columns; c++) {
        if (c > 0)
            g_string_append_c(out, ',');
        append_csv_field(out, cells[c] != NULL ? cells[c] : "");
    }
    g_string_append_c(out, '\n');
}

char *cli_render_list(const char *format, const char *const *headers, GPtrArray *rows, json_t *raw,
                      GError **error)
{
    Format f;
    gboolean header;
    if (!parse_format(format, &f, &header, error))
        return NULL;

    GString *out = g_string_new(NULL);
    switch (f) {
    case FORMAT_TABLE:
        render_table(out, headers, rows, header, TRUE);
        break;
    case FORMAT_COMPACT:
        render_table(out, headers, rows, header, FALSE);
        break;
    case FORMAT_CSV: {
        gsize columns = g_strv_length((char **)headers);
        if (header)
            append_csv_row(out, (char **)headers, columns);
        for (guint r = 0; r < rows->len; r++) {
            char **row = g_ptr_array_index(rows, r);
            g_autofree char **cells = g_new0(char *, columns + 1);
            for (gsize c = 0; c < columns && c < g_strv_length(row); c++)
                cells[c] = row[c];
            append_csv_row(out, cells, columns);
        }
        break;
    }
    case FORMAT_JSON: {
        g_autofree char *text = ferry_json_dump(raw != NULL ? raw : json_null());
        g_string_append(out, text);
        g_string_append_c(out, '\n');
        break;
    }
    case FORMAT_YAML: {
        g_autofree char *text = ferry_yaml_emit(raw != NULL ? raw : json_null(), error);
        if (text == NULL) {
            g_string_free(out, TRUE);
            return NULL;
        }
        g_string_append(out, text);
        break;
    }
    }
    return g_string_free(out, FALSE);
}

gboolean cli_print_list(const char *format, const char *const *headers, GPtrArray *rows, json_t *raw,
                        GError **error)
{
    g_autofree char *text = cli_render_list(format, headers, rows, raw, error);
    if (text == NULL)
        return FALSE;
    fputs(text, stdout);
    return TRUE;
}

char *cli_format_size(gint64 bytes, gboolean iec, int precision)
{
    static const char *const si[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
    static const char *const binary[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double base = iec ? 1024.0 : 1000.0;
    const char *const *units = iec ? binary : si;
    if (bytes < (gint64)base)
        return g_strdup_printf("%" G_GINT64_FORMAT "%s", bytes, units[0]);
    double value = (double)bytes;
    int unit = 0;
    while (value >= base && unit < 6) {
        value /= base;
        unit++;
    }
    return g_strdup_printf("%.*f%s", precision, value, units[unit]);
}

char *cli_format_unix_date(gint64 seconds)
{
    if (seconds <= 0)
        return g_strdup("");
    g_autoptr(GDateTime) utc = g_date_time_new_from_unix_utc(seconds);
    g_autoptr(GDateTime) local = g_date_time_to_local(utc);
    return g_date_time_format(local, "%Y/%m/%d %H:%M %Z");
}

char *cli_format_date(const char *rfc3339)
{
    if (rfc3339 == NULL || *rfc3339 == '\0' || g_str_has_prefix(rfc3339, "0001-01-01"))
        return g_strdup("");
    g_autoptr(GDateTime) when = g_date_time_new_from_iso8601(rfc3339, NULL);
    if (when == NULL)
        return g_strdup(rfc3339);
    return cli_format_unix_date(g_date_time_to_unix(when));
}
