// VASparse decode-step attention of one decoder layer, fused for the CPU (methods.md §6.5).
//
// The same computation as the torch reference path (methods/vasparse_attention.py + the explicit
// path of vh_bench/decoding/attention.py), one (row, head) at a time instead of ~60 small tensor
// operations per layer: on a CPU each of those costs microseconds of dispatch, which at batch 1
// is more than the arithmetic. Per (row r, head h), with N keys, candidates [start, start + n):
//   1. s_j = scaling · q·K_j                                  (fp32, before any mask)
//   2. VATS, eq. (4)–(5): δ_i = A_i + λB_i on the raw s; the m = n − n_keep smallest δ (ties: the
//      later position first) form D; DPC-kNN groups D into c clusters; K̄, V̄ = ω-weighted averages,
//      s̄ = scaling · q·K̄
//   3. SAP, eq. (7): w = softmax(c_acc); s ← s·(1+β−βw), s̄ ← s̄·(1+β−βw̄), w̄ = Σ ω_i w_{D_i}
//   4. s[D] = finfo(float).min; softmax over [s, s̄]; out = p·V + p̄·V̄
//   5. â: p, with dropped key i given p̄_{c(i)}·ω_i; c_acc += â; saliency: mean_h Σ_{k∈image} â_k
// Tie rules, clamps and the operation order of every elementwise formula follow the reference, so
// the two agree to float rounding (dot products and softmax sums are accumulated in another order,
// and exp is a vectorised polynomial within an ulp of the library's); tests/methods/
// test_vasparse_fused.py compares them call by call and token by token.
// Built by methods/vasparse_fused.py with -ffp-contract=off: no fused multiply-add may change the
// rounding of a formula the reference computes as separate operations.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

namespace {

constexpr float kDropped = std::numeric_limits<float>::lowest();  // torch.finfo(torch.float32).min
constexpr float kInf = std::numeric_limits<float>::infinity();

struct Layer {
  int64_t n_keys, dim, heads, groups;
  float scaling;
  // VATS (n_drop = 0: nothing dropped this step)
  int64_t start, n_cand, n_drop, n_clusters, knn_k;
  bool normalize_sum, merge;
  // SAP (sap = false: no penalty, no accumulator)
  bool sap;
  float beta, one_plus_beta;
  // saliency recording (n_image = 0: none)
  int64_t image_start, n_image;
};

inline float dot(const float* a, const float* b, int64_t d) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < d; ++i) acc += a[i] * b[i];
  return acc;
}

// exp(x) for x ≤ 0 (softmax after subtracting the maximum), in a loop the compiler vectorises:
// std::exp is a scalar call, and two softmaxes per head and step made it most of the kernel's time.
// Cody–Waite reduction x = k·ln2 + r, |r| ≤ ln2/2, and the degree-7 Taylor polynomial of e^r
// (truncation < 6e-9, under one float ulp); x < −87 (where e^x leaves the normal floats) gives 0,
// like a denormal-flushing CPU; −inf gives 0 and NaN stays NaN.
void exp_nonpositive(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float vc = v < -87.f ? -87.f : v;
    const float k = (vc * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
    float r = vc - k * 0.693145751953125f;                                  // ln2, high part (exact k·hi)
    r = r - k * 1.428606765330187045e-06f;                                  // ln2, low part
    float p = 1.f / 5040.f;
    p = p * r + 1.f / 720.f;
    p = p * r + 1.f / 120.f;
    p = p * r + 1.f / 24.f;
    p = p * r + 1.f / 6.f;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
    const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;  // 2^k, k ∈ [−126, 0]
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    y[i] = v < -87.f ? 0.f : p * scale;
  }
}

// softmax of x[0, n) into out (may alias x): exp(x − max) / Σ
void softmax(const float* x, float* out, int64_t n) {
  float mx = -kInf;
  for (int64_t j = 0; j < n; ++j) mx = std::max(mx, x[j]);
  for (int64_t j = 0; j < n; ++j) out[j] = x[j] - mx;
  exp_nonpositive(out, out, n);
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += out[j];
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = out[j] / sum;
}

// "a is dropped before b" for VATS (a strict total order): smaller δ first, NaN last (a descending
// torch sort puts NaN first, i.e. kept), equal δ → the later position first (stable descending sort
// keeps the earlier one).
struct DropsFirst {
  const float* delta;
  bool operator()(int64_t a, int64_t b) const {
    const float x = delta[a], y = delta[b];
    const bool xn = std::isnan(x), yn = std::isnan(y);
    if (xn != yn) return yn;
    if (!xn && x != y) return x < y;
    return a > b;
  }
};

