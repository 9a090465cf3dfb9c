#include "native_stream.h"

#include "error.h"

#include <string.h>
#include <zstd.h>

/* Records are gathered into pieces of this size before they are compressed or sent: one websocket message
 * each, large enough that framing and TLS records cost little per byte. */
#define PIECE_SIZE (256 * 1024)
/* zstd's fastest level: it still shrinks text-heavy root filesystems by half, and gives up quickly on data
 * that does not compress, so it costs little even on a fast link. */
#define ZSTD_LEVEL 1

struct _FerryNativeWriter {
    FerryByteChannel *channel;
    char *peer;
    ZSTD_CCtx *cctx; /* NULL: not compressed */
    guint8 *piece;   /* records not written yet */
    gsize piece_len;
    guint8 *out; /* compressed bytes not sent yet */
    gsize out_len;
    guint64 bytes;
    GError *error;
};

struct _FerryNativeReader {
    FerryByteChannel *channel;
    char *peer;
    GCancellable *cancellable;
    ZSTD_DCtx *dctx; /* NULL: not compressed */
    guint8 *in;      /* compressed bytes read from the channel */
    gsize in_pos, in_len;
    guint8 *piece; /* decoded bytes not consumed yet */
    gsize piece_pos, piece_len;
    gboolean barrier; /* the peer's barrier was read */
    gboolean frame_done;
    guint64 bytes;
    GError *error;
};

/* ---- writing ---- */

