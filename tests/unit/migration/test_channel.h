/* An in-process FerryByteChannel pair for the migration transport tests: a socketpair with a tiny framing
 * (data frames and barrier frames) so sub-streams and barriers behave like the migration websockets'. */
#pragma once

#include "rsync.h"

typedef struct _TestChannel TestChannel;

/* Two connected ends; what one writes the other reads. */
void test_channel_pair(TestChannel **a, TestChannel **b);
void test_channel_free(TestChannel *channel);
FerryByteChannel test_channel_iface(TestChannel *channel);
/* Payload bytes written / read so far (thread-safe). */
guint64 test_channel_bytes_written(TestChannel *channel);
guint64 test_channel_bytes_read(TestChannel *channel);
