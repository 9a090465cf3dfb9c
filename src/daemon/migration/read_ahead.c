#include "read_ahead.h"

#include <string.h>

/* Up to this many chunks of this size are read ahead: 2 MiB is enough to ride out a file creation or a
 * directory's metadata on the consumer's side without holding much memory. */
#define CHUNK_SIZE (256 * 1024)
#define MAX_CHUNKS 8
/* A waiting consumer is woken when this much (or what it asked for, if less) has arrived, not at each read of
 * the channel: a websocket over TLS often returns one 16 KiB record per read, and a wake-up per record cost a
 * fifth of the receiver's CPU in futex calls and context switches. */
#define WAKE_BYTES (128 * 1024)

typedef struct {
    guint8 *data;
    gsize length;   /* bytes read into data (the thread appends until CHUNK_SIZE) */
    gsize consumed; /* bytes the consumer took */
} Chunk;

/* The thread appends to the last chunk of `full` while it has room and the consumer takes from the first, so
 * a read of the channel (on a websocket over TLS, often one 16 KiB record) costs no hand-over; the two wake
 * each other only when one of them is waiting. */
struct _FerryReadAhead {
    FerryByteChannel *channel;
    GCancellable *cancellable;
    GThread *thread;
    GMutex lock;
    GCond changed;
    GQueue full;  /* Chunk *: holding bytes not consumed yet, or being filled (under lock) */
    GQueue empty; /* Chunk *: free to be filled (under lock) */
    gboolean at_barrier; /* the thread read the barrier: nothing more will come (under lock) */
    GError *error;       /* the thread's read failed: nothing more will come (under lock) */
    gboolean stopping;   /* the consumer is gone (under lock) */
    gsize available;       /* bytes read and not consumed (under lock) */
    gsize consumer_wants;  /* while the consumer waits: the bytes that wake it (under lock) */
    gboolean consumer_waiting, thread_waiting; /* (under lock) */
};

static void chunk_free(gpointer data)
{
    Chunk *chunk = data;
    g_free(chunk->data);
    g_free(chunk);
}

/* The chunk to read into: the last one while it has room, else a free one; NULL when stopping. */
static Chunk *chunk_to_fill_locked(FerryReadAhead *ahead)
{
    for (;;) {
        if (ahead->stopping)
            return NULL;
        Chunk *last = g_queue_peek_tail(&ahead->full);
        if (last != NULL && last->length < CHUNK_SIZE)
            return last;
        if (!g_queue_is_empty(&ahead->empty)) {
            Chunk *chunk = g_queue_pop_head(&ahead->empty);
            chunk->length = chunk->consumed = 0;
            g_queue_push_tail(&ahead->full, chunk);
            return chunk;
        }
        ahead->thread_waiting = TRUE;
        g_cond_wait(&ahead->changed, &ahead->lock);
        ahead->thread_waiting = FALSE;
    }
}

static gpointer read_ahead_thread(gpointer data)
{
    FerryReadAhead *ahead = data;
    g_mutex_lock(&ahead->lock);
    for (;;) {
        Chunk *chunk = chunk_to_fill_locked(ahead);
        if (chunk == NULL)
            break;
        gsize at = chunk->length;
        /* Read outside the lock: the consumer only touches bytes before chunk->length. */
        g_mutex_unlock(&ahead->lock);
        GError *error = NULL;
        gssize n = ahead->channel->read(ahead->channel->channel, chunk->data + at, CHUNK_SIZE - at,
                                        ahead->cancellable, &error);
        g_mutex_lock(&ahead->lock);
        if (n > 0) {
            chunk->length += (gsize)n;
            ahead->available += (gsize)n;
        } else if (n == 0) {
            ahead->at_barrier = TRUE;
        } else {
            ahead->error = error != NULL ? error : g_error_new_literal(G_IO_ERROR, G_IO_ERROR_FAILED, "read failed");
        }
        if (ahead->consumer_waiting && (n <= 0 || ahead->available >= ahead->consumer_wants))
            g_cond_signal(&ahead->changed);
        if (n <= 0)
            break;
    }
    g_mutex_unlock(&ahead->lock);
    return NULL;
}