FerryNativeWriter *ferry_native_writer_new(FerryByteChannel *channel, gboolean zstd, const char *peer)
{
    FerryNativeWriter *writer = g_new0(FerryNativeWriter, 1);
    writer->channel = channel;
    writer->peer = g_strdup(peer != NULL ? peer : "peer");
    writer->piece = g_malloc(PIECE_SIZE);
    if (zstd) {
        writer->cctx = ZSTD_createCCtx();
        ZSTD_CCtx_setParameter(writer->cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
        writer->out = g_malloc(ZSTD_CStreamOutSize());
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

/* Compress data into the output buffer, sending it whenever it fills; ZSTD_e_end closes the frame. */
static gboolean compress(FerryNativeWriter *writer, const void *data, gsize length, ZSTD_EndDirective mode)
{
    ZSTD_inBuffer input = {data, length, 0};
    gsize out_size = ZSTD_CStreamOutSize();
    for (;;) {
        ZSTD_outBuffer output = {writer->out, out_size, writer->out_len};
        size_t remaining = ZSTD_compressStream2(writer->cctx, &output, &input, mode);
        if (ZSTD_isError(remaining)) {
            g_set_error(&writer->error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "zstd compression failed: %s",
                        ZSTD_getErrorName(remaining));
            return FALSE;
        }
        writer->out_len = output.pos;
        gboolean finished = mode == ZSTD_e_continue ? input.pos == input.size : remaining == 0;
        if (writer->out_len == out_size || (finished && mode != ZSTD_e_continue)) {
            if (!send_to_channel(writer, writer->out, writer->out_len))
                return FALSE;
            writer->out_len = 0;
        }
        if (finished)
            return TRUE;
    }
}

static gboolean emit(FerryNativeWriter *writer, const void *data, gsize length)
{
    return writer->cctx != NULL ? compress(writer, data, length, ZSTD_e_continue)
                                : send_to_channel(writer, data, length);
}

static gboolean flush_piece(FerryNativeWriter *writer)
{
    gboolean ok = emit(writer, writer->piece, writer->piece_len);
    writer->piece_len = 0;
    return ok;
}

gboolean ferry_native_put(FerryNativeWriter *writer, const void *data, gsize length)
{
    if (writer->error != NULL)
        return FALSE;
    writer->bytes += length;
    if (writer->piece_len + length <= PIECE_SIZE) {
        memcpy(writer->piece + writer->piece_len, data, length);
        writer->piece_len += length;
        return writer->piece_len < PIECE_SIZE || flush_piece(writer);
    }
    /* File data: no copy through the piece buffer. */
    return flush_piece(writer) && emit(writer, data, length);
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
    if (ok && writer->cctx != NULL)
        ok = compress(writer, NULL, 0, ZSTD_e_end);
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
    reader->piece = g_malloc(PIECE_SIZE);
    if (zstd) {
        reader->dctx = ZSTD_createDCtx();
        reader->in = g_malloc(PIECE_SIZE);
    }
    return reader;
}

void ferry_native_reader_free(FerryNativeReader *reader)
{
    if (reader == NULL)
        return;
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
    GError *cause = NULL;
    gssize n = reader->channel->read(reader->channel->channel, buffer, size, reader->cancellable, &cause);
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

/* Decode more into the piece buffer (which is empty). FALSE on error; at the barrier, piece_len stays 0. */
static gboolean refill(FerryNativeReader *reader)
{
    reader->piece_pos = reader->piece_len = 0;
    if (reader->dctx == NULL) {
        gssize n = read_channel(reader, reader->piece, PIECE_SIZE);
        if (n < 0)
            return FALSE;
        reader->piece_len = (gsize)n;
        return TRUE;
    }
    for (;;) {
        if (reader->frame_done && reader->in_pos < reader->in_len)
            return ferry_native_reader_fail(reader, "data after the end of the compressed stream");
        if (!reader->frame_done) {
            /* Even without new input: zstd may hold output that did not fit last time. */
            ZSTD_inBuffer input = {reader->in, reader->in_len, reader->in_pos};
            ZSTD_outBuffer output = {reader->piece, PIECE_SIZE, 0};
            size_t hint = ZSTD_decompressStream(reader->dctx, &output, &input);
            if (ZSTD_isError(hint))
                return ferry_native_reader_fail(reader, "corrupt compressed data (%s)", ZSTD_getErrorName(hint));
            reader->in_pos = input.pos;
            reader->piece_len = output.pos;
            if (hint == 0)
                reader->frame_done = TRUE;
            if (reader->piece_len > 0)
                return TRUE;
        }
        if (reader->in_pos < reader->in_len)
            continue;
        gssize n = read_channel(reader, reader->in, PIECE_SIZE);
        if (n < 0)
            return FALSE;
        if (n == 0)
            return TRUE;
        reader->in_pos = 0;
        reader->in_len = (gsize)n;
    }
}

gboolean ferry_native_get(FerryNativeReader *reader, void *buffer, gsize length)
{
    if (reader->error != NULL)
        return FALSE;
    guint8 *to = buffer;
    while (length > 0) {
        if (reader->piece_pos == reader->piece_len) {
            /* Large uncompressed reads go straight into the caller's buffer. */
            if (reader->dctx == NULL && length >= PIECE_SIZE) {
                gssize n = read_channel(reader, to, length);
                if (n < 0)
                    return FALSE;
                if (n == 0)
                    return ferry_native_reader_fail(reader, "the stream ends in the middle of a record");
                to += n;
                length -= (gsize)n;
                reader->bytes += (guint64)n;
                continue;
            }
            if (!refill(reader))
                return FALSE;
            if (reader->piece_len == 0)
                return ferry_native_reader_fail(reader, "the stream ends in the middle of a record");
        }
        gsize n = MIN(length, reader->piece_len - reader->piece_pos);
        memcpy(to, reader->piece + reader->piece_pos, n);
        reader->piece_pos += n;
        to += n;
        length -= n;
        reader->bytes += n;
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
    if (ok && reader->piece_pos < reader->piece_len)
        ok = ferry_native_reader_fail(reader, "data after the last record");
    /* What follows must decode to nothing: the rest of the zstd frame, then the barrier. */
    while (ok && !reader->barrier) {
        ok = refill(reader);
        if (ok && reader->piece_len > 0)
            ok = ferry_native_reader_fail(reader, "data after the last record");
    }
    if (ok && reader->dctx != NULL && !reader->frame_done)
        ok = ferry_native_reader_fail(reader, "the compressed stream is truncated");
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
