#include "error.h"

#include <gio/gio.h>
#include <string.h>

G_DEFINE_QUARK(ferry-error-quark, ferry_error)

int ferry_error_http_status(const GError *error)
{
    if (error == NULL)
        return 200;
    if (error->domain == FERRY_ERROR)
        return error->code;
    if (error->domain == G_IO_ERROR) {
        switch (error->code) {
        case G_IO_ERROR_NOT_FOUND:
            return 404;
        case G_IO_ERROR_CANCELLED:
            return FERRY_ERROR_CANCELLED;
        case G_IO_ERROR_EXISTS:
            return 409;
        case G_IO_ERROR_INVALID_ARGUMENT:
            return 400;
        case G_IO_ERROR_PERMISSION_DENIED:
            return 403;
        default:
            break;
        }
    }
    return 500;
}

void ferry_set_error_errno(GError **error, int errnum, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    g_autofree char *context = g_strdup_vprintf(format, args);
    va_end(args);
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "%s: %s", context, g_strerror(errnum));
}
