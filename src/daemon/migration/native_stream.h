/* ferry's native migration stream, the byte layer: one direction of one phase of a pass, written as records of
 * little-endian integers and length-prefixed byte strings, carried in blocks of up to 1 MiB — each raw, or a
 * zstd frame where compressing pays and was agreed in the offer — and ended by a barrier of the channel
 * (docs/protocol/ferry-native.md, "Blocks"). The reader receives on a thread of its own (read_ahead.h).
 *
 * Errors are sticky: after the first failure every call fails with a copy of it, so record encoders can write
 * several fields and check once. A failure of the channel itself is FERRY_ERROR_UNAVAILABLE (the peer went
 * away or broke the stream), a malformed stream from the peer FERRY_ERROR_INVALID. */
#pragma once

#include "rsync.h" /* FerryByteChannel */

G_BEGIN_DECLS

/* Longest byte string either side accepts in a record (a path, a symlink target, an xattr value). */
#define FERRY_NATIVE_MAX_STRING (1024 * 1024)

typedef struct _FerryNativeWriter FerryNativeWriter;
typedef struct _FerryNativeReader FerryNativeReader;

/* peer: who reads what we write ("target"), for messages. */
FerryNativeWriter *ferry_native_writer_new(FerryByteChannel *channel, gboolean zstd, const char *peer);
void ferry_native_writer_free(FerryNativeWriter *writer);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryNativeWriter, ferry_native_writer_free)

gboolean ferry_native_put(FerryNativeWriter *writer, const void *data, gsize length);
gboolean ferry_native_put_u8(FerryNativeWriter *writer, guint8 value);
gboolean ferry_native_put_u32(FerryNativeWriter *writer, guint32 value);
gboolean ferry_native_put_u64(FerryNativeWriter *writer, guint64 value);
gboolean ferry_native_put_bytes(FerryNativeWriter *writer, const void *data, gsize length);
gboolean ferry_native_put_string(FerryNativeWriter *writer, const char *text);
/* Payload bytes written so far (before compression). */
guint64 ferry_native_writer_bytes(FerryNativeWriter *writer);
/* Write out everything, then the barrier: the phase is over for this direction. */
gboolean ferry_native_writer_end(FerryNativeWriter *writer, GError **error);
/* The sticky error (borrowed), NULL if none. */
const GError *ferry_native_writer_error(FerryNativeWriter *writer);

/* peer: who wrote what we read ("source"). The cancellable unblocks a waiting read. */
FerryNativeReader *ferry_native_reader_new(FerryByteChannel *channel, gboolean zstd, const char *peer,
                                           GCancellable *cancellable);
void ferry_native_reader_free(FerryNativeReader *reader);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryNativeReader, ferry_native_reader_free)

/* Exactly length bytes; a barrier before them is a truncated stream (FERRY_ERROR_INVALID). */
gboolean ferry_native_get(FerryNativeReader *reader, void *buffer, gsize length);
gboolean ferry_native_get_u8(FerryNativeReader *reader, guint8 *value);
gboolean ferry_native_get_u32(FerryNativeReader *reader, guint32 *value);
gboolean ferry_native_get_u64(FerryNativeReader *reader, guint64 *value);
/* A byte string of at most max_length bytes (newly allocated, NUL-terminated after its length). */
gboolean ferry_native_get_bytes(FerryNativeReader *reader, gsize max_length, guint8 **data, gsize *length);
/* A string without NUL bytes, at most max_length bytes. */
gboolean ferry_native_get_string(FerryNativeReader *reader, gsize max_length, char **text);
/* After the last record: the stream must end here (the peer's barrier, nothing before it). */
gboolean ferry_native_reader_end(FerryNativeReader *reader, GError **error);
/* Fail the reader with a protocol error (a record that makes no sense); returns FALSE. */
gboolean ferry_native_reader_fail(FerryNativeReader *reader, const char *format, ...) G_GNUC_PRINTF(2, 3);
const GError *ferry_native_reader_error(FerryNativeReader *reader);
/* Payload bytes read so far (after decompression). */
guint64 ferry_native_reader_bytes(FerryNativeReader *reader);

G_END_DECLS
