/* The learner's GRU over whole sequences and the actor's whole step, in C.

   PyTorch's gate equations: r, z = sigmoid(W_i{r,z} x + b_i{r,z} + W_h{r,z} h_prev + b_h{r,z});
   n = tanh(W_in x + b_in + r * (W_hn h_prev + b_hn)); h = (1 - z) * n + z * h_prev.

   On the CPU an update's GRU steps are small ([G, M, 64] per step): as torch ops, each step
   of each pass costs a matmul call that packs its operands, six to eight element-wise ops
   that each read and write the whole block, and the Python around them. Here one call runs
   all T steps: per block of 6 rows the recurrent matmul (register-blocked, below), then the
   gates, while the block is still in cache. Rows are independent sequences, so they are
   split among threads. The input projections W_ih x of all steps stay one torch matmul.
   Built and loaded by wqmix_cli/policy/native.py; float32, contiguous.

   Layouts of the learner's kernels (row = (g * T + t) * M + m: network g, step t, sequence m):
     gates_x [G, T, M, 3H]  input projections W_ih x, without b_ih
     b_ih, b_hh [G, 3H]
     w_t     [G, H, 3H]     W_hh transposed (forward); w_hh [G, 3H, H] as stored (backward)
     rz      [G, T, M, 2H]  r and z after the sigmoid
     h_n     [G, T, M, H]   W_hn h_prev + b_hn
     n       [G, T, M, H]   candidate after the tanh
     out     [G, T, M, H]   hidden states; out at t - 1 is h_prev, and h_prev = 0 at t = 0
*/
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

/* Clamped so that expf never overflows: under -ffast-math the division may become a
   reciprocal estimate and one Newton step, which turns 1 / inf into NaN (an agent whose
   pre-activations passed 88 then carried NaN where torch saturates). sigmoid(+-80) is
   already 1 or 0 to float precision. */
static float sigmoid(float x)
{
    x = x < -80.0f ? -80.0f : (x > 80.0f ? 80.0f : x);
    return 1.0f / (1.0f + expf(-x));
}

/* GCC/Clang vectors: AVX registers on x86, pairs of NEON registers on ARM. */
typedef float vec8 __attribute__((vector_size(32)));
typedef float vec8u __attribute__((vector_size(32), aligned(4), may_alias));

#define RB 6 /* rows per register block: 6 x 16 sums in 12 vector registers */

/* Columns [k0, k0 + 16) of rows < rb: Y = C + X W. Inlined with a constant rb, so the sums
   stay in registers while W's rows stream past, each loaded once for all rb rows. */
static inline __attribute__((always_inline)) void gemm_block(int rb, long D, long K, long k0,
    const float *restrict X, long ldx, const float *restrict W, const float *restrict C, long ldc,
    float *restrict Y, long ldy)
{
    vec8 a[RB][2];
    for (int i = 0; i < rb; i++)
        for (int v = 0; v < 2; v++)
            a[i][v] = C != NULL ? (vec8)*(const vec8u *)(C + i * ldc + k0 + 8 * v) : (vec8){0};
    for (long d = 0; d < D; d++) {
        const vec8 w0 = *(const vec8u *)(W + d * K + k0), w1 = *(const vec8u *)(W + d * K + k0 + 8);
        for (int i = 0; i < rb; i++) {
            const float x = X[i * ldx + d];
            a[i][0] += x * w0;
            a[i][1] += x * w1;
        }
    }
    for (int i = 0; i < rb; i++)
        for (int v = 0; v < 2; v++)
            *(vec8u *)(Y + i * ldy + k0 + 8 * v) = a[i][v];
}

/* Y [R, K] = C [R, K] + X [R, D] W [D, K]; X, C and Y rows ldx, ldc and ldy apart (ldc = 0
   repeats one row of C, a bias; C = NULL adds nothing); W row-major (a weight transposed). */
