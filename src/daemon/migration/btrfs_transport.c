/* BTRFS migration transport (see btrfs_transport.h for the wire).
 *
 * Subvolume operations use the kernel's ioctls on fds (as src/daemon/storage does; this library cannot link
 * the storage module): no process per subvolume, and paths inside a volume, which a container controls, are
 * opened beneath their root without following symlinks. Only the streams run btrfs-progs.
 *
 * Processes: `btrfs send` writes into a pipe we copy to the channel; `btrfs receive` reads from a socket we
 * feed from the channel (a socket, so a write after it died is EPIPE rather than SIGPIPE). Kills go through
 * a pidfd, which cannot reach a recycled pid. Neither program forks.
 *
 * Why the receiver checks the stream's framing itself: with -e, btrfs-progs stops at the end command, but a
 * stream cut at a command boundary is, depending on the progs version, either an error or a "complete"
 * read-only subvolume. Seeing the end command ourselves, with nothing after it before the barrier, makes a
 * truncated transfer an error everywhere. */
#include "btrfs_transport.h"

#include "error.h"
#include "json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define SUBVOLUME_ROOT_INO 256
#define ROOT_SUBVOL_RDONLY (1ULL << 0)
#define CHUNK (256 * 1024)
#define STDERR_KEEP 8192
#define STDERR_LINES 4
/* After btrfs receive finished, how long the peer may take to end its sub-stream (normally immediate: the
 * barrier follows the end command). */
#define GRACE_AFTER_RECEIVE (30 * G_USEC_PER_SEC)
/* Send stream framing (btrfs-progs send.h): "btrfs-stream\0", le32 version; then commands of le32 payload
 * length, le16 command, le32 crc, payload. The end command is 21 in every protocol version. */
#define STREAM_MAGIC "btrfs-stream"
#define STREAM_HEADER_SIZE 17
#define COMMAND_HEADER_SIZE 10
#define COMMAND_END 21
/* The name Incus gives the read-only snapshot a volume is sent from; an Incus sink receives it into the
 * directory that holds the snapshots' receive directories, where a dot name cannot meet a snapshot name. */
#define SEND_SNAPSHOT_NAME ".migration-send"
/* The storage module's staging prefix: its startup sweep deletes such leftovers after a crash. */
#define STAGING_PREFIX ".ferry-tmp-"

/* ---- errors ---- */

static int errno_code(int errnum)
{
    switch (errnum) {
    case ENOENT:
        return FERRY_ERROR_NOT_FOUND;
    case EEXIST:
    case ENOTEMPTY:
        return FERRY_ERROR_CONFLICT;
    default:
        return FERRY_ERROR_INTERNAL;
    }
}

static void G_GNUC_PRINTF(3, 4) set_errno(GError **error, int errnum, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    g_autofree char *context = g_strdup_vprintf(format, args);
    va_end(args);
    g_set_error(error, FERRY_ERROR, errno_code(errnum), "%s: %s", context, g_strerror(errnum));
}

static void set_cancelled(GError **error)
{
    g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "Operation cancelled");
}

/* ---- fds and paths ---- */

static int open_dir(const char *path, GError **error)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        set_errno(error, errno, "Failed to open \"%s\"", path);
    return fd;
}

/* relpath ("" or "." for root_fd itself) beneath root_fd, following no symlink: inside a volume the tree
 * is the container's. */
static int open_dir_beneath(int root_fd, const char *relpath, GError **error)
{
    struct open_how how = {
        .flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    const char *path = relpath[0] != '\0' ? relpath : ".";
    int fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
    if (fd < 0)
        set_errno(error, errno, "Failed to open \"%s\"", path);
    return fd;
}

static int open_dir_at(int dir_fd, const char *name, GError **error)
{
    int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        set_errno(error, errno, "Failed to open \"%s\"", name);
    return fd;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static gboolean fd_on_btrfs(int fd)
{
    struct statfs sfs;
    return fstatfs(fd, &sfs) == 0 && sfs.f_type == BTRFS_SUPER_MAGIC;
}

static gboolean fd_is_subvolume(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) && st.st_ino == SUBVOLUME_ROOT_INO && fd_on_btrfs(fd);
}

static gboolean check_absolute(const char *what, const char *path, GError **error)
{
    if (path != NULL && g_path_is_absolute(path))
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "%s needs an absolute path, not \"%s\"", what,
                path ? path : "(null)");
    return FALSE;
}

/* A path as given to a btrfs ioctl name field or a directory entry: one component. */
static gboolean is_component(const char *name)
{
    return name[0] != '\0' && strchr(name, '/') == NULL && strcmp(name, ".") != 0 &&
           strcmp(name, "..") != 0 && strlen(name) <= 255;
}

/* "/" or "/a/b" with plain components: where a nested subvolume goes inside its root. */
static gboolean is_subvolume_path(const char *path)
{
    if (strcmp(path, "/") == 0)
        return TRUE;
    if (path[0] != '/' || strlen(path) >= PATH_MAX)
        return FALSE;
    g_auto(GStrv) parts = g_strsplit(path + 1, "/", -1);
    for (guint i = 0; parts[i] != NULL; i++)
        if (!is_component(parts[i]))
            return FALSE;
    return TRUE;
}

/* ---- subvolume ioctls ---- */

typedef struct {
    guint8 uuid[16];
    guint8 received_uuid[16];
    gboolean readonly;
    guint64 stransid;
    struct btrfs_ioctl_timespec stime;
} SubvolumeInfo;

static gboolean uuid_is_empty(const guint8 *uuid)
{
    for (int i = 0; i < 16; i++)
        if (uuid[i] != 0)
            return FALSE;
    return TRUE;
}

/* Lowercase 8-4-4-4-12, as `btrfs subvolume list -u` prints and Incus sends; "" for none. */
static char *uuid_to_string(const guint8 *u)
{
    if (uuid_is_empty(u))
        return g_strdup("");
    return g_strdup_printf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                           u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                           u[15]);
}

static gboolean subvolume_info(int fd, SubvolumeInfo *info, GError **error)
{
    struct btrfs_ioctl_get_subvol_info_args args;
    memset(&args, 0, sizeof(args));
    if (ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, &args) < 0) {
        set_errno(error, errno, "Failed to read btrfs subvolume information");
        return FALSE;
    }
    memcpy(info->uuid, args.uuid, 16);
    memcpy(info->received_uuid, args.received_uuid, 16);
    /* The root item's flags, where read-only is bit 0 (BTRFS_ROOT_SUBVOL_RDONLY), not the ioctl flag. */
    info->readonly = (args.flags & ROOT_SUBVOL_RDONLY) != 0;
    info->stransid = args.stransid;
    info->stime = args.stime;
    return TRUE;
}

static gboolean get_readonly(int fd, gboolean *readonly, GError **error)
{
    guint64 flags = 0;
    if (ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) < 0) {
        set_errno(error, errno, "Failed to read btrfs subvolume flags");
        return FALSE;
    }
    *readonly = (flags & BTRFS_SUBVOL_RDONLY) != 0;
    return TRUE;
}

/* The raw flag, unlike `btrfs property set ro false`, leaves the received UUID alone. */
static gboolean set_readonly(int fd, gboolean readonly, GError **error)
{
    guint64 flags = 0;
    if (ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) < 0) {
        set_errno(error, errno, "Failed to read btrfs subvolume flags");
        return FALSE;
    }
    guint64 wanted = readonly ? (flags | BTRFS_SUBVOL_RDONLY) : (flags & ~(guint64)BTRFS_SUBVOL_RDONLY);
    if (wanted != flags && ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &wanted) < 0) {
        set_errno(error, errno, "Failed to make btrfs subvolume %s", readonly ? "read-only" : "writable");
        return FALSE;
    }
    return TRUE;
}

/* What btrfs receive recorded, put back (the subvolume must be writable): without it the subvolume cannot
 * be found as the parent of a later incremental stream. */
static gboolean restore_received(int fd, const SubvolumeInfo *before, GError **error)
{
    if (uuid_is_empty(before->received_uuid))
        return TRUE;
    SubvolumeInfo now;
    if (!subvolume_info(fd, &now, error))
        return FALSE;
    if (memcmp(now.received_uuid, before->received_uuid, 16) == 0)
        return TRUE;
    struct btrfs_ioctl_received_subvol_args args;
    memset(&args, 0, sizeof(args));
    memcpy(args.uuid, before->received_uuid, 16);
    args.stransid = before->stransid;
    args.stime = before->stime;
    if (ioctl(fd, BTRFS_IOC_SET_RECEIVED_SUBVOL, &args) < 0) {
        set_errno(error, errno, "Failed to set the received UUID of a btrfs subvolume");
        return FALSE;
    }
    return TRUE;
}

/* A snapshot of src_fd's subvolume (alone: nested subvolumes appear as empty directories). */
static gboolean snapshot_one(int src_fd, int parent_fd, const char *name, gboolean readonly, GError **error)
{
    struct btrfs_ioctl_vol_args_v2 args;
    memset(&args, 0, sizeof(args));
    if (strlen(name) >= sizeof(args.name)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Subvolume name \"%s\" is too long", name);
        return FALSE;
    }
    args.fd = src_fd;
    args.flags = readonly ? BTRFS_SUBVOL_RDONLY : 0;
    g_strlcpy(args.name, name, sizeof(args.name));
    if (ioctl(parent_fd, BTRFS_IOC_SNAP_CREATE_V2, &args) < 0) {
        set_errno(error, errno, "Failed to snapshot btrfs subvolume into \"%s\"", name);
        return FALSE;
    }
    return TRUE;
}

