/* darknet's .weights format.
 *
 *   int32 major, minor, revision
 *   seen: int64 when major*10 + minor >= 2 and both < 1000, else int32
 *   per layer with parameters, in order (layers with dontload=1 skipped):
 *     convolutional: biases[n], [BN: scales[n], rolling_mean[n],
 *                    rolling_variance[n]], weights[n][c/groups][k][k]
 *     connected:     biases[n], weights[n][inputs] (stored transposed when
 *                    major > 1000 or minor > 1000), [BN triple]
 *
 * There is no framing: a wrong cfg misreads silently in darknet.  We check
 * the size exactly and name the layer where a short file runs out. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cuda.h"
#include "error.h"
#include "network.h"

typedef struct {
    FILE *file;
    const char *path;
    long size;      /* file size */
    long offset;    /* bytes consumed */
} reader;

/* darknet's test, major*10 + minor >= 2 with both < 1000, in int64: a
 * crafted header's major*10 would overflow an int */
static int seen_is_64bit(int major, int minor)
{
    return (int64_t)major * 10 + minor >= 2 && major < 1000 && minor < 1000;
}

static int connected_transposed(int major, int minor) { return major > 1000 || minor > 1000; }

/* Bytes a layer's payload takes in the file. */
static long layer_payload_bytes(const dn_layer *l)
{
    long floats = l->n_biases + (long)l->n_weights;
    if (l->batch_normalize && !l->dontloadscales) floats += 3L * l->n_biases;
    return floats * (long)sizeof(float);
}

static int layer_has_payload(const dn_layer *l)
{
    return (l->type == DN_LAYER_CONVOLUTIONAL || l->type == DN_LAYER_CONNECTED) && !l->dontload;
}

static dn_status read_floats(reader *r, float *dst, size_t n, const dn_layer *l, const char *what,
                             long expected_total)
{
    size_t got = fread(dst, sizeof(float), n, r->file);
    if (got != n) {
        return DN_FAIL(DN_ERR_WEIGHTS,
                       "%s: truncated in layer %d ([%s] at cfg line %d) while reading its %s: "
                       "the cfg needs %ld bytes, the file has %ld",
                       r->path, l->index, l->ops->name, l->cfg_line, what, expected_total, r->size);
    }
    r->offset += (long)(n * sizeof(float));
    return DN_OK;
}

static dn_status transpose(float *a, int rows, int cols)
{
    float *t = malloc((size_t)rows * cols * sizeof *t);
    if (!t) return DN_FAIL(DN_ERR_OOM, "out of memory transposing weights");
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) t[(size_t)j * rows + i] = a[(size_t)i * cols + j];
    memcpy(a, t, (size_t)rows * cols * sizeof *t);
    free(t);
    return DN_OK;
}

static dn_status load_layer(reader *r, dn_network *net, dn_layer *l, long expected_total)
{
    int n = l->n_biases;
    int bn = l->batch_normalize && !l->dontloadscales;
    DN_TRY(read_floats(r, l->biases, (size_t)n, l, "biases", expected_total));
    if (l->type == DN_LAYER_CONVOLUTIONAL) {
        if (bn) {
            DN_TRY(read_floats(r, l->scales, (size_t)n, l, "batch-norm scales", expected_total));
            DN_TRY(read_floats(r, l->rolling_mean, (size_t)n, l, "rolling mean", expected_total));
            DN_TRY(read_floats(r, l->rolling_variance, (size_t)n, l, "rolling variance",
                               expected_total));
        }
        DN_TRY(read_floats(r, l->weights, l->n_weights, l, "weights", expected_total));
        if (l->u.conv.flipped)
            DN_TRY(transpose(l->weights, (int)(l->n_weights / l->u.conv.filters), l->u.conv.filters));
    } else {
        DN_TRY(read_floats(r, l->weights, l->n_weights, l, "weights", expected_total));
        if (connected_transposed(net->weights_major, net->weights_minor))
            DN_TRY(transpose(l->weights, l->in_size, l->out_size));
        if (bn) {
            DN_TRY(read_floats(r, l->scales, (size_t)n, l, "batch-norm scales", expected_total));
            DN_TRY(read_floats(r, l->rolling_mean, (size_t)n, l, "rolling mean", expected_total));
            DN_TRY(read_floats(r, l->rolling_variance, (size_t)n, l, "rolling variance",
                               expected_total));
        }
    }
    return DN_OK;
}

