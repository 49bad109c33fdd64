/* The element-wise part of one GRU time step, fused, for G networks of M rows each.

   PyTorch's gate equations (r, z from sigmoid; n = tanh(x_n + r * (W_hn h + b_hn));
   h = (1 - z) * n + z * h_prev). The matmuls stay in torch (MKL); these loops replace the
   six to eight separate tensor ops per step, each of which reads and writes the whole
   [G, M, H] block. Built and loaded by wqmix_cli/policy/native.py; float32, contiguous.

   Layouts (row = (g * T + t) * M + m):
     gates_x [G, T, M, 3H]  input projections W_ih x, without b_ih
     gates_h [G, M, 3H]     W_hh h_prev of this step, without b_hh
     b_ih    [G, 3H]
     b_hh    [G, 3H]
     rz      [G, T, M, 2H]  r and z after the sigmoid
     h_n     [G, T, M, H]   W_hn h_prev + b_hn
     n       [G, T, M, H]   candidate after the tanh
     out     [G, T, M, H]   hidden states; out at t - 1 is h_prev
     zeros   [H]            h_prev at t = 0
*/
#include <math.h>
#include <stddef.h>

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

void gru_forward_step(long G, long T, long M, long H, long t, const float *gates_x,
                      const float *gates_h, const float *b_ih, const float *b_hh,
                      const float *zeros,
                      float *rz, float *h_n, float *n, float *out)
{
    for (long g = 0; g < G; g++) {
        const float *restrict bx = b_ih + g * 3 * H;
        const float *restrict b = b_hh + g * 3 * H;
        for (long m = 0; m < M; m++) {
            long row = (g * T + t) * M + m;
            const float *restrict x = gates_x + row * 3 * H;
            const float *restrict gh = gates_h + (g * M + m) * 3 * H;
            const float *restrict prev = t > 0 ? out + (row - M) * H : zeros;
            float *restrict rz_row = rz + row * 2 * H;
            float *restrict hn_row = h_n + row * H;
            float *restrict n_row = n + row * H;
            float *restrict h_row = out + row * H;
#pragma omp simd
            for (long j = 0; j < 2 * H; j++)
                rz_row[j] = sigmoid(x[j] + bx[j] + gh[j] + b[j]);
#pragma omp simd
            for (long j = 0; j < H; j++) {
                float hn = gh[2 * H + j] + b[2 * H + j];
                float nv = 2.0f * sigmoid(2.0f * (x[2 * H + j] + bx[2 * H + j] + rz_row[j] * hn)) - 1.0f;  /* tanh */
                float z = rz_row[H + j];
                hn_row[j] = hn;
                n_row[j] = nv;
                h_row[j] = nv + z * (prev[j] - nv);
            }
        }
    }
}

/* Step t of the backward: dh = dh_next + grad_out[t] (the gradient reaching h_t), then
     d_gates_h[t] = [d r_pre, d z_pre, d n_pre * r]   (to be multiplied by W_hh)
     d_gates_x[t] = [d r_pre, d z_pre, d n_pre]
     dh_z         = dh * z                           (the direct path to h_{t-1})
   dh_next and dh_z are [G, M, H]; grad_out, d_gates_h and d_gates_x are laid out like out
   and gates_x; the other arrays are the forward's. */
void gru_backward_step(long G, long T, long M, long H, long t, const float *grad_out,
                       const float *dh_next, const float *rz, const float *h_n,
                       const float *n, const float *out, const float *zeros,
                       float *d_gates_h, float *d_gates_x, float *dh_z)
{
    for (long g = 0; g < G; g++) {
        for (long m = 0; m < M; m++) {
            long row = (g * T + t) * M + m;
            const float *restrict go = grad_out + row * H;
            const float *restrict dn_next = dh_next + (g * M + m) * H;
            const float *restrict r = rz + row * 2 * H;
            const float *restrict z = r + H;
            const float *restrict hn = h_n + row * H;
            const float *restrict nv = n + row * H;
            const float *restrict prev = t > 0 ? out + (row - M) * H : zeros;
            float *restrict dgh = d_gates_h + row * 3 * H;
            float *restrict dgx = d_gates_x + row * 3 * H;
            float *restrict dhz = dh_z + (g * M + m) * H;
#pragma omp simd
            for (long j = 0; j < H; j++) {
                float dh = dn_next[j] + go[j];
                float d_n = dh * (1.0f - z[j]) * (1.0f - nv[j] * nv[j]);
                float d_z = dh * (prev[j] - nv[j]) * z[j] * (1.0f - z[j]);
                float d_r = d_n * hn[j] * r[j] * (1.0f - r[j]);
                dgh[j] = d_r;
                dgh[H + j] = d_z;
                dgh[2 * H + j] = d_n * r[j];
                dgx[j] = d_r;
                dgx[H + j] = d_z;
                dgx[2 * H + j] = d_n;
                dhz[j] = dh * z[j];
            }
        }
    }
}

