#include "native_stream.h"

#include "error.h"
#include "read_ahead.h"

#include <string.h>
#include <zstd.h>

/* Records are gathered into pieces of this size before they are sent: one block and one websocket message
 * each, large enough that framing and TLS records cost little per byte. */
#define PIECE_SIZE (256 * 1024)
/* The largest block: file data is put in pieces of up to 1 MiB (native_send.c), and a block this size keeps
 * the receiver's decode buffer bounded. */
#define BLOCK_MAX (1024 * 1024)
/* Block header: u8 kind, u32 stored length, u32 decoded length. */
#define BLOCK_HEADER_SIZE 9
#define BLOCK_RAW 'r'
#define BLOCK_ZSTD 'z'
/* zstd's fastest level: it still shrinks text-heavy root filesystems by half. */
#define ZSTD_LEVEL 1
/* A block is sent compressed only when that saves at least an eighth: below that the receiver's decoding
 * costs more than the bytes saved on a fast link. */
#define WORTH_COMPRESSING(stored, raw) ((stored) <= (raw) - (raw) / 8)
/* After a block that did not compress, the next 1, 2, 4 ... up to this many blocks are sent without trying:
 * zstd spends as long failing on random data (media, archives, encrypted files) as loopback TLS spends
 * sending it, and such data comes in long runs. A compressible run is found again within this many blocks. */
#define MAX_SKIPPED_BLOCKS 32
/* Reads at least this large go straight from a raw block into the caller's buffer. */
#define DIRECT_READ_MIN (64 * 1024)

struct _FerryNativeWriter {
    FerryByteChannel *channel;
    char *peer;
    ZSTD_CCtx *cctx;     /* NULL: compression not agreed */
    guint8 *piece;       /* BLOCK_HEADER_SIZE bytes of room, then records not written yet */
    gsize piece_len;     /* record bytes after the header room */
    guint8 *out;         /* header, then one compressed block */
    guint skip_blocks;   /* blocks still to send without trying to compress */
    guint backoff;       /* the last skip, doubled at each block that does not compress */
    guint64 bytes;
    GError *error;
};

struct _FerryNativeReader {
    FerryByteChannel *channel;
    char *peer;
    GCancellable *cancellable;
    FerryReadAhead *ahead; /* the channel, read on a thread from the first read on */
    ZSTD_DCtx *dctx; /* NULL: compression not agreed, a compressed block is an error */
    guint8 *in;      /* a compressed block */
    guint8 *piece;   /* decoded bytes not consumed yet */
    gsize piece_pos, piece_len;
    guint32 raw_left; /* bytes of the current raw block still on the channel */
    gboolean barrier; /* the peer's barrier was read */
    guint64 bytes;
    GError *error;
};

/* ---- writing ---- */