typedef struct {
    char *dir;  /* directory holding it, relative to the subvolume listed ("" for its root) */
    char *name; /* its entry in that directory */
} Child;

static void child_free(gpointer data)
{
    Child *child = data;
    g_free(child->dir);
    g_free(child->name);
    g_free(child);
}

/* The subvolumes directly inside fd's subvolume (GET_SUBVOL_ROOTREF + INO_LOOKUP_USER: kernel 4.18). */
static GPtrArray *direct_children(int fd, GError **error)
{
    g_autoptr(GPtrArray) children = g_ptr_array_new_with_free_func(child_free);
    struct btrfs_ioctl_get_subvol_rootref_args refs;
    memset(&refs, 0, sizeof(refs));
    for (;;) {
        int ret = ioctl(fd, BTRFS_IOC_GET_SUBVOL_ROOTREF, &refs);
        gboolean more = ret < 0 && errno == EOVERFLOW;
        if (ret < 0 && !more) {
            set_errno(error, errno, "Failed to list nested btrfs subvolumes");
            return NULL;
        }
        for (guint i = 0; i < refs.num_items; i++) {
            struct btrfs_ioctl_ino_lookup_user_args lookup;
            memset(&lookup, 0, sizeof(lookup));
            lookup.dirid = refs.rootref[i].dirid;
            lookup.treeid = refs.rootref[i].treeid;
            if (ioctl(fd, BTRFS_IOC_INO_LOOKUP_USER, &lookup) < 0) {
                set_errno(error, errno, "Failed to find a nested btrfs subvolume");
                return NULL;
            }
            lookup.path[sizeof(lookup.path) - 1] = '\0';
            lookup.name[sizeof(lookup.name) - 1] = '\0';
            Child *child = g_new0(Child, 1);
            /* The kernel gives the directory as "a/b/" (or "") relative to the subvolume's root. */
            child->dir = g_strdup(lookup.path);
            gsize len = strlen(child->dir);
            while (len > 0 && child->dir[len - 1] == '/')
                child->dir[--len] = '\0';
            child->name = g_strdup(lookup.name);
            g_ptr_array_add(children, child);
        }
        if (!more || refs.num_items == 0)
            break;
        refs.min_treeid = refs.rootref[refs.num_items - 1].treeid + 1;
        refs.num_items = 0;
    }
    return g_steal_pointer(&children);
}

static gint compare_strings(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static gboolean collect_nested(int fd, const char *prefix, GPtrArray *out, guint depth, GError **error)
{
    if (depth > 64) {
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Btrfs subvolumes nested too deep");
        return FALSE;
    }
    g_autoptr(GPtrArray) children = direct_children(fd, error);
    if (children == NULL)
        return FALSE;
    for (guint i = 0; i < children->len; i++) {
        Child *child = children->pdata[i];
        g_autofree char *inside =
            child->dir[0] ? g_build_filename(child->dir, child->name, NULL) : g_strdup(child->name);
        g_autofree char *relpath = prefix[0] ? g_build_filename(prefix, inside, NULL) : g_strdup(inside);
        int sub = open_dir_beneath(fd, inside, error);
        if (sub < 0)
            return FALSE;
        if (!fd_is_subvolume(sub)) {
            close(sub);
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "\"%s\" moved while listing subvolumes",
                        relpath);
            return FALSE;
        }
        gboolean ok = collect_nested(sub, relpath, out, depth + 1, error);
        close(sub);
        if (!ok)
            return FALSE;
        g_ptr_array_add(out, g_steal_pointer(&relpath));
    }
    return TRUE;
}

/* Relative paths ("a", "a/b") of every subvolume nested in fd's, sorted (a parent before its children). */
static GPtrArray *nested_subvolumes(int fd, GError **error)
{
    g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func(g_free);
    if (!collect_nested(fd, "", out, 0, error))
        return NULL;
    g_ptr_array_sort(out, compare_strings);
    return g_steal_pointer(&out);
}

static gboolean destroy_one(int parent_fd, const char *name, int *errnum)
{
    struct btrfs_ioctl_vol_args args;
    memset(&args, 0, sizeof(args));
    g_strlcpy(args.name, name, sizeof(args.name));
    if (ioctl(parent_fd, BTRFS_IOC_SNAP_DESTROY, &args) == 0)
        return TRUE;
    *errnum = errno;
    return FALSE;
}

/* Delete parent_fd/name, a subvolume, with whatever is nested in it. Missing is success. */
static gboolean destroy_subvolume(int parent_fd, const char *name, guint depth, GError **error)
{
    int errnum = 0;
    if (destroy_one(parent_fd, name, &errnum) || errnum == ENOENT)
        return TRUE;
    if (errnum != ENOTEMPTY || depth > 64) {
        set_errno(error, errnum, "Failed to delete btrfs subvolume \"%s\"", name);
        return FALSE;
    }
    /* Nested subvolumes first, which needs this one writable (their entries are in it). */
    int fd = open_dir_at(parent_fd, name, error);
    if (fd < 0)
        return FALSE;
    g_autoptr(GPtrArray) children = NULL;
    gboolean ok = set_readonly(fd, FALSE, error) && (children = direct_children(fd, error)) != NULL;
    for (guint i = 0; ok && i < children->len; i++) {
        Child *child = children->pdata[i];
        int dir = open_dir_beneath(fd, child->dir, error);
        ok = dir >= 0 && destroy_subvolume(dir, child->name, depth + 1, error);
        if (dir >= 0)
            close(dir);
    }
    close(fd);
    if (!ok)
        return FALSE;
    if (!destroy_one(parent_fd, name, &errnum) && errnum != ENOENT) {
        set_errno(error, errnum, "Failed to delete btrfs subvolume \"%s\"", name);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_btrfs_delete_subvolume(const char *path, GError **error)
{
    if (!check_absolute("Deleting a subvolume", path, error))
        return FALSE;
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *name = g_path_get_basename(path);
    int parent = open_dir(dir, error);
    if (parent < 0)
        return FALSE;
    gboolean ok = destroy_subvolume(parent, name, 0, error);
    close(parent);
    return ok;
}

/* A snapshot of src_fd's subvolume at parent_fd/name with its nested subvolumes in place, as Incus's
 * recursive snapshotSubvolume. Nothing is left on failure. */
static gboolean snapshot_recursive(int src_fd, int parent_fd, const char *name, gboolean readonly,
                                   GError **error)
{
    g_autoptr(GPtrArray) nested = nested_subvolumes(src_fd, error);
    if (nested == NULL)
        return FALSE;
    /* With nested subvolumes everything stays writable until they are all in place. */
    if (!snapshot_one(src_fd, parent_fd, name, readonly && nested->len == 0, error))
        return FALSE;
    if (nested->len == 0)
        return TRUE;

    int dst = open_dir_at(parent_fd, name, error);
    gboolean ok = dst >= 0;
    for (guint i = 0; ok && i < nested->len; i++) {
        const char *relpath = nested->pdata[i];
        g_autofree char *dir = g_path_get_dirname(relpath);
        g_autofree char *base = g_path_get_basename(relpath);
        int dst_parent = open_dir_beneath(dst, strcmp(dir, ".") == 0 ? "" : dir, error);
        int src = dst_parent >= 0 ? open_dir_beneath(src_fd, relpath, error) : -1;
        ok = src >= 0;
        struct stat times;
        if (ok && (fstat(dst_parent, &times) < 0 ||
                   (unlinkat(dst_parent, base, AT_REMOVEDIR) < 0 && errno != ENOENT))) {
            set_errno(error, errno, "Failed to replace \"%s\" in the snapshot", relpath);
            ok = FALSE;
        }
        if (ok)
            ok = snapshot_one(src, dst_parent, base, FALSE, error);
        /* The snapshot's directory keeps the volume's times: they are what a send carries. */
        if (ok) {
            struct timespec ts[2] = {times.st_atim, times.st_mtim};
            futimens(dst_parent, ts);
        }
        close_fd(&src);
        close_fd(&dst_parent);
    }
    for (guint i = nested->len; ok && readonly && i > 0; i--) {
        int sub = open_dir_beneath(dst, nested->pdata[i - 1], error);
        ok = sub >= 0 && set_readonly(sub, TRUE, error);
        close_fd(&sub);
    }
    if (ok && readonly)
        ok = set_readonly(dst, TRUE, error);
    close_fd(&dst);
    if (!ok)
        destroy_subvolume(parent_fd, name, 0, NULL);
    return ok;
}

/* Move a subvolume between directories: a read-only one cannot be renamed into another directory (its
 * ".." changes), so it is made writable for the rename, its received UUID checked, and read-only again if
 * asked. RENAME_NOREPLACE: 409 when the target exists. */
static gboolean move_subvolume(int src_dir, const char *src_name, int dst_dir, const char *dst_name,
                               gboolean readonly_after, GError **error)
{
    int fd = open_dir_at(src_dir, src_name, error);
    if (fd < 0)
        return FALSE;
    SubvolumeInfo before;
    gboolean was_readonly = FALSE;
    gboolean ok = subvolume_info(fd, &before, error) && get_readonly(fd, &was_readonly, error) &&
                  set_readonly(fd, FALSE, error);
    if (ok && renameat2(src_dir, src_name, dst_dir, dst_name, RENAME_NOREPLACE) < 0) {
        if (errno == EEXIST)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "\"%s\" already exists", dst_name);
        else
            set_errno(error, errno, "Failed to move btrfs subvolume to \"%s\"", dst_name);
        ok = FALSE;
        if (was_readonly)
            set_readonly(fd, TRUE, NULL);
    } else if (ok) {
        ok = restore_received(fd, &before, error) && (!readonly_after || set_readonly(fd, TRUE, error));
    }
    close(fd);
    return ok;
}

gboolean ferry_btrfs_subvolume_uuids(const char *path, char **uuid, char **received_uuid, gboolean *readonly,
                                     GError **error)
{
    int fd = open_dir(path, error);
    if (fd < 0)
        return FALSE;
    SubvolumeInfo info;
    gboolean ok = subvolume_info(fd, &info, error);
    close(fd);
    if (!ok) {
        g_prefix_error(error, "\"%s\": ", path);
        return FALSE;
    }
    if (uuid)
        *uuid = uuid_to_string(info.uuid);
    if (received_uuid)
        *received_uuid = uuid_to_string(info.received_uuid);
    if (readonly)
        *readonly = info.readonly;
    return TRUE;
}

/* ---- metadata header ---- */

FerryBtrfsSubvolume *ferry_btrfs_subvolume_new(const char *path, const char *snapshot, gboolean readonly,
                                               const char *uuid)
{
    FerryBtrfsSubvolume *s = g_new0(FerryBtrfsSubvolume, 1);
    s->path = g_strdup(path);
    s->snapshot = g_strdup(snapshot ? snapshot : "");
    s->readonly = readonly;
    s->uuid = g_strdup(uuid ? uuid : "");
    return s;
}

void ferry_btrfs_subvolume_free(FerryBtrfsSubvolume *s)
{
    if (s == NULL)
        return;
    g_free(s->path);
    g_free(s->snapshot);
    g_free(s->uuid);
    g_free(s);
}

static GPtrArray *subvolume_list_new(void)
{
    return g_ptr_array_new_with_free_func((GDestroyNotify)ferry_btrfs_subvolume_free);
}

/* Root then nested subvolumes of the (snapshot) volume at path. */
static gboolean add_subvolumes_of(GPtrArray *out, const char *path, const char *snapshot, gboolean is_volume,
                                  GError **error)
{
    int fd = open_dir(path, error);
    if (fd < 0)
        return FALSE;
    if (!fd_is_subvolume(fd)) {
        close(fd);
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "\"%s\" is not a btrfs subvolume", path);
        return FALSE;
    }
    SubvolumeInfo info;
    g_autoptr(GPtrArray) nested = NULL;
    gboolean ok = subvolume_info(fd, &info, error) && (nested = nested_subvolumes(fd, error)) != NULL;
    if (ok) {
        g_autofree char *uuid = uuid_to_string(info.uuid);
        /* A volume is restored writable even when it is sent from a snapshot. */
        gboolean readonly = !is_volume && info.readonly;
        g_ptr_array_add(out, ferry_btrfs_subvolume_new("/", snapshot, readonly, uuid));
    }
    for (guint i = 0; ok && i < nested->len; i++) {
        int sub = open_dir_beneath(fd, nested->pdata[i], error);
        SubvolumeInfo sub_info;
        ok = sub >= 0 && subvolume_info(sub, &sub_info, error);
        close_fd(&sub);
        if (ok) {
            g_autofree char *relpath = g_strconcat("/", (char *)nested->pdata[i], NULL);
            g_autofree char *uuid = uuid_to_string(sub_info.uuid);
            g_ptr_array_add(out, ferry_btrfs_subvolume_new(relpath, snapshot, sub_info.readonly, uuid));
        }
    }
    close(fd);
    if (!ok)
        g_prefix_error(error, "\"%s\": ", path);
    return ok;
}

