// GEMM side by side on the model's shapes: this project's kernels (Sources/CKernels, compiled in, split over
// threads exactly as the library splits them), Debian's OpenBLAS, BLIS and oneDNN, and the FMA peak.
// Built and driven by scripts/bench_gemm.py, which adds ONNX Runtime's MLAS and interleaves the rounds.
//
//   bench_gemm LIBRARY THREADS SECONDS SHAPE...    SHAPE = MxNxK (B a constant weight, stored (N, K) as
//                                                  nn.Linear keeps it) or MxNxK:t (A stored K×M, B K×N:
//                                                  the backward's weight gradient, nothing constant)
// LIBRARY: vitmsn | openblas | blis | onednn | peak. One line per shape: "SHAPE milliseconds".
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <blis.h>
#include <oneapi/dnnl/dnnl.h>

#include "CKernels.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct {
    int m, n, k, transposed;
    float *a, *b, *c;
    void *state;  // a library's prepared product
} shape;

typedef void (*runner)(shape *s, int threads);

// ---- this project: B packed once when constant; otherwise packed per call, as the library does.
typedef struct {
    vitmsn_gemm_call call;
} part_job;

static void *run_part(void *arg) {
    vitmsn_gemm_packed(&((part_job *)arg)->call);
    return 0;
}

static float *vitmsn_pack(shape *s) {
    float *packed = aligned_alloc(64, (vitmsn_gemm_packed_count(s->k, s->n) * 4 + 63) / 64 * 64);
    if (s->transposed) vitmsn_gemm_pack_b(s->b, s->n, 0, s->k, s->n, 0, (s->n + vitmsn_gemm_panel_width() - 1) / vitmsn_gemm_panel_width(), packed);
    else vitmsn_gemm_pack_b(s->b, s->k, 1, s->k, s->n, 0, (s->n + vitmsn_gemm_panel_width() - 1) / vitmsn_gemm_panel_width(), packed);
    return packed;
}

static void run_vitmsn(shape *s, int threads) {
    float *packed = s->transposed ? vitmsn_pack(s) : s->state;
    vitmsn_gemm_call call = {
        .m = s->m, .n = s->n, .k = s->k, .a = s->a, .lda = s->transposed ? s->m : s->k, .transpose_a = s->transposed,
        .packed_b = packed, .c = s->c, .ldc = s->n, .epilogue = {.alpha = 1, .beta = 0, .bias = 0, .activation = -1},
        .m0 = 0, .m1 = s->m, .n0 = 0, .n1 = s->n,
    };
    size_t parts = vitmsn_gemm_parts(&call, threads);
    part_job jobs[16];
    pthread_t workers[16];
    for (size_t p = 0; p < parts; p++) jobs[p].call = vitmsn_gemm_part(&call, p, parts);
    for (size_t p = 1; p < parts; p++) pthread_create(&workers[p], 0, run_part, &jobs[p]);
    run_part(&jobs[0]);
    for (size_t p = 1; p < parts; p++) pthread_join(workers[p], 0);
    if (s->transposed) free(packed);
}

// ---- OpenBLAS, through dlopen so that its CBLAS symbols cannot clash with BLIS's.
typedef void (*cblas_sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
static cblas_sgemm_fn openblas_sgemm;

static void run_openblas(shape *s, int threads) {
    (void)threads;
    if (s->transposed) openblas_sgemm(101, 112, 111, s->m, s->n, s->k, 1, s->a, s->m, s->b, s->n, 0, s->c, s->n);
    else openblas_sgemm(101, 111, 112, s->m, s->n, s->k, 1, s->a, s->k, s->b, s->k, 0, s->c, s->n);
}

// ---- BLIS's typed API.
static void run_blis(shape *s, int threads) {
    (void)threads;
    float one = 1, zero = 0;
    if (s->transposed) bli_sgemm(BLIS_TRANSPOSE, BLIS_NO_TRANSPOSE, s->m, s->n, s->k, &one, s->a, s->m, 1, s->b, s->n, 1, &zero, s->c, s->n, 1);
    else bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_TRANSPOSE, s->m, s->n, s->k, &one, s->a, s->k, 1, s->b, s->k, 1, &zero, s->c, s->n, 1);
}

// ---- oneDNN matmul; a constant B is reordered once into the layout the primitive picks.
typedef struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_t matmul;
    dnnl_memory_t a, b, c;
} onednn_state;

#define CHECK(x) do { if ((x) != dnnl_success) { fprintf(stderr, "oneDNN: %s failed\n", #x); exit(1); } } while (0)

