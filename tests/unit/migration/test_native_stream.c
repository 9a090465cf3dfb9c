/* Unit tests of the native transport's byte layer (native_stream.c) over an in-memory channel: records and
 * file data survive a round trip with and without compression, compression is used where it pays and skipped
 * where it does not, a malformed block is refused with a specific error, and the read-ahead thread stops at
 * its barrier. Needs no root. */
#include "native_stream.h"

#include "error.h"

#include <string.h>
#include <zstd.h>

#define MIB (1024 * 1024)
#define BLOCK_HEADER_SIZE 9

/* ---- an in-memory channel: writes append to a byte array, ends mark barriers; reads serve them back ---- */

typedef struct {
    GByteArray *bytes;
    GArray *barriers; /* gsize: positions in bytes where a barrier was written; NULL: one at the end */
    guint next_barrier;
    gsize read_pos;
    gint aborts;
} MemoryChannel;

static gboolean memory_write(gpointer channel, const void *data, gsize length, GError **error)
{
    MemoryChannel *memory = channel;
    g_byte_array_append(memory->bytes, data, (guint)length);
    return TRUE;
}

static gboolean memory_end(gpointer channel, GError **error)
{
    MemoryChannel *memory = channel;
    if (memory->barriers != NULL) {
        gsize at = memory->bytes->len;
        g_array_append_val(memory->barriers, at);
    }
    return TRUE;
}

static void memory_abort(gpointer channel)
{
    MemoryChannel *memory = channel;
    g_atomic_int_inc(&memory->aborts);
}

/* Like a websocket, a read returns what one message holds: here at most 7001 bytes, so that headers and
 * blocks are split across reads; and never bytes beyond the next barrier, where it returns 0 once. */
static gssize memory_read(gpointer channel, void *buffer, gsize size, GCancellable *c, GError **error)
{
    MemoryChannel *memory = channel;
    gsize limit = memory->bytes->len;
    if (memory->barriers != NULL) {
        g_assert_cmpuint(memory->next_barrier, <, memory->barriers->len);
        limit = g_array_index(memory->barriers, gsize, memory->next_barrier);
        if (memory->read_pos == limit) {
            memory->next_barrier++;
            return 0;
        }
    }
    gsize n = MIN(MIN(size, 7001), limit - memory->read_pos);
    if (n > 0) /* an empty array has no data pointer at all */
        memcpy(buffer, memory->bytes->data + memory->read_pos, n);
    memory->read_pos += n;
    return (gssize)n;
}

static FerryByteChannel memory_iface(MemoryChannel *memory)
{
    return (FerryByteChannel){.read = memory_read,
                              .write = memory_write,
                              .end = memory_end,
                              .abort = memory_abort,
                              .channel = memory};
}

/* Random bytes that do not compress, or text that does, from a fixed seed. */
static guint8 *make_data(gsize length, gboolean compressible, guint32 seed)
{
    guint8 *data = g_malloc(length);
    GRand *rand = g_rand_new_with_seed(seed);
    static const char *const words[] = {"root", "bin", "/usr/lib/", "libc.so.6", "config", " = ", "\n", "true"};
    for (gsize i = 0; i < length;) {
        if (compressible) {
            const char *word = words[g_rand_int_range(rand, 0, G_N_ELEMENTS(words))];
            gsize n = MIN(strlen(word), length - i);
            memcpy(data + i, word, n);
            i += n;
        } else {
            guint32 value = g_rand_int(rand);
            gsize n = MIN(sizeof value, length - i);
            memcpy(data + i, &value, n);
            i += n;
        }
    }
    g_rand_free(rand);
    return data;
}

/* One phase as a sender would write it: a record, then each piece of file data as u64 length and bytes. */
typedef struct {
    const guint8 *data;
    gsize length;
} Piece;

