/* Building image tarballs for the tests with libarchive's writer: any names (hostile ones included),
 * owners, devices, xattrs, ACLs and sparse files, without needing them on disk first. */
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <glib.h>
#include <sys/types.h>

typedef struct TestTarball TestTarball;

/* filter: "none", "gzip", "xz", "zstd" or "bzip2"; pax format. */
TestTarball *test_tarball_new(const char *path, const char *filter);
/* A new entry with owner 0:0, mtime 1700000000; add xattrs/ACLs to it before test_tarball_add. */
struct archive_entry *test_entry_new(const char *path, mode_t type, mode_t perm);
/* Write (and free) entry with data (size -1: strlen). For sparse entries data covers the whole file. */
void test_tarball_add(TestTarball *tarball, struct archive_entry *entry, const char *data, gssize size);
void test_tarball_add_file(TestTarball *tarball, const char *path, mode_t perm, const char *data);
void test_tarball_add_dir(TestTarball *tarball, const char *path);
void test_tarball_add_symlink(TestTarball *tarball, const char *path, const char *target);
void test_tarball_add_hardlink(TestTarball *tarball, const char *path, const char *target);
/* metadata.yaml with the given architecture (NULL: none), rootfs/ and rootfs/hello. */
void test_tarball_add_minimal_image(TestTarball *tarball, const char *architecture);
void test_tarball_close(TestTarball *tarball);

/* Whole minimal image in one call. */
void test_tarball_write_minimal(const char *path, const char *filter);
