// A pool of worker threads that spin briefly between jobs. A forward pass runs a dozen short parallel
// regions per layer (a batch-1 ViT-S product takes tens of microseconds); waking a sleeping thread for
// each took about a tenth of the time (futex wake-ups and context switches in perf). Workers spin on the
// job counter for a while after each job, then sleep on a condition variable. A job may hold more chunks
// than threads: each thread takes the next chunk as it comes free, so one that the host slows down (a
// shared machine, another process) leaves the rest of the job to the others.
#include "CKernels.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

enum { most_workers = 63, spin_nanoseconds = 200000 };

// The job: its fields change only under `job_lock`, and a chunk is claimed under it with the generation
// the worker was woken for, so a worker late from one job can never run a chunk of the next.
static pthread_mutex_t submit_lock = PTHREAD_MUTEX_INITIALIZER;  // one job at a time
static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int workers, sleepers;
static struct {
    vitmsn_task task;
    void *context;
    size_t chunks, next;
    size_t helpers, joined;  // the workers this job may take, and those that have joined it
} job;
static _Atomic uint64_t generation;
static _Atomic size_t done;
static _Thread_local int inside_pool;

static uint64_t nanoseconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static inline void relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

// Runs chunks of job `g` until none is left (or the job is another one); a worker only while the job has
// room for another helper.
static void run_chunks(uint64_t g, int helper) {
    int joined = !helper;
    for (;;) {
        pthread_mutex_lock(&job_lock);
        if (atomic_load_explicit(&generation, memory_order_relaxed) != g || job.next >= job.chunks || (!joined && job.joined == job.helpers)) {
            pthread_mutex_unlock(&job_lock);
            return;
        }
        if (!joined) job.joined++, joined = 1;
        size_t chunk = job.next++;
        vitmsn_task task = job.task;
        void *context = job.context;
        pthread_mutex_unlock(&job_lock);
        task(context, chunk);
        atomic_fetch_add_explicit(&done, 1, memory_order_release);
    }
}

static void *worker(void *unused) {
    (void)unused;
    inside_pool = 1;
    uint64_t seen = 0;
    for (;;) {
        uint64_t start = nanoseconds(), now;
        for (int spins = 0; (now = atomic_load_explicit(&generation, memory_order_acquire)) == seen; spins++) {
            if ((spins & 255) == 255 && nanoseconds() - start > spin_nanoseconds) {
                pthread_mutex_lock(&job_lock);
                sleepers++;
                while ((now = atomic_load_explicit(&generation, memory_order_acquire)) == seen) pthread_cond_wait(&wake, &job_lock);
                sleepers--;
                pthread_mutex_unlock(&job_lock);
                break;
            }
            relax();
        }
        seen = now;
        run_chunks(now, 1);
    }
    return 0;
}

// A forked child has none of the workers: it starts its own.
static void forget_workers(void) { workers = 0, sleepers = 0; }
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void watch_forks(void) { pthread_atfork(0, 0, forget_workers); }

int vitmsn_parallel_run(size_t chunks, size_t threads, vitmsn_task task, void *context) {
    if (chunks == 0) return 0;
    pthread_once(&fork_once, watch_forks);
    if (inside_pool || pthread_mutex_trylock(&submit_lock) != 0) return -1;  // nested, or another job runs
    size_t helpers = (chunks < threads ? chunks : threads) - 1;
    size_t wanted = helpers < most_workers ? helpers : most_workers;
    while (workers < (int)wanted) {
        pthread_t thread;
        if (pthread_create(&thread, 0, worker, 0) != 0) break;
        pthread_detach(thread);
        workers++;
    }
    if (workers == 0 && helpers > 0) {
        pthread_mutex_unlock(&submit_lock);
        return -1;
    }
    pthread_mutex_lock(&job_lock);
    job.task = task, job.context = context, job.chunks = chunks, job.next = 0;
    job.helpers = helpers, job.joined = 0;
    atomic_store_explicit(&done, 0, memory_order_relaxed);
    uint64_t g = atomic_fetch_add_explicit(&generation, 1, memory_order_release) + 1;
    if (sleepers > 0) pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&job_lock);
    inside_pool = 1;
    run_chunks(g, 0);
    inside_pool = 0;
    while (atomic_load_explicit(&done, memory_order_acquire) < chunks) relax();
    pthread_mutex_unlock(&submit_lock);
    return 0;
}
