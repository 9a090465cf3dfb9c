/* RFC 6455 frame headers and masking (src/lib/ws_frame.c), checked against the RFC's own examples and a
 * byte-at-a-time reference. */
#include "ws_frame.h"

#include <string.h>

static void test_rfc_examples(void)
{
    /* RFC 6455 §5.7: a single-frame unmasked text message "Hello", and the same masked. */
    guint8 header[FERRY_WS_MAX_HEADER];
    gsize n = ferry_ws_frame_encode_header(header, TRUE, 0x1, 5, NULL);
    g_assert_cmpuint(n, ==, 2);
    g_assert_cmpuint(header[0], ==, 0x81);
    g_assert_cmpuint(header[1], ==, 0x05);

    const guint8 mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    n = ferry_ws_frame_encode_header(header, TRUE, 0x1, 5, mask);
    guint8 frame[16];
    memcpy(frame, header, n);
    ferry_ws_frame_mask_copy(frame + n, (const guint8 *)"Hello", 5, mask, 0);
    const guint8 expected[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    g_assert_cmpmem(frame, n + 5, expected, sizeof expected);

    FerryWsFrameHeader decoded;
    gsize length = 0;
    g_assert_cmpint(ferry_ws_frame_decode_header(expected, sizeof expected, &decoded, &length), ==,
                    FERRY_WS_HEADER_OK);
    g_assert_cmpuint(length, ==, 6);
    g_assert_true(decoded.fin && decoded.masked);
    g_assert_cmpuint(decoded.opcode, ==, 0x1);
    g_assert_cmpuint(decoded.length, ==, 5);
    g_assert_cmpmem(decoded.mask, 4, mask, 4);
    guint8 payload[5];
    memcpy(payload, expected + 6, 5);
    ferry_ws_frame_mask(payload, 5, decoded.mask, 0);
    g_assert_cmpmem(payload, 5, "Hello", 5);
}

static void test_lengths_round_trip(void)
{
    const guint64 lengths[] = {0, 125, 126, 65535, 65536, G_GUINT64_CONSTANT(1) << 40};
    const guint8 mask[4] = {1, 2, 3, 4};
    for (gsize i = 0; i < G_N_ELEMENTS(lengths); i++) {
        for (int masked = 0; masked < 2; masked++) {
            guint8 header[FERRY_WS_MAX_HEADER];
            gsize n = ferry_ws_frame_encode_header(header, i % 2 == 0, 0x2, lengths[i], masked ? mask : NULL);
            /* Every shorter prefix asks for more, never decodes wrongly. */
            for (gsize cut = 0; cut < n; cut++) {
                FerryWsFrameHeader decoded;
                gsize need = 0;
                g_assert_cmpint(ferry_ws_frame_decode_header(header, cut, &decoded, &need), ==,
                                FERRY_WS_HEADER_NEED_MORE);
                g_assert_cmpuint(need, >, cut);
                g_assert_cmpuint(need, <=, n);
            }
            FerryWsFrameHeader decoded;
            gsize got = 0;
            g_assert_cmpint(ferry_ws_frame_decode_header(header, n, &decoded, &got), ==, FERRY_WS_HEADER_OK);
            g_assert_cmpuint(got, ==, n);
            g_assert_cmpuint(decoded.length, ==, lengths[i]);
            g_assert_cmpint(decoded.fin, ==, i % 2 == 0);
            g_assert_cmpint(decoded.masked, ==, masked);
        }
    }
}

static void test_invalid_headers(void)
{
    FerryWsFrameHeader decoded;
    gsize n = 0;
    /* A 64-bit length with its top bit set. */
    const guint8 huge[] = {0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1};
    g_assert_cmpint(ferry_ws_frame_decode_header(huge, sizeof huge, &decoded, &n), ==, FERRY_WS_HEADER_INVALID);
    /* A ping of 126 bytes, and a fragmented close. */
    const guint8 long_ping[] = {0x89, 0x7e, 0x00, 0x7e};
    g_assert_cmpint(ferry_ws_frame_decode_header(long_ping, sizeof long_ping, &decoded, &n), ==,
                    FERRY_WS_HEADER_INVALID);
    const guint8 fragmented_close[] = {0x08, 0x00};
    g_assert_cmpint(ferry_ws_frame_decode_header(fragmented_close, sizeof fragmented_close, &decoded, &n), ==,
                    FERRY_WS_HEADER_INVALID);
}

/* The word-at-a-time masking equals the byte-at-a-time definition at every offset and length. */
static void test_mask_matches_reference(void)
{
    const guint8 mask[4] = {0xde, 0xad, 0xbe, 0xef};
    guint8 data[97], out[97], reference[97];
    for (gsize i = 0; i < sizeof data; i++)
        data[i] = (guint8)(i * 31 + 7);
    for (guint64 offset = 0; offset < 9; offset++) {
        for (gsize length = 0; length <= sizeof data; length++) {
            for (gsize i = 0; i < length; i++)
                reference[i] = data[i] ^ mask[(offset + i) % 4];
            ferry_ws_frame_mask_copy(out, data, length, mask, offset);
            g_assert_cmpmem(out, length, reference, length);
            memcpy(out, data, length);
            ferry_ws_frame_mask(out, length, mask, offset);
            g_assert_cmpmem(out, length, reference, length);
        }
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/websocket/frame/rfc-examples", test_rfc_examples);
    g_test_add_func("/websocket/frame/lengths", test_lengths_round_trip);
    g_test_add_func("/websocket/frame/invalid", test_invalid_headers);
    g_test_add_func("/websocket/frame/mask", test_mask_matches_reference);
    return g_test_run();
}