GPtrArray *ferry_btrfs_volume_subvolumes(const char *volume_path, const char *const *snapshot_paths,
                                         GError **error)
{
    if (!check_absolute("A btrfs migration header", volume_path, error))
        return NULL;
    g_autoptr(GPtrArray) out = subvolume_list_new();
    for (gsize i = 0; snapshot_paths != NULL && snapshot_paths[i] != NULL; i++) {
        if (!check_absolute("A btrfs migration header", snapshot_paths[i], error))
            return NULL;
        g_autofree char *name = g_path_get_basename(snapshot_paths[i]);
        if (!add_subvolumes_of(out, snapshot_paths[i], name, FALSE, error))
            return NULL;
    }
    if (!add_subvolumes_of(out, volume_path, "", TRUE, error))
        return NULL;
    return g_steal_pointer(&out);
}

json_t *ferry_btrfs_header_to_json(GPtrArray *subvolumes)
{
    json_t *list = json_array();
    for (guint i = 0; subvolumes != NULL && i < subvolumes->len; i++) {
        const FerryBtrfsSubvolume *s = subvolumes->pdata[i];
        /* Member order as Go marshals BTRFSSubVolume. */
        json_array_append_new(list, json_pack("{s:s, s:s, s:b, s:s}", "path", s->path, "snapshot",
                                              s->snapshot, "readonly", s->readonly, "uuid", s->uuid));
    }
    return json_pack("{s:o}", "subvolumes", list);
}

json_t *ferry_btrfs_migration_header(const char *volume_path, const char *const *snapshot_paths,
                                     GError **error)
{
    g_autoptr(GPtrArray) subvolumes = ferry_btrfs_volume_subvolumes(volume_path, snapshot_paths, error);
    return subvolumes ? ferry_btrfs_header_to_json(subvolumes) : NULL;
}

GPtrArray *ferry_btrfs_header_parse(const json_t *header, GError **error)
{
    if (!json_is_object(header)) {
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid BTRFS migration header");
        return NULL;
    }
    g_autoptr(GPtrArray) out = subvolume_list_new();
    json_t *list = json_object_get(header, "subvolumes");
    if (list == NULL || json_is_null(list))
        return g_steal_pointer(&out);
    if (!json_is_array(list)) {
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "Invalid BTRFS migration header: \"subvolumes\" is not a list");
        return NULL;
    }
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *item = json_array_get(list, i);
        const char *path = json_is_object(item) ? ferry_json_get_string(item, "path") : NULL;
        const char *snapshot = json_is_object(item) ? ferry_json_get_string(item, "snapshot") : NULL;
        const char *uuid = json_is_object(item) ? ferry_json_get_string(item, "uuid") : NULL;
        json_t *readonly = json_is_object(item) ? json_object_get(item, "readonly") : NULL;
        if (path == NULL || !is_subvolume_path(path) ||
            (snapshot != NULL && snapshot[0] != '\0' && !is_component(snapshot)) ||
            (readonly != NULL && !json_is_boolean(readonly))) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid BTRFS migration header: bad subvolume entry %zu", i);
            return NULL;
        }
        g_ptr_array_add(out,
                        ferry_btrfs_subvolume_new(path, snapshot, readonly && json_is_true(readonly), uuid));
    }
    return g_steal_pointer(&out);
}

static void select_snapshot(GPtrArray *out, GPtrArray *subvolumes, const char *snapshot)
{
    for (guint i = 0; i < subvolumes->len; i++) {
        FerryBtrfsSubvolume *entry = subvolumes->pdata[i];
        if (strcmp(entry->snapshot, snapshot) == 0)
            g_ptr_array_add(out, entry);
    }
}

GPtrArray *ferry_btrfs_header_select(GPtrArray *subvolumes, const char *const *snapshot_names)
{
    GPtrArray *out = g_ptr_array_new();
    for (gsize i = 0; snapshot_names != NULL && snapshot_names[i] != NULL; i++)
        if (snapshot_names[i][0] != '\0')
            select_snapshot(out, subvolumes, snapshot_names[i]);
    select_snapshot(out, subvolumes, "");
    return out;
}

GPtrArray *ferry_btrfs_header_default(const char *const *snapshot_names)
{
    GPtrArray *out = subvolume_list_new();
    for (gsize i = 0; snapshot_names != NULL && snapshot_names[i] != NULL; i++)
        g_ptr_array_add(out, ferry_btrfs_subvolume_new("/", snapshot_names[i], TRUE, ""));
    g_ptr_array_add(out, ferry_btrfs_subvolume_new("/", "", FALSE, ""));
    return out;
}

/* ---- btrfs processes ---- */

typedef struct {
    GPid pid;
    int pidfd;
    int in_fd;  /* our end of its stdin (a socket), or -1 */
    int out_fd; /* its stdout (a pipe), or -1 */
    int err_fd;
    GString *err;
    gboolean exited_ok;
    char *how; /* "exited with status 1" / "killed by signal 9" */
} Process;

static const char *btrfs_binary(void)
{
    static gsize once = 0;
    static char *path = NULL;
    if (g_once_init_enter(&once)) {
        path = g_find_program_in_path("btrfs");
        g_once_init_leave(&once, 1);
    }
    return path;
}

/* `btrfs send --proto 1` where progs know the option: pinned to version 1, what every Incus and older
 * btrfs-progs can receive, whatever a future default becomes. */
