// Consumer of an installed remat: a tiny matmul + sum + backward and a
// convolution through the public API only, checked against values worked out
// by hand, and remat/distributed.h linked. Exits non-zero on any mismatch, so
// the install test fails.
#include <cmath>
#include <cstdio>
#include <vector>

#include <remat/distributed.h>
#include <remat/remat.h>

namespace {

bool close(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  bool ok = got.size() == want.size();
  for (size_t i = 0; ok && i < got.size(); ++i) ok = std::fabs(got[i] - want[i]) <= 1e-5f;
  if (!ok) {
    std::fprintf(stderr, "%s: got", what);
    for (float v : got) std::fprintf(stderr, " %g", static_cast<double>(v));
    std::fprintf(stderr, ", want");
    for (float v : want) std::fprintf(stderr, " %g", static_cast<double>(v));
    std::fprintf(stderr, "\n");
  }
  return ok;
}

}  // namespace

int main() {
  using namespace remat;
  try {
    Tensor a = from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2});
    Tensor b = from_vector(std::vector<float>{5, 6, 7, 8}, {2, 2});
    a.requires_grad_();
    b.requires_grad_();

    // loss = sum(a @ b) = sum([[19, 22], [43, 50]]) = 134
    Tensor loss = sum(matmul(a, b));
    loss.backward();

    bool ok = close({loss.item<float>()}, {134.0f}, "loss");
    // d loss / d a = ones(2,2) @ b^T: each row holds b's row sums (11, 15).
    ok = close(a.grad().to_vector<float>(), {11, 15, 11, 15}, "a.grad") && ok;
    // d loss / d b = a^T @ ones(2,2): each column holds a's column sums (4, 6).
    ok = close(b.grad().to_vector<float>(), {4, 4, 6, 6}, "b.grad") && ok;

    // A 3x3 convolution of ones, padded by 1 (the CPU runs it in oneDNN where
    // remat was built with it): each output counts the input taps inside.
    const Tensor conv = conv2d(ones({1, 1, 3, 3}), ones({1, 1, 3, 3}), Tensor(), {1, 1}, {1, 1});
    ok = close(conv.to_vector<float>(), {4, 6, 4, 6, 9, 6, 4, 6, 4}, "conv2d") && ok;

    const memory::Stats s = memory::stats(kCPU);
    std::printf("remat consumer: loss %g, peak allocated %lld bytes (%lld allocations)\n",
                static_cast<double>(loss.item<float>()),
                static_cast<long long>(s.allocated_bytes.peak),
                static_cast<long long>(s.allocation_count.allocated));
    if (s.allocated_bytes.peak <= 0) {
      std::fprintf(stderr, "peak allocated bytes should be positive\n");
      ok = false;
    }
    // The distributed header is installed, and a remat built with MPI links
    // it through the package (the backend's objects reference MPI).
    std::printf("remat consumer: MPI backend %s\n",
                distributed::mpi_available() ? "built" : "not built");
    if (!ok) return 1;
    std::printf("remat consumer: ok\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "remat consumer: exception: %s\n", e.what());
    return 2;
  }
}