// DPC-kNN (methods/vasparse_cluster.py::dpc_knn) on m points of dimension d (rows of x, contiguous).
// Writes the cluster of each point, clusters numbered by ascending centre index.
void dpc_knn(const float* x, int64_t m, int64_t d, int64_t c, int64_t knn_k, int64_t* assign) {
  const float root_d = static_cast<float>(std::sqrt(static_cast<double>(d)));
  std::vector<float> dist(m * m);
  for (int64_t a = 0; a < m; ++a) {
    dist[a * m + a] = 0.f;
    for (int64_t b = a + 1; b < m; ++b) {
      float acc = 0.f;
      for (int64_t i = 0; i < d; ++i) {
        const float diff = x[a * d + i] - x[b * d + i];
        acc += diff * diff;
      }
      dist[a * m + b] = dist[b * m + a] = std::sqrt(acc) / root_d;
    }
  }
  // ρ_a = exp(−mean of d² to the k nearest other points)
  const int64_t k = std::min(knn_k, m - 1);
  std::vector<float> rho(m, 1.f), others;
  if (k > 0) {
    for (int64_t a = 0; a < m; ++a) {
      others.clear();
      for (int64_t b = 0; b < m; ++b)
        if (b != a) others.push_back(dist[a * m + b]);
      std::partial_sort(others.begin(), others.begin() + k, others.end());
      float sq = 0.f;
      for (int64_t i = 0; i < k; ++i) sq += others[i] * others[i];
      rho[a] = std::exp(-(sq / static_cast<float>(k)));
    }
  }
  // η_a = distance to the nearest point above a (b ≻ a iff ρ_b > ρ_a, or equal and b < a);
  // the top point gets the largest distance of all
  float dmax = -kInf;
  for (float v : dist) dmax = std::max(dmax, v);
  std::vector<float> gamma(m);
  for (int64_t a = 0; a < m; ++a) {
    float eta = kInf;
    for (int64_t b = 0; b < m; ++b) {
      const bool above = rho[b] > rho[a] || (rho[b] == rho[a] && b < a);
      if (above) eta = std::min(eta, dist[a * m + b]);
    }
    gamma[a] = rho[a] * (std::isinf(eta) ? dmax : eta);
  }
  // centres: the c largest γ, ties to the lower index; then ascending
  std::vector<int64_t> order(m);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return gamma[a] > gamma[b]; });
  std::vector<int64_t> centres(order.begin(), order.begin() + c);
  std::sort(centres.begin(), centres.end());
  // nearest centre, first minimum; a centre belongs to itself
  for (int64_t a = 0; a < m; ++a) {
    int64_t best = 0;
    for (int64_t j = 1; j < c; ++j)
      if (dist[a * m + centres[j]] < dist[a * m + centres[best]]) best = j;
    assign[a] = best;
  }
  for (int64_t j = 0; j < c; ++j) assign[centres[j]] = j;
}