static gboolean send_has_proto(void)
{
    static gsize once = 0;
    static gboolean has = FALSE;
    if (g_once_init_enter(&once)) {
        const char *argv[] = {btrfs_binary(), "send", "--help", NULL};
        const char *envp[] = {"LC_ALL=C", NULL};
        g_autofree char *out = NULL;
        g_autofree char *err = NULL;
        if (argv[0] != NULL && g_spawn_sync(NULL, (char **)argv, (char **)envp, G_SPAWN_DEFAULT, NULL, NULL,
                                            &out, &err, NULL, NULL))
            has = (out && strstr(out, "--proto")) || (err && strstr(err, "--proto"));
        g_once_init_leave(&once, 1);
    }
    return has;
}

static void set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static gboolean process_spawn(GPtrArray *argv, gboolean feed_stdin, gboolean read_stdout, Process *p,
                              GError **error)
{
    *p = (Process){.pidfd = -1, .in_fd = -1, .out_fd = -1, .err_fd = -1, .err = g_string_new(NULL)};
    int pair[2] = {-1, -1};
    if (feed_stdin && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
        set_errno(error, errno, "Failed to create a socket pair");
        return FALSE;
    }
    const char *path = g_getenv("PATH");
    g_autofree char *path_env = g_strconcat(
        "PATH=", path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL);
    const char *envp[] = {path_env, "LC_ALL=C", NULL};
    g_ptr_array_add(argv, NULL);
    GSpawnFlags flags = G_SPAWN_DO_NOT_REAP_CHILD | (feed_stdin ? 0 : G_SPAWN_STDIN_FROM_DEV_NULL) |
                        (read_stdout ? 0 : G_SPAWN_STDOUT_TO_DEV_NULL);
    g_autoptr(GError) spawn_error = NULL;
    gboolean spawned = g_spawn_async_with_pipes_and_fds(
        NULL, (const char *const *)argv->pdata, envp, flags, NULL, NULL, feed_stdin ? pair[1] : -1, -1, -1,
        NULL, NULL, 0, &p->pid, NULL, read_stdout ? &p->out_fd : NULL, &p->err_fd, &spawn_error);
    g_ptr_array_remove_index(argv, argv->len - 1);
    if (feed_stdin)
        close(pair[1]);
    if (!spawned) {
        if (feed_stdin)
            close(pair[0]);
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to run btrfs: %s",
                    spawn_error->message);
        return FALSE;
    }
    p->in_fd = feed_stdin ? pair[0] : -1;
    p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    if (p->pidfd < 0) {
        int saved = errno;
        kill(p->pid, SIGKILL); /* not reaped yet: the pid is still ours */
        while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
            ;
        close_fd(&p->in_fd);
        close_fd(&p->out_fd);
        close_fd(&p->err_fd);
        set_errno(error, saved, "Failed to watch btrfs (pidfd_open)");
        return FALSE;
    }
    if (p->in_fd >= 0)
        set_nonblocking(p->in_fd);
    if (p->out_fd >= 0)
        set_nonblocking(p->out_fd);
    set_nonblocking(p->err_fd);
    return TRUE;
}

/* Safe from any thread at any time: a pidfd never reaches another process, reaped or not. */
static void process_kill(Process *p)
{
    if (p->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, NULL, 0);
}

/* FALSE at the end of stderr. */
static gboolean process_read_stderr(Process *p)
{
    if (p->err_fd < 0)
        return FALSE;
    char chunk[4096];
    for (;;) {
        gssize n = read(p->err_fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return TRUE;
        if (n <= 0) {
            close_fd(&p->err_fd);
            return FALSE;
        }
        g_string_append_len(p->err, chunk, n);
        if (p->err->len > STDERR_KEEP)
            g_string_erase(p->err, 0, (gssize)(p->err->len - STDERR_KEEP));
    }
}

/* Collect stderr until the process exits, then reap it. */
static void process_wait(Process *p)
{
    for (;;) {
        struct pollfd fds[2] = {{.fd = p->pidfd, .events = POLLIN}, {.fd = p->err_fd, .events = POLLIN}};
        if (poll(fds, 2, -1) < 0 && errno != EINTR)
            break;
        if (fds[1].revents)
            process_read_stderr(p);
        if (fds[0].revents)
            break;
    }
    int status = 0;
    while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR)
        ;
    /* Whatever it wrote last (it is gone: nothing more can come unless it passed the pipe on). */
    process_read_stderr(p);
    p->exited_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    p->how = WIFEXITED(status) ? g_strdup_printf("exited with status %d", WEXITSTATUS(status))
                               : g_strdup_printf("killed by signal %d", WTERMSIG(status));
}

static void process_clear(Process *p)
{
    close_fd(&p->in_fd);
    close_fd(&p->out_fd);
    close_fd(&p->err_fd);
    close_fd(&p->pidfd);
    if (p->err)
        g_string_free(p->err, TRUE);
    p->err = NULL;
    g_clear_pointer(&p->how, g_free);
}

/* What btrfs said, minus its progress chatter; else how it ended. */
static char *process_summary(Process *p)
{
    g_autofree char *text = g_utf8_make_valid(p->err->str, (gssize)p->err->len);
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    g_autoptr(GPtrArray) kept = g_ptr_array_new();
    for (guint i = 0; lines[i] != NULL; i++) {
        const char *line = g_strstrip(lines[i]);
        if (line[0] == '\0' || g_str_has_prefix(line, "At subvol ") ||
            g_str_has_prefix(line, "At snapshot ") || g_str_has_prefix(line, "Chroot to "))
            continue;
        g_ptr_array_add(kept, lines[i]);
    }
    if (kept->len == 0)
        return g_strdup_printf("btrfs %s", p->how ? p->how : "failed");
    guint first = kept->len > STDERR_LINES ? kept->len - STDERR_LINES : 0;
    g_autoptr(GString) out = g_string_new(NULL);
    for (guint i = first; i < kept->len; i++)
        g_string_append_printf(out, "%s%s", out->len ? "; " : "", (char *)kept->pdata[i]);
    return g_string_free(g_steal_pointer(&out), FALSE);
}

/* ---- sending one stream ---- */

typedef struct {
    Process *process;
    FerryByteChannel *channel;
    gint cancelled;
    gint aborted;
    gboolean channel_failed; /* the channel refused our bytes: the trouble began at the peer or between us */
} SendState;

static void abort_once(FerryByteChannel *channel, gint *aborted)
{
    if (g_atomic_int_compare_and_exchange(aborted, 0, 1))
        channel->abort(channel->channel);
}

static void on_send_cancel(GCancellable *c, gpointer data)
{
    SendState *s = data;
    g_atomic_int_set(&s->cancelled, 1);
    process_kill(s->process);
    abort_once(s->channel, &s->aborted);
}

gboolean ferry_btrfs_send_subvolume(const char *subvolume, const char *parent, FerryByteChannel *channel,
                                    FerryBytesFunc progress, gpointer data, GCancellable *c, GError **error)
{
    g_return_val_if_fail(channel != NULL, FALSE);
    gint aborted = 0;
    g_autoptr(GError) local = NULL;
    if (g_cancellable_is_cancelled(c)) {
        abort_once(channel, &aborted);
        set_cancelled(error);
        return FALSE;
    }
    gboolean usable = check_absolute("Btrfs send", subvolume, &local) &&
                      (parent == NULL || check_absolute("Btrfs send", parent, &local));
    if (usable && btrfs_binary() == NULL) {
        g_set_error_literal(&local, FERRY_ERROR, FERRY_ERROR_INTERNAL, "btrfs is not installed");
        usable = FALSE;
    }
    if (!usable) {
        abort_once(channel, &aborted);
        g_propagate_prefixed_error(error, g_steal_pointer(&local), "Btrfs send failed: ");
        return FALSE;
    }

    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_ptr_array_add(argv, (char *)btrfs_binary());
    g_ptr_array_add(argv, "send");
    if (send_has_proto()) {
        g_ptr_array_add(argv, "--proto");
        g_ptr_array_add(argv, "1");
    }
    if (parent != NULL) {
        g_ptr_array_add(argv, "-p");
        g_ptr_array_add(argv, (char *)parent);
    }
    g_ptr_array_add(argv, (char *)subvolume);

    Process process;
    if (!process_spawn(argv, FALSE, TRUE, &process, &local)) {
        process_clear(&process);
        abort_once(channel, &aborted);
        g_propagate_prefixed_error(error, g_steal_pointer(&local), "Btrfs send failed: ");
        return FALSE;
    }
    SendState state = {.process = &process, .channel = channel, .aborted = aborted};
    gulong handler = c ? g_cancellable_connect(c, G_CALLBACK(on_send_cancel), &state, NULL) : 0;

    g_autofree char *buf = g_malloc(CHUNK);
    guint64 total = 0;
    g_autoptr(GError) write_error = NULL;
    for (;;) {
        struct pollfd fds[2] = {{.fd = process.out_fd, .events = POLLIN},
                                {.fd = process.err_fd, .events = POLLIN}};
        if (poll(fds, 2, -1) < 0 && errno != EINTR) {
            set_errno(&write_error, errno, "poll");
            process_kill(&process);
            break;
        }
        if (fds[1].revents)
            process_read_stderr(&process);
        if (!fds[0].revents)
            continue;
        gssize n = read(process.out_fd, buf, CHUNK);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n < 0) {
            set_errno(&write_error, errno, "Failed to read from btrfs send");
            process_kill(&process); /* it would block on a pipe nobody reads */
            break;
        }
        if (n == 0)
            break; /* its end (or it died: the exit status tells) */
        if (!channel->write(channel->channel, buf, (gsize)n, &write_error)) {
            if (write_error == NULL)
                g_set_error_literal(&write_error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Unknown error");
            g_prefix_error(&write_error, "Failed to send to the migration peer: ");
            state.channel_failed = TRUE;
            process_kill(&process);
            break;
        }
        total += (guint64)n;
        if (progress)
            progress(total, data);
    }
    process_wait(&process);
    if (handler)
        g_cancellable_disconnect(c, handler);

    gboolean ok = FALSE;
    if (g_atomic_int_get(&state.cancelled)) {
        set_cancelled(error);
    } else if (write_error != NULL) {
        g_set_error(error, FERRY_ERROR, state.channel_failed ? FERRY_ERROR_UNAVAILABLE : FERRY_ERROR_INTERNAL,
                    "Btrfs send failed: %s", write_error->message);
    } else if (!process.exited_ok) {
        g_autofree char *said = process_summary(&process);
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Btrfs send failed: %s", said);
    } else if (!channel->end(channel->channel, &local)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE,
                    "Btrfs send failed: Failed to end the migration stream: %s",
                    local ? local->message : "Unknown error");
    } else {
        ok = TRUE;
    }
    if (!ok)
        abort_once(channel, &state.aborted);
    process_clear(&process);
    return ok;
}