FerryReadAhead *ferry_read_ahead_new(FerryByteChannel *channel, GCancellable *cancellable)
{
    FerryReadAhead *ahead = g_new0(FerryReadAhead, 1);
    ahead->channel = channel;
    ahead->cancellable = cancellable != NULL ? g_object_ref(cancellable) : NULL;
    g_mutex_init(&ahead->lock);
    g_cond_init(&ahead->changed);
    g_queue_init(&ahead->full);
    g_queue_init(&ahead->empty);
    for (int i = 0; i < MAX_CHUNKS; i++) {
        Chunk *chunk = g_new0(Chunk, 1);
        chunk->data = g_malloc(CHUNK_SIZE);
        g_queue_push_tail(&ahead->empty, chunk);
    }
    ahead->thread = g_thread_new("read-ahead", read_ahead_thread, ahead);
    return ahead;
}

gssize ferry_read_ahead_read(FerryReadAhead *ahead, void *buffer, gsize size, GError **error)
{
    guint8 *to = buffer;
    gsize copied = 0;
    g_mutex_lock(&ahead->lock);
    for (;;) {
        Chunk *chunk = g_queue_peek_head(&ahead->full);
        if (chunk != NULL && chunk->consumed < chunk->length) {
            gsize n = MIN(size - copied, chunk->length - chunk->consumed);
            /* Copy outside the lock: the thread does not touch bytes before chunk->length. */
            g_mutex_unlock(&ahead->lock);
            memcpy(to + copied, chunk->data + chunk->consumed, n);
            g_mutex_lock(&ahead->lock);
            copied += n;
            chunk->consumed += n;
            ahead->available -= n;
        }
        if (chunk != NULL && chunk->consumed == CHUNK_SIZE) {
            g_queue_pop_head(&ahead->full);
            g_queue_push_tail(&ahead->empty, chunk);
            if (ahead->thread_waiting)
                g_cond_signal(&ahead->changed);
            continue;
        }
        /* Like a channel read, a short count is no end: wait only when nothing was copied. */
        if (copied > 0 || ahead->at_barrier || ahead->error != NULL)
            break;
        ahead->consumer_wants = MIN(size, WAKE_BYTES);
        ahead->consumer_waiting = TRUE;
        while (ahead->available < ahead->consumer_wants && !ahead->at_barrier && ahead->error == NULL)
            g_cond_wait(&ahead->changed, &ahead->lock);
        ahead->consumer_waiting = FALSE;
    }
    gssize result = (gssize)copied;
    if (copied == 0 && ahead->error != NULL) {
        g_propagate_error(error, g_error_copy(ahead->error));
        result = -1;
    }
    g_mutex_unlock(&ahead->lock);
    return result;
}

void ferry_read_ahead_free(FerryReadAhead *ahead)
{
    if (ahead == NULL)
        return;
    g_mutex_lock(&ahead->lock);
    gboolean finished = ahead->at_barrier || ahead->error != NULL;
    ahead->stopping = TRUE;
    g_cond_signal(&ahead->changed);
    g_mutex_unlock(&ahead->lock);
    /* Abandoned mid-stream: the thread may be blocked in a read that only an abort ends. */
    if (!finished)
        ahead->channel->abort(ahead->channel->channel);
    g_thread_join(ahead->thread);
    g_queue_clear_full(&ahead->full, chunk_free);
    g_queue_clear_full(&ahead->empty, chunk_free);
    g_clear_error(&ahead->error);
    g_clear_object(&ahead->cancellable);
    g_mutex_clear(&ahead->lock);
    g_cond_clear(&ahead->changed);
    g_free(ahead);
}
