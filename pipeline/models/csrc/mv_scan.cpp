// The MV-LSTM recurrence (pipeline/models/mv_scan.py) as a compiled loop over time.
//
// Why: in Python every step costs ~8 dispatched tensor ops forward and ~6 backward, and at the sizes we
// train (B = 32, H = 64) that overhead, not arithmetic, made the MV-LSTM 3-4x slower than torch.nn.LSTM
// (whose CPU kernel is one oneDNN primitive). Here a step is one BLAS call on raw pointers and one fused
// element-wise pass per batch row (activations, both cells, output), with no tensor made per step.
//
// Layout: gate blocks in the parameter order of MVLSTM (i, f, g, o, i^m, f^m, g^m), each H wide; buffers
// batch-major (B, T, .), so the input projection of batch-first x needs no transpose; w (7H, H); h (B, H);
// cm (B, 2H) = [c | m].
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

namespace {

using at::Tensor;

// ---------------------------------------------------------------------------------------------- GEMM
// The BLAS that ATen itself calls (MKL's Fortran interface, exported by libtorch_cpu on x86-64), found
// at run time; where a build of torch has none, ATen's addmm on tensor views does the same work, slower.
using sgemm_t = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);
using dgemm_t = void (*)(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
                         const int*, const double*, const int*, const double*, double*, const int*);

struct Blas {
  sgemm_t sgemm = nullptr;
  dgemm_t dgemm = nullptr;
  Blas() {
    void* lib = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    if (lib == nullptr) return;
    sgemm = reinterpret_cast<sgemm_t>(dlsym(lib, "sgemm_"));
    dgemm = reinterpret_cast<dgemm_t>(dlsym(lib, "dgemm_"));
  }
};

const Blas& blas() {
  static const Blas instance;
  return instance;
}

// Row-major C (M x N) = op(A) op(B) + beta C, op = transpose when the flag is set. Returns false when no
// BLAS was found (the caller then uses ATen). Column-major BLAS computes C^T = op(B)^T op(A)^T.
template <typename scalar_t>
bool gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const scalar_t* A, int64_t lda,
          const scalar_t* B, int64_t ldb, scalar_t beta, scalar_t* C, int64_t ldc) {
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
  const scalar_t one = 1;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (blas().sgemm == nullptr) return false;
    blas().sgemm(&tb, &ta, &m, &n, &k, &one, B, &lb, A, &la, &beta, C, &lc);
  } else {
    if (blas().dgemm == nullptr) return false;
    blas().dgemm(&tb, &ta, &m, &n, &k, &one, B, &lb, A, &la, &beta, C, &lc);
  }
  return true;
}

// ----------------------------------------------------------------------------------- element-wise math
// The loops below are compiled for AVX-512, AVX2 and the baseline; the loader picks the one the CPU
// runs (GCC function multi-versioning), so one build is right on every x86-64 machine.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MVFER_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MVFER_CLONES
#endif

// exp for float as a branch-free polynomial (Cephes' expf coefficients, about 1 ulp on the clamped range)
// so that the compiler vectorises the loops; std::exp would stay a scalar call per element.
inline float exp_(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  float n = x * 1.44269504088896341f + 12582912.0f;  // round to nearest by the float's own rounding
  n -= 12582912.0f;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

inline double exp_(double x) { return std::exp(x); }

template <typename scalar_t>
inline scalar_t sigmoid_(scalar_t x) {
  return scalar_t(1) / (scalar_t(1) + exp_(-x));
}

template <typename scalar_t>
inline scalar_t tanh_(scalar_t x) {
  return scalar_t(2) / (scalar_t(1) + exp_(scalar_t(-2) * x)) - scalar_t(1);
}

// Rows of the batch per parallel chunk: small batches stay on one thread (spawning costs more).
constexpr int64_t kGrain = 16;

// One forward step of one batch row. a: the row's 7H pre-activations, activated in place (kept for the
// backward); cp/cn: [c | m] before/after; d = tanh(c - m); h = o * d.
template <typename scalar_t, bool kZeroModeInput>
MVFER_CLONES void forward_row(scalar_t* __restrict__ a, const scalar_t* __restrict__ cp, scalar_t* __restrict__ cn,
                              scalar_t* __restrict__ d, scalar_t* __restrict__ h, int64_t H) {
  for (int64_t j = 0; j < 2 * H; ++j) a[j] = sigmoid_(a[j]);          // i, f
  for (int64_t j = 2 * H; j < 3 * H; ++j) a[j] = tanh_(a[j]);         // g
  for (int64_t j = 3 * H; j < 6 * H; ++j) a[j] = sigmoid_(a[j]);     // o, i^m, f^m
  for (int64_t j = 6 * H; j < 7 * H; ++j) a[j] = tanh_(a[j]);         // g^m
  if (kZeroModeInput) {
    for (int64_t j = 4 * H; j < 5 * H; ++j) a[j] = 0;
  }
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t c = a[H + j] * cp[j] + a[j] * a[2 * H + j];
    const scalar_t m = a[5 * H + j] * cp[H + j] + a[4 * H + j] * a[6 * H + j];
    cn[j] = c;
    cn[H + j] = m;
    const scalar_t t = tanh_(c - m);
    d[j] = t;
    h[j] = a[3 * H + j] * t;
  }
}