static void gemm_rows(long R, long D, long K, const float *X, long ldx, const float *W,
                      const float *C, long ldc, float *Y, long ldy)
{
    const long k16 = K / 16 * 16;
    for (long r = 0; r < R;) {
        /* The last rows too share one pass over W: the actor's 3 rows at one env took twice
           as long one at a time (each row's sums wait on the latency of its own FMAs). */
        const long rb = R - r >= RB ? RB : R - r;
        const float *x = X + r * ldx, *c = C != NULL ? C + r * ldc : NULL;
        float *y = Y + r * ldy;
        for (long k0 = 0; k0 < k16; k0 += 16) {
#define BLOCK_OF(n) case n: gemm_block(n, D, K, k0, x, ldx, W, c, ldc, y, ldy); break;
            switch (rb) { BLOCK_OF(6) BLOCK_OF(5) BLOCK_OF(4) BLOCK_OF(3) BLOCK_OF(2) BLOCK_OF(1) }
#undef BLOCK_OF
        }
        for (long i = 0; i < rb; i++)
            for (long k = k16; k < K; k++) {
                float sum = c != NULL ? c[i * ldc + k] : 0.0f;
                for (long d = 0; d < D; d++)
                    sum += x[i * ldx + d] * W[d * K + k];
                y[i * ldy + k] = sum;
            }
        r += rb;
    }
}

/* One row's GRU step from its input projection x (b_ih still to add: bx) and
   gh = W_hh h_prev + b_hh: r and z into rz [2H], gh's n part into hn, the candidate into n,
   the new state into h. prev (NULL: zeros) may be h itself. */
static inline void gru_gates(long H, const float *restrict x, const float *restrict bx,
                             const float *restrict gh, const float *prev, float *restrict rz,
                             float *restrict hn, float *restrict n, float *h)
{
#pragma omp simd
    for (long j = 0; j < 2 * H; j++)
        rz[j] = sigmoid(x[j] + bx[j] + gh[j]);
#pragma omp simd
    for (long j = 0; j < H; j++) {
        const float nv = 2.0f * sigmoid(2.0f * (x[2 * H + j] + bx[2 * H + j] + rz[j] * gh[2 * H + j])) - 1.0f;  /* tanh */
        hn[j] = gh[2 * H + j];
        n[j] = nv;
        h[j] = nv + rz[H + j] * ((prev != NULL ? prev[j] : 0.0f) - nv);
    }
}

/* The learner's arrays (layouts above) and the rows [m0, m1) one thread takes. */
struct gru_job {
    long G, T, M, H, m0, m1;
    const float *gates_x, *b_ih, *b_hh, *w, *grad_out;
    float *rz, *h_n, *n, *out, *d_gates_h, *d_gates_x;
};

static void forward_rows(const struct gru_job *job)
{
    const long G = job->G, T = job->T, M = job->M, H = job->H;
    float *gh = malloc(sizeof(float) * RB * 3 * H);
    if (gh == NULL)
        abort();
    for (long t = 0; t < T; t++)
        for (long g = 0; g < G; g++)
            for (long m = job->m0; m < job->m1; m += RB) {
                const long rows = job->m1 - m < RB ? job->m1 - m : RB, first = (g * T + t) * M + m;
                const float *b = job->b_hh + g * 3 * H, *bx = job->b_ih + g * 3 * H;
                if (t > 0)  /* gh = b_hh + W_hh h_prev */
                    gemm_rows(rows, H, 3 * H, job->out + (first - M) * H, H, job->w + g * H * 3 * H,
                              b, 0, gh, 3 * H);
                else
                    for (long i = 0; i < rows; i++)
                        for (long k = 0; k < 3 * H; k++)
                            gh[i * 3 * H + k] = b[k];
                for (long i = 0; i < rows; i++) {
                    const long row = first + i;
                    gru_gates(H, job->gates_x + row * 3 * H, bx, gh + i * 3 * H,
                              t > 0 ? job->out + (row - M) * H : NULL, job->rz + row * 2 * H,
                              job->h_n + row * H, job->n + row * H, job->out + row * H);
                }
            }
    free(gh);
}

/* Step t's gradient, from dh (reaching h_t):
     d_gates_h[t] = [d r_pre, d z_pre, d n_pre * r]   (to be multiplied by W_hh)
     d_gates_x[t] = [d r_pre, d z_pre, d n_pre]
     dh_z         = dh * z                           (the direct path to h_{t-1})
   and dh for t - 1 is dh_z + d_gates_h[t] W_hh + grad_out[t - 1]. */