// One (row, head). Pointers are to this row/head's data; K (V) rows are `k_stride` (`v_stride`) floats apart.
void one_head(const Layer& L, const float* q, const float* K, const float* V, int64_t k_stride,
              int64_t v_stride, const float* term, float* acc, float* out, float* a_hat_out, int64_t* dropped_out,
              float* image_sum, float* w_max) {
  const int64_t N = L.n_keys, d = L.dim, m = L.n_drop;
  const int64_t c = m > 0 && L.merge ? L.n_clusters : 0;
  std::vector<float> s(N + c);
  for (int64_t j = 0; j < N; ++j) s[j] = dot(q, K + j * k_stride, d) * L.scaling;

  // 2. VATS
  std::vector<int64_t> drop(m), assign(m);
  std::vector<float> omega(m), k_bar(c * d, 0.f), v_bar(c * d, 0.f);
  if (m > 0) {
    const int64_t n = L.n_cand;
    std::vector<float> delta(n);
    float total = 0.f;
    for (int64_t i = 0; i < n; ++i) {
      const float v = s[L.start + i];
      delta[i] = v * v;
      total += delta[i];
    }
    if (L.normalize_sum) {
      const float denom = std::max(total, 1e-12f);
      for (int64_t i = 0; i < n; ++i) delta[i] = delta[i] / denom;
    }
    if (term != nullptr)
      for (int64_t i = 0; i < n; ++i) delta[i] = delta[i] + term[i];
    std::vector<int64_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    std::nth_element(idx.begin(), idx.begin() + (m - 1), idx.end(), DropsFirst{delta.data()});
    std::sort(idx.begin(), idx.begin() + m);  // D ascending by position
    std::vector<float> d_drop(m);
    for (int64_t i = 0; i < m; ++i) {
      drop[i] = L.start + idx[i];
      d_drop[i] = delta[idx[i]];
    }
    if (c > 0) {
      std::vector<float> k_drop(m * d);
      for (int64_t i = 0; i < m; ++i) std::copy_n(K + drop[i] * k_stride, d, k_drop.data() + i * d);
      if (c == 1) {
        std::fill(assign.begin(), assign.end(), 0);
      } else if (c == m) {  // singletons: every point is a centre
        std::iota(assign.begin(), assign.end(), 0);
      } else {
        dpc_knn(k_drop.data(), m, d, c, L.knn_k, assign.data());
      }
      // ω_i = δ_i / Σ_cluster δ, uniform when that sum is 0 (merge_clusters)
      std::vector<float> sums(c, 0.f), sizes(c, 0.f);
      for (int64_t i = 0; i < m; ++i) {
        sums[assign[i]] += d_drop[i];
        sizes[assign[i]] += 1.f;
      }
      for (int64_t i = 0; i < m; ++i) {
        const float sum = sums[assign[i]];
        omega[i] = sum > 0.f ? d_drop[i] / std::max(sum, 1e-30f) : 1.f / sizes[assign[i]];
      }
      for (int64_t i = 0; i < m; ++i) {
        float* kb = k_bar.data() + assign[i] * d;
        float* vb = v_bar.data() + assign[i] * d;
        const float* kd = k_drop.data() + i * d;
        const float* vd = V + drop[i] * v_stride;
        for (int64_t t = 0; t < d; ++t) {
          kb[t] += omega[i] * kd[t];
          vb[t] += omega[i] * vd[t];
        }
      }
      for (int64_t j = 0; j < c; ++j) s[N + j] = dot(q, k_bar.data() + j * d, d) * L.scaling;
    }
  }

  // 3. SAP: the current key's accumulator entry is 0 (grown by the caller)
  if (L.sap) {
    std::vector<float> w(N);
    softmax(acc, w.data(), N);
    for (int64_t j = 0; j < N; ++j) s[j] = s[j] * (L.one_plus_beta - L.beta * w[j]);
    if (c > 0) {
      std::vector<float> w_bar(c, 0.f);
      for (int64_t i = 0; i < m; ++i) w_bar[assign[i]] += omega[i] * w[drop[i]];
      for (int64_t j = 0; j < c; ++j) s[N + j] = s[N + j] * (L.one_plus_beta - L.beta * w_bar[j]);
    }
    if (w_max != nullptr) *w_max = *std::max_element(w.begin(), w.end());
  }

  // 4. mask D, softmax over real and virtual keys, output
  for (int64_t i = 0; i < m; ++i) s[drop[i]] = kDropped;
  softmax(s.data(), s.data(), N + c);
  std::fill_n(out, d, 0.f);
  for (int64_t j = 0; j < N; ++j) {
    const float p = s[j];  // no skip of p = 0: a non-finite value row must poison the output as in p·V
    const float* vj = V + j * v_stride;
#pragma omp simd
    for (int64_t t = 0; t < d; ++t) out[t] += p * vj[t];
  }
  if (c > 0) {
    std::vector<float> extra(d, 0.f);
    for (int64_t j = 0; j < c; ++j) {
      const float p = s[N + j];
      for (int64_t t = 0; t < d; ++t) extra[t] += p * v_bar[j * d + t];
    }
    for (int64_t t = 0; t < d; ++t) out[t] = out[t] + extra[t];
  }

  // 5. â (the real columns with the virtual mass handed back), accumulators, saliency
  if (c > 0)
    for (int64_t i = 0; i < m; ++i) s[drop[i]] = s[N + assign[i]] * omega[i];
  if (L.sap)
    for (int64_t j = 0; j < N; ++j) acc[j] = acc[j] + s[j];
  if (image_sum != nullptr) {
    float sum = 0.f;
    for (int64_t k = L.image_start; k < L.image_start + L.n_image; ++k) sum += s[k];
    *image_sum = sum;
  }
  if (a_hat_out != nullptr) std::copy_n(s.data(), N, a_hat_out);
  if (dropped_out != nullptr) std::copy_n(drop.data(), m, dropped_out);
}

void check_f32(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, name, " must be a float32 CPU tensor");
}

}  // namespace

