/* Data-parallel training over replicas (see darknet.h for the two modes).
 *
 * Each replica is a whole network owned by one thread of `replica_pool`
 * (dn_pool_run_each: replica i always runs on thread i; the calling thread
 * is replica 0's) with its own pool for the work inside a layer.  Replicas
 * exchange only whole buffers through a dn_collective: parameters (one
 * buffer), gradients (one buffer) and BN statistics (one buffer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda.h"
#include "device.h"
#include "error.h"
#include "network.h"

#define DN_MAX_REPLICAS 64

struct dn_trainer {
    int n;
    dn_network **nets;
    dn_pool *replica_pool;
    dn_collective *collective;
    dn_trainer_params params;
    float base_learning_rate;
    int warmup_left;
    int64_t steps;
};

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

DN_API dn_trainer_params dn_trainer_default_params(void)
{
    dn_trainer_params p;
    memset(&p, 0, sizeof p);
    p.replicas = 1;
    p.sync = DN_SYNC_DARKNET;
    p.sync_every = 4;
    p.sync_bn_stats = 1;
    return p;
}

/* ---- buffers of every replica ---------------------------------------------------- */

typedef enum { BUF_PARAMS, BUF_GRADS, BUF_VELOCITY, BUF_STATS } buffer_kind;

static void gather(dn_trainer *t, buffer_kind kind, float **out, size_t *n)
{
    for (int r = 0; r < t->n; r++) {
        dn_network *net = t->nets[r];
        switch (kind) {
        case BUF_PARAMS: out[r] = net->params; *n = net->n_params; break;
        case BUF_GRADS: out[r] = net->grads; *n = net->n_params; break;
        case BUF_VELOCITY: out[r] = net->velocity; *n = net->n_params; break;
        case BUF_STATS: out[r] = net->stats; *n = net->n_stats; break;
        }
    }
}

static int on_gpus(const dn_trainer *t) { return t->nets[0]->gpu != NULL; }

static dn_gpu_buffer gpu_buffer(buffer_kind kind)
{
    switch (kind) {
    case BUF_PARAMS: return DN_GPU_BUF_PARAMS;
    case BUF_GRADS: return DN_GPU_BUF_GRADS;
    case BUF_VELOCITY: return DN_GPU_BUF_VELOCITY;
    default: return DN_GPU_BUF_STATS;
    }
}

/* after a collective on the devices the host copies are out of date */
static void device_params_changed(dn_trainer *t)
{
    for (int r = 0; r < t->n; r++) t->nets[r]->host_params_stale = 1;
}

/* after a collective on the host copies: what layers derived from them is out of date */
static void host_params_changed(dn_trainer *t)
{
    for (int r = 0; r < t->n; r++) dn_network_params_changed(t->nets[r]);
}

static dn_status broadcast(dn_trainer *t, buffer_kind kind)
{
    if (on_gpus(t)) {
        DN_TRY(dn_cuda_broadcast(t->nets, t->n, gpu_buffer(kind)));
        device_params_changed(t);
        return DN_OK;
    }
    float *buffers[DN_MAX_REPLICAS];
    size_t n = 0;
    gather(t, kind, buffers, &n);
    if (kind == BUF_PARAMS) host_params_changed(t);
    return t->collective->ops->broadcast(t->collective, buffers, n, 0);
}

static dn_status reduce(dn_trainer *t, buffer_kind kind, int mean)
{
    if (on_gpus(t)) {
        DN_TRY(dn_cuda_allreduce(t->nets, t->n, gpu_buffer(kind), mean));
        if (kind != BUF_GRADS) device_params_changed(t);
        return DN_OK;
    }
    float *buffers[DN_MAX_REPLICAS];
    size_t n = 0;
    gather(t, kind, buffers, &n);
    if (kind == BUF_PARAMS) host_params_changed(t);
    return mean ? t->collective->ops->average(t->collective, buffers, n)
                : t->collective->ops->allreduce_sum(t->collective, buffers, n);
}

static dn_status average(dn_trainer *t, buffer_kind kind) { return reduce(t, kind, 1); }