static void backward_rows(const struct gru_job *job)
{
    const long G = job->G, T = job->T, M = job->M, H = job->H, own = job->m1 - job->m0;
    float *dh_z = malloc(sizeof(float) * G * own * H), *dh = malloc(sizeof(float) * RB * H);
    if (dh_z == NULL || dh == NULL)
        abort();
    for (long t = T - 1; t >= 0; t--)
        for (long g = 0; g < G; g++)
            for (long m = job->m0; m < job->m1; m += RB) {
                const long rows = job->m1 - m < RB ? job->m1 - m : RB, first = (g * T + t) * M + m;
                float *dz = dh_z + (g * own + m - job->m0) * H;
                if (t < T - 1)
                    gemm_rows(rows, 3 * H, H, job->d_gates_h + (first + M) * 3 * H, 3 * H,
                              job->w + g * 3 * H * H, dz, H, dh, H);
                for (long i = 0; i < rows; i++) {
                    const long row = first + i;
                    const float *restrict go = job->grad_out + row * H, *restrict later = dh + i * H;
                    const float *restrict r = job->rz + row * 2 * H, *restrict z = r + H;
                    const float *restrict hn = job->h_n + row * H, *restrict nv = job->n + row * H;
                    const float *restrict prev = t > 0 ? job->out + (row - M) * H : NULL;
                    float *restrict dgh = job->d_gates_h + row * 3 * H, *restrict dgx = job->d_gates_x + row * 3 * H;
                    float *restrict dhz = dz + i * H;
#pragma omp simd
                    for (long j = 0; j < H; j++) {
                        const float d = (t < T - 1 ? later[j] : 0.0f) + go[j];
                        const float d_n = d * (1.0f - z[j]) * (1.0f - nv[j] * nv[j]);
                        const float d_z = d * ((prev != NULL ? prev[j] : 0.0f) - nv[j]) * z[j] * (1.0f - z[j]);
                        const float d_r = d_n * hn[j] * r[j] * (1.0f - r[j]);
                        dgh[j] = d_r;
                        dgh[H + j] = d_z;
                        dgh[2 * H + j] = d_n * r[j];
                        dgx[j] = d_r;
                        dgx[H + j] = d_z;
                        dgx[2 * H + j] = d_n;
                        dhz[j] = d * z[j];
                    }
                }
            }
    free(dh_z);
    free(dh);
}

struct gru_task {
    void (*run)(const struct gru_job *);
    struct gru_job job;
};

static void *gru_thread(void *task)
{
    const struct gru_task *t = task;
    t->run(&t->job);
    return NULL;
}

/* The M rows split among up to `threads` threads (the caller's among them), in multiples
   of RB rows; a thread that cannot be started leaves its rows to the caller. */
static void split_rows(void (*run)(const struct gru_job *), struct gru_job job, long threads)
{
    const long blocks = (job.M + RB - 1) / RB;
    threads = threads < 1 ? 1 : threads > blocks ? blocks : threads;
    const long per = (blocks + threads - 1) / threads * RB;
    struct gru_task tasks[threads];
    pthread_t ids[threads];
    int started[threads];
    for (long k = 0; k < threads; k++) {
        tasks[k].run = run;
        tasks[k].job = job;
        tasks[k].job.m0 = k * per < job.M ? k * per : job.M;
        tasks[k].job.m1 = (k + 1) * per < job.M ? (k + 1) * per : job.M;
        started[k] = k > 0 && pthread_create(&ids[k], NULL, gru_thread, &tasks[k]) == 0;
    }
    for (long k = 0; k < threads; k++)
        if (!started[k])
            run(&tasks[k].job);
    for (long k = 1; k < threads; k++)
        if (started[k])
            pthread_join(ids[k], NULL);
}

/* The forward over all T steps from h_{-1} = 0: fills rz, h_n, n and out. */
void gru_forward(long G, long T, long M, long H, long threads, const float *gates_x,
                 const float *b_ih, const float *w_t, const float *b_hh,
                 float *rz, float *h_n, float *n, float *out)
{
    struct gru_job job = {G, T, M, H, 0, M, gates_x, b_ih, b_hh, w_t, NULL, rz, h_n, n, out, NULL, NULL};
    split_rows(forward_rows, job, threads);
}

/* The backward over all T steps, from grad_out [G, T, M, H] (the gradient reaching each
   h_t from outside the recurrence): fills d_gates_h and d_gates_x [G, T, M, 3H]. */