static onednn_state *onednn_prepare(shape *s) {
    onednn_state *o = calloc(1, sizeof *o);
    CHECK(dnnl_engine_create(&o->engine, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&o->stream, o->engine, dnnl_stream_default_flags));
    dnnl_memory_desc_t a_md, b_md, b_any, c_md;
    dnnl_dims_t a_dims = {s->m, s->k}, b_dims = {s->k, s->n}, c_dims = {s->m, s->n};
    CHECK(dnnl_memory_desc_init_by_tag(&a_md, 2, a_dims, dnnl_f32, s->transposed ? dnnl_ba : dnnl_ab));
    CHECK(dnnl_memory_desc_init_by_tag(&b_md, 2, b_dims, dnnl_f32, s->transposed ? dnnl_ab : dnnl_ba));
    CHECK(dnnl_memory_desc_init_by_tag(&b_any, 2, b_dims, dnnl_f32, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&c_md, 2, c_dims, dnnl_f32, dnnl_ab));
    dnnl_matmul_desc_t desc;
    CHECK(dnnl_matmul_desc_init(&desc, &a_md, s->transposed ? &b_md : &b_any, 0, &c_md));
    dnnl_primitive_desc_t pd;
    CHECK(dnnl_primitive_desc_create(&pd, &desc, 0, o->engine, 0));
    CHECK(dnnl_primitive_create(&o->matmul, pd));
    CHECK(dnnl_memory_create(&o->a, &a_md, o->engine, s->a));
    CHECK(dnnl_memory_create(&o->c, &c_md, o->engine, s->c));
    dnnl_memory_t source;
    CHECK(dnnl_memory_create(&source, &b_md, o->engine, s->b));
    if (s->transposed) {
        o->b = source;
    } else {
        const dnnl_memory_desc_t *packed_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        CHECK(dnnl_memory_create(&o->b, packed_md, o->engine, DNNL_MEMORY_ALLOCATE));
        dnnl_primitive_desc_t reorder_pd;
        CHECK(dnnl_reorder_primitive_desc_create(&reorder_pd, &b_md, o->engine, packed_md, o->engine, 0));
        dnnl_primitive_t reorder;
        CHECK(dnnl_primitive_create(&reorder, reorder_pd));
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, source}, {DNNL_ARG_TO, o->b}};
        CHECK(dnnl_primitive_execute(reorder, o->stream, 2, args));
        CHECK(dnnl_stream_wait(o->stream));
    }
    return o;
}

static void run_onednn(shape *s, int threads) {
    (void)threads;
    onednn_state *o = s->state;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, o->a}, {DNNL_ARG_WEIGHTS, o->b}, {DNNL_ARG_DST, o->c}};
    CHECK(dnnl_primitive_execute(o->matmul, o->stream, 3, args));
    CHECK(dnnl_stream_wait(o->stream));
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench_gemm vitmsn|openblas|blis|onednn|peak THREADS SECONDS SHAPE...\n");
        return 2;
    }
    const char *library = argv[1];
    int threads = atoi(argv[2]);
    double seconds = atof(argv[3]);
    if (strcmp(library, "peak") == 0) {
        printf("peak %.2f\n", vitmsn_fma_peak_gflops(threads, 40000000));
        return 0;
    }
    runner run = 0;
    if (strcmp(library, "vitmsn") == 0) run = run_vitmsn;
    if (strcmp(library, "blis") == 0) run = run_blis;
    if (strcmp(library, "onednn") == 0) run = run_onednn;
    if (strcmp(library, "openblas") == 0) {
        void *handle = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
        if (!handle) { fprintf(stderr, "%s\n", dlerror()); return 1; }
        openblas_sgemm = (cblas_sgemm_fn)dlsym(handle, "cblas_sgemm");
        void (*set_threads)(int) = (void (*)(int))dlsym(handle, "openblas_set_num_threads");
        if (set_threads) set_threads(threads);
        run = run_openblas;
    }
    if (!run) { fprintf(stderr, "unknown library %s\n", library); return 2; }
    if (strcmp(library, "blis") == 0) bli_thread_set_num_threads(threads);
    for (int i = 4; i < argc; i++) {
        shape s = {0};
        char mode[4] = "";
        if (sscanf(argv[i], "%dx%dx%d:%3s", &s.m, &s.n, &s.k, mode) < 3) { fprintf(stderr, "bad shape %s\n", argv[i]); return 2; }
        s.transposed = mode[0] == 't';
        s.a = malloc(sizeof(float) * s.m * s.k);
        s.b = malloc(sizeof(float) * s.k * s.n);
        s.c = malloc(sizeof(float) * s.m * s.n);
        for (long j = 0; j < (long)s.m * s.k; j++) s.a[j] = (float)((j * 7919) % 1000) / 1000.0f - 0.5f;
        for (long j = 0; j < (long)s.k * s.n; j++) s.b[j] = (float)((j * 104729) % 1000) / 1000.0f - 0.5f;
        if (run == run_vitmsn && !s.transposed) s.state = vitmsn_pack(&s);
        if (run == run_onednn) s.state = onednn_prepare(&s);
        run(&s, threads);  // warm-up
        double times[1000];
        int count = 0;
        double start = now();
        while (count < 1000 && (count < 5 || now() - start < seconds)) {
            double t0 = now();
            run(&s, threads);
            times[count++] = now() - t0;
        }
        for (int x = 1; x < count; x++)  // insertion sort for the median
            for (int y = x; y > 0 && times[y] < times[y - 1]; y--) { double t = times[y]; times[y] = times[y - 1]; times[y - 1] = t; }
        printf("%s %.4f\n", argv[i], times[count / 2] * 1000);
        fflush(stdout);
        free(s.a); free(s.b); free(s.c);
    }
    return 0;
}
