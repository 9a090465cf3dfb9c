/* Shared fixtures of the storage unit tests: isolated root-only test runs with guaranteed cleanup, and a
 * volume populated with everything a copy must keep. */
#pragma once

#include "pool.h"

#include <glib.h>

typedef struct {
    char *root;      /* a fresh directory under /tmp */
    char *ferry_dir; /* root/ferry: $FERRY_DIR */
    char *pools_dir; /* root/ferry/storage-pools */
    char *disks_dir; /* root/ferry/disks */
    char *external;  /* root/external: outside $FERRY_DIR, for pool sources */
} StorageTestDirs;

/* Call first in a root-only test. In the test process: skips (with the reason) unless root; else makes the
 * directories, runs this same test in a child process, then removes whatever the child left below them
 * (mounts, loop devices, files) even if it crashed, and asserts the child passed; returns FALSE. In the
 * child: returns TRUE and the test body runs. */
gboolean storage_test_begin(void);
const StorageTestDirs *storage_test_dirs(void);

/* An empty pool config table that owns its strings. */
GHashTable *storage_test_config_new(void);
/* One from key/value pairs ending in NULL. */
GHashTable *storage_test_config(const char *first_key, ...) G_GNUC_NULL_TERMINATED;

/* Fill dir with: rootfs/file (1 MiB, owner 1000000:1000000, mode 4640, xattrs user.ferry and trusted.ferry,
 * a POSIX ACL), rootfs/hardlink (same inode), rootfs/etc-link -> /etc, rootfs/sparse (64 MiB, one 4 KiB
 * extent at 32 MiB), rootfs/null (char device 1:3), rootfs/fifo, metadata.yaml. */
void storage_test_populate(const char *dir);
/* Assert that dir holds what storage_test_populate made. */
void storage_test_check_populated(const char *dir);

void storage_test_write_file(const char *path, const char *contents);
char *storage_test_read_file(const char *path);
gboolean storage_test_exists(const char *path);

#define storage_assert_error(err, code_)                                                                     \
    G_STMT_START                                                                                             \
    {                                                                                                        \
        g_assert_nonnull(err);                                                                               \
        if ((err)->code != (code_))                                                                          \
            g_error("expected error code %d, got %d: %s", (int)(code_), (err)->code, (err)->message);        \
        g_assert_error(err, FERRY_ERROR, code_);                                                             \
    }                                                                                                        \
    G_STMT_END