void gru_backward(long G, long T, long M, long H, long threads, const float *grad_out,
                  const float *rz, const float *h_n, const float *n, const float *out,
                  const float *w_hh, float *d_gates_h, float *d_gates_x)
{
    struct gru_job job = {G, T, M, H, 0, M, NULL, NULL, NULL, w_hh, grad_out,
                          (float *)rz, (float *)h_n, (float *)n, (float *)out, d_gates_h, d_gates_x};
    split_rows(backward_rows, job, threads);
}

/* The index of the first largest of v[a] over the a with ok[a] (0 when none is). */
static long first_max(long A, const float *v, const unsigned char *ok)
{
    long best = -1;
    for (long a = 0; a < A; a++)
        if (ok[a] && (best < 0 || v[a] > v[best]))
            best = a;
    return best < 0 ? 0 : best;
}

/* One epsilon-greedy step of the actor's GRU agent for R = E * N rows (E envs, N agents;
   row r is agent r % N), from the observations to the actions, in one call: the agent's
   inputs (observation, one-hot last action, one-hot agent id) enter fc1 as the observation
   part plus two weight rows; then ReLU, one GRU step (PyTorch's equations, as above), fc2
   and the choice. The same numbers as the torch path up to float rounding; the random
   draws come from the caller (torch's generator), so both paths take the same actions.
   Everything sits in one struct that the caller keeps between steps: passing twenty
   arguments through ctypes cost more than the step's arithmetic at one env. */
typedef struct {
    long R, N, O, A, H;
    const float *w1t, *b1;     /* fc1 transposed [O + A + N, H], [H] */
    const float *w_iht, *b_ih; /* [H, 3H], [3H] */
    const float *w_hht, *b_hh; /* [H, 3H], [3H] */
    const float *w2, *b2;      /* fc2 as stored [A, H], [A] */
    float *hidden;             /* [R, H]: h_prev in, h out */
    const float *obs;          /* [R, O] */
    const unsigned char *avail; /* [R, A] bool */
    long *actions;             /* [R] int64: the last actions in (-1: none), this step's out */
    const float *draws;        /* [R, A + 1] uniform draws, NULL: no exploration; the last of a
                                  row is the coin (explore when < epsilon), the others score the
                                  available actions for exploring */
    float epsilon;
} ActorStep;

void actor_step(const ActorStep *s)
{
    const long R = s->R, N = s->N, O = s->O, A = s->A, H = s->H;
    float x[RB * H], gi[RB * 3 * H], gh[RB * 3 * H], rz[2 * H], hn[H], cand[H], q[A];
    for (long r0 = 0; r0 < R; r0 += RB) {
        const long M = R - r0 < RB ? R - r0 : RB;
        gemm_rows(M, O, H, s->obs + r0 * O, O, s->w1t, s->b1, 0, x, H);
        /* A block reads its rows' last actions here, before it overwrites them below. */
        for (long m = 0; m < M; m++) {
            const long r = r0 + m, last = s->actions[r];
            const float *restrict id_row = s->w1t + (O + A + r % N) * H;
            const float *restrict act_row = last >= 0 ? s->w1t + (O + last) * H : NULL;
            float *restrict xm = x + m * H;
#pragma omp simd
            for (long k = 0; k < H; k++) {
                float v = xm[k] + id_row[k] + (act_row != NULL ? act_row[k] : 0.0f);
                xm[k] = v > 0.0f ? v : 0.0f;
            }
        }
        gemm_rows(M, H, 3 * H, x, H, s->w_iht, NULL, 0, gi, 3 * H);
        gemm_rows(M, H, 3 * H, s->hidden + r0 * H, H, s->w_hht, s->b_hh, 0, gh, 3 * H);
        for (long m = 0; m < M; m++) {
            const long r = r0 + m;
            float *h = s->hidden + r * H;
            gru_gates(H, gi + m * 3 * H, s->b_ih, gh + m * 3 * H, h, rz, hn, cand, h);
            for (long a = 0; a < A; a++) {
                const float *restrict w = s->w2 + a * H;
                float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                for (long j = 0; j < H; j++)
                    sum += w[j] * h[j];
                q[a] = s->b2[a] + sum;
            }
            const unsigned char *ok = s->avail + r * A;
            long choice = first_max(A, q, ok);
            if (s->draws != NULL && s->draws[r * (A + 1) + A] < s->epsilon)
                choice = first_max(A, s->draws + r * (A + 1), ok);
            s->actions[r] = choice;
        }
    }
}