FerryNativeWriter *ferry_native_writer_new(FerryByteChannel *channel, gboolean zstd, const char *peer)
{
    FerryNativeWriter *writer = g_new0(FerryNativeWriter, 1);
    writer->channel = channel;
    writer->peer = g_strdup(peer != NULL ? peer : "peer");
    writer->piece = g_malloc(BLOCK_HEADER_SIZE + PIECE_SIZE);
    if (zstd) {
        writer->cctx = ZSTD_createCCtx();
        ZSTD_CCtx_setParameter(writer->cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
        writer->out = g_malloc(BLOCK_HEADER_SIZE + ZSTD_compressBound(BLOCK_MAX));
    }
    return writer;
}

void ferry_native_writer_free(FerryNativeWriter *writer)
{
    if (writer == NULL)
        return;
    ZSTD_freeCCtx(writer->cctx);
    g_free(writer->piece);
    g_free(writer->out);
    g_free(writer->peer);
    g_clear_error(&writer->error);
    g_free(writer);
}

static gboolean send_to_channel(FerryNativeWriter *writer, const void *data, gsize length)
{
    GError *cause = NULL;
    if (length > 0 && !writer->channel->write(writer->channel->channel, data, length, &cause)) {
        g_set_error(&writer->error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE, "Failed sending to the %s: %s",
                    writer->peer, cause->message);
        g_error_free(cause);
        return FALSE;
    }
    return TRUE;
}

static void encode_block_header(guint8 header[BLOCK_HEADER_SIZE], guint8 kind, gsize stored, gsize raw)
{
    guint32 stored_le = GUINT32_TO_LE((guint32)stored), raw_le = GUINT32_TO_LE((guint32)raw);
    header[0] = kind;
    memcpy(header + 1, &stored_le, 4);
    memcpy(header + 5, &raw_le, 4);
}

/* Compress one block into writer->out (after its header) when compression is agreed, not backing off, and
 * pays; returns the stored length, 0 when the block goes raw. */
static gsize try_compress(FerryNativeWriter *writer, const guint8 *data, gsize length)
{
    if (writer->cctx == NULL)
        return 0;
    if (writer->skip_blocks > 0) {
        writer->skip_blocks--;
        return 0;
    }
    size_t stored = ZSTD_compress2(writer->cctx, writer->out + BLOCK_HEADER_SIZE, ZSTD_compressBound(BLOCK_MAX),
                                   data, length);
    /* A failure to compress is no failure of the stream: the block goes raw. */
    if (!ZSTD_isError(stored) && WORTH_COMPRESSING(stored, length)) {
        writer->backoff = 0;
        return stored;
    }
    writer->backoff = writer->backoff == 0 ? 1 : MIN(writer->backoff * 2, MAX_SKIPPED_BLOCKS);
    writer->skip_blocks = writer->backoff;
    return 0;
}

/* One block of at most BLOCK_MAX bytes. header_room: data is preceded by BLOCK_HEADER_SIZE bytes the writer
 * may overwrite, so a raw block goes out in one message. */
static gboolean send_block(FerryNativeWriter *writer, const guint8 *data, gsize length, gboolean header_room)
{
    gsize stored = try_compress(writer, data, length);
    if (stored > 0) {
        encode_block_header(writer->out, BLOCK_ZSTD, stored, length);
        return send_to_channel(writer, writer->out, BLOCK_HEADER_SIZE + stored);
    }
    if (header_room) {
        guint8 *block = (guint8 *)data - BLOCK_HEADER_SIZE;
        encode_block_header(block, BLOCK_RAW, length, length);
        return send_to_channel(writer, block, BLOCK_HEADER_SIZE + length);
    }
    guint8 header[BLOCK_HEADER_SIZE];
    encode_block_header(header, BLOCK_RAW, length, length);
    return send_to_channel(writer, header, sizeof header) && send_to_channel(writer, data, length);
}

static gboolean flush_piece(FerryNativeWriter *writer)
{
    if (writer->piece_len == 0)
        return TRUE;
    gboolean ok = send_block(writer, writer->piece + BLOCK_HEADER_SIZE, writer->piece_len, TRUE);
    writer->piece_len = 0;
    return ok;
}

gboolean ferry_native_put(FerryNativeWriter *writer, const void *data, gsize length)
{
    if (writer->error != NULL)
        return FALSE;
    writer->bytes += length;
    if (writer->piece_len + length > PIECE_SIZE && !flush_piece(writer))
        return FALSE;
    if (length < PIECE_SIZE) {
        memcpy(writer->piece + BLOCK_HEADER_SIZE + writer->piece_len, data, length);
        writer->piece_len += length;
        return TRUE;
    }
    /* File data: blocks of its own, with no copy through the piece buffer. */
    for (const guint8 *from = data; length > 0;) {
        gsize n = MIN(length, BLOCK_MAX);
        if (!send_block(writer, from, n, FALSE))
            return FALSE;
        from += n;
        length -= n;
    }
    return TRUE;
}

gboolean ferry_native_put_u8(FerryNativeWriter *writer, guint8 value)
{
    return ferry_native_put(writer, &value, 1);
}

gboolean ferry_native_put_u32(FerryNativeWriter *writer, guint32 value)
{
    guint32 le = GUINT32_TO_LE(value);
    return ferry_native_put(writer, &le, sizeof le);
}

gboolean ferry_native_put_u64(FerryNativeWriter *writer, guint64 value)
{
    guint64 le = GUINT64_TO_LE(value);
    return ferry_native_put(writer, &le, sizeof le);
}

gboolean ferry_native_put_bytes(FerryNativeWriter *writer, const void *data, gsize length)
{
    g_return_val_if_fail(length <= FERRY_NATIVE_MAX_STRING, FALSE);
    return ferry_native_put_u32(writer, (guint32)length) && ferry_native_put(writer, data, length);
}

gboolean ferry_native_put_string(FerryNativeWriter *writer, const char *text)
{
    return ferry_native_put_bytes(writer, text, strlen(text));
}

guint64 ferry_native_writer_bytes(FerryNativeWriter *writer)
{
    return writer->bytes;
}

gboolean ferry_native_writer_end(FerryNativeWriter *writer, GError **error)
{
    gboolean ok = writer->error == NULL && flush_piece(writer);
    GError *cause = NULL;
    if (ok && !writer->channel->end(writer->channel->channel, &cause)) {
        g_set_error(&writer->error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE, "Failed sending to the %s: %s",
                    writer->peer, cause->message);
        g_error_free(cause);
        ok = FALSE;
    }
    if (!ok)
        g_propagate_error(error, g_error_copy(writer->error));
    return ok;
}

const GError *ferry_native_writer_error(FerryNativeWriter *writer)
{
    return writer->error;
}

/* ---- reading ---- */

FerryNativeReader *ferry_native_reader_new(FerryByteChannel *channel, gboolean zstd, const char *peer,
                                           GCancellable *cancellable)
{
    FerryNativeReader *reader = g_new0(FerryNativeReader, 1);
    reader->channel = channel;
    reader->peer = g_strdup(peer != NULL ? peer : "peer");
    reader->cancellable = cancellable;
    reader->piece = g_malloc(BLOCK_MAX);
    if (zstd) {
        reader->dctx = ZSTD_createDCtx();
        reader->in = g_malloc(ZSTD_compressBound(BLOCK_MAX));
    }
    return reader;
}

void ferry_native_reader_free(FerryNativeReader *reader)
{
    if (reader == NULL)
        return;
    ferry_read_ahead_free(reader->ahead);
    ZSTD_freeDCtx(reader->dctx);
    g_free(reader->in);
    g_free(reader->piece);
    g_free(reader->peer);
    g_clear_error(&reader->error);
    g_free(reader);
}

gboolean ferry_native_reader_fail(FerryNativeReader *reader, const char *format, ...)
{
    if (reader->error != NULL)
        return FALSE;
    va_list args;
    va_start(args, format);
    g_autofree char *message = g_strdup_vprintf(format, args);
    va_end(args);
    g_set_error(&reader->error, FERRY_ERROR, FERRY_ERROR_INVALID, "Bad migration stream from the %s: %s",
                reader->peer, message);
    return FALSE;
}

/* Up to size bytes of the peer's phase into buffer; 0 at its barrier. */
static gssize read_channel(FerryNativeReader *reader, void *buffer, gsize size)
{
    if (reader->barrier)
        return 0;
    if (reader->ahead == NULL)
        reader->ahead = ferry_read_ahead_new(reader->channel, reader->cancellable);
    GError *cause = NULL;
    gssize n = ferry_read_ahead_read(reader->ahead, buffer, size, &cause);
    if (n < 0) {
        if (g_cancellable_is_cancelled(reader->cancellable))
            g_set_error(&reader->error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "The migration was cancelled");
        else
            g_set_error(&reader->error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE, "Failed receiving from the %s: %s",
                        reader->peer, cause->message);
        g_clear_error(&cause);
        return -1;
    }
    if (n == 0)
        reader->barrier = TRUE;
    return n;
}

/* Exactly size bytes; *got says how many arrived before the barrier (less than size only there). */
static gboolean read_exactly(FerryNativeReader *reader, guint8 *buffer, gsize size, gsize *got)
{
    *got = 0;
    while (*got < size) {
        gssize n = read_channel(reader, buffer + *got, size - *got);
        if (n < 0)
            return FALSE;
        if (n == 0)
            return TRUE;
        *got += (gsize)n;
    }
    return TRUE;
}

/* The next block's header, and a compressed block's content decoded into the piece buffer. *more is FALSE
 * at the peer's barrier (between blocks). */
static gboolean next_block(FerryNativeReader *reader, gboolean *more)
{
    guint8 header[BLOCK_HEADER_SIZE];
    gsize got = 0;
    if (!read_exactly(reader, header, sizeof header, &got))
        return FALSE;
    *more = got > 0;
    if (got == 0)
        return TRUE;
    if (got < sizeof header)
        return ferry_native_reader_fail(reader, "the stream ends in the middle of a block header");
    guint32 stored_le, raw_le;
    memcpy(&stored_le, header + 1, 4);
    memcpy(&raw_le, header + 5, 4);
    guint32 stored = GUINT32_FROM_LE(stored_le), raw = GUINT32_FROM_LE(raw_le);
    if (raw == 0 || raw > BLOCK_MAX)
        return ferry_native_reader_fail(reader, "a block of %u bytes (1 to %d allowed)", raw, BLOCK_MAX);
    if (header[0] == BLOCK_RAW) {
        if (stored != raw)
            return ferry_native_reader_fail(reader, "a raw block of %u bytes stored in %u", raw, stored);
        reader->raw_left = raw;
        return TRUE;
    }
    if (header[0] != BLOCK_ZSTD)
        return ferry_native_reader_fail(reader, "a block of unknown kind 0x%02x", header[0]);
    if (reader->dctx == NULL)
        return ferry_native_reader_fail(reader, "a compressed block, but compression was not agreed");
    if (stored == 0 || stored > ZSTD_compressBound(BLOCK_MAX))
        return ferry_native_reader_fail(reader, "a compressed block of %u bytes", stored);
    if (!read_exactly(reader, reader->in, stored, &got))
        return FALSE;
    if (got < stored)
        return ferry_native_reader_fail(reader, "the stream ends in the middle of a compressed block");
    size_t decoded = ZSTD_decompressDCtx(reader->dctx, reader->piece, raw, reader->in, stored);
    if (ZSTD_isError(decoded))
        return ferry_native_reader_fail(reader, "corrupt compressed data (%s)", ZSTD_getErrorName(decoded));
    if (decoded != raw)
        return ferry_native_reader_fail(reader, "corrupt compressed data (%zu bytes where %u were announced)",
                                        decoded, raw);
    reader->piece_pos = 0;
    reader->piece_len = raw;
    return TRUE;
}

gboolean ferry_native_get(FerryNativeReader *reader, void *buffer, gsize length)
{
    if (reader->error != NULL)
        return FALSE;
    guint8 *to = buffer;
    while (length > 0) {
        if (reader->piece_pos < reader->piece_len) {
            gsize n = MIN(length, reader->piece_len - reader->piece_pos);
            memcpy(to, reader->piece + reader->piece_pos, n);
            reader->piece_pos += n;
            to += n;
            length -= n;
            reader->bytes += n;
            continue;
        }
        if (reader->raw_left == 0) {
            gboolean more = FALSE;
            if (!next_block(reader, &more))
                return FALSE;
            if (!more)
                return ferry_native_reader_fail(reader, "the stream ends in the middle of a record");
            continue;
        }
        /* A raw block: large reads (file data) go straight into the caller's buffer, small ones (records)
         * through the piece buffer so that each costs no call to the channel. */
        gboolean direct = length >= DIRECT_READ_MIN;
        guint8 *into = direct ? to : reader->piece;
        gssize n = read_channel(reader, into, direct ? MIN(length, reader->raw_left) : reader->raw_left);
        if (n < 0)
            return FALSE;
        if (n == 0)
            return ferry_native_reader_fail(reader, "the stream ends in the middle of a block");
        reader->raw_left -= (guint32)n;
        if (direct) {
            to += n;
            length -= (gsize)n;
            reader->bytes += (guint64)n;
        } else {
            reader->piece_pos = 0;
            reader->piece_len = (gsize)n;
        }
    }
    return TRUE;
}

gboolean ferry_native_get_u8(FerryNativeReader *reader, guint8 *value)
{
    return ferry_native_get(reader, value, 1);
}

gboolean ferry_native_get_u32(FerryNativeReader *reader, guint32 *value)
{
    guint32 le = 0;
    if (!ferry_native_get(reader, &le, sizeof le))
        return FALSE;
    *value = GUINT32_FROM_LE(le);
    return TRUE;
}

gboolean ferry_native_get_u64(FerryNativeReader *reader, guint64 *value)
{
    guint64 le = 0;
    if (!ferry_native_get(reader, &le, sizeof le))
        return FALSE;
    *value = GUINT64_FROM_LE(le);
    return TRUE;
}

gboolean ferry_native_get_bytes(FerryNativeReader *reader, gsize max_length, guint8 **data, gsize *length)
{
    guint32 size = 0;
    if (!ferry_native_get_u32(reader, &size))
        return FALSE;
    if (size > max_length)
        return ferry_native_reader_fail(reader, "a field of %u bytes (at most %zu allowed)", size, max_length);
    g_autofree guint8 *bytes = g_malloc((gsize)size + 1);
    if (!ferry_native_get(reader, bytes, size))
        return FALSE;
    bytes[size] = '\0';
    *data = g_steal_pointer(&bytes);
    *length = size;
    return TRUE;
}

gboolean ferry_native_get_string(FerryNativeReader *reader, gsize max_length, char **text)
{
    guint8 *bytes = NULL;
    gsize length = 0;
    if (!ferry_native_get_bytes(reader, max_length, &bytes, &length))
        return FALSE;
    if (memchr(bytes, '\0', length) != NULL) {
        g_free(bytes);
        return ferry_native_reader_fail(reader, "a name with a NUL byte");
    }
    *text = (char *)bytes;
    return TRUE;
}

gboolean ferry_native_reader_end(FerryNativeReader *reader, GError **error)
{
    gboolean ok = reader->error == NULL;
    if (ok && (reader->piece_pos < reader->piece_len || reader->raw_left > 0))
        ok = ferry_native_reader_fail(reader, "data after the last record");
    /* What follows must be the barrier: not a byte more. */
    guint8 byte;
    gsize got = 0;
    if (ok && !read_exactly(reader, &byte, 1, &got))
        ok = FALSE;
    if (ok && got > 0)
        ok = ferry_native_reader_fail(reader, "data after the last record");
    if (!ok)
        g_propagate_error(error, g_error_copy(reader->error));
    return ok;
}

const GError *ferry_native_reader_error(FerryNativeReader *reader)
{
    return reader->error;
}

guint64 ferry_native_reader_bytes(FerryNativeReader *reader)
{
    return reader->bytes;
}