/* Load layers [0, cutoff).  partial: the file may end at a layer boundary
 * before the cutoff (pretrained backbones such as darknet53.conv.74) and may
 * hold more after it; otherwise its size must match exactly. */
static dn_status load_weights(dn_network *net, const char *path, int cutoff, int partial,
                              int *layers_loaded)
{
    if (!net || !path) return DN_FAIL(DN_ERR_ARG, "network and path must not be NULL");
    if (cutoff <= 0 || cutoff > net->n_layers) cutoff = net->n_layers;
    reader r = {0};
    r.path = path;
    r.file = fopen(path, "rb");
    if (!r.file) return DN_FAIL(DN_ERR_IO, "cannot open weights '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(r.file), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(r.file);
        return DN_FAIL(DN_ERR_IO, "'%s' is not a regular file", path);
    }
    r.size = (long)st.st_size;

    int32_t header[3];
    if (fread(header, sizeof(int32_t), 3, r.file) != 3) {
        fclose(r.file);
        return DN_FAIL(DN_ERR_WEIGHTS, "%s: too short for a weights header (%ld bytes, need at "
                       "least 16)", path, r.size);
    }
    int major = header[0], minor = header[1], revision = header[2];
    int64_t seen;
    long header_bytes;
    if (seen_is_64bit(major, minor)) {
        uint64_t seen64;
        if (fread(&seen64, sizeof seen64, 1, r.file) != 1) {
            fclose(r.file);
            return DN_FAIL(DN_ERR_WEIGHTS, "%s: too short for a version %d.%d weights header "
                           "(%ld bytes, need 20)", path, major, minor, r.size);
        }
        if (seen64 > (uint64_t)INT64_MAX) {
            fclose(r.file);
            return DN_FAIL(DN_ERR_WEIGHTS, "%s: header seen=%lld is negative (as darknet's signed "
                           "64-bit count of images trained on): not a darknet weights file, or a "
                           "corrupt one", path, (long long)(int64_t)seen64);
        }
        seen = (int64_t)seen64;
        header_bytes = 20;
    } else {
        int32_t seen32;
        if (fread(&seen32, sizeof seen32, 1, r.file) != 1) {
            fclose(r.file);
            return DN_FAIL(DN_ERR_WEIGHTS, "%s: too short for a version %d.%d weights header "
                           "(%ld bytes, need 16)", path, major, minor, r.size);
        }
        seen = (uint32_t)seen32;
        header_bytes = 16;
    }
    r.offset = header_bytes;

    long expected_total = header_bytes;
    for (int i = 0; i < cutoff; i++)
        if (layer_has_payload(&net->layers[i])) expected_total += layer_payload_bytes(&net->layers[i]);

    if (!partial && r.size != expected_total) {
        /* find where the file runs out, to name the layer */
        long at = header_bytes;
        const dn_layer *short_layer = NULL;
        for (int i = 0; i < cutoff; i++) {
            const dn_layer *l = &net->layers[i];
            if (!layer_has_payload(l)) continue;
            at += layer_payload_bytes(l);
            if (at > r.size && !short_layer) short_layer = l;
        }
        fclose(r.file);
        if (short_layer)
            return DN_FAIL(DN_ERR_WEIGHTS,
                           "%s: the cfg '%s' needs %ld bytes of weights, the file has %ld: it runs "
                           "out in layer %d ([%s] at cfg line %d)",
                           path, net->name, expected_total, r.size, short_layer->index,
                           short_layer->ops->name, short_layer->cfg_line);
        return DN_FAIL(DN_ERR_WEIGHTS,
                       "%s: the cfg '%s' needs %ld bytes of weights, the file has %ld (%ld bytes "
                       "too many: a different cfg, or a different filters= count?)",
                       path, net->name, expected_total, r.size, r.size - expected_total);
    }

    /* layers this file does not cover keep darknet's initial values */
    int covers_all = !partial && cutoff == net->n_layers;
    for (int i = 0; i < net->n_layers && covers_all; i++)
        if (net->layers[i].dontload || net->layers[i].dontloadscales) covers_all = 0;
    if (!covers_all) {
        dn_network_ensure_params(net);
        DN_TRY(dn_network_sync_host_params(net)); /* the layers kept come from the device */
    }

    int saved_major = net->weights_major, saved_minor = net->weights_minor;
    net->weights_major = major;
    net->weights_minor = minor;
    int covered = cutoff; /* layers [0, covered) hold the file's values (or need none) */
    dn_status status = DN_OK;
    for (int i = 0; i < cutoff && status == DN_OK; i++) {
        dn_layer *l = &net->layers[i];
        if (!layer_has_payload(l)) continue;
        if (partial && r.offset == r.size) { /* the file ends at a layer boundary */
            covered = i;
            break;
        }
        status = load_layer(&r, net, l, expected_total);
    }
    fclose(r.file);
    dn_network_params_changed(net); /* also after a failure part-way: some layers were read */
    if (status != DN_OK) {
        net->weights_major = saved_major;
        net->weights_minor = saved_minor;
        return status;
    }
    net->weights_revision = revision;
    net->seen = seen;
    net->params_ready = 1;
    if (net->gpu) {
        net->host_params_stale = 0;
        net->device_params_stale = 1; /* uploaded before the next forward */
    }
    if (layers_loaded) *layers_loaded = covered;
    return DN_OK;
}

