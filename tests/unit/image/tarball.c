#include "tarball.h"

#include <string.h>
#include <sys/stat.h>

struct TestTarball {
    struct archive *archive;
};

TestTarball *test_tarball_new(const char *path, const char *filter)
{
    TestTarball *tarball = g_new0(TestTarball, 1);
    tarball->archive = archive_write_new();
    g_assert_cmpint(archive_write_set_format_pax(tarball->archive), ==, ARCHIVE_OK);
    /* Names as raw bytes, whatever the test's locale (libarchive can't convert non-ASCII in "C"). */
    g_assert_cmpint(archive_write_set_format_option(tarball->archive, "pax", "hdrcharset", "BINARY"), ==,
                    ARCHIVE_OK);
    int r;
    if (g_str_equal(filter, "gzip"))
        r = archive_write_add_filter_gzip(tarball->archive);
    else if (g_str_equal(filter, "xz"))
        r = archive_write_add_filter_xz(tarball->archive);
    else if (g_str_equal(filter, "zstd"))
        r = archive_write_add_filter_zstd(tarball->archive);
    else if (g_str_equal(filter, "bzip2"))
        r = archive_write_add_filter_bzip2(tarball->archive);
    else
        r = archive_write_add_filter_none(tarball->archive);
    g_assert_cmpint(r, ==, ARCHIVE_OK);
    g_assert_cmpint(archive_write_open_filename(tarball->archive, path), ==, ARCHIVE_OK);
    return tarball;
}

struct archive_entry *test_entry_new(const char *path, mode_t type, mode_t perm)
{
    struct archive_entry *entry = archive_entry_new();
    archive_entry_set_pathname(entry, path);
    archive_entry_set_filetype(entry, type);
    archive_entry_set_perm(entry, perm);
    archive_entry_set_uid(entry, 0);
    archive_entry_set_gid(entry, 0);
    archive_entry_set_mtime(entry, 1700000000, 0);
    return entry;
}

void test_tarball_add(TestTarball *tarball, struct archive_entry *entry, const char *data, gssize size)
{
    if (data != NULL && size < 0)
        size = strlen(data);
    if (archive_entry_filetype(entry) == AE_IFREG && archive_entry_hardlink(entry) == NULL &&
        !archive_entry_size_is_set(entry))
        archive_entry_set_size(entry, data != NULL ? size : 0);
    int r = archive_write_header(tarball->archive, entry);
    if (r != ARCHIVE_OK)
        g_error("writing %s: %s", archive_entry_pathname(entry), archive_error_string(tarball->archive));
    /* For sparse entries libarchive takes the whole file and drops the holes itself. */
    if (data != NULL && size > 0) {
        g_assert_cmpint(archive_write_data(tarball->archive, data, size), ==, size);
    }
    archive_entry_free(entry);
}

void test_tarball_add_file(TestTarball *tarball, const char *path, mode_t perm, const char *data)
{
    test_tarball_add(tarball, test_entry_new(path, AE_IFREG, perm), data, -1);
}

void test_tarball_add_dir(TestTarball *tarball, const char *path)
{
    test_tarball_add(tarball, test_entry_new(path, AE_IFDIR, 0755), NULL, 0);
}

void test_tarball_add_symlink(TestTarball *tarball, const char *path, const char *target)
{
    struct archive_entry *entry = test_entry_new(path, AE_IFLNK, 0777);
    archive_entry_set_symlink(entry, target);
    test_tarball_add(tarball, entry, NULL, 0);
}

void test_tarball_add_hardlink(TestTarball *tarball, const char *path, const char *target)
{
    struct archive_entry *entry = test_entry_new(path, AE_IFREG, 0644);
    archive_entry_set_hardlink(entry, target);
    archive_entry_set_size(entry, 0);
    test_tarball_add(tarball, entry, NULL, 0);
}

void test_tarball_add_minimal_image(TestTarball *tarball, const char *architecture)
{
    g_autofree char *metadata = architecture != NULL
        ? g_strdup_printf("architecture: %s\ncreation_date: 1700000000\nproperties:\n  os: Debian\n",
                          architecture)
        : g_strdup("creation_date: 1700000000\n");
    test_tarball_add_file(tarball, "metadata.yaml", 0644, metadata);
    test_tarball_add_dir(tarball, "rootfs");
    test_tarball_add_file(tarball, "rootfs/hello", 0644, "hello\n");
}

void test_tarball_close(TestTarball *tarball)
{
    g_assert_cmpint(archive_write_close(tarball->archive), ==, ARCHIVE_OK);
    archive_write_free(tarball->archive);
    g_free(tarball);
}

void test_tarball_write_minimal(const char *path, const char *filter)
{
    TestTarball *tarball = test_tarball_new(path, filter);
    test_tarball_add_minimal_image(tarball, "x86_64");
    test_tarball_close(tarball);
}
