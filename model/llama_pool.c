#include "model/llama_pool.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/gemm.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Workers spin (about 0.2 ms) for the next dispatch before sleeping on the
 * condition variable: a forward pass posts ~50 short dispatches per window,
 * and a futex wake-up under a hypervisor costs about as much as a small
 * task (spinning took the house model from 6.2k to 9.7k tokens/s on 2
 * threads). */
#define SPIN_ITERS 5000

struct qp_pool {
    int n_threads;
    pthread_t *workers;          /* n_threads - 1; the caller is thread 0 */
    pthread_mutex_t mu;
    pthread_cond_t start_cv;     /* a new generation was posted */
    pthread_cond_t done_cv;      /* the last worker finished its part */
    atomic_ulong generation;     /* bumped (under mu) for every dispatch */
    atomic_int running;          /* workers still inside the current run */
    int quit;                    /* under mu */
    qp_pool_fn fn;               /* job: written before generation is bumped */
    void *arg;
    size_t n_tasks;
    atomic_size_t next;          /* next task to hand out */
    float *pack;                 /* qp_mm_pack's buffer, grown as needed */
    size_t pack_cap;             /* floats */
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

typedef struct {
    qp_pool *p;
    int id;
} worker_arg;

/* Tasks are handed out dynamically; any thread may run any task, which is
 * fine because a task's output does not depend on who runs it. */
static void drain(qp_pool *p, qp_pool_fn fn, void *arg, size_t n_tasks, int thread)
{
    for (;;) {
        size_t t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (t >= n_tasks)
            return;
        fn(arg, t, thread);
    }
}

static void *worker_main(void *varg)
{
    worker_arg *wa = varg;
    qp_pool *p = wa->p;
    int id = wa->id;
    free(wa);
    unsigned long seen = 0;
    for (;;) {
        unsigned long gen = atomic_load_explicit(&p->generation, memory_order_acquire);
        for (int i = 0; i < SPIN_ITERS && gen == seen; i++) {
            cpu_relax();
            gen = atomic_load_explicit(&p->generation, memory_order_acquire);
        }
        if (gen == seen) {
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->generation) == seen && !p->quit)
                pthread_cond_wait(&p->start_cv, &p->mu);
            int quit = p->quit;
            gen = atomic_load(&p->generation);
            pthread_mutex_unlock(&p->mu);
            if (quit)
                return NULL;
        }
        seen = gen;
        if (p->fn == NULL)   /* the quit dispatch */
            return NULL;
        drain(p, p->fn, p->arg, p->n_tasks, id);
        if (atomic_fetch_sub_explicit(&p->running, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

int qp_pool_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

int qp_pool_new(qp_pool **out, int n_threads)
{
    *out = NULL;
    if (n_threads < 1)
        return qp_error_set(QP_EUSAGE, "thread pool: %d threads requested, need at least 1", n_threads);
    qp_pool *p = qp_xcalloc(1, sizeof(*p));
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->next, 0);
    atomic_init(&p->generation, 0);
    atomic_init(&p->running, 0);
    if (n_threads > 1) {
        p->workers = qp_xcalloc((size_t)n_threads - 1, sizeof(pthread_t));
        for (int i = 1; i < n_threads; i++) {
            worker_arg *wa = qp_xmalloc(sizeof(*wa));
            wa->p = p;
            wa->id = i;
            int rc = pthread_create(&p->workers[i - 1], NULL, worker_main, wa);
            if (rc != 0) {
                free(wa);
                p->n_threads = i;   /* join only the threads that exist */
                qp_pool_free(p);
                return qp_error_set(QP_ERROR, "thread pool: cannot start thread %d of %d", i, n_threads);
            }
        }
    }
    *out = p;
    return 0;
}

void qp_pool_free(qp_pool *p)
{
    if (!p)
        return;
    /* A dispatch with no function wakes spinning workers; quit wakes
     * sleeping ones. */
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    p->fn = NULL;
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads && p->workers; i++)
        pthread_join(p->workers[i - 1], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p->workers);
    free(p->pack);
    free(p);
}

int qp_pool_threads(const qp_pool *p) { return p->n_threads; }

void qp_pool_run(qp_pool *p, size_t n_tasks, qp_pool_fn fn, void *arg)
{
    if (n_tasks == 0)
        return;
    if (p->n_threads == 1 || n_tasks == 1) {
        for (size_t t = 0; t < n_tasks; t++)
            fn(arg, t, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->running, p->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    drain(p, fn, arg, n_tasks, 0);
    for (int i = 0; i < SPIN_ITERS && atomic_load_explicit(&p->running, memory_order_acquire) > 0; i++)
        cpu_relax();
    if (atomic_load_explicit(&p->running, memory_order_acquire) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->running) > 0)
            pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}

/* ---- partitioned products ---- */

typedef struct {
    qp_gemm_path path;
    float *ap;
    const float *x;
    size_t ldx, n, in;
} pack_ctx;

static void pack_task(void *varg, size_t task, int thread)
{
    (void)thread;
    const pack_ctx *c = varg;
    qp_sgemm_pack_a(c->path, c->ap, task, QP_NOTRANS, c->n, c->in, 1.0f, c->x, c->ldx);
}

int qp_mm_pack(qp_pool *p, qp_mm_packed *out, const float *x, size_t ldx, size_t n, size_t in)
{
    out->ap = NULL;
    out->path = qp_gemm_path_active();
    size_t len = qp_sgemm_packed_size(out->path, n, in);
    if (len == 0)
        return -1;
    if (len > p->pack_cap) {
        p->pack = qp_xrealloc_array(p->pack, len, sizeof(float));
        p->pack_cap = len;
    }
    pack_ctx c = {out->path, p->pack, x, ldx, n, in};
    qp_pool_run(p, qp_sgemm_pack_parts(in), pack_task, &c);
    out->ap = p->pack;
    return 0;
}

void qp_mm_block(const qp_mm_packed *pk, const float *x, size_t ldx, size_t n, size_t in, const float *w, size_t nc,
                 float *y, size_t ldy)
{
    if (pk && pk->ap)
        qp_sgemm_packed(pk->path, pk->ap, n, in, QP_TRANS, nc, w, in, 0.0f, y, ldy);
    else
        qp_sgemm(QP_NOTRANS, QP_TRANS, n, nc, in, 1.0f, x, ldx, w, in, 0.0f, y, ldy);
}

typedef struct {
    const qp_mm_packed *pk;   /* x packed once (qp_mm_pack), or NULL */
    const float *x;
    size_t ldx, n, in;
    const qp_mm_job *jobs;
    size_t n_jobs;
    const size_t *first_block;  /* [n_jobs + 1]: task index of each job's block 0 */
} mm_ctx;

static void mm_task(void *varg, size_t task, int thread)
{
    (void)thread;
    const mm_ctx *c = varg;
    size_t j = 0;
    while (task >= c->first_block[j + 1])
        j++;
    const qp_mm_job *job = &c->jobs[j];
    size_t c0 = (task - c->first_block[j]) * QP_MM_BLOCK;
    size_t nc = job->out - c0 < QP_MM_BLOCK ? job->out - c0 : QP_MM_BLOCK;
    /* Y[:, c0:c0+nc] [n, nc] = X [n, in] · W[c0:c0+nc, :]ᵀ [in, nc] */
    qp_mm_block(c->pk, c->x, c->ldx, c->n, c->in, job->w + c0 * c->in, nc, job->y + c0, job->ldy);
    if (job->bias) {
        for (size_t r = 0; r < c->n; r++) {
            float *y = job->y + r * job->ldy + c0;
            for (size_t i = 0; i < nc; i++)
                y[i] += job->bias[c0 + i];
        }
    }
}

void qp_mm_batch(qp_pool *p, const float *x, size_t ldx, size_t n, size_t in,
                 const qp_mm_job *jobs, size_t n_jobs)
{
    size_t first[8 + 1];
    size_t *fb = n_jobs <= 8 ? first : qp_xrealloc_array(NULL, n_jobs + 1, sizeof(size_t));
    fb[0] = 0;
    for (size_t j = 0; j < n_jobs; j++)
        fb[j + 1] = fb[j] + (jobs[j].out + QP_MM_BLOCK - 1) / QP_MM_BLOCK;
    qp_mm_packed pk;
    int packed = n > 0 && qp_mm_pack(p, &pk, x, ldx, n, in) == 0;   /* else each block packs its own */
    mm_ctx c = {packed ? &pk : NULL, x, ldx, n, in, jobs, n_jobs, fb};
    if (n > 0)
        qp_pool_run(p, fb[n_jobs], mm_task, &c);
    if (fb != first)
        free(fb);
}