/* replica 0's whole state to every replica */
static dn_status copy_replica0(dn_trainer *t)
{
    if (on_gpus(t)) {
        /* replica 0's device copy first, if the host has newer weights */
        dn_network *first = t->nets[0];
        dn_network_ensure_params(first);
        if (first->device_params_stale) {
            DN_TRY(dn_cuda_push_params(first));
            first->device_params_stale = 0;
        }
        for (int r = 1; r < t->n; r++) t->nets[r]->device_params_stale = 0;
    }
    DN_TRY(broadcast(t, BUF_PARAMS));
    DN_TRY(broadcast(t, BUF_VELOCITY));
    DN_TRY(broadcast(t, BUF_STATS));
    for (int r = 1; r < t->n; r++) {
        t->nets[r]->seen = t->nets[0]->seen;
        t->nets[r]->params_ready = 1;
    }
    return DN_OK;
}

/* ---- create / free -------------------------------------------------------------- */

DN_API void dn_trainer_free(dn_trainer *t)
{
    if (!t) return;
    if (t->nets)
        for (int r = 0; r < t->n; r++) dn_network_free(t->nets[r]);
    free(t->nets);
    if (t->collective) t->collective->ops->free(t->collective);
    dn_pool_free(t->replica_pool);
    free(t);
}

static dn_status check_params(const dn_trainer_params *p)
{
    if (p->n_gpus > 0 || p->gpus) {
        if (!dn_built_with_cuda())
            return DN_FAIL(DN_ERR_UNSUPPORTED, "GPU training was asked for, but this pydarknet was "
                           "built without CUDA: rebuild with PYDARKNET_CUDA=1, or train on CPU "
                           "replicas (--replicas N)");
        if (!p->gpus || p->n_gpus < 1)
            return DN_FAIL(DN_ERR_ARG, "gpus and n_gpus must both be given");
        int count = dn_cuda_device_count();
        for (int r = 0; r < p->n_gpus; r++)
            if (p->gpus[r] < 0 || p->gpus[r] >= count)
                return DN_FAIL(DN_ERR_ARG, "GPU %d does not exist: this machine has %d CUDA "
                               "device%s", p->gpus[r], count, count == 1 ? "" : "s");
    }
    if (p->replicas < 1 || p->replicas > DN_MAX_REPLICAS)
        return DN_FAIL(DN_ERR_ARG, "replicas must be in 1..%d, got %d", DN_MAX_REPLICAS,
                       p->replicas);
    if (p->sync != DN_SYNC_DARKNET && p->sync != DN_SYNC_ALLREDUCE)
        return DN_FAIL(DN_ERR_ARG, "unknown sync mode %d", (int)p->sync);
    if (p->sync_every < 1) return DN_FAIL(DN_ERR_ARG, "sync_every must be >= 1, got %d", p->sync_every);
    if (p->warmup_single < 0 || p->threads < 0)
        return DN_FAIL(DN_ERR_ARG, "warmup_single and threads must be >= 0");
    return DN_OK;
}

DN_API dn_status dn_trainer_create(const char *cfg_path, const dn_trainer_params *params,
                                   dn_trainer **out)
{
    if (!out) return DN_FAIL(DN_ERR_ARG, "out must not be NULL");
    *out = NULL;
    dn_trainer_params p = params ? *params : dn_trainer_default_params();
    if (p.gpus && p.n_gpus > 0) p.replicas = p.n_gpus;
    DN_TRY(check_params(&p));
    dn_trainer *t = calloc(1, sizeof *t);
    if (!t) return DN_FAIL(DN_ERR_OOM, "out of memory creating a trainer");
    t->n = p.replicas;
    t->params = p;
    t->nets = calloc((size_t)t->n, sizeof *t->nets);
    dn_status st = t->nets ? DN_OK : DN_FAIL(DN_ERR_OOM, "out of memory creating a trainer");
    dn_network_params np = dn_network_default_params();
    np.train = 1;
    np.threads = p.threads ? p.threads : dn_max_int(1, dn_hardware_threads_internal() / t->n);
    for (int r = 0; r < t->n && st == DN_OK; r++) {
        np.gpu = (p.gpus && p.n_gpus > 0) ? p.gpus[r] : -1;
        st = dn_network_create(cfg_path, &np, &t->nets[r]);
        if (st == DN_OK) dn_rng_seed(&t->nets[r]->rng, p.seed + (uint64_t)r * 0x9E3779B97F4A7C15ull);
        else if (r > 0) dn_error_prefix("replica %d: ", r);
    }
    if (st == DN_OK) st = dn_pool_create(t->n, &t->replica_pool);
    if (st == DN_OK) st = dn_cpu_collective_create(t->n, t->nets[0]->pool, &t->collective);
    if (st == DN_OK) {
        /* identical starting weights: replica 0's (seeded) initialisation */
        dn_rng_seed(&t->nets[0]->rng, p.seed);
        dn_network_ensure_params(t->nets[0]);
        st = copy_replica0(t);
    }
    if (st != DN_OK) {
        dn_trainer_free(t);
        return st;
    }
    t->base_learning_rate = t->nets[0]->hp.learning_rate;
    t->warmup_left = t->n > 1 ? p.warmup_single : 0;
    if (p.sync == DN_SYNC_ALLREDUCE)
        for (int r = 0; r < t->n; r++) t->nets[r]->update_replicas = t->n;
    if (p.sync == DN_SYNC_DARKNET && t->n > 1 && !t->warmup_left)
        for (int r = 0; r < t->n; r++) t->nets[r]->hp.learning_rate = t->base_learning_rate * t->n;
    *out = t;
    return DN_OK;
}