/* ---- receiving one stream ---- */

typedef struct {
    guchar head[STREAM_HEADER_SIZE];
    gsize head_len;
    guchar command[COMMAND_HEADER_SIZE];
    gsize command_len;
    guint64 payload_left;
    guint16 last_command;
    gboolean ended, trailing, bad;
} StreamCheck;

/* Returns how many of the n bytes belong to the stream (all but what follows its end). */
static gsize stream_check_feed(StreamCheck *s, const guchar *p, gsize n)
{
    gsize accepted = 0;
    while (n > 0 && !s->bad && !s->trailing) {
        if (s->ended) {
            s->trailing = TRUE;
            break;
        }
        gsize take;
        if (s->head_len < STREAM_HEADER_SIZE) {
            take = MIN(n, STREAM_HEADER_SIZE - s->head_len);
            memcpy(s->head + s->head_len, p, take);
            s->head_len += take;
            if (s->head_len == STREAM_HEADER_SIZE && memcmp(s->head, STREAM_MAGIC, sizeof(STREAM_MAGIC)) != 0)
                s->bad = TRUE;
        } else if (s->payload_left > 0) {
            take = (gsize)MIN((guint64)n, s->payload_left);
            s->payload_left -= take;
            if (s->payload_left == 0 && s->last_command == COMMAND_END)
                s->ended = TRUE;
        } else {
            take = MIN(n, COMMAND_HEADER_SIZE - s->command_len);
            memcpy(s->command + s->command_len, p, take);
            s->command_len += take;
            if (s->command_len == COMMAND_HEADER_SIZE) {
                const guchar *h = s->command;
                s->payload_left =
                    (guint64)h[0] | ((guint64)h[1] << 8) | ((guint64)h[2] << 16) | ((guint64)h[3] << 24);
                s->last_command = (guint16)(h[4] | (h[5] << 8));
                s->command_len = 0;
                if (s->payload_left == 0 && s->last_command == COMMAND_END)
                    s->ended = TRUE;
            }
        }
        p += take;
        n -= take;
        accepted += take;
    }
    return accepted;
}

/* NULL when the stream was exactly one complete send stream. */
static const char *stream_check_problem(const StreamCheck *s)
{
    if (s->bad)
        return "Not a btrfs send stream";
    if (s->trailing)
        return "Data follows the end of the btrfs stream";
    if (s->head_len == 0)
        return "Empty btrfs stream";
    if (!s->ended)
        return "The btrfs stream ended before its end command";
    return NULL;
}

typedef struct {
    FerryByteChannel *channel;
    Process *process;
    FerryBytesFunc progress;
    gpointer progress_data;
    GCancellable *stop; /* cancelled to unblock the pump */
    int stop_fd;
    StreamCheck check;

    GMutex lock;
    GCond cond;
    gboolean pump_done;
    GError *pump_error;      /* the pump's own failure (the peer, or feeding btrfs) */
    gboolean channel_failed; /* the channel failed (not because we stopped it) */
    gboolean peer_ended;     /* the peer's barrier arrived */
    gboolean killed;         /* we killed btrfs (or it was already gone) */
    gint cancelled;
    gint aborted;
} ReceiveState;

static void receive_stop(ReceiveState *r)
{
    g_mutex_lock(&r->lock);
    r->killed = TRUE;
    g_mutex_unlock(&r->lock);
    g_cancellable_cancel(r->stop);
    process_kill(r->process);
    abort_once(r->channel, &r->aborted);
}

static void on_receive_cancel(GCancellable *c, gpointer data)
{
    ReceiveState *r = data;
    g_atomic_int_set(&r->cancelled, 1);
    receive_stop(r);
}

/* Takes error. */
static void pump_fail(ReceiveState *r, GError *error, gboolean channel_failed)
{
    g_mutex_lock(&r->lock);
    if (r->pump_error == NULL) {
        r->pump_error = error;
        r->channel_failed = channel_failed;
    } else {
        g_error_free(error);
    }
    g_mutex_unlock(&r->lock);
    receive_stop(r);
}

/* Feed btrfs; FALSE when stopped; *gone once it no longer reads (it exited: its status tells why). */
static gboolean deliver(ReceiveState *r, const char *data, gsize len, gboolean *gone)
{
    while (len > 0) {
        gssize n = send(r->process->in_fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd fds[2] = {{.fd = r->process->in_fd, .events = POLLOUT},
                                    {.fd = r->stop_fd, .events = POLLIN}};
            while (poll(fds, 2, -1) < 0 && errno == EINTR)
                ;
            if (fds[1].revents)
                return FALSE;
            continue;
        }
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            *gone = TRUE;
            return TRUE;
        }
        if (n < 0) {
            GError *error = NULL;
            set_errno(&error, errno, "Failed to feed btrfs receive");
            pump_fail(r, error, FALSE);
            return FALSE;
        }
        data += n;
        len -= (gsize)n;
    }
    return TRUE;
}

/* The channel into btrfs receive, up to the peer's barrier. */
static gpointer receive_pump(gpointer data)
{
    ReceiveState *r = data;
    g_autofree char *buf = g_malloc(CHUNK);
    guint64 total = 0;
    gboolean gone = FALSE;
    for (;;) {
        GError *error = NULL;
        gssize n = r->channel->read(r->channel->channel, buf, CHUNK, r->stop, &error);
        if (n < 0) {
            if (g_cancellable_is_cancelled(r->stop)) {
                g_clear_error(&error);
            } else {
                if (error == NULL)
                    g_set_error_literal(&error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Unknown error");
                g_prefix_error(&error, "Failed to receive from the migration peer: ");
                pump_fail(r, error, TRUE);
            }
            break;
        }
        if (n == 0) {
            g_mutex_lock(&r->lock);
            r->peer_ended = TRUE;
            g_mutex_unlock(&r->lock);
            shutdown(r->process->in_fd, SHUT_WR); /* btrfs sees the end of its input */
            break;
        }
        total += (guint64)n;
        gsize stream_bytes =
            r->check.trailing ? 0 : stream_check_feed(&r->check, (const guchar *)buf, (gsize)n);
        if (r->progress)
            r->progress(total, r->progress_data);
        /* Past the end command (or once btrfs is gone) keep reading to the barrier: the channel must stay in
         * step, and the check reports what followed. */
        if (!gone && stream_bytes > 0 && !deliver(r, buf, stream_bytes, &gone))
            break;
    }
    g_mutex_lock(&r->lock);
    r->pump_done = TRUE;
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
    return NULL;
}

/* Delete everything in a staging directory (received subvolumes, complete or not). */
static void empty_staging(const char *staging)
{
    int fd = open(staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        int dup_fd = dup(fd);
        DIR *dir = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
        struct dirent *entry;
        while (dir != NULL && (entry = readdir(dir)) != NULL)
            if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0)
                g_ptr_array_add(names, g_strdup(entry->d_name));
        if (dir != NULL)
            closedir(dir);
        else if (dup_fd >= 0)
            close(dup_fd);
        for (guint i = 0; i < names->len; i++) {
            const char *name = names->pdata[i];
            struct stat st;
            if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                continue;
            if (S_ISDIR(st.st_mode) && st.st_ino == SUBVOLUME_ROOT_INO)
                destroy_subvolume(fd, name, 0, NULL);
            else
                unlinkat(fd, name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0);
        }
        close(fd);
    }
}

static void clear_staging(const char *staging)
{
    empty_staging(staging);
    rmdir(staging);
}

