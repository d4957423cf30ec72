/* Errors: a status code plus a thread-local message; nothing ever exits. */
#ifndef DN_ERROR_H
#define DN_ERROR_H

#include "darknet.h"

#define DN_API __attribute__((visibility("default")))

/* Record a failure (message formatted like printf) and return `status`. */
dn_status dn_set_error_at(const char *src_file, int src_line, dn_status status, const char *fmt,
                          ...) __attribute__((format(printf, 4, 5)));

#define DN_FAIL(status, ...) dn_set_error_at(__FILE__, __LINE__, (status), __VA_ARGS__)

/* Propagate a failing status unchanged (its message is already set). */
#define DN_TRY(expr)                   \
    do {                               \
        dn_status dn_try_s_ = (expr);  \
        if (dn_try_s_ != DN_OK) return dn_try_s_; \
    } while (0)

/* Prefix the current message with more context ("layer 3: ..."). */
void dn_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Append to the current message (a note on what may have caused it). */
void dn_error_append(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