DN_API int dn_trainer_replicas(const dn_trainer *t) { return t ? t->n : 0; }

DN_API dn_network *dn_trainer_network(dn_trainer *t, int index)
{
    if (!t || index < 0 || index >= t->n) return NULL;
    return t->nets[index];
}

static int replicas_now(const dn_trainer *t) { return t->warmup_left > 0 ? 1 : t->n; }

DN_API int dn_trainer_images_per_step(const dn_trainer *t)
{
    return t ? replicas_now(t) * dn_network_images_per_step(t->nets[0]) : 0;
}

DN_API dn_status dn_trainer_load_weights(dn_trainer *t, const char *path, int *layers_loaded)
{
    if (!t) return DN_FAIL(DN_ERR_ARG, "trainer must not be NULL");
    DN_TRY(dn_network_load_weights_upto(t->nets[0], path, 0, layers_loaded));
    return copy_replica0(t);
}

DN_API dn_status dn_trainer_set_seen(dn_trainer *t, int64_t seen)
{
    if (!t) return DN_FAIL(DN_ERR_ARG, "trainer must not be NULL");
    for (int r = 0; r < t->n; r++) DN_TRY(dn_network_set_seen(t->nets[r], seen));
    return DN_OK;
}

DN_API dn_status dn_trainer_set_max_batches(dn_trainer *t, int max_batches)
{
    if (!t) return DN_FAIL(DN_ERR_ARG, "trainer must not be NULL");
    for (int r = 0; r < t->n; r++) DN_TRY(dn_network_set_max_batches(t->nets[r], max_batches));
    return DN_OK;
}

DN_API dn_status dn_trainer_resize(dn_trainer *t, int width, int height)
{
    if (!t) return DN_FAIL(DN_ERR_ARG, "trainer must not be NULL");
    int old_w = t->nets[0]->w, old_h = t->nets[0]->h;
    for (int r = 0; r < t->n; r++) {
        dn_status st = dn_network_resize(t->nets[r], width, height);
        if (st == DN_OK) continue;
        /* (out of memory on one GPU, say): the replicas that took the size go
         * back, so that all keep one size */
        for (int k = 0; k < r; k++)
            if (dn_network_resize(t->nets[k], old_w, old_h) != DN_OK) break;
        return st;
    }
    return DN_OK;
}

/* ---- a step ---------------------------------------------------------------------- */

typedef struct {
    dn_trainer *t;
    const float *input, *truth;
    int replicas;             /* taking part in this step */
    int allreduce;
    int64_t seen_before;
    int64_t iteration;        /* the one this step makes */
    dn_status status[DN_MAX_REPLICAS];
    char message[DN_MAX_REPLICAS][512];
    dn_train_result result[DN_MAX_REPLICAS];
    double seconds[DN_MAX_REPLICAS];
} step_job;

static void record_failure(step_job *j, int r, dn_status st)
{
    j->status[r] = st;
    snprintf(j->message[r], sizeof j->message[r], "%s", dn_last_error());
}

/* darknet mode (and warm-up): the replica's own train_step */
static void replica_train(step_job *j, int r)
{
    dn_network *net = j->t->nets[r];
    size_t images = (size_t)dn_network_images_per_step(net);
    const float *in = j->input + (size_t)r * images * net->inputs;
    const float *tr = j->truth ? j->truth + (size_t)r * images * net->truth_size : NULL;
    dn_status st = dn_network_train_step(net, in, tr, &j->result[r]);
    if (st != DN_OK) record_failure(j, r, st);
}

