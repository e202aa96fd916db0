// VASparse decode-step attention of one decoder layer, fused for the CPU (methods.md §6.5).
//
// The same computation as the torch reference path (methods/vasparse_attention.py + the explicit
// path of vh_bench/decoding/attention.py), with the ~60 small tensor operations per layer that the
// reference dispatches from Python (on a CPU at batch 1 that dispatch costs more than the
// arithmetic) replaced by one call. The dense parts are the reference's own ATen operations, called
// from C++; the selection, merge and penalty, which are small per-head work, are plain loops:
//   1. s = matmul(q, Kᵀ) · scaling                               (ATen, as the reference)
//   2. per (row, head), loops: VATS, eq. (4)–(5): δ_i = A_i + λB_i on the raw s; the m = n − n_keep
//      smallest δ (ties: the later position first) form D; DPC-kNN groups D into c clusters;
//      K̄, V̄ = ω-weighted averages, s̄ = scaling · q·K̄. SAP, eq. (7), with w = softmax(c_acc)
//      (ATen): s ← s·(1+β−βw), s̄ ← s̄·(1+β−βw̄), w̄ = Σ ω_i w_{D_i}. Then s[D] = finfo(float).min
//   3. p = softmax([s, s̄]); out = p·V + p̄·V̄                     (ATen, as the reference)
//   4. â = p with dropped key i given p̄_{c(i)}·ω_i (loop); c_acc += â; saliency
//      mean_h Σ_{k∈image} â_k                                      (ATen, as the reference)
// Tie rules, clamps and the operation order of every elementwise formula follow the reference, so
// the two agree to float rounding (δ's normalising sum, s̄ and V̄ are accumulated in another order);
// tests/methods/test_vasparse_fused.py compares them call by call and token by token.
// Built by methods/vasparse_fused.py with -ffp-contract=off: no fused multiply-add may change the
// rounding of a formula the reference computes as separate operations.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
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

struct Scratch {  // per (row, head) results the later steps need
  int64_t* drop;     // (m) dropped key positions, ascending
  int64_t* assign;   // (m) cluster of each dropped key
  float* omega;      // (m) ω_i
};

