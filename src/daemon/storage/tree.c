/* Walking and deleting volume trees whose content is attacker-controlled (a container's rootfs).
 *
 * Every step is an openat/fstatat relative to the directory being read, with O_NOFOLLOW: a symlink is an
 * entry, never a way out. A mount point is reported but not entered. The walk reads a directory's names
 * before visiting them and climbs back through "..", checking it is the directory it came from, so it holds
 * two fds at any depth: a 100000-deep tree made inside a container cannot exhaust the daemon's fds. */
#include "pool_private.h"

#include "error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define BTRFS_SUBVOLUME_ROOT_INO 256

typedef struct {
    GPtrArray *names; /* entries not visited yet, read before the first visit */
    guint next;
    struct stat st; /* of this directory */
    char *name;     /* in its parent; NULL for the root */
    char *relpath;  /* "" for the root */
} Level;

static void level_clear(Level *level)
{
    g_clear_pointer(&level->names, g_ptr_array_unref);
    g_clear_pointer(&level->name, g_free);
    g_clear_pointer(&level->relpath, g_free);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void set_error_at(GError **error, int errnum, const char *what, const char *relpath)
{
    int code = errnum == ENOENT ? FERRY_ERROR_NOT_FOUND : FERRY_ERROR_INTERNAL;
    g_set_error(error, FERRY_ERROR, code, "Failed to %s \"%s\": %s", what, relpath[0] ? relpath : ".",
                g_strerror(errnum));
}

int ferry_open_dir_at(int dir_fd, const char *name, GError **error)
{
    int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        set_error_at(error, errno, "open", name);
    return fd;
}

static GPtrArray *read_names(int dir_fd, const char *relpath, GError **error)
{
    /* A fresh open description: fdopendir takes it over, and reading must not move dir_fd's offset. */
    int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        set_error_at(error, errno, "open", relpath);
        return NULL;
    }
    DIR *dir = fdopendir(fd);
    if (dir == NULL) {
        set_error_at(error, errno, "read", relpath);
        close(fd);
        return NULL;
    }
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    for (;;) {
        errno = 0;
        struct dirent *entry = readdir(dir);
        if (entry == NULL)
            break;
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        g_ptr_array_add(names, g_strdup(entry->d_name));
    }
    int saved = errno;
    closedir(dir);
    if (saved != 0) {
        set_error_at(error, saved, "read", relpath);
        return NULL;
    }
    return g_steal_pointer(&names);
}

static gboolean is_mount_root(int dir_fd, const char *name)
{
    struct statx stx;
    if (statx(dir_fd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_INO, &stx) < 0)
        return FALSE;
    return (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

/* Enter subdirectories of the same filesystem; on btrfs a nested subvolume has its own st_dev but is no
 * mount. Anything mounted (a different fs, or a bind mount of the same one) stays closed. */
static gboolean default_descend(int dir_fd, const char *name, const struct stat *st,
                                const struct stat *parent, gboolean fs_is_btrfs)
{
    if (is_mount_root(dir_fd, name))
        return FALSE;
    if (st->st_dev == parent->st_dev)
        return TRUE;
    return fs_is_btrfs && st->st_ino == BTRFS_SUBVOLUME_ROOT_INO;
}

gboolean ferry_tree_walk(int root_fd, FerryTreeFunc func, gpointer user_data, GError **error)
{
    int cur = openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cur < 0) {
        set_error_at(error, errno, "open", "");
        return FALSE;
    }
    gboolean fs_is_btrfs = ferry_btrfs_is_filesystem(cur);

    g_autoptr(GArray) stack = g_array_new(FALSE, TRUE, sizeof(Level));
    g_array_set_clear_func(stack, (GDestroyNotify)level_clear);
    Level root = {0};
    root.relpath = g_strdup("");
    if (fstat(cur, &root.st) < 0) {
        set_error_at(error, errno, "stat", "");
        level_clear(&root);
        close_fd(&cur);
        return FALSE;
    }
    root.names = read_names(cur, "", error);
    if (root.names == NULL) {
        level_clear(&root);
        close_fd(&cur);
        return FALSE;
    }
    g_array_append_val(stack, root);
    Level *top;

    gboolean ok = TRUE;
    while (ok) {
        top = &g_array_index(stack, Level, stack->len - 1);
        if (top->next < top->names->len) {
            const char *name = top->names->pdata[top->next++];
            g_autofree char *relpath =
                top->relpath[0] ? g_strconcat(top->relpath, "/", name, NULL) : g_strdup(name);
            struct stat st;
            if (fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                    continue; /* gone since the directory was read */
                set_error_at(error, errno, "stat", relpath);
                ok = FALSE;
                break;
            }
            if (!S_ISDIR(st.st_mode)) {
                ok = func(FERRY_TREE_OTHER, cur, name, relpath, &st, NULL, user_data, error);
                continue;
            }
            gboolean descend = default_descend(cur, name, &st, &top->st, fs_is_btrfs);
            if (!func(FERRY_TREE_ENTER, cur, name, relpath, &st, &descend, user_data, error)) {
                ok = FALSE;
                break;
            }
            if (!descend)
                continue;

            int child = openat(cur, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            struct stat child_st;
            if (child < 0 || fstat(child, &child_st) < 0) {
                set_error_at(error, errno, "open", relpath);
                if (child >= 0)
                    close(child);
                ok = FALSE;
                break;
            }
            if (child_st.st_dev != st.st_dev || child_st.st_ino != st.st_ino) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT,
                            "Directory \"%s\" changed during the walk", relpath);
                close(child);
                ok = FALSE;
                break;
            }
            GPtrArray *names = read_names(child, relpath, error);
            if (names == NULL) {
                close(child);
                ok = FALSE;
                break;
            }
            close_fd(&cur);
            cur = child;
            Level level = {names, 0, st, g_strdup(name), g_steal_pointer(&relpath)};
            g_array_append_val(stack, level);
            continue;
        }

        if (stack->len == 1)
            break;

        /* Climb back: ".." must be the directory we came down from, else the tree was moved under us. */
        Level *parent = &g_array_index(stack, Level, stack->len - 2);
        int up = openat(cur, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct stat up_st;
        if (up < 0 || fstat(up, &up_st) < 0) {
            set_error_at(error, errno, "open", parent->relpath);
            if (up >= 0)
                close(up);
            ok = FALSE;
            break;
        }
        if (up_st.st_dev != parent->st.st_dev || up_st.st_ino != parent->st.st_ino) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT,
                        "Directory \"%s\" was moved during the walk", top->relpath);
            close(up);
            ok = FALSE;
            break;
        }
        close_fd(&cur);
        cur = up;
        Level done = *top;
        memset(top, 0, sizeof(*top)); /* ownership moved to done; the array's clear func sees NULLs */
        g_array_set_size(stack, stack->len - 1);
        ok = func(FERRY_TREE_LEAVE, cur, done.name, done.relpath, &done.st, NULL, user_data, error);
        level_clear(&done);
    }
    close_fd(&cur);
    return ok;
}