/* The one subvolume btrfs receive made in staging, complete (read-only, with a received UUID). */
static char *find_received(const char *staging, GError **error)
{
    g_autoptr(GDir) dir = g_dir_open(staging, 0, NULL);
    const char *name;
    g_autofree char *found = NULL;
    guint count = 0;
    while (dir != NULL && (name = g_dir_read_name(dir)) != NULL) {
        count++;
        g_free(found);
        found = g_strdup(name);
    }
    if (count != 1) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "Expected one received subvolume, found %u entries", count);
        return NULL;
    }
    g_autofree char *path = g_build_filename(staging, found, NULL);
    int fd = open_dir(path, error);
    if (fd < 0)
        return NULL;
    SubvolumeInfo info;
    gboolean ok = fd_is_subvolume(fd) && subvolume_info(fd, &info, NULL) && info.readonly &&
                  !uuid_is_empty(info.received_uuid);
    close(fd);
    if (!ok) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "\"%s\" was not received completely", found);
        return NULL;
    }
    return g_steal_pointer(&found);
}

/* Run btrfs receive into staging (an empty directory of ours on btrfs) for one stream. Returns the name of
 * the received subvolume in staging. On failure staging is emptied (not removed) and the channel aborted
 * (*aborted tracks it across calls). */
static char *receive_into(const char *staging, FerryByteChannel *channel, FerryBytesFunc progress,
                          gpointer data, GCancellable *c, gint *aborted, GError **error)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_ptr_array_add(argv, (char *)btrfs_binary());
    g_ptr_array_add(argv, "receive");
    /* -C: chroot into staging, so no path in a peer's stream can reach outside it. -e: stop at the end
     * command, the sub-stream's barrier being no end of file to btrfs. */
    g_ptr_array_add(argv, "-C");
    g_ptr_array_add(argv, "-e");
    g_ptr_array_add(argv, (char *)staging);

    Process process;
    g_autoptr(GError) local = NULL;
    if (!process_spawn(argv, TRUE, FALSE, &process, &local)) {
        process_clear(&process);
        abort_once(channel, aborted);
        g_propagate_prefixed_error(error, g_steal_pointer(&local), "Btrfs receive failed: ");
        return NULL;
    }

    ReceiveState r = {
        .channel = channel,
        .process = &process,
        .progress = progress,
        .progress_data = data,
        .stop = g_cancellable_new(),
        .aborted = *aborted,
    };
    g_mutex_init(&r.lock);
    g_cond_init(&r.cond);
    r.stop_fd = g_cancellable_get_fd(r.stop);
    gulong handler = c ? g_cancellable_connect(c, G_CALLBACK(on_receive_cancel), &r, NULL) : 0;
    GThread *pump = g_thread_new("btrfs-receive", receive_pump, &r);

    process_wait(&process);
    g_mutex_lock(&r.lock);
    gboolean killed_first = r.killed; /* before it ended by itself: its death is not news */
    g_mutex_unlock(&r.lock);
    gboolean timed_out = FALSE;
    if (!process.exited_ok) {
        /* Nothing it did can be used: stop the pump and make the peer fail now. */
        receive_stop(&r);
    } else {
        gint64 deadline = g_get_monotonic_time() + GRACE_AFTER_RECEIVE;
        g_mutex_lock(&r.lock);
        while (!r.pump_done && !timed_out)
            timed_out = !g_cond_wait_until(&r.cond, &r.lock, deadline);
        g_mutex_unlock(&r.lock);
        if (timed_out)
            receive_stop(&r);
    }
    g_thread_join(pump);
    if (handler)
        g_cancellable_disconnect(c, handler);
    *aborted = g_atomic_int_get(&r.aborted);

    g_autoptr(GError) pump_error = r.pump_error;
    const char *problem = stream_check_problem(&r.check);
    /* After our kill, "killed by signal 9" would send the reader after the wrong culprit. */
    g_autofree char *said = process.exited_ok || killed_first ? NULL : process_summary(&process);
    /* The peer ended its sub-stream before btrfs's end command: it stopped sending (an Incus source ends
     * the frame even when its btrfs send failed), so its own account is the one to wait for. */
    gboolean cut_by_peer = r.peer_ended && !r.check.ended && !r.check.bad;
    char *name = NULL;
    if (g_atomic_int_get(&r.cancelled)) {
        set_cancelled(error);
    } else if (pump_error != NULL) {
        g_set_error(error, FERRY_ERROR, r.channel_failed ? FERRY_ERROR_UNAVAILABLE : FERRY_ERROR_INTERNAL,
                    "Btrfs receive failed: %s%s%s%s", pump_error->message, said ? " (" : "", said ? said : "",
                    said ? ")" : "");
    } else if (said != NULL) {
        g_set_error(error, FERRY_ERROR, cut_by_peer ? FERRY_ERROR_UNAVAILABLE : FERRY_ERROR_INTERNAL,
                    "Btrfs receive failed: %s", said);
    } else if (timed_out) {
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE,
                            "Btrfs receive failed: The migration peer did not end its btrfs stream");
    } else if (problem != NULL) {
        g_set_error(error, FERRY_ERROR, cut_by_peer ? FERRY_ERROR_UNAVAILABLE : FERRY_ERROR_INTERNAL,
                    "Btrfs receive failed: %s", problem);
    } else if ((name = find_received(staging, &local)) == NULL) {
        g_propagate_prefixed_error(error, g_steal_pointer(&local), "Btrfs receive failed: ");
    }
    process_clear(&process);
    g_cancellable_release_fd(r.stop);
    g_object_unref(r.stop);
    g_mutex_clear(&r.lock);
    g_cond_clear(&r.cond);

    if (name == NULL) {
        abort_once(channel, aborted);
        /* Whatever btrfs made of the stream is incomplete or unverified: it goes. */
        empty_staging(staging);
    }
    return name;
}

/* A fresh ".ferry-tmp-<what>-XXXXXX" directory (0700) in parent; NULL with error. */
static char *make_staging(const char *parent, const char *what, GError **error)
{
    g_autofree char *template = g_strdup_printf("%s/" STAGING_PREFIX "%s-XXXXXX", parent, what);
    if (g_mkdtemp_full(template, 0700) == NULL) {
        set_errno(error, errno, "Failed to create a staging directory in \"%s\"", parent);
        return NULL;
    }
    return g_steal_pointer(&template);
}

/* The receiving side's checks before anything runs: dir must be a directory on btrfs. */
static gboolean check_receive_dir(const char *dir, GError **error)
{
    if (!check_absolute("Btrfs receive", dir, error))
        return FALSE;
    int fd = open_dir(dir, error);
    if (fd < 0)
        return FALSE;
    gboolean on_btrfs = fd_on_btrfs(fd);
    close(fd);
    if (!on_btrfs) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "\"%s\" is not on a btrfs filesystem", dir);
        return FALSE;
    }
    if (btrfs_binary() == NULL) {
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "btrfs is not installed");
        return FALSE;
    }
    return TRUE;
}

char *ferry_btrfs_receive_subvolume(const char *dest_dir, FerryByteChannel *channel, FerryBytesFunc progress,
                                    gpointer data, GCancellable *c, GError **error)
{
    g_return_val_if_fail(channel != NULL, NULL);
    gint aborted = 0;
    g_autoptr(GError) local = NULL;
    g_autofree char *staging = NULL;
    if (g_cancellable_is_cancelled(c))
        set_cancelled(&local);
    else if (check_receive_dir(dest_dir, &local))
        staging = make_staging(dest_dir, "recv", &local);
    if (staging == NULL) {
        abort_once(channel, &aborted);
        if (local->code == FERRY_ERROR_CANCELLED)
            g_propagate_error(error, g_steal_pointer(&local));
        else
            g_propagate_prefixed_error(error, g_steal_pointer(&local), "Btrfs receive failed: ");
        return NULL;
    }

    g_autofree char *name = receive_into(staging, channel, progress, data, c, &aborted, error);
    if (name == NULL) {
        clear_staging(staging);
        return NULL;
    }
    int from = open_dir(staging, &local);
    int to = from >= 0 ? open_dir(dest_dir, &local) : -1;
    gboolean ok = to >= 0 && move_subvolume(from, name, to, name, TRUE, &local);
    close_fd(&from);
    close_fd(&to);
    clear_staging(staging);
    if (!ok) {
        /* The stream is over: nothing to abort, the peer's part went well. */
        g_propagate_prefixed_error(error, g_steal_pointer(&local), "Btrfs receive failed: ");
        return NULL;
    }
    return g_build_filename(dest_dir, name, NULL);
}

/* ---- temporary read-only snapshots ---- */

static char *temporary_snapshot(const char *volume_path, const char *name, GError **error)
{
    if (!check_absolute("A temporary snapshot", volume_path, error))
        return NULL;
    g_autofree char *parent = g_path_get_dirname(volume_path);
    g_autofree char *base = g_path_get_basename(volume_path);
    int src = open_dir(volume_path, error);
    if (src < 0)
        return NULL;
    if (!fd_is_subvolume(src)) {
        close(src);
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "\"%s\" is not a btrfs subvolume", volume_path);
        return NULL;
    }
    g_autofree char *staging = make_staging(parent, "snap", error);
    int dst = staging ? open_dir(staging, error) : -1;
    gboolean ok = dst >= 0 && snapshot_recursive(src, dst, name ? name : base, TRUE, error);
    close(src);
    close_fd(&dst);
    if (!ok) {
        if (staging)
            clear_staging(staging);
        g_prefix_error(error, "Failed to snapshot \"%s\": ", volume_path);
        return NULL;
    }
    return g_build_filename(staging, name ? name : base, NULL);
}

char *ferry_btrfs_temporary_snapshot(const char *volume_path, GError **error)
{
    return temporary_snapshot(volume_path, NULL, error);
}

