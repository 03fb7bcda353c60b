// The GRU and LSTM chains one step at a time (large batches, or W_A too big for on-chip): per step one cuBLAS
// GEMM for all gates at once (R = A_{t-1}·W_A, (B, H)·(H, G·H), forward; D = dZ_R,t+1·W_Aᵀ, (B, G·H)·(G·H, H),
// backward) and one of these fused gate kernels; the host captures the whole loop in a CUDA graph. The gate
// math is gated_persistent.cu's, per (b, j). CPU reference: rnnbackends/reference.py. One thread per (b, j),
// grid-stride; rows past their length write 0 and read nothing of d_a.
#include "cuda_compat.cuh"
#include "rnn_math.cuh"

// GRU step t: A_t and the saved r, u, n, Z_Rn from Z_X,t (X_t·W_X + b_A) and R = A_{t-1}·W_A (b_R added here).
template <typename T>
__global__ void gru_forward_step(const T* __restrict__ zx_t,      // (B, 3H)  X_t·W_X + b_A
                                 const T* __restrict__ r,         // (B, 3H)  A_{t-1}·W_A
                                 const T* __restrict__ b_r,       // (3H,)    b_R
                                 const T* __restrict__ a_prev,    // (B, H)   A_{t-1}
                                 const int* __restrict__ lengths,  // (B,)
                                 T* __restrict__ a_t,             // (B, H)   A_t (out)
                                 T* __restrict__ saved_t,         // (B, 4H)  r, u, n, Z_Rn (out)
                                 int t, int B, int H) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < B * H; i += gridDim.x * blockDim.x) {
        const int b = i / H, j = i % H;
        if (t >= lengths[b]) {
            a_t[i] = T(0);
            continue;
        }
        const T* z = zx_t + static_cast<long long>(b) * 3 * H;
        const T* p = r + static_cast<long long>(b) * 3 * H;
        const T z_rn = p[2 * H + j] + b_r[2 * H + j];
        const T rg = sigmoid(z[j] + p[j] + b_r[j]);
        const T ug = sigmoid(z[H + j] + p[H + j] + b_r[H + j]);
        const T ng = tanh(z[2 * H + j] + rg * z_rn);
        a_t[i] = (T(1) - ug) * ng + ug * a_prev[i];
        T* s = saved_t + static_cast<long long>(b) * 4 * H;
        s[j] = rg, s[H + j] = ug, s[2 * H + j] = ng, s[3 * H + j] = z_rn;
    }
}
RNNB_EXPORT_KERNEL(gru_forward_step)

// GRU backward step t: dZ_X,t and dZ_R,t with dL/dA_t from step t+1 = keep + d_next, where keep holds
// (g ⊙ u)_{t+1} and d_next = dZ_R,t+1·W_Aᵀ (both 0 before the last step); writes (g ⊙ u)_t to keep.
template <typename T>
__global__ void gru_backward_step(const T* __restrict__ d_a_t,    // (B, H)   dL/dA_t
                                  const T* __restrict__ d_a_n,    // (B, H)   dL/dA_n
                                  const T* __restrict__ a_prev,   // (B, H)   A_{t-1}
                                  const T* __restrict__ saved_t,  // (B, 4H)  r, u, n, Z_Rn
                                  const T* __restrict__ d_next,   // (B, H)   dZ_R,t+1·W_Aᵀ
                                  T* __restrict__ keep,           // (B, H)   (g ⊙ u)_{t+1} in, (g ⊙ u)_t out
                                  const int* __restrict__ lengths,  // (B,)
                                  T* __restrict__ dz_x_t,         // (B, 3H)  dL/dZ_X,t (out)
                                  T* __restrict__ dz_r_t,         // (B, 3H)  dL/dZ_R,t (out)
                                  int t, int B, int H) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < B * H; i += gridDim.x * blockDim.x) {
        const int b = i / H, k = i % H;
        T dr = T(0), du = T(0), dn = T(0), rg = T(0), kept = T(0);
        if (t < lengths[b]) {
            const T* s = saved_t + static_cast<long long>(b) * 4 * H;
            rg = s[k];
            const T ug = s[H + k], ng = s[2 * H + k], z_rn = s[3 * H + k];
            T g = d_a_t[i] + keep[i] + d_next[i];
            if (t == lengths[b] - 1) g += d_a_n[i];
            dn = g * (T(1) - ug) * (T(1) - ng * ng);
            du = g * (a_prev[i] - ng) * ug * (T(1) - ug);
            dr = dn * z_rn * rg * (T(1) - rg);
            kept = g * ug;
        }
        T* x = dz_x_t + static_cast<long long>(b) * 3 * H;
        T* y = dz_r_t + static_cast<long long>(b) * 3 * H;
        x[k] = dr, x[H + k] = du, x[2 * H + k] = dn;
        y[k] = dr, y[H + k] = du, y[2 * H + k] = dn * rg;
        keep[i] = kept;
    }
}
RNNB_EXPORT_KERNEL(gru_backward_step)

