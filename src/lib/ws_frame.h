/* RFC 6455 frames: the header and the masking, for websocket.c. Written here rather than left to wslay (whose
 * frames ferry used first, see docs/decisions/0007-websocket-frames.md): wslay masks and unmasks a byte at a
 * time through a 4 KiB buffer, which cost a core's worth of time on a relayed or pushed migration stream. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define FERRY_WS_MAX_HEADER 14

typedef struct {
    gboolean fin;
    guint8 rsv;    /* the three reserved bits, as a number 0-7 */
    guint8 opcode; /* 0x0-0xf */
    gboolean masked;
    guint8 mask[4];
    guint64 length;
} FerryWsFrameHeader;

typedef enum {
    FERRY_WS_HEADER_OK,
    FERRY_WS_HEADER_NEED_MORE, /* *header_length says how many bytes it needs at least */
    FERRY_WS_HEADER_INVALID,   /* a length with its top bit set, or a control frame that is long or fragmented */
} FerryWsHeaderStatus;

/* Encode a frame header into out; mask NULL for an unmasked (server) frame. Returns its length. */
gsize ferry_ws_frame_encode_header(guint8 out[FERRY_WS_MAX_HEADER], gboolean fin, guint8 opcode, guint64 length,
                                   const guint8 *mask);

/* Decode the header at the start of data (available bytes). OK: *header_length is its size; NEED_MORE: the
 * number of bytes needed to go on. */
FerryWsHeaderStatus ferry_ws_frame_decode_header(const guint8 *data, gsize available, FerryWsFrameHeader *header,
                                                 gsize *header_length);

/* XOR length bytes of payload, which start offset bytes into their frame's payload, with the frame's mask:
 * in place (masking and unmasking are the same), or from src into dst. */
void ferry_ws_frame_mask(guint8 *data, gsize length, const guint8 mask[4], guint64 offset);
void ferry_ws_frame_mask_copy(guint8 *dst, const guint8 *src, gsize length, const guint8 mask[4], guint64 offset);

G_END_DECLS