gboolean ferry_btrfs_temporary_snapshot_delete(const char *snapshot_path, GError **error)
{
    if (!check_absolute("Deleting a temporary snapshot", snapshot_path, error))
        return FALSE;
    g_autofree char *staging = g_path_get_dirname(snapshot_path);
    g_autofree char *staging_name = g_path_get_basename(staging);
    if (!g_str_has_prefix(staging_name, STAGING_PREFIX)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "\"%s\" is not a temporary snapshot",
                    snapshot_path);
        return FALSE;
    }
    if (!ferry_btrfs_delete_subvolume(snapshot_path, error))
        return FALSE;
    if (rmdir(staging) < 0 && errno != ENOENT) {
        set_errno(error, errno, "Failed to remove \"%s\"", staging);
        return FALSE;
    }
    return TRUE;
}

/* ---- source side: a volume with its snapshots ---- */

typedef struct {
    FerryBytesFunc progress;
    gpointer data;
    guint64 base; /* bytes of the streams before this one */
    guint64 last;
} Running;

static void running_progress(guint64 bytes, gpointer data)
{
    Running *r = data;
    r->last = bytes;
    if (r->progress)
        r->progress(r->base + bytes, r->data);
}

static void running_next(Running *r)
{
    r->base += r->last;
    r->last = 0;
}

/* Subvolumes made read-only for a send, to be made writable again after it. */
static gboolean make_sendable(const char *path, GPtrArray *restore, GError **error)
{
    int fd = open_dir(path, error);
    if (fd < 0)
        return FALSE;
    gboolean readonly = FALSE;
    gboolean ok = get_readonly(fd, &readonly, error);
    if (ok && !readonly) {
        ok = set_readonly(fd, TRUE, error);
        if (ok)
            g_ptr_array_add(restore, g_strdup(path));
    }
    close(fd);
    if (!ok)
        g_prefix_error(error, "\"%s\": ", path);
    return ok;
}

static void restore_writable(GPtrArray *restore)
{
    for (guint i = 0; i < restore->len; i++) {
        int fd = open(restore->pdata[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            set_readonly(fd, FALSE, NULL);
            close(fd);
        }
    }
    g_ptr_array_set_size(restore, 0);
}

static gboolean is_subvolume_path_on_disk(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return FALSE;
    gboolean yes = fd_is_subvolume(fd);
    close(fd);
    return yes;
}

/* The entries of one (snapshot) volume, sent from root (the path its streams are read from), each
 * incremental on the same path under parent_root when that is a subvolume. */
static gboolean send_entries(GPtrArray *entries, const char *snapshot, const char *root,
                             const char *parent_root, const FerryBtrfsSendOptions *options,
                             FerryByteChannel *channel, Running *running, GCancellable *c, gint *aborted,
                             GError **error)
{
    guint sent = 0;
    g_autoptr(GPtrArray) restore = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < entries->len; i++) {
        const FerryBtrfsSubvolume *entry = entries->pdata[i];
        if (strcmp(entry->snapshot, snapshot) != 0)
            continue;
        gboolean is_root = strcmp(entry->path, "/") == 0;
        if (!is_root && !options->subvolumes)
            continue;
        g_autofree char *source = is_root ? g_strdup(root) : g_build_filename(root, entry->path + 1, NULL);
        g_autofree char *parent = NULL;
        if (parent_root != NULL) {
            parent = is_root ? g_strdup(parent_root) : g_build_filename(parent_root, entry->path + 1, NULL);
            if (!is_subvolume_path_on_disk(parent))
                g_clear_pointer(&parent, g_free);
        }
        gboolean ok = make_sendable(source, restore, error) &&
                      (parent == NULL || make_sendable(parent, restore, error));
        if (!ok) {
            restore_writable(restore);
            abort_once(channel, aborted);
            return FALSE;
        }
        ok = ferry_btrfs_send_subvolume(source, parent, channel, running_progress, running, c, error);
        restore_writable(restore);
        running_next(running);
        if (!ok) {
            *aborted = 1; /* the failed send aborted it */
            return FALSE;
        }
        sent++;
    }
    if (sent == 0) {
        abort_once(channel, aborted);
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "No matching subvolume(s) for \"%s\" found in subvolumes list",
                    snapshot[0] ? snapshot : root);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_btrfs_send_volume(const char *volume_path, const char *const *snapshot_paths,
                                 GPtrArray *subvolumes, const FerryBtrfsSendOptions *options,
                                 FerryByteChannel *channel, GCancellable *c, GError **error)
{
    g_return_val_if_fail(channel != NULL, FALSE);
    static const FerryBtrfsSendOptions defaults = {0};
    if (options == NULL)
        options = &defaults;
    gint aborted = 0;
    g_autoptr(GPtrArray) computed = NULL;
    if (subvolumes == NULL) {
        computed = ferry_btrfs_volume_subvolumes(volume_path, snapshot_paths, error);
        if (computed == NULL) {
            abort_once(channel, &aborted);
            return FALSE;
        }
        subvolumes = computed;
    }
    if (!options->subvolumes) {
        for (guint i = 0; i < subvolumes->len; i++) {
            const FerryBtrfsSubvolume *entry = subvolumes->pdata[i];
            if (strcmp(entry->path, "/") != 0) {
                abort_once(channel, &aborted);
                g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                                    "Subvolumes detected in source but target does not support receiving "
                                    "subvolumes");
                return FALSE;
            }
        }
    }

    Running running = {.progress = options->progress, .data = options->progress_data};
    const char *last = options->parent;
    for (gsize i = 0; snapshot_paths != NULL && snapshot_paths[i] != NULL; i++) {
        g_autofree char *name = g_path_get_basename(snapshot_paths[i]);
        if (!send_entries(subvolumes, name, snapshot_paths[i], last, options, channel, &running, c, &aborted,
                          error)) {
            g_prefix_error(error, "Failed sending snapshot \"%s\": ", name);
            return FALSE;
        }
        last = snapshot_paths[i];
    }

    /* A writable subvolume cannot be sent: send a read-only snapshot of it (nested ones included). */
    g_autofree char *snapshot = temporary_snapshot(volume_path, SEND_SNAPSHOT_NAME, error);
    if (snapshot == NULL) {
        abort_once(channel, &aborted);
        return FALSE;
    }
    gboolean ok =
        send_entries(subvolumes, "", snapshot, last, options, channel, &running, c, &aborted, error);
    g_autoptr(GError) cleanup_error = NULL;
    if (!ferry_btrfs_temporary_snapshot_delete(snapshot, &cleanup_error))
        g_warning("Failed to delete the temporary snapshot \"%s\": %s", snapshot, cleanup_error->message);
    if (!ok)
        g_prefix_error(error, "Failed sending volume: ");
    return ok;
}

/* ---- sink side ---- */

typedef struct {
    FerryBtrfsSubvolume *entry;
    char *dir;  /* work/<n>: holds the received subvolume */
    char *name; /* its name there (the sender's) */
} Received;

static void received_free(gpointer data)
{
    Received *r = data;
    ferry_btrfs_subvolume_free(r->entry);
    g_free(r->dir);
    g_free(r->name);
    g_free(r);
}

struct _FerryBtrfsReceiver {
    char *work_dir;
    GPtrArray *received; /* of Received, in arrival order */
    guint next;
    gint aborted;
};

FerryBtrfsReceiver *ferry_btrfs_receiver_new(const char *work_parent, GError **error)
{
    if (!check_receive_dir(work_parent, error))
        return NULL;
    g_autofree char *work = make_staging(work_parent, "migration", error);
    if (work == NULL)
        return NULL;
    FerryBtrfsReceiver *receiver = g_new0(FerryBtrfsReceiver, 1);
    receiver->work_dir = g_steal_pointer(&work);
    receiver->received = g_ptr_array_new_with_free_func(received_free);
    return receiver;
}

void ferry_btrfs_receiver_free(FerryBtrfsReceiver *receiver)
{
    if (receiver == NULL)
        return;
    for (guint i = 0; i < receiver->received->len; i++) {
        Received *r = receiver->received->pdata[i];
        clear_staging(r->dir);
    }
    g_ptr_array_free(receiver->received, TRUE);
    /* Only empty directories should be left; anything else is ours too. */
    clear_staging(receiver->work_dir);
    g_free(receiver->work_dir);
    g_free(receiver);
}

static gboolean entry_is_valid(const FerryBtrfsSubvolume *entry)
{
    return entry != NULL && entry->path != NULL && is_subvolume_path(entry->path) &&
           entry->snapshot != NULL && (entry->snapshot[0] == '\0' || is_component(entry->snapshot));
}

