/* A small thread pool: one per network, sized by `threads`.
 *
 * dn_pool_run(pool, n_tasks, fn, ctx) calls fn(ctx, task, thread) once for
 * every task in [0, n_tasks), spread over the pool's threads (the calling
 * thread takes part), and returns when all are done.  A NULL pool, a pool of
 * one thread, or a call from inside a task of the same pool runs everything
 * inline (tasks may use other pools: a replica's thread drives its network's
 * own pool).
 * Work is split by task index only, so results never depend on how many
 * threads ran them as long as each task writes its own outputs. */
#ifndef DN_POOL_H
#define DN_POOL_H

#include "darknet.h"

typedef struct dn_pool dn_pool;
typedef void (*dn_task_fn)(void *ctx, int task, int thread);

dn_status dn_pool_create(int n_threads, dn_pool **out);
void dn_pool_free(dn_pool *pool);
int dn_pool_threads(const dn_pool *pool);
void dn_pool_run(dn_pool *pool, int n_tasks, dn_task_fn fn, void *ctx);
/* fn(ctx, i, i) once on each thread i of the pool (the caller is thread 0),
 * concurrently: for work bound to a thread, such as a replica's. */
void dn_pool_run_each(dn_pool *pool, dn_task_fn fn, void *ctx);

/* Split [0, n) into `parts` nearly equal ranges; range `part` is [*begin, *end). */
void dn_split_range(int n, int parts, int part, int *begin, int *end);

#endif