/* all-reduce mode: forward/backward over the replica's share, no update.
 * `seen` counts the images of every replica, as one network trained on
 * the whole batch would (the region loss reads it). */
static void replica_gradients(step_job *j, int r)
{
    dn_network *net = j->t->nets[r];
    int passes = net->hp.subdivisions, n = j->replicas;
    size_t images = (size_t)dn_network_images_per_step(net);
    const float *in = j->input + (size_t)r * images * net->inputs;
    const float *tr = j->truth ? j->truth + (size_t)r * images * net->truth_size : NULL;
    float loss_sum = 0;
    for (int s = 0; s < passes; s++) {
        net->seen = dn_seen_add(j->seen_before, ((int64_t)s * n + (n - 1)) * net->batch);
        float loss;
        dn_status st = dn_network_train_pass(net, in, tr, s, &loss);
        if (st != DN_OK) {
            record_failure(j, r, st);
            return;
        }
        loss_sum += loss;
    }
    j->result[r].loss = loss_sum / ((float)passes * net->batch);
}

static void replica_update(step_job *j, int r)
{
    dn_status st = dn_network_update(j->t->nets[r], &j->result[r].learning_rate);
    if (st != DN_OK) record_failure(j, r, st);
}

typedef struct {
    step_job *job;
    void (*work)(step_job *, int);
} replica_task;

static void run_replica(void *p, int r, int thread)
{
    (void)thread;
    replica_task *task = p;
    if (r >= task->job->replicas) return;
    double start = now_seconds();
    task->work(task->job, r);
    task->job->seconds[r] += now_seconds() - start;
}

static dn_status first_failure(dn_trainer *t, step_job *j)
{
    for (int r = 0; r < j->replicas; r++)
        if (j->status[r] != DN_OK)
            return DN_FAIL(j->status[r], "replica %d of %d failed at iteration %lld: %s", r, t->n,
                           (long long)j->iteration, j->message[r]);
    return DN_OK;
}

static dn_status run_on_replicas(dn_trainer *t, step_job *j, void (*work)(step_job *, int))
{
    replica_task task = {j, work};
    if (j->replicas == 1)
        run_replica(&task, 0, 0);
    else
        dn_pool_run_each(t->replica_pool, run_replica, &task);
    return first_failure(t, j);
}

/* darknet's sync_nets: seen += interval * (n-1) * batch * subdivisions, then
 * weights, biases and BN scales averaged (one buffer) */
static dn_status darknet_sync(dn_trainer *t)
{
    dn_network *first = t->nets[0];
    int64_t images = dn_count_mul(dn_count_mul(t->params.sync_every, t->n - 1),
                                  (int64_t)first->batch * first->hp.subdivisions);
    first->seen = dn_seen_add(first->seen, images);
    for (int r = 1; r < t->n; r++) t->nets[r]->seen = first->seen;
    DN_TRY(average(t, BUF_PARAMS));
    if (t->params.sync_bn_stats) DN_TRY(average(t, BUF_STATS));
    return DN_OK;
}

static void merge_results(dn_trainer *t, step_job *j, dn_trainer_result *out)
{
    memset(out, 0, sizeof *out);
    dn_train_result *merged = &out->train;
    float loss = 0;
    for (int r = 0; r < j->replicas; r++) {
        const dn_train_result *res = &j->result[r];
        loss += res->loss;
        for (int k = 0; k < res->n_layers; k++) {
            dn_layer_stats *m = &merged->layers[k];
            const dn_layer_stats *s = &res->layers[k];
            m->layer = s->layer;
            m->avg_iou += s->avg_iou * s->count;
            m->avg_class += s->avg_class * s->count;
            m->avg_obj += s->avg_obj * s->count;
            m->recall += s->recall * s->count;
            m->recall75 += s->recall75 * s->count;
            m->avg_noobj += s->avg_noobj / j->replicas;
            m->count += s->count;
        }
        if (res->n_layers > merged->n_layers) merged->n_layers = res->n_layers;
        out->replica_seconds[r] = j->seconds[r];
    }
    for (int k = 0; k < merged->n_layers; k++) {
        dn_layer_stats *m = &merged->layers[k];
        float n = m->count ? (float)m->count : 1.f;
        m->avg_iou /= n;
        m->avg_class /= n;
        m->avg_obj /= n;
        m->recall /= n;
        m->recall75 /= n;
    }
    merged->loss = loss / j->replicas;
    merged->learning_rate = j->result[0].learning_rate;
    merged->batch_num = dn_network_current_batch(t->nets[0]);
    merged->seen = t->nets[0]->seen;
    merged->updated = 1;
    out->replicas_used = j->replicas;
}