// Step 2 for one (row, head): `row` holds this head's N scaled scores followed by c free slots.
void select_merge_penalise(const Layer& L, const float* q, const float* K, const float* V, int64_t k_stride,
                           int64_t v_stride, const float* term, const float* w, float* row, float* k_bar,
                           float* v_bar, const Scratch& out) {
  const int64_t N = L.n_keys, d = L.dim, m = L.n_drop;
  const int64_t c = m > 0 && L.merge ? L.n_clusters : 0;
  if (m > 0) {
    const int64_t n = L.n_cand;
    std::vector<float> delta(n);
    float total = 0.f;
    for (int64_t i = 0; i < n; ++i) {
      const float v = row[L.start + i];
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
      out.drop[i] = L.start + idx[i];
      d_drop[i] = delta[idx[i]];
    }
    if (c > 0) {
      std::vector<float> k_drop(m * d);
      for (int64_t i = 0; i < m; ++i) std::copy_n(K + out.drop[i] * k_stride, d, k_drop.data() + i * d);
      if (c == 1) {
        std::fill_n(out.assign, m, 0);
      } else if (c == m) {  // singletons: every point is a centre
        std::iota(out.assign, out.assign + m, 0);
      } else {
        dpc_knn(k_drop.data(), m, d, c, L.knn_k, out.assign);
      }
      // ω_i = δ_i / Σ_cluster δ, uniform when that sum is 0 (merge_clusters)
      std::vector<float> sums(c, 0.f), sizes(c, 0.f);
      for (int64_t i = 0; i < m; ++i) {
        sums[out.assign[i]] += d_drop[i];
        sizes[out.assign[i]] += 1.f;
      }
      for (int64_t i = 0; i < m; ++i) {
        const float sum = sums[out.assign[i]];
        out.omega[i] = sum > 0.f ? d_drop[i] / std::max(sum, 1e-30f) : 1.f / sizes[out.assign[i]];
      }
      std::fill_n(k_bar, c * d, 0.f);
      std::fill_n(v_bar, c * d, 0.f);
      for (int64_t i = 0; i < m; ++i) {
        float* kb = k_bar + out.assign[i] * d;
        float* vb = v_bar + out.assign[i] * d;
        const float* kd = k_drop.data() + i * d;
        const float* vd = V + out.drop[i] * v_stride;
        for (int64_t t = 0; t < d; ++t) {
          kb[t] += out.omega[i] * kd[t];
          vb[t] += out.omega[i] * vd[t];
        }
      }
      for (int64_t j = 0; j < c; ++j) row[N + j] = dot(q, k_bar + j * d, d) * L.scaling;
    }
  }
  if (w != nullptr) {  // SAP; the current key's accumulator entry is 0 (grown by the caller)
    for (int64_t j = 0; j < N; ++j) row[j] = row[j] * (L.one_plus_beta - L.beta * w[j]);
    if (c > 0) {
      std::vector<float> w_bar(c, 0.f);
      for (int64_t i = 0; i < m; ++i) w_bar[out.assign[i]] += out.omega[i] * w[out.drop[i]];
      for (int64_t j = 0; j < c; ++j) row[N + j] = row[N + j] * (L.one_plus_beta - L.beta * w_bar[j]);
    }
  }
  for (int64_t i = 0; i < m; ++i) row[out.drop[i]] = kDropped;
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
  TORCH_CHECK(k.stride(3) == 1 && v.stride(3) == 1, "key and value need unit stride in the last dimension");
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
  const int64_t g = H / H_kv, m = n_drop, c = merge && m > 0 ? n_clusters : 0;
  Layer L{N, d, H, g, static_cast<float>(scaling), start, n_cand, m, n_clusters, knn_k,
          normalize_sum, merge, sap, static_cast<float>(beta), static_cast<float>(1.0 + beta), image_start, n_image};
  auto f32 = q.options();

  // 1. scaled scores; the g query heads of a key/value head share its K (no repeated copy)
  at::Tensor qc = q.contiguous();
  at::Tensor scores = at::matmul(qc.view({R, H_kv, g, d}), k.transpose(2, 3)).mul_(scaling);  // (R, H_kv, g, N)
  at::Tensor full = scores.view({R, H, N});
  if (c > 0) {  // room for the virtual keys' scores
    full = at::empty({R, H, N + c}, f32);
    full.narrow(2, 0, N).copy_(scores.view({R, H, N}));
  }
  // 2. selection, merge, penalty: small per-head work
  const bool per_head = m > 0 || sap;
  at::Tensor w = sap ? at::softmax(*acc, -1) : at::Tensor();  // sink weights, eq. (7)
  at::Tensor drop = at::empty({R, H, m}, f32.dtype(at::kLong));
  at::Tensor assign = at::empty({R, H, m}, f32.dtype(at::kLong));
  at::Tensor omega = at::empty({R, H, m}, f32);
  at::Tensor k_bar = c > 0 ? at::empty({R, H, c, d}, f32) : at::Tensor();
  at::Tensor v_bar = c > 0 ? at::empty({R, H, c, d}, f32) : at::Tensor();
  if (per_head) {
    const float* qp = qc.data_ptr<float>();
    const float* kp = k.data_ptr<float>();
    const float* vp = v.data_ptr<float>();
    const float* tp = has_term ? term->data_ptr<float>() : nullptr;
    const float* wp = sap ? w.data_ptr<float>() : nullptr;
    float* fp = full.data_ptr<float>();
    at::parallel_for(0, R * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t rh = begin; rh < end; ++rh) {
        const int64_t r = rh / H, h = rh % H, kv = h / g;
        Scratch sc{drop.data_ptr<int64_t>() + rh * m, assign.data_ptr<int64_t>() + rh * m,
                   omega.data_ptr<float>() + rh * m};
        select_merge_penalise(L, qp + rh * d, kp + r * k.stride(0) + kv * k.stride(1),
                              vp + r * v.stride(0) + kv * v.stride(1), k.stride(2), v.stride(2),
                              tp ? tp + r * n_cand : nullptr, wp ? wp + rh * N : nullptr, fp + rh * (N + c),
                              c > 0 ? k_bar.data_ptr<float>() + rh * c * d : nullptr,
                              c > 0 ? v_bar.data_ptr<float>() + rh * c * d : nullptr, sc);
      }
    });
  }
  // 3. probabilities and output, in the reference's order: p_real·V + p_virtual·V̄
  at::Tensor p = at::softmax(full, -1);
  at::Tensor real = p.narrow(2, 0, N);
  at::Tensor out = at::matmul(real.view({R, H_kv, g, N}), v).view({R, H, 1, d});
  if (c > 0) out = out + at::matmul(p.narrow(2, N, c).unsqueeze(2), v_bar);
  // 4. â: the virtual probability handed back to the dropped keys it merged
  at::Tensor a_hat = real;
  if (c > 0) {
    a_hat = real.contiguous();
    float* ap = a_hat.data_ptr<float>();
    const float* pp = p.data_ptr<float>();
    const int64_t* dp = drop.data_ptr<int64_t>();
    const int64_t* cp = assign.data_ptr<int64_t>();
    const float* op = omega.data_ptr<float>();
    for (int64_t rh = 0; rh < R * H; ++rh)
      for (int64_t i = 0; i < m; ++i)
        ap[rh * N + dp[rh * m + i]] = pp[rh * (N + c) + N + cp[rh * m + i]] * op[rh * m + i];
  }
  if (sap) acc->add_(a_hat);
  at::Tensor saliency = n_image > 0 ? a_hat.narrow(2, image_start, n_image).sum(-1).mean(1) : at::Tensor();
  return {out.view({R, 1, H, d}), saliency, trace ? a_hat.contiguous() : at::Tensor(), trace ? drop : at::Tensor(),
          record && sap ? std::get<0>(w.max(-1)) : at::Tensor()};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode", &decode, "VASparse decode-step attention of one layer (CPU, float32)");
}
