/* Small helpers the migration transport tests share (test_tree.c): paths and files under a test directory,
 * and the sorted listing of a tree their comparisons walk. Every failure is a test assertion. */
#pragma once

#include <glib.h>
#include <sys/stat.h>
#include <sys/types.h>

/* dir/relative (dir itself for ""), newly allocated. */
char *path_in(const char *dir, const char *relative);
void write_file(const char *dir, const char *name, const void *data, gsize len);
/* lchown: the entry itself, never a symlink's target. */
void own(const char *dir, const char *name, uid_t uid, gid_t gid);
/* Both times, not following a symlink. */
void set_mtime(const char *dir, const char *name, time_t sec, long nsec);
struct stat stat_of(const char *dir, const char *name);
/* SHA-256 of a file's content, hex. */
char *content_checksum(const char *path);
/* Descriptors this process has open, for leak checks. */
guint count_open_fds(void);
/* strcmp for a GPtrArray of strings. */
gint compare_strings(gconstpointer a, gconstpointer b);
/* Every path under root, "" (root itself) first; a directory sorts before its entries. */
GPtrArray *sorted_tree(const char *root);
