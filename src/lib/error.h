/* ferry error domain: every fallible function takes a GError ** and uses these codes.
 * The codes name HTTP statuses so the REST layer can map an error to a response in one place. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define FERRY_ERROR (ferry_error_quark())
GQuark ferry_error_quark(void);

typedef enum {
    FERRY_ERROR_INTERNAL = 500,
    FERRY_ERROR_INVALID = 400,       /* bad request: malformed input, bad name, bad config value */
    FERRY_ERROR_FORBIDDEN = 403,     /* untrusted client, wrong secret */
    FERRY_ERROR_NOT_FOUND = 404,
    FERRY_ERROR_CONFLICT = 409,      /* name taken, instance busy, wrong state */
    FERRY_ERROR_TOO_LARGE = 413,
    FERRY_ERROR_NOT_IMPLEMENTED = 501,
    FERRY_ERROR_UNAVAILABLE = 503,   /* unreachable server, daemon shutting down */
    FERRY_ERROR_CANCELLED = 499,     /* operation cancelled by the user */
} FerryErrorCode;

/* HTTP status for any GError: FERRY_ERROR codes are their own status, other domains map to 500
 * (G_IO_ERROR_NOT_FOUND to 404, G_IO_ERROR_CANCELLED to 499). */
int ferry_error_http_status(const GError *error);

/* Set error from errno with a formatted context: "<context>: <strerror(errnum)>". */
void ferry_set_error_errno(GError **error, int errnum, const char *format, ...) G_GNUC_PRINTF(3, 4);

G_END_DECLS