static void write_phase(FerryByteChannel *channel, gboolean zstd, const Piece *pieces, gsize count)
{
    g_autoptr(FerryNativeWriter) writer = ferry_native_writer_new(channel, zstd, "target");
    for (gsize i = 0; i < count; i++) {
        ferry_native_put_u8(writer, 'F');
        ferry_native_put_string(writer, "some/path");
        ferry_native_put_u64(writer, pieces[i].length);
        ferry_native_put(writer, pieces[i].data, pieces[i].length);
    }
    ferry_native_put_u8(writer, 'E');
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_native_writer_end(writer, &error));
    g_assert_no_error(error);
    gsize payload = 1;
    for (gsize i = 0; i < count; i++)
        payload += 1 + 4 + strlen("some/path") + 8 + pieces[i].length;
    g_assert_cmpuint(ferry_native_writer_bytes(writer), ==, payload);
}

/* Read the phase back and check every byte; buffer_size: the size of the receiver's reads of file data. */
static void read_phase(FerryByteChannel *channel, gboolean zstd, const Piece *pieces, gsize count,
                       gsize buffer_size)
{
    g_autoptr(FerryNativeReader) reader = ferry_native_reader_new(channel, zstd, "source", NULL);
    g_autofree guint8 *buffer = g_malloc(buffer_size);
    for (gsize i = 0; i < count; i++) {
        guint8 kind = 0;
        g_autofree char *path = NULL;
        guint64 length = 0;
        g_assert_true(ferry_native_get_u8(reader, &kind));
        g_assert_cmpint(kind, ==, 'F');
        g_assert_true(ferry_native_get_string(reader, 4096, &path));
        g_assert_cmpstr(path, ==, "some/path");
        g_assert_true(ferry_native_get_u64(reader, &length));
        g_assert_cmpuint(length, ==, pieces[i].length);
        for (gsize done = 0; done < length;) {
            gsize n = MIN(buffer_size, length - done);
            g_assert_true(ferry_native_get(reader, buffer, n));
            g_assert_true(memcmp(buffer, pieces[i].data + done, n) == 0);
            done += n;
        }
    }
    guint8 end = 0;
    g_assert_true(ferry_native_get_u8(reader, &end));
    g_assert_cmpint(end, ==, 'E');
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_native_reader_end(reader, &error));
    g_assert_no_error(error);
}

/* ---- round trips ---- */

static void test_round_trip(gconstpointer data)
{
    gboolean zstd = GPOINTER_TO_INT(data);
    /* Sizes around the piece (256 KiB) and block (1 MiB) limits, a 3.5 MiB file cut into blocks, empty data. */
    const gsize sizes[] = {0, 1, 4096, 256 * 1024 - 1, 256 * 1024, 256 * 1024 + 1, MIB, MIB + 1, 3 * MIB + MIB / 2};
    Piece pieces[2 * G_N_ELEMENTS(sizes)];
    for (gsize i = 0; i < G_N_ELEMENTS(pieces); i++) {
        pieces[i].length = sizes[i % G_N_ELEMENTS(sizes)];
        pieces[i].data = make_data(pieces[i].length + 1, i % 2 == 0, (guint32)i);
    }
    const gsize buffer_sizes[] = {1, 4096, MIB};
    for (gsize b = 0; b < G_N_ELEMENTS(buffer_sizes); b++) {
        MemoryChannel memory = {.bytes = g_byte_array_new()};
        FerryByteChannel channel = memory_iface(&memory);
        write_phase(&channel, zstd, pieces, G_N_ELEMENTS(pieces));
        read_phase(&channel, zstd, pieces, G_N_ELEMENTS(pieces), buffer_sizes[b]);
        g_assert_cmpuint(memory.read_pos, ==, memory.bytes->len);
        g_byte_array_unref(memory.bytes);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(pieces); i++)
        g_free((gpointer)pieces[i].data);
}

/* An empty phase: no block at all, the barrier alone. */
static void test_empty_phase(void)
{
    MemoryChannel memory = {.bytes = g_byte_array_new()};
    FerryByteChannel channel = memory_iface(&memory);
    g_autoptr(FerryNativeWriter) writer = ferry_native_writer_new(&channel, TRUE, "target");
    g_assert_true(ferry_native_writer_end(writer, NULL));
    g_assert_cmpuint(memory.bytes->len, ==, 0);
    g_autoptr(FerryNativeReader) reader = ferry_native_reader_new(&channel, TRUE, "source", NULL);
    g_assert_true(ferry_native_reader_end(reader, NULL));
    g_clear_pointer(&reader, ferry_native_reader_free);
    g_byte_array_unref(memory.bytes);
}