DN_API dn_status dn_network_load_weights(dn_network *net, const char *path)
{
    return load_weights(net, path, 0, 0, NULL);
}

DN_API dn_status dn_network_load_weights_upto(dn_network *net, const char *path, int cutoff,
                                              int *layers_loaded)
{
    return load_weights(net, path, cutoff, 1, layers_loaded);
}

/* ---- save (atomic) ------------------------------------------------------------ */

static int write_floats(FILE *f, const float *src, size_t n)
{
    return fwrite(src, sizeof(float), n, f) == n;
}

static int write_transposed(FILE *f, const float *a, int rows, int cols)
{
    float *t = malloc((size_t)rows * cols * sizeof *t);
    if (!t) return 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) t[(size_t)j * rows + i] = a[(size_t)i * cols + j];
    int ok = write_floats(f, t, (size_t)rows * cols);
    free(t);
    return ok;
}

static int save_layer(FILE *f, const dn_network *net, const dn_layer *l)
{
    int n = l->n_biases;
    int bn = l->batch_normalize && !l->dontloadscales;
    if (!write_floats(f, l->biases, (size_t)n)) return 0;
    if (l->type == DN_LAYER_CONVOLUTIONAL) {
        if (bn && !(write_floats(f, l->scales, (size_t)n) &&
                    write_floats(f, l->rolling_mean, (size_t)n) &&
                    write_floats(f, l->rolling_variance, (size_t)n)))
            return 0;
        if (l->u.conv.flipped)
            return write_transposed(f, l->weights, l->u.conv.filters,
                                    (int)(l->n_weights / l->u.conv.filters));
        return write_floats(f, l->weights, l->n_weights);
    }
    int ok = connected_transposed(net->weights_major, net->weights_minor)
                 ? write_transposed(f, l->weights, l->out_size, l->in_size)
                 : write_floats(f, l->weights, l->n_weights);
    if (!ok) return 0;
    if (bn && !(write_floats(f, l->scales, (size_t)n) && write_floats(f, l->rolling_mean, (size_t)n) &&
                write_floats(f, l->rolling_variance, (size_t)n)))
        return 0;
    return 1;
}

