/* Child processes of the storage module (cp, mkfs.btrfs, mount): explicit argv, no shell, stdin from
 * /dev/null, C locale, stderr captured into the error. */
#include "pool_private.h"

#include "error.h"

#include <string.h>

/* A cp over a broken tree can print one line per file; the head says what went wrong. */
#define STDERR_MAX 2048

/* Valid UTF-8 (file names in a rootfs are arbitrary bytes), trimmed, capped. */
static char *tidy_stderr(GBytes *bytes)
{
    gsize len = 0;
    const char *data = bytes ? g_bytes_get_data(bytes, &len) : NULL;
    g_autofree char *copy = g_strstrip(g_utf8_make_valid(data ? data : "", data ? (gssize)len : 0));
    if (strlen(copy) > STDERR_MAX) {
        char *cut = copy + STDERR_MAX;
        while (cut > copy && ((guchar)*cut & 0xC0) == 0x80)
            cut--; /* not inside a UTF-8 sequence */
        *cut = '\0';
        return g_strconcat(copy, "...", NULL);
    }
    return g_steal_pointer(&copy);
}

gboolean ferry_storage_spawn(const char *const *argv, GCancellable *cancellable, GError **error)
{
    if (g_cancellable_is_cancelled(cancellable)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "Operation cancelled");
        return FALSE;
    }
    g_autoptr(GSubprocessLauncher) launcher =
        g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_PIPE);
    g_subprocess_launcher_set_stdin_file_path(launcher, "/dev/null");
    g_subprocess_launcher_setenv(launcher, "LC_ALL", "C", TRUE);

    g_autoptr(GError) local_error = NULL;
    g_autoptr(GSubprocess) proc = g_subprocess_launcher_spawnv(launcher, argv, &local_error);
    if (proc == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to run %s: %s", argv[0],
                    local_error->message);
        return FALSE;
    }

    g_autoptr(GBytes) err_bytes = NULL;
    if (!g_subprocess_communicate(proc, NULL, cancellable, NULL, &err_bytes, &local_error)) {
        /* Never leave the child running on cancellation: a cp still writing into a staging directory would
         * race its removal. */
        g_subprocess_force_exit(proc);
        g_subprocess_wait(proc, NULL, NULL);
        if (g_error_matches(local_error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "Operation cancelled");
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to run %s: %s", argv[0],
                        local_error->message);
        return FALSE;
    }

    if (g_subprocess_get_if_exited(proc) && g_subprocess_get_exit_status(proc) == 0)
        return TRUE;

    g_autofree char *message = tidy_stderr(err_bytes);
    if (message[0] == '\0') {
        g_free(message);
        if (g_subprocess_get_if_exited(proc))
            message =
                g_strdup_printf("%s exited with status %d", argv[0], g_subprocess_get_exit_status(proc));
        else
            message = g_strdup_printf("%s killed by signal %d", argv[0], g_subprocess_get_term_sig(proc));
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "%s", message);
    return FALSE;
}