// q (R, H, 1, d); k, v (R, H_kv, N, d) with unit stride in d (the cache's views are fine);
// acc (R, H, N) contiguous SAP accumulators, updated in place (undefined: no SAP);
// term (R, n) λ·B of δ (undefined: λ = 0). Returns [out (R, 1, H, d), saliency (R,) or empty,
// a_hat (R, H, N) or empty, dropped (R, H, m) or empty, w_max (R, H) or empty].
std::vector<at::Tensor> decode(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scaling,
                               const c10::optional<at::Tensor>& acc, double beta,
                               const c10::optional<at::Tensor>& term, int64_t start, int64_t n_cand,
                               int64_t n_drop, int64_t n_clusters, int64_t knn_k, bool normalize_sum, bool merge,
                               int64_t image_start, int64_t n_image, bool trace, bool record) {
  check_f32(q, "query");
  check_f32(k, "key");
  check_f32(v, "value");
  TORCH_CHECK(q.dim() == 4 && q.size(2) == 1, "query must be (rows, heads, 1, dim)");
  TORCH_CHECK(k.dim() == 4 && v.sizes() == k.sizes(), "key and value must be (rows, kv_heads, keys, dim)");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1,
              "query, key and value need unit stride in the last dimension");
  const int64_t R = q.size(0), H = q.size(1), d = q.size(3), N = k.size(2), H_kv = k.size(1);
  TORCH_CHECK(k.size(0) == R && k.size(3) == d && H % H_kv == 0, "query and key shapes disagree");
  TORCH_CHECK(n_drop >= 0 && n_drop <= n_cand && start >= 0 && start + n_cand <= N - 1, "bad VATS candidates");
  TORCH_CHECK(!merge || n_drop == 0 || (n_clusters >= 1 && n_clusters <= n_drop), "bad cluster count");
  TORCH_CHECK(image_start >= 0 && image_start + n_image <= N, "bad image range");
  const bool sap = acc.has_value() && acc->defined();
  if (sap) {
    check_f32(*acc, "accumulator");
    TORCH_CHECK(acc->is_contiguous() && acc->dim() == 3 && acc->size(0) == R && acc->size(1) == H &&
                    acc->size(2) == N, "accumulator must be contiguous (rows, heads, keys)");
  }
  const bool has_term = term.has_value() && term->defined() && n_drop > 0;
  if (has_term) {
    check_f32(*term, "saliency term");
    TORCH_CHECK(term->is_contiguous() && term->dim() == 2 && term->size(0) == R && term->size(1) == n_cand,
                "saliency term must be contiguous (rows, candidates)");
  }
  Layer L{N, d, H, H / H_kv, static_cast<float>(scaling), start, n_cand, n_drop, n_clusters, knn_k,
          normalize_sum, merge, sap, static_cast<float>(beta), static_cast<float>(1.0 + beta), image_start, n_image};

  auto f32 = q.options();
  at::Tensor out = at::empty({R, 1, H, d}, f32);
  at::Tensor image_sums = n_image > 0 ? at::empty({R, H}, f32) : at::Tensor();
  at::Tensor a_hat = trace ? at::empty({R, H, N}, f32) : at::Tensor();
  at::Tensor dropped = trace ? at::empty({R, H, n_drop}, f32.dtype(at::kLong)) : at::Tensor();
  at::Tensor w_max = record && sap ? at::empty({R, H}, f32) : at::Tensor();

  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  float* accp = sap ? acc->data_ptr<float>() : nullptr;
  const float* tp = has_term ? term->data_ptr<float>() : nullptr;
  at::parallel_for(0, R * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t rh = begin; rh < end; ++rh) {
      const int64_t r = rh / H, h = rh % H, g = h / L.groups;
      one_head(L, qp + r * q.stride(0) + h * q.stride(1), kp + r * k.stride(0) + g * k.stride(1),
               vp + r * v.stride(0) + g * v.stride(1), k.stride(2), v.stride(2), tp ? tp + r * n_cand : nullptr,
               accp ? accp + rh * N : nullptr, out.data_ptr<float>() + (r * H + h) * d,
               trace ? a_hat.data_ptr<float>() + rh * N : nullptr,
               trace ? dropped.data_ptr<int64_t>() + rh * n_drop : nullptr,
               n_image > 0 ? image_sums.data_ptr<float>() + rh : nullptr,
               w_max.defined() ? w_max.data_ptr<float>() + rh : nullptr);
    }
  });
  at::Tensor saliency;
  if (n_image > 0) {  // mean over heads of Σ_{k∈image} â_k, as `a_hat[..., img].sum(-1).mean(1)`
    saliency = at::empty({R}, f32);
    const float* is = image_sums.data_ptr<float>();
    for (int64_t r = 0; r < R; ++r) {
      float sum = 0.f;
      for (int64_t h = 0; h < H; ++h) sum += is[r * H + h];
      saliency.data_ptr<float>()[r] = sum / static_cast<float>(H);
    }
  }
  return {out, saliency, a_hat, dropped, w_max};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode", &decode, "VASparse decode-step attention of one layer (CPU, float32)");
}
