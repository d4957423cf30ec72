#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define DN_ERROR_CAP 2048

static _Thread_local char error_message[DN_ERROR_CAP];
static _Thread_local char error_origin[256];
static _Thread_local dn_status error_status = DN_OK;

dn_status dn_set_error_at(const char *src_file, int src_line, dn_status status, const char *fmt,
                          ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, args);
    va_end(args);
    const char *base = strrchr(src_file, '/');
    snprintf(error_origin, sizeof error_origin, "%s:%d", base ? base + 1 : src_file, src_line);
    error_status = status;
    return status;
}

void dn_error_prefix(const char *fmt, ...)
{
    char prefix[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, args);
    va_end(args);
    char joined[DN_ERROR_CAP];
    size_t used = strlen(prefix);
    if (used >= sizeof joined) used = sizeof joined - 1;
    memcpy(joined, prefix, used);
    size_t rest = strnlen(error_message, sizeof error_message);
    if (rest > sizeof joined - 1 - used) rest = sizeof joined - 1 - used;
    memcpy(joined + used, error_message, rest);
    joined[used + rest] = '\0';
    memcpy(error_message, joined, used + rest + 1);
}

void dn_error_append(const char *fmt, ...)
{
    size_t used = strnlen(error_message, sizeof error_message);
    va_list args;
    va_start(args, fmt);
    vsnprintf(error_message + used, sizeof error_message - used, fmt, args);
    va_end(args);
}

DN_API const char *dn_last_error(void) { return error_message; }
DN_API dn_status dn_last_error_status(void) { return error_status; }
DN_API const char *dn_last_error_origin(void) { return error_origin; }

DN_API void dn_clear_error(void)
{
    error_message[0] = '\0';
    error_origin[0] = '\0';
    error_status = DN_OK;
}
