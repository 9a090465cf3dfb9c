#include "test_tree.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

char *path_in(const char *dir, const char *relative)
{
    return g_build_filename(dir, relative, NULL);
}

void write_file(const char *dir, const char *name, const void *data, gsize len)
{
    g_autofree char *path = path_in(dir, name);
    g_autoptr(GError) error = NULL;
    g_file_set_contents(path, data, (gssize)len, &error);
    g_assert_no_error(error);
}

void own(const char *dir, const char *name, uid_t uid, gid_t gid)
{
    g_autofree char *path = path_in(dir, name);
    g_assert_no_errno(lchown(path, uid, gid));
}

void set_mtime(const char *dir, const char *name, time_t sec, long nsec)
{
    g_autofree char *path = path_in(dir, name);
    struct timespec times[2] = {{sec, nsec}, {sec, nsec}};
    g_assert_no_errno(utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW));
}

struct stat stat_of(const char *dir, const char *name)
{
    g_autofree char *path = path_in(dir, name);
    struct stat st;
    g_assert_no_errno(lstat(path, &st));
    return st;
}

char *content_checksum(const char *path)
{
    g_autofree char *data = NULL;
    gsize len = 0;
    g_autoptr(GError) error = NULL;
    g_file_get_contents(path, &data, &len, &error);
    g_assert_no_error(error);
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
}

guint count_open_fds(void)
{
    g_autoptr(GDir) dir = g_dir_open("/proc/self/fd", 0, NULL);
    guint n = 0;
    while (g_dir_read_name(dir) != NULL)
        n++;
    return n;
}

static void collect(const char *root, const char *relative, GPtrArray *out)
{
    g_autofree char *path = path_in(root, relative);
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    g_assert_nonnull(dir);
    const char *name;
    while ((name = g_dir_read_name(dir)) != NULL) {
        char *child = relative[0] ? g_build_filename(relative, name, NULL) : g_strdup(name);
        g_ptr_array_add(out, child);
        g_autofree char *child_path = path_in(root, child);
        struct stat st;
        g_assert_no_errno(lstat(child_path, &st));
        if (S_ISDIR(st.st_mode))
            collect(root, child, out);
    }
}

gint compare_strings(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

GPtrArray *sorted_tree(const char *root)
{
    GPtrArray *paths = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(paths, g_strdup(""));
    collect(root, "", paths);
    g_ptr_array_sort(paths, compare_strings);
    return paths;
}