// LSTM step t: A_t, C_t and the gates i, f, g, o from Z_X,t and R = A_{t-1}·W_A (b_R added here).
template <typename T>
__global__ void lstm_forward_step(const T* __restrict__ zx_t,     // (B, 4H)  X_t·W_X + b_A
                                  const T* __restrict__ r,        // (B, 4H)  A_{t-1}·W_A
                                  const T* __restrict__ b_r,      // (4H,)    b_R
                                  const T* __restrict__ c_prev,   // (B, H)   C_{t-1}
                                  const int* __restrict__ lengths,  // (B,)
                                  T* __restrict__ a_t,            // (B, H)   A_t (out)
                                  T* __restrict__ c_t,            // (B, H)   C_t (out)
                                  T* __restrict__ gates_t,        // (B, 4H)  i, f, g, o (out)
                                  int t, int B, int H) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < B * H; i += gridDim.x * blockDim.x) {
        const int b = i / H, j = i % H;
        if (t >= lengths[b]) {
            a_t[i] = T(0), c_t[i] = T(0);
            continue;
        }
        const T* z = zx_t + static_cast<long long>(b) * 4 * H;
        const T* p = r + static_cast<long long>(b) * 4 * H;
        const T ig = sigmoid(z[j] + p[j] + b_r[j]);
        const T fg = sigmoid(z[H + j] + p[H + j] + b_r[H + j]);
        const T gg = tanh(z[2 * H + j] + p[2 * H + j] + b_r[2 * H + j]);
        const T og = sigmoid(z[3 * H + j] + p[3 * H + j] + b_r[3 * H + j]);
        const T c = fg * c_prev[i] + ig * gg;
        c_t[i] = c;
        a_t[i] = og * tanh(c);
        T* s = gates_t + static_cast<long long>(b) * 4 * H;
        s[j] = ig, s[H + j] = fg, s[2 * H + j] = gg, s[3 * H + j] = og;
    }
}
RNNB_EXPORT_KERNEL(lstm_forward_step)

// LSTM backward step t: dZ_t with g_A = dL/dA_t + d_next (dZ_t+1·W_Aᵀ) and g_C's carry (g_C ⊙ f)_{t+1} in
// carry_c (both 0 before the last step); writes (g_C ⊙ f)_t to carry_c (dL/dC_0 after step 1).
template <typename T>
__global__ void lstm_backward_step(const T* __restrict__ d_a_t,    // (B, H)   dL/dA_t
                                   const T* __restrict__ d_a_n,    // (B, H)   dL/dA_n
                                   const T* __restrict__ d_c_n,    // (B, H)   dL/dC_n
                                   const T* __restrict__ c_t,      // (B, H)   C_t
                                   const T* __restrict__ c_prev,   // (B, H)   C_{t-1}
                                   const T* __restrict__ gates_t,  // (B, 4H)  i, f, g, o
                                   const T* __restrict__ d_next,   // (B, H)   dZ_t+1·W_Aᵀ
                                   T* __restrict__ carry_c,        // (B, H)   (g_C ⊙ f)_{t+1} in, (g_C ⊙ f)_t out
                                   const int* __restrict__ lengths,  // (B,)
                                   T* __restrict__ dz_t,           // (B, 4H)  dL/dZ_t (out)
                                   int t, int B, int H) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < B * H; i += gridDim.x * blockDim.x) {
        const int b = i / H, k = i % H;
        T di = T(0), df = T(0), dg = T(0), d_o = T(0), keep = T(0);
        if (t < lengths[b]) {
            const T* s = gates_t + static_cast<long long>(b) * 4 * H;
            const T ig = s[k], fg = s[H + k], gg = s[2 * H + k], og = s[3 * H + k];
            const T tanh_c = tanh(c_t[i]);
            T g_a = d_a_t[i] + d_next[i];
            T g_c = carry_c[i];
            if (t == lengths[b] - 1) g_a += d_a_n[i], g_c += d_c_n[i];
            g_c += g_a * og * (T(1) - tanh_c * tanh_c);
            di = g_c * gg * ig * (T(1) - ig);
            df = g_c * c_prev[i] * fg * (T(1) - fg);
            dg = g_c * ig * (T(1) - gg * gg);
            d_o = g_a * tanh_c * og * (T(1) - og);
            keep = g_c * fg;
        }
        T* x = dz_t + static_cast<long long>(b) * 4 * H;
        x[k] = di, x[H + k] = df, x[2 * H + k] = dg, x[3 * H + k] = d_o;
        carry_c[i] = keep;
    }
}
RNNB_EXPORT_KERNEL(lstm_backward_step)