typedef struct {
    gboolean fs_is_btrfs;
} DeleteWalk;

static gboolean delete_entry(FerryTreeEvent event, int dir_fd, const char *name, const char *relpath,
                             const struct stat *st, gboolean *descend, gpointer user_data, GError **error)
{
    DeleteWalk *walk = user_data;
    switch (event) {
    case FERRY_TREE_OTHER:
        if (unlinkat(dir_fd, name, 0) < 0 && errno != ENOENT) {
            set_error_at(error, errno, "remove", relpath);
            return FALSE;
        }
        return TRUE;
    case FERRY_TREE_ENTER:
        if (!*descend) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT,
                        "Failed to remove \"%s\": a filesystem is mounted there", relpath);
            return FALSE;
        }
        if (walk->fs_is_btrfs && st->st_ino == BTRFS_SUBVOLUME_ROOT_INO) {
            *descend = FALSE;
            if (!ferry_btrfs_subvolume_delete(dir_fd, name, error)) {
                g_prefix_error(error, "Failed to remove \"%s\": ", relpath);
                return FALSE;
            }
        }
        return TRUE;
    case FERRY_TREE_LEAVE:
        if (unlinkat(dir_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
            set_error_at(error, errno, "remove", relpath);
            return FALSE;
        }
        return TRUE;
    }
    return TRUE;
}

gboolean ferry_tree_delete(int parent_fd, const char *name, GError **error)
{
    struct stat st;
    if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return TRUE;
        set_error_at(error, errno, "stat", name);
        return FALSE;
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(parent_fd, name, 0) < 0 && errno != ENOENT) {
            set_error_at(error, errno, "remove", name);
            return FALSE;
        }
        return TRUE;
    }

    int fd = ferry_open_dir_at(parent_fd, name, error);
    if (fd < 0)
        return FALSE;
    DeleteWalk walk = {ferry_btrfs_is_filesystem(fd)};
    if (walk.fs_is_btrfs && ferry_btrfs_is_subvolume_fd(fd)) {
        close(fd);
        return ferry_btrfs_subvolume_delete(parent_fd, name, error);
    }
    gboolean ok = ferry_tree_walk(fd, delete_entry, &walk, error);
    close(fd);
    if (!ok) {
        g_prefix_error(error, "Failed to delete \"%s\": ", name);
        return FALSE;
    }
    if (unlinkat(parent_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
        set_error_at(error, errno, "remove", name);
        return FALSE;
    }
    return TRUE;
}

int ferry_open_dir_beneath(int root_fd, const char *relpath, GError **error)
{
    int cur = openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cur < 0) {
        set_error_at(error, errno, "open", "");
        return -1;
    }
    g_auto(GStrv) parts = g_strsplit(relpath, "/", -1);
    for (char **part = parts; *part != NULL; part++) {
        if ((*part)[0] == '\0' || strcmp(*part, ".") == 0)
            continue;
        if (strcmp(*part, "..") == 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Path \"%s\" leaves its root", relpath);
            close(cur);
            return -1;
        }
        int next = openat(cur, *part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) {
            set_error_at(error, errno, "open", relpath);
            close(cur);
            return -1;
        }
        close(cur);
        cur = next;
    }
    return cur;
}
