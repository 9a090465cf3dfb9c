/* Responses in Incus's envelopes: {"type":"sync|async|error","status","status_code","operation","error_code",
 * "error","metadata"}. GErrors become error responses here and nowhere else. */
#pragma once

#include <jansson.h>
#include <libsoup/soup.h>

#include "operations.h"
#include "router.h"

G_BEGIN_DECLS

FerryResponse *ferry_response_sync(json_t *metadata /* stolen; NULL = {} */);
/* 201 Created with a Location header (resource creation without an operation). */
FerryResponse *ferry_response_created(json_t *metadata, const char *location);
/* 202 with the operation in metadata and its URL in "operation" and Location. */
FerryResponse *ferry_response_async(FerryOperation *op /* borrowed */);
FerryResponse *ferry_response_error(GError *error /* stolen */);
FerryResponse *ferry_response_error_new(int status, const char *format, ...) G_GNUC_PRINTF(2, 3);
/* Raw bytes (file download). */
FerryResponse *ferry_response_raw(const char *content_type, GBytes *bytes /* stolen */);
/* Set an ETag on a sync response. */
void ferry_response_set_etag(FerryResponse *response, const char *etag);
/* The handler took over the message (paused for /wait, or upgraded to a websocket). */
FerryResponse *ferry_response_handled(void);

/* Write a response into msg and free it. */
void ferry_response_send(FerryResponse *response, SoupServerMessage *msg);

/* Write an error envelope straight into msg (used before routing and by deferred handlers). */
void ferry_response_send_error(SoupServerMessage *msg, int status, const char *message);
/* Write a sync envelope straight into msg (deferred handlers such as /wait). */
void ferry_response_send_sync(SoupServerMessage *msg, json_t *metadata /* stolen */);

/* ETag of a JSON document: Incus clients send If-Match; we compute a hash of the writable fields. */
char *ferry_response_etag_of(json_t *document);

G_END_DECLS