/* Y[m] = b + X[m] W for M = 1 or 2 rows: X [M, D] (rows ldx apart), W row-major [D, K]
   (a weight matrix transposed), Y [M, K]. CB outputs of both rows at a time: their sums stay
   in registers while W's rows stream past, each loaded once for both. */
#define CB 32
static void affine_rows(long M, long D, long K, const float *restrict X, long ldx,
                        const float *restrict W, const float *restrict b, float *restrict Y)
{
    const float *restrict x0 = X, *restrict x1 = M > 1 ? X + ldx : X;
    long k0 = 0;
    for (; k0 + CB <= K; k0 += CB) {
        float a0[CB], a1[CB];
        for (int i = 0; i < CB; i++)
            a0[i] = a1[i] = b[k0 + i];
        for (long j = 0; j < D; j++) {
            const float u = x0[j], v = x1[j];
            const float *restrict w = W + j * K + k0;
            for (int i = 0; i < CB; i++) {
                a0[i] += u * w[i];
                a1[i] += v * w[i];
            }
        }
        for (int i = 0; i < CB; i++) {
            Y[k0 + i] = a0[i];
            if (M > 1)
                Y[K + k0 + i] = a1[i];
        }
    }
    for (long m = 0; m < M; m++)
        for (long k = k0; k < K; k++) {
            float sum = b[k];
            for (long j = 0; j < D; j++)
                sum += X[m * ldx + j] * W[j * K + k];
            Y[m * K + k] = sum;
        }
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

     obs [R, O] float, last [R] int64 (-1: none), avail [R, A] bool
     w1t [O + A + N, H], b1 [H]; w_iht, w_hht [H, 3H], b_ih, b_hh [3H]: fc1's and the GRU's
       weights transposed; w2 [A, H], b2 [A]
     draws [R, A + 1]: uniform draws (NULL: no exploration); the last of a row is the coin
       (explore when it is < epsilon), the others score the available actions for exploring
     hidden [R, H]: h_prev in, h out; actions [R] out */
void actor_step(long R, long N, long O, long A, long H, const float *obs, const long *last,
                const unsigned char *avail, const float *w1t, const float *b1,
                const float *w_iht, const float *b_ih, const float *w_hht, const float *b_hh,
                const float *w2, const float *b2, const float *draws, float epsilon,
                float *hidden, long *actions)
{
    float x[2 * H], gi[2 * 3 * H], gh[2 * 3 * H], q[A];
    for (long r0 = 0; r0 < R; r0 += 2) {
        const long M = R - r0 < 2 ? R - r0 : 2;
        affine_rows(M, O, H, obs + r0 * O, O, w1t, b1, x);
        for (long m = 0; m < M; m++) {
            const long r = r0 + m;
            const float *restrict id_row = w1t + (O + A + r % N) * H;
            const float *restrict act_row = last[r] >= 0 ? w1t + (O + last[r]) * H : NULL;
            float *restrict xm = x + m * H;
#pragma omp simd
            for (long k = 0; k < H; k++) {
                float v = xm[k] + id_row[k] + (act_row != NULL ? act_row[k] : 0.0f);
                xm[k] = v > 0.0f ? v : 0.0f;
            }
        }
        affine_rows(M, H, 3 * H, x, H, w_iht, b_ih, gi);
        affine_rows(M, H, 3 * H, hidden + r0 * H, H, w_hht, b_hh, gh);
        for (long m = 0; m < M; m++) {
            const long r = r0 + m;
            float *restrict h = hidden + r * H;
            const float *restrict gim = gi + m * 3 * H, *restrict ghm = gh + m * 3 * H;
#pragma omp simd
            for (long j = 0; j < H; j++) {
                float rg = sigmoid(gim[j] + ghm[j]);
                float z = sigmoid(gim[H + j] + ghm[H + j]);
                float n = tanhf(gim[2 * H + j] + rg * ghm[2 * H + j]);
                h[j] = (1.0f - z) * n + z * h[j];
            }
            for (long a = 0; a < A; a++) {
                const float *restrict w = w2 + a * H;
                float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                for (long j = 0; j < H; j++)
                    sum += w[j] * h[j];
                q[a] = b2[a] + sum;
            }
            const unsigned char *ok = avail + r * A;
            long choice = first_max(A, q, ok);
            if (draws != NULL && draws[r * (A + 1) + A] < epsilon)
                choice = first_max(A, draws + r * (A + 1), ok);
            actions[r] = choice;
        }
    }
}