// One backward step of one batch row: from dL/dh_t (gh) and the carried dL/d[c_t | m_t] (dcm, updated in
// place to dL/d[c_{t-1} | m_{t-1}]), the gradients of the seven pre-activations (out).
template <typename scalar_t, bool kZeroModeInput>
MVFER_CLONES void backward_row(const scalar_t* __restrict__ a, const scalar_t* __restrict__ d,
                               const scalar_t* __restrict__ cp, const scalar_t* __restrict__ gh,
                               scalar_t* __restrict__ dcm, scalar_t* __restrict__ out, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
    const scalar_t im = a[4 * H + j], fm = a[5 * H + j], gm = a[6 * H + j];
    const scalar_t k = gh[j] * o * (1 - d[j] * d[j]);
    const scalar_t dC = dcm[j] + k;
    const scalar_t dM = dcm[H + j] - k;
    out[j] = dC * g * i * (1 - i);
    out[H + j] = dC * cp[j] * f * (1 - f);
    out[2 * H + j] = dC * i * (1 - g * g);
    out[3 * H + j] = gh[j] * d[j] * o * (1 - o);
    out[4 * H + j] = kZeroModeInput ? scalar_t(0) : dM * gm * im * (1 - im);
    out[5 * H + j] = dM * cp[H + j] * fm * (1 - fm);
    out[6 * H + j] = dM * im * (1 - gm * gm);
    dcm[j] = dC * f;
    dcm[H + j] = dM * fm;
  }
}

// Batch-major buffers: act, td (B, T, .), hs, cms (B, T + 1, .); row (b, t) of a (B, T', W) buffer is at
// (b * T' + t) * W, so one step's rows are W * T' apart, which BLAS takes as the leading dimension.
template <typename scalar_t>
void forward_impl(Tensor& act, Tensor& hs, Tensor& cms, Tensor& td, const Tensor& w, bool zero_mode_input) {
  const int64_t B = act.size(0), T = act.size(1), H = act.size(2) / 7, G = 7 * H;
  scalar_t *A = act.data_ptr<scalar_t>(), *HS = hs.data_ptr<scalar_t>(), *CM = cms.data_ptr<scalar_t>();
  scalar_t* D = td.data_ptr<scalar_t>();
  const scalar_t* W = w.data_ptr<scalar_t>();
  for (int64_t t = 0; t < T; ++t) {
    // a_t += h_{t-1} W^T
    if (!gemm<scalar_t>(false, true, B, G, H, HS + t * H, (T + 1) * H, W, H, scalar_t(1), A + t * G, T * G)) {
      act.select(1, t).addmm_(hs.select(1, t), w.t());
    }
    at::parallel_for(0, B, kGrain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        scalar_t* a = A + (b * T + t) * G;
        scalar_t* cp = CM + (b * (T + 1) + t) * 2 * H;
        scalar_t* d = D + (b * T + t) * H;
        scalar_t* hn = HS + (b * (T + 1) + t + 1) * H;
        if (zero_mode_input) {
          forward_row<scalar_t, true>(a, cp, cp + 2 * H, d, hn, H);
        } else {
          forward_row<scalar_t, false>(a, cp, cp + 2 * H, d, hn, H);
        }
      }
    });
  }
}

template <typename scalar_t>
void backward_impl(Tensor& da, Tensor& dh, Tensor& dcm, const Tensor& act, const Tensor& cms, const Tensor& td,
                   const Tensor& w, const Tensor& dhs, const Tensor& dcms, bool zero_mode_input) {
  const int64_t B = act.size(0), T = act.size(1), H = act.size(2) / 7, G = 7 * H;
  const scalar_t *A = act.data_ptr<scalar_t>(), *CM = cms.data_ptr<scalar_t>(), *D = td.data_ptr<scalar_t>();
  const scalar_t* W = w.data_ptr<scalar_t>();
  const scalar_t* DH = dhs.defined() ? dhs.data_ptr<scalar_t>() : nullptr;
  const scalar_t* DCM = dcms.defined() ? dcms.data_ptr<scalar_t>() : nullptr;
  scalar_t *DA = da.data_ptr<scalar_t>(), *gh = dh.data_ptr<scalar_t>(), *carry = dcm.data_ptr<scalar_t>();
  for (int64_t t = T - 1; t >= 0; --t) {
    if (t < T - 1) {
      // dh = dL/dh_t (direct) + da_{t+1} W; the carried d[c | m] gets dL/d[c_t | m_t] (direct)
      for (int64_t b = 0; b < B; ++b) {
        if (DH != nullptr) {
          const scalar_t* src = DH + (b * (T + 1) + t + 1) * H;
          std::copy(src, src + H, gh + b * H);
        }
        if (DCM != nullptr) {
          const scalar_t* add = DCM + (b * (T + 1) + t + 1) * 2 * H;
          scalar_t* dst = carry + b * 2 * H;
          for (int64_t j = 0; j < 2 * H; ++j) dst[j] += add[j];
        }
      }
      const scalar_t beta = DH != nullptr ? 1 : 0;
      if (!gemm<scalar_t>(false, false, B, H, G, DA + (t + 1) * G, T * G, W, H, beta, gh, H)) {
        if (DH == nullptr) dh.zero_();
        dh.addmm_(da.select(1, t + 1), w);
      }
    }
    at::parallel_for(0, B, kGrain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* a = A + (b * T + t) * G;
        const scalar_t* d = D + (b * T + t) * H;
        const scalar_t* cp = CM + (b * (T + 1) + t) * 2 * H;
        scalar_t* out = DA + (b * T + t) * G;
        if (zero_mode_input) {
          backward_row<scalar_t, true>(a, d, cp, gh + b * H, carry + b * 2 * H, out, H);
        } else {
          backward_row<scalar_t, false>(a, d, cp, gh + b * H, carry + b * 2 * H, out, H);
        }
      }
    });
  }
}