/* the layer statistics of the last pass of each replica (all-reduce mode) */
static void collect_layer_stats(dn_trainer *t, step_job *j)
{
    for (int r = 0; r < j->replicas; r++) {
        const dn_network *net = t->nets[r];
        int k = 0;
        for (int i = 0; i < net->n_layers && k < 8; i++) {
            const dn_layer *l = &net->layers[i];
            if (l->type != DN_LAYER_REGION && l->type != DN_LAYER_YOLO) continue;
            dn_layer_stats *s = &j->result[r].layers[k++];
            s->layer = i;
            s->avg_iou = l->stats.avg_iou;
            s->avg_class = l->stats.avg_class;
            s->avg_obj = l->stats.avg_obj;
            s->avg_noobj = l->stats.avg_noobj;
            s->recall = l->stats.recall;
            s->recall75 = l->stats.recall75;
            s->count = l->stats.count;
        }
        j->result[r].n_layers = k;
    }
}

DN_API dn_status dn_trainer_step(dn_trainer *t, const float *input, const float *truth,
                                 dn_trainer_result *out)
{
    if (!t || !input) return DN_FAIL(DN_ERR_ARG, "trainer and input must not be NULL");
    step_job *j = calloc(1, sizeof *j);
    if (!j) return DN_FAIL(DN_ERR_OOM, "out of memory for a training step");
    j->t = t;
    j->input = input;
    j->truth = truth;
    j->replicas = replicas_now(t);
    /* one replica in all-reduce mode also takes the all-reduce path (a
     * one-rank reduction: NCCL's on a GPU), so that path is one code path */
    j->allreduce = t->params.sync == DN_SYNC_ALLREDUCE && (j->replicas > 1 || t->n == 1);
    j->seen_before = t->nets[0]->seen;
    j->iteration = dn_network_current_batch(t->nets[0]) + 1;
    dn_trainer_result result;
    memset(&result, 0, sizeof result);
    dn_status st;
    int synced = 0;
    double sync_start = 0, sync_seconds = 0;
    if (!j->allreduce) {
        st = run_on_replicas(t, j, replica_train);
        if (st == DN_OK && j->replicas > 1 &&
            dn_network_current_batch(t->nets[0]) % t->params.sync_every == 0) {
            sync_start = now_seconds();
            st = darknet_sync(t);
            sync_seconds = now_seconds() - sync_start;
            synced = 1;
        }
    } else {
        st = run_on_replicas(t, j, replica_gradients);
        if (st == DN_OK) {
            collect_layer_stats(t, j);
            sync_start = now_seconds();
            st = reduce(t, BUF_GRADS, 0);
            sync_seconds = now_seconds() - sync_start;
            synced = 1;
        }
        if (st == DN_OK) st = run_on_replicas(t, j, replica_update);
    }
    if (st == DN_OK) {
        t->steps++;
        if (t->warmup_left > 0 && --t->warmup_left == 0) {
            /* the warm-up is over: every replica starts from replica 0 */
            st = copy_replica0(t);
            if (st == DN_OK && t->params.sync == DN_SYNC_DARKNET)
                for (int r = 0; r < t->n; r++)
                    t->nets[r]->hp.learning_rate = t->base_learning_rate * t->n;
        }
    }
    if (st == DN_OK) {
        merge_results(t, j, &result);
        result.synced = synced;
        result.sync_seconds = sync_seconds;
        result.train.learning_rate = j->result[0].learning_rate;
        if (out) *out = result;
    }
    free(j);
    return st;
}

DN_API dn_status dn_trainer_save_weights(dn_trainer *t, const char *path)
{
    if (!t) return DN_FAIL(DN_ERR_ARG, "trainer must not be NULL");
    if (t->n > 1 && t->params.sync_bn_stats) DN_TRY(average(t, BUF_STATS));
    return dn_network_save_weights(t->nets[0], path);
}
