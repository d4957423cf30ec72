#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DN_CPU_RELAX() _mm_pause()
#else
#define DN_CPU_RELAX() ((void)0)
#endif

/* Spin this many relax loops (tens of microseconds) before sleeping: layers
 * on small maps take a few microseconds, a condition-variable wake-up more. */
#define DN_POOL_SPIN 20000

struct dn_pool {
    int n_threads;               /* including the caller */
    pthread_t *workers;          /* n_threads - 1 */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t done_cond;
    _Atomic unsigned long generation;
    _Atomic int next_task;
    _Atomic int workers_done;
    int stopping;
    /* the job of the current generation */
    dn_task_fn fn;
    void *ctx;
    int n_tasks;
    int pinned;                  /* task i runs on thread i (dn_pool_run_each) */
};

/* The pool whose task this thread is running: a nested call on the same pool
 * runs inline (it would wait for itself); other pools are free to use. */
static _Thread_local dn_pool *current_pool = NULL;

typedef struct {
    dn_pool *pool;
    int thread_index;
} worker_arg;

static void run_tasks(dn_pool *pool, int thread_index)
{
    dn_pool *outer = current_pool;
    current_pool = pool;
    if (pool->pinned) {
        if (thread_index < pool->n_tasks) pool->fn(pool->ctx, thread_index, thread_index);
    } else {
        for (;;) {
            int task = atomic_fetch_add_explicit(&pool->next_task, 1, memory_order_relaxed);
            if (task >= pool->n_tasks) break;
            pool->fn(pool->ctx, task, thread_index);
        }
    }
    current_pool = outer;
}

static void *worker_main(void *p)
{
    worker_arg arg = *(worker_arg *)p;
    free(p);
    dn_pool *pool = arg.pool;
    unsigned long seen_generation = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&pool->generation, memory_order_acquire) == seen_generation &&
               spins < DN_POOL_SPIN) {
            DN_CPU_RELAX();
            spins++;
        }
        pthread_mutex_lock(&pool->lock);
        while (atomic_load(&pool->generation) == seen_generation && !pool->stopping)
            pthread_cond_wait(&pool->wake, &pool->lock);
        int stop = pool->stopping;
        seen_generation = atomic_load(&pool->generation);
        pthread_mutex_unlock(&pool->lock);
        if (stop) return NULL;
        run_tasks(pool, arg.thread_index);
        if (atomic_fetch_add_explicit(&pool->workers_done, 1, memory_order_acq_rel) + 1 ==
            pool->n_threads - 1) {
            pthread_mutex_lock(&pool->lock);
            pthread_cond_signal(&pool->done_cond);
            pthread_mutex_unlock(&pool->lock);
        }
    }
}

static void stop_workers(dn_pool *pool, int n_started)
{
    pthread_mutex_lock(&pool->lock);
    pool->stopping = 1;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < n_started; i++) pthread_join(pool->workers[i], NULL);
}

dn_status dn_pool_create(int n_threads, dn_pool **out)
{
    *out = NULL;
    if (n_threads < 1) return DN_FAIL(DN_ERR_ARG, "thread count must be >= 1, got %d", n_threads);
    dn_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return DN_FAIL(DN_ERR_OOM, "out of memory creating a thread pool");
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done_cond, NULL);
    if (n_threads > 1) {
        pool->workers = calloc((size_t)n_threads - 1, sizeof *pool->workers);
        if (!pool->workers) {
            dn_pool_free(pool);
            return DN_FAIL(DN_ERR_OOM, "out of memory creating a thread pool");
        }
        for (int i = 0; i < n_threads - 1; i++) {
            worker_arg *arg = malloc(sizeof *arg);
            if (arg) {
                arg->pool = pool;
                arg->thread_index = i + 1;
            }
            if (!arg || pthread_create(&pool->workers[i], NULL, worker_main, arg) != 0) {
                free(arg);
                stop_workers(pool, i);
                pool->n_threads = 1; /* nothing left to join in dn_pool_free */
                dn_pool_free(pool);
                return DN_FAIL(DN_ERR_OOM, "could not start worker thread %d of %d", i + 1,
                               n_threads - 1);
            }
        }
    }
    *out = pool;
    return DN_OK;
}

void dn_pool_free(dn_pool *pool)
{
    if (!pool) return;
    if (pool->n_threads > 1 && pool->workers) stop_workers(pool, pool->n_threads - 1);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->wake);
    pthread_cond_destroy(&pool->done_cond);
    free(pool->workers);
    free(pool);
}

int dn_pool_threads(const dn_pool *pool) { return pool ? pool->n_threads : 1; }

static void run_job(dn_pool *pool, int n_tasks, dn_task_fn fn, void *ctx, int pinned)
{
    pthread_mutex_lock(&pool->lock);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n_tasks = n_tasks;
    pool->pinned = pinned;
    atomic_store(&pool->next_task, 0);
    atomic_store(&pool->workers_done, 0);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);

    run_tasks(pool, 0);

    int spins = 0;
    while (atomic_load_explicit(&pool->workers_done, memory_order_acquire) < pool->n_threads - 1 &&
           spins < DN_POOL_SPIN) {
        DN_CPU_RELAX();
        spins++;
    }
    pthread_mutex_lock(&pool->lock);
    while (atomic_load(&pool->workers_done) < pool->n_threads - 1)
        pthread_cond_wait(&pool->done_cond, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
}

void dn_pool_run(dn_pool *pool, int n_tasks, dn_task_fn fn, void *ctx)
{
    if (n_tasks <= 0) return;
    if (!pool || pool->n_threads == 1 || n_tasks == 1 || current_pool == pool) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    run_job(pool, n_tasks, fn, ctx, 0);
}

void dn_pool_run_each(dn_pool *pool, dn_task_fn fn, void *ctx)
{
    if (!pool || pool->n_threads == 1 || current_pool == pool) {
        fn(ctx, 0, 0);
        return;
    }
    run_job(pool, pool->n_threads, fn, ctx, 1);
}

void dn_split_range(int n, int parts, int part, int *begin, int *end)
{
    int base = n / parts, extra = n % parts;
    *begin = part * base + (part < extra ? part : extra);
    *end = *begin + base + (part < extra ? 1 : 0);
}
