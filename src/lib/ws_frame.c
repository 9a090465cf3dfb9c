#include "ws_frame.h"

#include <string.h>

#define CONTROL_BIT 0x8
#define MAX_CONTROL_PAYLOAD 125

gsize ferry_ws_frame_encode_header(guint8 out[FERRY_WS_MAX_HEADER], gboolean fin, guint8 opcode, guint64 length,
                                   const guint8 *mask)
{
    gsize n = 0;
    out[n++] = (guint8)((fin ? 0x80 : 0) | (opcode & 0x0f));
    guint8 mask_bit = mask != NULL ? 0x80 : 0;
    if (length < 126) {
        out[n++] = (guint8)(mask_bit | length);
    } else if (length <= G_MAXUINT16) {
        out[n++] = mask_bit | 126;
        out[n++] = (guint8)(length >> 8);
        out[n++] = (guint8)length;
    } else {
        out[n++] = mask_bit | 127;
        for (int shift = 56; shift >= 0; shift -= 8)
            out[n++] = (guint8)(length >> shift);
    }
    if (mask != NULL) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

FerryWsHeaderStatus ferry_ws_frame_decode_header(const guint8 *data, gsize available, FerryWsFrameHeader *header,
                                                 gsize *header_length)
{
    if (available < 2) {
        *header_length = 2;
        return FERRY_WS_HEADER_NEED_MORE;
    }
    gboolean masked = (data[1] & 0x80) != 0;
    guint8 short_length = data[1] & 0x7f;
    gsize needed = 2 + (short_length == 126 ? 2 : short_length == 127 ? 8 : 0) + (masked ? 4 : 0);
    if (available < needed) {
        *header_length = needed;
        return FERRY_WS_HEADER_NEED_MORE;
    }
    header->fin = (data[0] & 0x80) != 0;
    header->rsv = (guint8)((data[0] >> 4) & 0x07);
    header->opcode = data[0] & 0x0f;
    header->masked = masked;
    gsize at = 2;
    if (short_length == 126) {
        header->length = ((guint64)data[2] << 8) | data[3];
        at = 4;
    } else if (short_length == 127) {
        header->length = 0;
        for (int i = 0; i < 8; i++)
            header->length = (header->length << 8) | data[2 + i];
        at = 10;
        if (header->length >> 63)
            return FERRY_WS_HEADER_INVALID;
    } else {
        header->length = short_length;
    }
    if (masked)
        memcpy(header->mask, data + at, 4);
    else
        memset(header->mask, 0, 4);
    if ((header->opcode & CONTROL_BIT) && (!header->fin || header->length > MAX_CONTROL_PAYLOAD))
        return FERRY_WS_HEADER_INVALID;
    *header_length = needed;
    return FERRY_WS_HEADER_OK;
}

/* The mask as it applies from offset on, twice over: 8 payload bytes per XOR. */
static guint64 mask_word(const guint8 mask[4], guint64 offset)
{
    guint8 bytes[8];
    for (int i = 0; i < 8; i++)
        bytes[i] = mask[(offset + (guint64)i) % 4];
    guint64 word;
    memcpy(&word, bytes, sizeof word);
    return word;
}

void ferry_ws_frame_mask_copy(guint8 *dst, const guint8 *src, gsize length, const guint8 mask[4], guint64 offset)
{
    guint64 word = mask_word(mask, offset);
    gsize i = 0;
    for (; i + 8 <= length; i += 8) {
        guint64 chunk;
        memcpy(&chunk, src + i, sizeof chunk);
        chunk ^= word;
        memcpy(dst + i, &chunk, sizeof chunk);
    }
    /* The mask repeats every 4 bytes, so after whole words the tail starts at the same phase. */
    for (; i < length; i++)
        dst[i] = src[i] ^ mask[(offset + i) % 4];
}

void ferry_ws_frame_mask(guint8 *data, gsize length, const guint8 mask[4], guint64 offset)
{
    ferry_ws_frame_mask_copy(data, data, length, mask, offset);
}
