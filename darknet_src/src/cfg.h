/* darknet's .cfg (ini) format: read into sections and typed option getters.
 *
 * Lines are read as darknet reads them: every space and tab is removed (so
 * "filters = 255" and "steps=400000, 450000" work), blank lines and lines
 * starting with '#' or ';' are skipped, "[name]" opens a section, anything
 * else must be key=value.  Unlike darknet, a '#' after a value starts a
 * comment, a line without '=' is an error, and a value that does not parse
 * is an error instead of atoi's 0.  The first occurrence of a key wins (as
 * in darknet); options nobody read are reported as warnings. */
#ifndef DN_CFG_H
#define DN_CFG_H

#include "darknet.h"

typedef struct {
    char *key;
    char *value;
    int line;
    int used;
} dn_option;

typedef struct {
    char *name;        /* without brackets, e.g. "convolutional" */
    int line;          /* line of the [header] */
    int n_options;
    int cap_options;
    dn_option *options;
} dn_section;

typedef struct {
    char *source;      /* file name for messages */
    int n_sections;
    int cap_sections;
    dn_section *sections;
} dn_cfg;

dn_status dn_cfg_parse(const char *text, const char *source, dn_cfg *out);
void dn_cfg_free(dn_cfg *cfg);

/* The getters mark the option used.  A missing option gives `def`; a value
 * that does not parse is a DN_ERR_CFG naming file, line, section and key. */
const char *dn_cfg_find(dn_section *s, const char *key);
dn_status dn_cfg_int(const dn_cfg *cfg, dn_section *s, const char *key, int def, int *out);
dn_status dn_cfg_float(const dn_cfg *cfg, dn_section *s, const char *key, float def, float *out);
dn_status dn_cfg_str(const dn_cfg *cfg, dn_section *s, const char *key, const char *def,
                     const char **out);
/* Comma-separated numbers; *n gets the count, *out a malloc'ed array (NULL
 * and n = 0 when the option is absent). */
dn_status dn_cfg_int_list(const dn_cfg *cfg, dn_section *s, const char *key, int **out, int *n);
dn_status dn_cfg_float_list(const dn_cfg *cfg, dn_section *s, const char *key, float **out,
                            int *n);

/* An error about section `s` (file:line: [name] ...). */
dn_status dn_cfg_error(const dn_cfg *cfg, const dn_section *s, dn_status status, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));

/* Fail (DN_ERR_UNSUPPORTED) when `key` is set to anything but `allowed`. */
dn_status dn_cfg_require_int(const dn_cfg *cfg, dn_section *s, const char *key, int allowed,
                             const char *why);

#endif