/* Channel bytes for one phase of the given data pieces. */
static gsize encoded_size(gboolean zstd, const Piece *pieces, gsize count)
{
    MemoryChannel memory = {.bytes = g_byte_array_new()};
    FerryByteChannel channel = memory_iface(&memory);
    write_phase(&channel, zstd, pieces, count);
    read_phase(&channel, zstd, pieces, count, MIB);
    gsize size = memory.bytes->len;
    g_byte_array_unref(memory.bytes);
    return size;
}

/* Text is compressed; random data goes raw, at the cost of a 9-byte header per block (at most 1 MiB): 16 for
 * the data, one for the records before it and one for the end. */
static void test_compresses_where_it_pays(void)
{
    g_autofree guint8 *text = make_data(16 * MIB, TRUE, 1);
    g_autofree guint8 *noise = make_data(16 * MIB, FALSE, 2);
    Piece text_piece = {text, 16 * MIB}, noise_piece = {noise, 16 * MIB};
    gsize record = 1 + 4 + strlen("some/path") + 8 + 1;

    gsize text_plain = encoded_size(FALSE, &text_piece, 1);
    gsize text_zstd = encoded_size(TRUE, &text_piece, 1);
    g_assert_cmpuint(text_plain, <=, 16 * MIB + record + 18 * BLOCK_HEADER_SIZE);
    g_assert_cmpuint(text_zstd, <, text_plain / 3);

    gsize noise_zstd = encoded_size(TRUE, &noise_piece, 1);
    g_assert_cmpuint(noise_zstd, <=, 16 * MIB + record + 18 * BLOCK_HEADER_SIZE);

    /* Text after a long run of random data is compressed again once the writer tries again: after 48 MiB of
     * noise it skips at most 32 blocks. */
    g_autofree guint8 *long_noise = make_data(48 * MIB, FALSE, 3);
    g_autofree guint8 *long_text = make_data(64 * MIB, TRUE, 4);
    Piece mixed[] = {{long_noise, 48 * MIB}, {long_text, 64 * MIB}};
    gsize mixed_zstd = encoded_size(TRUE, mixed, G_N_ELEMENTS(mixed));
    g_assert_cmpuint(mixed_zstd, <, 48 * MIB + 40 * MIB);
}

/* ---- malformed blocks ---- */

typedef struct {
    const char *name;
    gboolean zstd;    /* what the reader agreed to */
    GByteArray *(*make)(void);
    const char *message;
} Malformed;

static GByteArray *block(guint8 kind, guint32 stored, guint32 raw, const void *content, gsize length)
{
    GByteArray *bytes = g_byte_array_new();
    guint32 stored_le = GUINT32_TO_LE(stored), raw_le = GUINT32_TO_LE(raw);
    g_byte_array_append(bytes, &kind, 1);
    g_byte_array_append(bytes, (const guint8 *)&stored_le, 4);
    g_byte_array_append(bytes, (const guint8 *)&raw_le, 4);
    g_byte_array_append(bytes, content, (guint)length);
    return bytes;
}

static GByteArray *unknown_kind(void)
{
    return block('x', 4, 4, "abcd", 4);
}

static GByteArray *empty_block(void)
{
    return block('r', 0, 0, NULL, 0);
}

static GByteArray *oversized_block(void)
{
    return block('r', 2 * MIB, 2 * MIB, "abcd", 4);
}

static GByteArray *raw_length_mismatch(void)
{
    return block('r', 3, 4, "abcd", 4);
}

static GByteArray *truncated_header(void)
{
    g_autoptr(GByteArray) whole = block('r', 4, 4, "abcd", 4);
    GByteArray *bytes = g_byte_array_new();
    g_byte_array_append(bytes, whole->data, 5);
    return bytes;
}

static GByteArray *truncated_raw(void)
{
    return block('r', 100, 100, "abcd", 4);
}

