/* A one-line, self-overwriting progress display for long operations. */
#include "cli.h"
#include "output.h"

#include <stdio.h>

struct _CliProgress {
    char *prefix;
    gboolean active;
    gsize shown; /* characters on the line now */
};

CliProgress *cli_progress_new(Cli *cli, const char *prefix)
{
    CliProgress *progress = g_new0(CliProgress, 1);
    progress->prefix = g_strdup(prefix);
    progress->active = !cli->quiet && cli_stdout_is_terminal();
    return progress;
}

static char *format_eta(gint64 seconds)
{
    if (seconds < 60)
        return g_strdup_printf("%" G_GINT64_FORMAT "s", seconds);
    if (seconds < 3600)
        return g_strdup_printf("%" G_GINT64_FORMAT "m%02" G_GINT64_FORMAT "s", seconds / 60, seconds % 60);
    return g_strdup_printf("%" G_GINT64_FORMAT "h%02" G_GINT64_FORMAT "m", seconds / 3600,
                           (seconds % 3600) / 60);
}

char *cli_progress_format(const char *prefix, const FerryProgress *progress)
{
    GString *line = g_string_new(NULL);
    if (prefix != NULL && *prefix)
        g_string_append(line, prefix);
    if (progress->stage != NULL && *progress->stage)
        g_string_append_printf(line, "%s%s", line->len ? ": " : "", progress->stage);

    if (progress->text != NULL) {
        g_string_append_printf(line, "%s%s", line->len ? ": " : "", progress->text);
        return g_string_free(line, FALSE);
    }
    if (progress->done < 0)
        return g_string_free(line, FALSE);

    g_autofree char *done = cli_format_size(progress->done, FALSE, 2);
    g_autofree char *rate = progress->rate > 0 ? cli_format_size(progress->rate, FALSE, 2) : NULL;
    g_string_append(line, line->len ? ": " : "");
    if (progress->total > 0) {
        g_autofree char *total = cli_format_size(progress->total, FALSE, 2);
        int percent = (int)MIN(100, progress->done * 100 / progress->total);
        g_string_append_printf(line, "%d%% (%s/%s", percent, done, total);
        if (rate != NULL) {
            g_string_append_printf(line, ", %s/s", rate);
            gint64 left = progress->total > progress->done ? progress->total - progress->done : 0;
            g_autofree char *eta = format_eta((left + progress->rate - 1) / progress->rate);
            g_string_append_printf(line, ", ETA %s", eta);
        }
        g_string_append_c(line, ')');
    } else {
        g_string_append(line, done);
        if (rate != NULL)
            g_string_append_printf(line, " (%s/s)", rate);
    }
    return g_string_free(line, FALSE);
}

void cli_progress_update(const FerryProgress *update, gpointer user_data)
{
    CliProgress *progress = user_data;
    if (progress == NULL || !progress->active)
        return;
    g_autofree char *line = cli_progress_format(progress->prefix, update);
    gsize width = g_utf8_strlen(line, -1);
    fprintf(stdout, "\r%s", line);
    for (gsize i = width; i < progress->shown; i++)
        fputc(' ', stdout);
    fflush(stdout);
    progress->shown = width;
}

void cli_progress_free(CliProgress *progress)
{
    if (progress == NULL)
        return;
    if (progress->active && progress->shown > 0) {
        fputc('\r', stdout);
        for (gsize i = 0; i < progress->shown; i++)
            fputc(' ', stdout);
        fputc('\r', stdout);
        fflush(stdout);
    }
    g_free(progress->prefix);
    g_free(progress);
}