gboolean ferry_btrfs_receiver_receive(FerryBtrfsReceiver *receiver, const FerryBtrfsSubvolume *entry,
                                      FerryByteChannel *channel, FerryBytesFunc progress, gpointer data,
                                      GCancellable *c, GError **error)
{
    g_return_val_if_fail(receiver != NULL && channel != NULL, FALSE);
    g_autoptr(GError) local = NULL;
    if (!entry_is_valid(entry)) {
        g_set_error_literal(&local, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid BTRFS subvolume entry");
    } else {
        for (guint i = 0; i < receiver->received->len; i++) {
            const Received *r = receiver->received->pdata[i];
            if (strcmp(r->entry->snapshot, entry->snapshot) == 0 && strcmp(r->entry->path, entry->path) == 0)
                g_set_error(&local, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "Subvolume \"%s\" of \"%s\" received twice", entry->path,
                            entry->snapshot[0] ? entry->snapshot : "the volume");
        }
    }
    if (local == NULL && g_cancellable_is_cancelled(c))
        set_cancelled(&local);
    g_autofree char *dir = NULL;
    if (local == NULL) {
        dir = g_strdup_printf("%s/%u", receiver->work_dir, receiver->next++);
        if (mkdir(dir, 0700) < 0)
            set_errno(&local, errno, "Failed to create \"%s\"", dir);
    }
    if (local != NULL) {
        abort_once(channel, &receiver->aborted);
        if (local->code == FERRY_ERROR_CANCELLED)
            g_propagate_error(error, g_steal_pointer(&local));
        else
            g_propagate_prefixed_error(error, g_steal_pointer(&local), "Btrfs receive failed: ");
        if (dir != NULL)
            rmdir(dir);
        return FALSE;
    }

    char *name = receive_into(dir, channel, progress, data, c, &receiver->aborted, error);
    if (name == NULL) {
        clear_staging(dir);
        return FALSE;
    }
    Received *r = g_new0(Received, 1);
    r->entry = ferry_btrfs_subvolume_new(entry->path, entry->snapshot, entry->readonly, entry->uuid);
    r->dir = g_steal_pointer(&dir);
    r->name = name;
    g_ptr_array_add(receiver->received, r);
    return TRUE;
}

gboolean ferry_btrfs_receiver_receive_all(FerryBtrfsReceiver *receiver, GPtrArray *subvolumes,
                                          FerryByteChannel *channel, FerryBytesFunc progress, gpointer data,
                                          GCancellable *c, GError **error)
{
    Running running = {.progress = progress, .data = data};
    for (guint i = 0; i < subvolumes->len; i++) {
        const FerryBtrfsSubvolume *entry = subvolumes->pdata[i];
        if (!ferry_btrfs_receiver_receive(receiver, entry, channel, running_progress, &running, c, error)) {
            g_prefix_error(error, "Failed receiving %s%s%s: ", entry->snapshot[0] ? "snapshot \"" : "volume",
                           entry->snapshot, entry->snapshot[0] ? "\"" : "");
            return FALSE;
        }
        running_next(&running);
    }
    return TRUE;
}

static guint path_depth(const char *path)
{
    guint depth = 0;
    for (const char *p = path + 1; *p; p++)
        depth += *p == '/';
    return strcmp(path, "/") == 0 ? 0 : depth + 1;
}

/* Roots first, then nested by depth: a placeholder is always inside something already in place. */
static gint compare_placement(gconstpointer a, gconstpointer b)
{
    const Received *x = *(Received *const *)a;
    const Received *y = *(Received *const *)b;
    guint dx = path_depth(x->entry->path), dy = path_depth(y->entry->path);
    return dx < dy ? -1 : dx > dy ? 1 : 0;
}

static char *root_target(const Received *r, const char *volume_path, const char *snapshots_dir)
{
    return r->entry->snapshot[0] ? g_build_filename(snapshots_dir, r->entry->snapshot, NULL)
                                 : g_strdup(volume_path);
}

/* Move r into place: a root to its target, a nested one over its placeholder inside its root. */
static gboolean place(const Received *r, const char *root, GError **error)
{
    gboolean is_root = strcmp(r->entry->path, "/") == 0;
    g_autofree char *parent_path = NULL;
    g_autofree char *base = NULL;
    struct stat times;
    int parent = -1;
    if (is_root) {
        parent_path = g_path_get_dirname(root);
        base = g_path_get_basename(root);
        parent = open_dir(parent_path, error);
    } else {
        const char *inside = r->entry->path + 1;
        g_autofree char *dir = g_path_get_dirname(inside);
        base = g_path_get_basename(inside);
        int root_fd = open_dir(root, error);
        if (root_fd >= 0) {
            parent = open_dir_beneath(root_fd, strcmp(dir, ".") == 0 ? "" : dir, error);
            close(root_fd);
        }
        /* The parent's stream left an empty directory where this subvolume belongs. */
        if (parent >= 0 &&
            (fstat(parent, &times) < 0 || (unlinkat(parent, base, AT_REMOVEDIR) < 0 && errno != ENOENT))) {
            set_errno(error, errno, "Failed to replace \"%s\"", r->entry->path);
            close_fd(&parent);
        }
    }
    if (parent < 0)
        return FALSE;
    int from = open_dir(r->dir, error);
    gboolean ok = from >= 0 && move_subvolume(from, r->name, parent, base, FALSE, error);
    /* The directory's times as they were sent, not as the swap left them. */
    if (ok && !is_root) {
        struct timespec ts[2] = {times.st_atim, times.st_mtim};
        if (futimens(parent, ts) < 0) {
            set_errno(error, errno, "Failed to set the times of the directory of \"%s\"", r->entry->path);
            ok = FALSE;
        }
    }
    close_fd(&from);
    close(parent);
    return ok;
}

gboolean ferry_btrfs_receiver_commit(FerryBtrfsReceiver *receiver, const char *volume_path,
                                     const char *snapshots_dir, GError **error)
{
    g_return_val_if_fail(receiver != NULL, FALSE);
    if (!check_absolute("Placing received subvolumes", volume_path, error) ||
        (snapshots_dir != NULL && !check_absolute("Placing received subvolumes", snapshots_dir, error)))
        return FALSE;
    g_autoptr(GPtrArray) order = g_ptr_array_new();
    gboolean any_snapshot = FALSE;
    for (guint i = 0; i < receiver->received->len; i++) {
        Received *r = receiver->received->pdata[i];
        g_ptr_array_add(order, r);
        any_snapshot |= r->entry->snapshot[0] != '\0';
    }
    g_ptr_array_sort(order, compare_placement); /* stable: arrival order within a depth */
    if (any_snapshot && snapshots_dir == NULL) {
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Received snapshots need a directory");
        return FALSE;
    }

    /* Every root is new and every nested subvolume goes into a root received here. */
    for (guint i = 0; i < order->len; i++) {
        const Received *r = order->pdata[i];
        g_autofree char *root = root_target(r, volume_path, snapshots_dir);
        if (strcmp(r->entry->path, "/") == 0) {
            struct stat st;
            if (lstat(root, &st) == 0) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "\"%s\" already exists", root);
                return FALSE;
            }
            continue;
        }
        gboolean found = FALSE;
        for (guint j = 0; j < order->len && !found; j++) {
            const Received *o = order->pdata[j];
            found = strcmp(o->entry->path, "/") == 0 && strcmp(o->entry->snapshot, r->entry->snapshot) == 0;
        }
        if (!found) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                        "Received subvolume \"%s\" without its root", r->entry->path);
            return FALSE;
        }
    }

    gboolean made_snapshots_dir = FALSE;
    if (any_snapshot) {
        if (mkdir(snapshots_dir, 0700) == 0) {
            made_snapshots_dir = TRUE;
        } else if (errno != EEXIST) {
            set_errno(error, errno, "Failed to create \"%s\"", snapshots_dir);
            return FALSE;
        }
    }

    g_autoptr(GPtrArray) placed_roots = g_ptr_array_new_with_free_func(g_free);
    gboolean ok = TRUE;
    for (guint i = 0; ok && i < order->len; i++) {
        const Received *r = order->pdata[i];
        g_autofree char *root = root_target(r, volume_path, snapshots_dir);
        ok = place(r, root, error);
        if (ok && strcmp(r->entry->path, "/") == 0)
            g_ptr_array_add(placed_roots, g_steal_pointer(&root));
        if (!ok)
            g_prefix_error(error, "Failed placing %s of \"%s\": ", r->entry->path,
                           r->entry->snapshot[0] ? r->entry->snapshot : volume_path);
    }
    /* Read-only last: nested subvolumes needed their parents writable to go in. */
    for (guint i = 0; ok && i < order->len; i++) {
        const Received *r = order->pdata[i];
        if (!r->entry->readonly)
            continue;
        g_autofree char *root = root_target(r, volume_path, snapshots_dir);
        g_autofree char *path = strcmp(r->entry->path, "/") == 0
                                    ? g_strdup(root)
                                    : g_build_filename(root, r->entry->path + 1, NULL);
        int fd = open_dir(path, error);
        ok = fd >= 0 && set_readonly(fd, TRUE, error);
        close_fd(&fd);
    }

    if (!ok) {
        for (guint i = placed_roots->len; i > 0; i--)
            ferry_btrfs_delete_subvolume(placed_roots->pdata[i - 1], NULL);
        if (made_snapshots_dir)
            rmdir(snapshots_dir);
        /* What was not placed stays in the work directory, for ferry_btrfs_receiver_free. */
        for (guint i = receiver->received->len; i > 0; i--) {
            Received *r = receiver->received->pdata[i - 1];
            g_autofree char *path = g_build_filename(r->dir, r->name, NULL);
            if (!g_file_test(path, G_FILE_TEST_EXISTS))
                g_ptr_array_remove_index(receiver->received, i - 1);
        }
        return FALSE;
    }
    for (guint i = 0; i < receiver->received->len; i++)
        rmdir(((Received *)receiver->received->pdata[i])->dir);
    g_ptr_array_set_size(receiver->received, 0);
    return TRUE;
}
