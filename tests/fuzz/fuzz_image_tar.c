/* libFuzzer target: an image tarball from arbitrary bytes is inspected and unpacked into a scratch
 * directory. Besides memory errors, anything appearing next to the destination (the scratch directory
 * holds only the input and dest/) is a crash: unpack must never write outside dest_dir. */
#include "image_archive.h"

#include <errno.h>
#include <ftw.h>
#include <glib/gstdio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Never follows symbolic links (FTW_PHYS), stays on one filesystem (FTW_MOUNT). */
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
            g_error("unpack wrote outside its destination: %s/%s", scratch, name);
    }
}

static void remove_scratch(void)
{
    remove_tree(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (scratch == NULL) {
        scratch = g_dir_make_tmp("ferry-fuzz-image-XXXXXX", NULL);
        g_assert(scratch != NULL);
        atexit(remove_scratch);
    }
    g_autofree char *input = g_build_filename(scratch, "input", NULL);
    g_autofree char *dest = g_build_filename(scratch, "dest", NULL);
    g_assert(g_file_set_contents(input, (const char *)data, size, NULL));
    g_assert(g_mkdir(dest, 0700) == 0);

    g_autoptr(GError) error = NULL;
    g_autoptr(FerryImageInfo) info = ferry_image_archive_inspect(input, NULL, &error);
    g_assert((info == NULL) == (error != NULL));
    g_clear_error(&error);

    guint32 shift = geteuid() == 0 ? 1000000 : 0;
    gboolean ok = ferry_image_archive_unpack(input, dest, shift, shift, NULL, NULL, NULL, &error);
    g_assert(ok == (error == NULL));
    /* Whatever inspect accepts, unpack sees the same entries: only the filesystem can refuse more. */
    check_scratch();

    remove_tree(dest);
    g_unlink(input);
    return 0;
}
