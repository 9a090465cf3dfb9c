/* libFuzzer target: a backup tarball from arbitrary bytes is read and extracted as an import does, each tree
 * into its own directory under a scratch dest/. Besides memory errors, anything appearing next to dest/ (the
 * scratch directory holds only the input and dest/) is a crash: extraction must never leave its destinations.
 */
#include "backup_reader.h"

#include <errno.h>
#include <ftw.h>
#include <glib/gstdio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *scratch;

static int make_traversable(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    if (type == FTW_D || type == FTW_DNR)
        chmod(path, 0700);
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    if (remove(path) < 0 && errno != ENOENT)
        g_error("remove %s: %s", path, g_strerror(errno));
    return 0;
}

static void remove_tree(const char *path)
{
    nftw(path, make_traversable, 16, FTW_PHYS | FTW_MOUNT);
    nftw(path, remove_entry, 16, FTW_PHYS | FTW_MOUNT | FTW_DEPTH);
}

static void check_scratch(void)
{
    g_autoptr(GDir) dir = g_dir_open(scratch, 0, NULL);
    const char *name;
    while ((name = g_dir_read_name(dir)) != NULL) {
        if (!g_str_equal(name, "input") && !g_str_equal(name, "dest"))
            g_error("extraction wrote outside its destinations: %s/%s", scratch, name);
    }
}

static void remove_scratch(void)
{
    remove_tree(scratch);
}

static gboolean on_index(FerryBackupIndex *index, gpointer user_data, GError **error)
{
    /* What an import checks of the index itself: the name and snapshot names were validated by the parser. */
    g_assert(index->name != NULL && index->snapshots != NULL && index->config != NULL);
    return TRUE;
}

static char *on_tree_begin(const char *snapshot, guint32 *shift, gpointer user_data, GError **error)
{
    const char *dest = user_data;
    g_autofree char *leaf =
        snapshot != NULL ? g_strdup_printf("snapshot-%s", snapshot) : g_strdup("instance");
    char *path = g_build_filename(dest, leaf, NULL);
    /* Snapshot names come from the archive: they must be single path components. */
    g_assert(strchr(leaf, '/') == NULL);
    if (g_mkdir(path, 0711) < 0)
        g_error("mkdir %s: %s", path, g_strerror(errno));
    *shift = geteuid() == 0 ? 1000000 : 0;
    return path;
}

static gboolean on_tree_end(const char *snapshot, gpointer user_data, GError **error)
{
    return TRUE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (scratch == NULL) {
        scratch = g_dir_make_tmp("ferry-fuzz-backup-XXXXXX", NULL);
        g_assert(scratch != NULL);
        atexit(remove_scratch);
    }
    g_autofree char *input = g_build_filename(scratch, "input", NULL);
    g_autofree char *dest = g_build_filename(scratch, "dest", NULL);
    g_assert(g_file_set_contents(input, (const char *)data, size, NULL));
    g_assert(g_mkdir(dest, 0700) == 0);

    static const FerryBackupReadCallbacks callbacks = {on_index, on_tree_begin, on_tree_end, NULL};
    g_autoptr(GError) error = NULL;
    gboolean ok = ferry_backup_archive_read(input, &callbacks, dest, NULL, &error);
    g_assert(ok == (error == NULL));
    check_scratch();

    remove_tree(dest);
    g_unlink(input);
    return 0;
}