static GByteArray *compressed(const char *text, guint32 announced)
{
    gsize bound = ZSTD_compressBound(strlen(text));
    g_autofree guint8 *frame = g_malloc(bound);
    size_t stored = ZSTD_compress(frame, bound, text, strlen(text), 1);
    g_assert_false(ZSTD_isError(stored));
    return block('z', (guint32)stored, announced, frame, stored);
}

static GByteArray *compressed_not_agreed(void)
{
    return compressed("abcdabcdabcdabcd", 16);
}

static GByteArray *decodes_short(void)
{
    return compressed("abcdabcdabcdabcd", 32);
}

static GByteArray *decodes_long(void)
{
    return compressed("abcdabcdabcdabcd", 8);
}

static GByteArray *oversized_compressed(void)
{
    return block('z', 0x7fffffff, 16, "abcd", 4);
}

static GByteArray *corrupt_compressed(void)
{
    GByteArray *bytes = compressed("abcdabcdabcdabcd", 16);
    bytes->data[BLOCK_HEADER_SIZE] ^= 0xff; /* the frame's magic number */
    return bytes;
}

static const Malformed malformed[] = {
    {"unknown-kind", TRUE, unknown_kind, "a block of unknown kind 0x78"},
    {"empty-block", TRUE, empty_block, "a block of 0 bytes (1 to 1048576 allowed)"},
    {"oversized-block", TRUE, oversized_block, "a block of 2097152 bytes (1 to 1048576 allowed)"},
    {"raw-length-mismatch", TRUE, raw_length_mismatch, "a raw block of 4 bytes stored in 3"},
    {"truncated-header", TRUE, truncated_header, "the stream ends in the middle of a block header"},
    {"truncated-raw", TRUE, truncated_raw, "the stream ends in the middle of a block"},
    {"compressed-not-agreed", FALSE, compressed_not_agreed, "a compressed block, but compression was not agreed"},
    {"decodes-short", TRUE, decodes_short, "corrupt compressed data (16 bytes where 32 were announced)"},
    {"decodes-long", TRUE, decodes_long, "corrupt compressed data ("},
    {"oversized-compressed", TRUE, oversized_compressed, "a compressed block of 2147483647 bytes"},
    {"corrupt-compressed", TRUE, corrupt_compressed, "corrupt compressed data ("},
};

static void test_malformed(gconstpointer data)
{
    const Malformed *bad = data;
    MemoryChannel memory = {.bytes = bad->make()};
    FerryByteChannel channel = memory_iface(&memory);
    g_autoptr(FerryNativeReader) reader = ferry_native_reader_new(&channel, bad->zstd, "source", NULL);
    guint8 buffer[64];
    g_assert_false(ferry_native_get(reader, buffer, 8));
    const GError *error = ferry_native_reader_error(reader);
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    g_test_message("%s", error->message);
    g_autofree char *expected = g_strconcat("Bad migration stream from the source: ", bad->message, NULL);
    g_assert_true(g_str_has_prefix(error->message, expected));
    /* Sticky: every later call fails the same way. */
    g_autoptr(GError) end_error = NULL;
    g_assert_false(ferry_native_reader_end(reader, &end_error));
    g_assert_cmpstr(end_error->message, ==, error->message);
    /* The reader's thread may still be reading the channel: it goes first. */
    g_clear_pointer(&reader, ferry_native_reader_free);
    g_byte_array_unref(memory.bytes);
}

