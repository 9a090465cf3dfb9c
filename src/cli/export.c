/* ferry export: an instance as an Incus-format backup tarball, written to a file or stdout as the server
 * produces it. Works against ferry and Incus servers (POST .../backups, GET .../export, DELETE). */
#include "cli.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gunixoutputstream.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *extension_for(const char *compression)
{
    if (g_str_equal(compression, "gzip"))
        return ".tar.gz";
    if (g_str_equal(compression, "xz"))
        return ".tar.xz";
    if (g_str_equal(compression, "none"))
        return ".tar";
    return ".tar.zst";
}

/* The backup's name from the creating operation's resources ("/1.0/instances/c1/backups/backup0?..."). */
static char *backup_name_of(json_t *operation)
{
    json_t *backups = json_object_get(json_object_get(operation, "resources"), "backups");
    const char *url = json_string_value(json_array_get(backups, 0));
    if (url == NULL)
        return NULL;
    g_autofree char *path = g_strndup(url, strcspn(url, "?"));
    const char *slash = strrchr(path, '/');
    return g_uri_unescape_string(slash != NULL ? slash + 1 : path, NULL);
}

typedef struct {
    FerryClient *client;
    CliProgress *progress;
    FerryOperationWatch *watch;
} Download;

static void on_download_started(const char *operation, gpointer user_data)
{
    Download *download = user_data;
    /* A ferry server names the operation making the tarball: its progress has the total and the ETA. */
    if (operation != NULL)
        download->watch = ferry_client_watch_operation(download->client, operation, cli_progress_update,
                                                       download->progress, TRUE);
}

static void on_download_progress(const FerryProgress *progress, gpointer user_data)
{
    Download *download = user_data;
    if (download->watch == NULL)
        cli_progress_update(progress, download->progress);
}

int cli_cmd_export(Cli *cli, int argc, char **argv, GError **error)
{
    gboolean instance_only = FALSE, optimized = FALSE;
    g_autofree char *compression = NULL;
    const CliOption options[] = {
        {"instance-only", 0, CLI_OPT_BOOL, &instance_only, NULL,
         "Whether or not to only backup the instance (without snapshots)"},
        {"optimized-storage", 0, CLI_OPT_BOOL, &optimized, NULL,
         "Use storage driver optimized format (can only be restored on a similar pool)"},
        {"compression", 0, CLI_OPT_STRING, &compression, "ALGORITHM",
         "Compression algorithm: zstd (default, multithreaded), gzip, xz or none"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 2, error))
        return -1;
    const char *algorithm = compression != NULL ? compression : "zstd";
    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &name, error);
    if (client == NULL)
        return -1;
    g_autofree char *default_target = g_strdup_printf("backup%s", extension_for(algorithm));
    const char *target = args->len > 1 ? g_ptr_array_index(args, 1) : default_target;
    gboolean to_stdout = g_str_equal(target, "-");

    g_autoptr(GDateTime) expiry = g_date_time_new_now_utc();
    g_autoptr(GDateTime) expires = g_date_time_add_hours(expiry, 24);
    g_autofree char *expires_text = g_date_time_format_iso8601(expires);
    g_autoptr(json_t) body =
        json_pack("{s:s, s:s, s:b, s:b, s:s}", "name", "", "expires_at", expires_text, "instance_only",
                  instance_only, "optimized_storage", optimized, "compression_algorithm", algorithm);
    g_autofree char *backups_path = ferry_api_path("instances", name, "backups", NULL);
    g_autoptr(json_t) created = ferry_client_run(client, "POST", backups_path, body, NULL, NULL, error);
    if (created == NULL)
        return -1;
    g_autofree char *backup = backup_name_of(created);
    if (backup == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "The server did not say which backup it made");
        return -1;
    }
    g_autofree char *backup_path = ferry_api_path("instances", name, "backups", backup, NULL);
    g_autofree char *export_path = ferry_api_path("instances", name, "backups", backup, "export", NULL);

    /* A file appears under its name only once it is complete. */
    g_autofree char *partial = to_stdout ? NULL : g_strdup_printf("%s.partial", target);
    int fd = to_stdout ? STDOUT_FILENO : open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    gboolean ok = fd >= 0;
    if (!ok)
        ferry_set_error_errno(error, errno, "Failed to create %s", partial);
    if (ok) {
        g_autoptr(GOutputStream) out = g_unix_output_stream_new(fd, !to_stdout);
        g_autoptr(CliProgress) progress = cli_progress_new(cli, "Exporting backup");
        Download download = {client, progress, NULL};
        ok = ferry_client_download(client, export_path, out, on_download_started, on_download_progress,
                                   &download, error);
        ok = ok && g_output_stream_close(out, NULL, error);
        if (download.watch != NULL) {
            /* The operation knows why a stream ended early better than the broken stream does. */
            g_autoptr(GError) op_error = NULL;
            if (!ferry_operation_watch_finish(download.watch, NULL, &op_error) && op_error != NULL) {
                g_clear_error(error);
                g_propagate_error(error, g_steal_pointer(&op_error));
                ok = FALSE;
            }
            ferry_operation_watch_free(download.watch);
        }
    }
    if (!to_stdout) {
        if (ok && g_rename(partial, target) < 0) {
            ferry_set_error_errno(error, errno, "Failed to rename %s to %s", partial, target);
            ok = FALSE;
        }
        if (!ok)
            g_unlink(partial);
        else
            g_chmod(target, 0644 & ~umask(022));
    }
    /* Incus keeps a made backup until it expires: remove it as its own client does. */
    g_autoptr(json_t) deleted = ferry_client_run(client, "DELETE", backup_path, NULL, NULL, NULL, NULL);
    if (!ok)
        return -1;
    if (!cli->quiet && !to_stdout)
        printf("Backup exported successfully!\n");
    return 0;
}