void check(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "mv_scan: ", name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "mv_scan: ", name, " must be float32 or float64");
}

}  // namespace

// xp (B, T, 7H) projections plus bias, used as the gate buffer itself when in_place (the caller made it
// for this call), else copied. Returns hs (B, T+1, H), cms (B, T+1, 2H), act (B, T, 7H) activated gates and
// td (B, T, H) = tanh(c - m); index 0 of hs and cms is the initial state.
std::vector<Tensor> forward(const Tensor& xp, const Tensor& w_in, const Tensor& h0, const Tensor& cm0,
                            bool zero_mode_input, bool in_place) {
  check(xp, "xp");
  const int64_t B = xp.size(0), T = xp.size(1), G = xp.size(2), H = G / 7;
  TORCH_CHECK(G == 7 * H && w_in.size(0) == G && w_in.size(1) == H, "mv_scan: xp (B, T, 7H) and w (7H, H) disagree");
  const Tensor w = w_in.contiguous();
  Tensor act = in_place ? xp.contiguous() : xp.clone(at::MemoryFormat::Contiguous);
  Tensor hs = xp.new_empty({B, T + 1, H});
  Tensor cms = xp.new_empty({B, T + 1, 2 * H});
  Tensor td = xp.new_empty({B, T, H});
  hs.select(1, 0).copy_(h0);
  cms.select(1, 0).copy_(cm0);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "mv_scan_forward",
                             [&] { forward_impl<scalar_t>(act, hs, cms, td, w, zero_mode_input); });
  return {hs, cms, act, td};
}

// Returns d xp (B, T, 7H), d w (7H, H), d h0 (B, H), d cm0 (B, 2H). Undefined incoming gradients are zero.
std::vector<Tensor> backward(const Tensor& w_in, const Tensor& act, const Tensor& hs, const Tensor& cms, const Tensor& td,
                             const std::optional<Tensor>& dhs_in, const std::optional<Tensor>& dcms_in,
                             bool zero_mode_input) {
  check(act, "act");
  const int64_t B = act.size(0), T = act.size(1), G = act.size(2), H = G / 7;
  const Tensor w = w_in.contiguous();
  const Tensor dhs = dhs_in.has_value() && dhs_in->defined() ? dhs_in->contiguous() : Tensor();
  const Tensor dcms = dcms_in.has_value() && dcms_in->defined() ? dcms_in->contiguous() : Tensor();
  Tensor da = at::empty_like(act);
  Tensor dcm = dcms.defined() ? dcms.select(1, T).clone(at::MemoryFormat::Contiguous) : cms.new_zeros({B, 2 * H});
  Tensor dh = dhs.defined() ? dhs.select(1, T).clone(at::MemoryFormat::Contiguous) : hs.new_zeros({B, H});
  AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "mv_scan_backward",
                             [&] { backward_impl<scalar_t>(da, dh, dcm, act, cms, td, w, dhs, dcms, zero_mode_input); });
  Tensor dh0;
  if (T > 0) {
    dh0 = dhs.defined() ? at::addmm(dhs.select(1, 0), da.select(1, 0), w) : at::mm(da.select(1, 0), w);
  } else {
    dh0 = dhs.defined() ? dhs.select(1, 0).clone() : hs.new_zeros({B, H});
  }
  if (dcms.defined() && T > 0) dcm.add_(dcms.select(1, 0));  // with T = 0, dcms[:, T] is dcms[:, 0], already in
  Tensor dw = at::mm(da.view({B * T, G}).t(), hs.narrow(1, 0, T).reshape({B * T, H}));
  return {da, dw, dh0, dcm};
}

// Whether the steps' GEMMs call BLAS directly (else ATen's addmm): for the benchmark's and the log's sake.
bool direct_blas() { return blas().sgemm != nullptr && blas().dgemm != nullptr; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "MV-LSTM scan forward");
  m.def("backward", &backward, "MV-LSTM scan backward");
  m.def("direct_blas", &direct_blas, "whether the per-step GEMMs call BLAS directly");
}