/* Bytes after the last record are refused by reader_end: the rest of a block, or a whole further block. */
static void assert_data_after_last_record(GByteArray *bytes)
{
    MemoryChannel memory = {.bytes = bytes};
    FerryByteChannel channel = memory_iface(&memory);
    g_autoptr(FerryNativeReader) reader = ferry_native_reader_new(&channel, TRUE, "source", NULL);
    guint8 buffer[4];
    g_assert_true(ferry_native_get(reader, buffer, 4));
    g_autoptr(GError) error = NULL;
    g_assert_false(ferry_native_reader_end(reader, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    g_assert_cmpstr(error->message, ==, "Bad migration stream from the source: data after the last record");
    g_clear_pointer(&reader, ferry_native_reader_free);
    g_byte_array_unref(bytes);
}

static void test_data_after_last_record(void)
{
    assert_data_after_last_record(block('r', 5, 5, "abcde", 5));
    GByteArray *two_blocks = block('r', 4, 4, "abcd", 4);
    g_autoptr(GByteArray) second = block('r', 1, 1, "e", 1);
    g_byte_array_append(two_blocks, second->data, second->len);
    assert_data_after_last_record(two_blocks);
}

/* ---- reading ahead ---- */

/* Two phases back to back on one channel: the first reader's thread stops at its barrier, so the second
 * reader gets all of its own phase; neither is an abandoned stream, so the channel is never aborted. */
static void test_read_ahead_stops_at_barrier(void)
{
    MemoryChannel memory = {.bytes = g_byte_array_new(), .barriers = g_array_new(FALSE, FALSE, sizeof(gsize))};
    FerryByteChannel channel = memory_iface(&memory);
    g_autofree guint8 *first = make_data(3 * MIB, FALSE, 5);
    g_autofree guint8 *second = make_data(2 * MIB + 17, TRUE, 6);
    Piece one = {first, 3 * MIB}, two = {second, 2 * MIB + 17};
    write_phase(&channel, TRUE, &one, 1);
    write_phase(&channel, TRUE, &two, 1);
    read_phase(&channel, TRUE, &one, 1, 4096);
    read_phase(&channel, TRUE, &two, 1, MIB);
    g_assert_cmpuint(memory.next_barrier, ==, 2);
    g_assert_cmpuint(memory.read_pos, ==, memory.bytes->len);
    g_assert_cmpint(g_atomic_int_get(&memory.aborts), ==, 0);
    g_array_unref(memory.barriers);
    g_byte_array_unref(memory.bytes);
}

/* A reader freed before its barrier (the consumer gave up) aborts the channel: its thread may be waiting on a
 * peer that sends nothing more. A reader that never read started no thread and aborts nothing. */
static void test_read_ahead_abandoned(void)
{
    MemoryChannel memory = {.bytes = g_byte_array_new(), .barriers = g_array_new(FALSE, FALSE, sizeof(gsize))};
    FerryByteChannel channel = memory_iface(&memory);
    g_autofree guint8 *data = make_data(4 * MIB, FALSE, 7);
    Piece piece = {data, 4 * MIB};
    write_phase(&channel, TRUE, &piece, 1);

    FerryNativeReader *unread = ferry_native_reader_new(&channel, TRUE, "source", NULL);
    ferry_native_reader_free(unread);
    g_assert_cmpint(g_atomic_int_get(&memory.aborts), ==, 0);

    FerryNativeReader *reader = ferry_native_reader_new(&channel, TRUE, "source", NULL);
    guint8 kind = 0;
    g_assert_true(ferry_native_get_u8(reader, &kind));
    ferry_native_reader_free(reader);
    g_assert_cmpint(g_atomic_int_get(&memory.aborts), ==, 1);
    g_array_unref(memory.barriers);
    g_byte_array_unref(memory.bytes);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_data_func("/migration/native-stream/round-trip/plain", GINT_TO_POINTER(FALSE), test_round_trip);
    g_test_add_data_func("/migration/native-stream/round-trip/zstd", GINT_TO_POINTER(TRUE), test_round_trip);
    g_test_add_func("/migration/native-stream/empty-phase", test_empty_phase);
    g_test_add_func("/migration/native-stream/compresses-where-it-pays", test_compresses_where_it_pays);
    for (gsize i = 0; i < G_N_ELEMENTS(malformed); i++) {
        g_autofree char *path = g_strconcat("/migration/native-stream/malformed/", malformed[i].name, NULL);
        g_test_add_data_func(path, &malformed[i], test_malformed);
    }
    g_test_add_func("/migration/native-stream/data-after-last-record", test_data_after_last_record);
    g_test_add_func("/migration/native-stream/read-ahead/stops-at-barrier", test_read_ahead_stops_at_barrier);
    g_test_add_func("/migration/native-stream/read-ahead/abandoned", test_read_ahead_abandoned);
    return g_test_run();
}