/* The process's umask, read without changing it (umask() would, for every
 * thread): /proc's "Umask:" line, else the usual 022. */
static mode_t current_umask(void)
{
    unsigned mask = 022;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return (mode_t)mask;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Umask: %o", &mask) == 1) break;
    fclose(f);
    return (mode_t)mask;
}

/* A new temporary file beside `path` (its name in *tmp_out, freed by the
 * caller), with the permissions of the file it will replace, else what a
 * plain fopen would give; a read-only `path` is refused, as the Python
 * writers refuse it. */
static dn_status open_replacement(const char *path, char **tmp_out, FILE **file_out)
{
    *tmp_out = NULL;
    *file_out = NULL;
    mode_t mode;
    struct stat st;
    if (stat(path, &st) == 0) {
        if (!S_ISREG(st.st_mode)) return DN_FAIL(DN_ERR_IO, "cannot write '%s': not a regular file", path);
        if (!(st.st_mode & 0222)) return DN_FAIL(DN_ERR_IO, "cannot write '%s': the file is read-only", path);
        mode = st.st_mode & 07777;
    } else {
        mode = 0666 & ~current_umask();
    }
    size_t len = strlen(path) + sizeof ".tmp.XXXXXX";
    char *tmp = malloc(len);
    if (!tmp) return DN_FAIL(DN_ERR_OOM, "out of memory");
    snprintf(tmp, len, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp); /* a unique name: two savers of one path never share it */
    FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!f || fchmod(fd, mode) != 0) {
        /* named by the file asked for: the temporary name means nothing to the caller */
        dn_status st_fail = DN_FAIL(DN_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
        if (f) fclose(f);
        else if (fd >= 0) close(fd);
        if (fd >= 0) remove(tmp);
        free(tmp);
        return st_fail;
    }
    *tmp_out = tmp;
    *file_out = f;
    return DN_OK;
}

static int write_weights_file(FILE *f, dn_network *net)
{
    int32_t header[3] = {net->weights_major, net->weights_minor, net->weights_revision};
    int ok = fwrite(header, sizeof header[0], 3, f) == 3;
    if (seen_is_64bit(net->weights_major, net->weights_minor)) {
        uint64_t seen = (uint64_t)net->seen;
        ok = ok && fwrite(&seen, sizeof seen, 1, f) == 1;
    } else {
        int32_t seen = (int32_t)net->seen;
        ok = ok && fwrite(&seen, sizeof seen, 1, f) == 1;
    }
    for (int i = 0; i < net->n_layers && ok; i++) {
        const dn_layer *l = &net->layers[i];
        if (!layer_has_payload(l) || l->dontsave) continue;
        ok = save_layer(f, net, l);
    }
    return ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
}

DN_API dn_status dn_network_save_weights(dn_network *net, const char *path)
{
    if (!net || !path) return DN_FAIL(DN_ERR_ARG, "network and path must not be NULL");
    dn_network_ensure_params(net);
    DN_TRY(dn_network_sync_host_params(net));
    char *tmp;
    FILE *f;
    DN_TRY(open_replacement(path, &tmp, &f));
    int ok = write_weights_file(f, net);
    int err = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        err = errno;
    }
    if (!ok) {
        remove(tmp);
        dn_status st = DN_FAIL(DN_ERR_IO, "error writing '%s': %s (nothing was replaced)", path,
                               strerror(err));
        free(tmp);
        return st;
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        remove(tmp);
        dn_status st = DN_FAIL(DN_ERR_IO, "cannot replace '%s': %s", path, strerror(err));
        free(tmp);
        return st;
    }
    free(tmp);
    return DN_OK;
}
