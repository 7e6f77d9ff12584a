// ProcessGroup: operand checks, the agreement check, and the choice of
// backend by device.
#include <cstdlib>
#include <string_view>

#include <fmt/format.h>

#include "distributed/backend.h"
#include "remat/core/grad_mode.h"
#include "remat/ops.h"

namespace remat::distributed {

bool Work::test() {
  REMAT_CHECK(defined(), "Work::test on an empty Work");
  return state_->poll();
}

void Work::wait() {
  REMAT_CHECK(defined(), "Work::wait on an empty Work");
  detail::wait_for(*state_, group_->timeout());
}

namespace {

std::chrono::milliseconds timeout_from_environment() {
  if (const char* value = std::getenv("REMAT_DIST_TIMEOUT_MS")) {
    char* end = nullptr;
    const long long ms = std::strtoll(value, &end, 10);
    REMAT_CHECK(end != value && *end == '\0' && ms > 0,
                "REMAT_DIST_TIMEOUT_MS={}: expected a positive number of milliseconds", value);
    return std::chrono::milliseconds(ms);
  }
  return std::chrono::minutes(5);
}

const char* op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAverage: return "average";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "?";
}

// FNV-1a over what identifies a call: which collective, dtype, shape, root.
uint64_t fingerprint(std::string_view what, const Tensor& tensor, int64_t extra) {
  uint64_t h = 1469598103934665603ULL;
  auto mix = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ULL;
    }
  };
  for (char c : what) mix(static_cast<unsigned char>(c));
  mix(static_cast<uint64_t>(tensor.dtype()));
  mix(static_cast<uint64_t>(tensor.device().type));
  for (int64_t d : tensor.shape()) mix(static_cast<uint64_t>(d));
  mix(static_cast<uint64_t>(extra));
  return h;
}

// A reduction's operand checks, shared by every collective that reduces.
void check_reduce_op(const std::string& what, const Tensor& tensor, ReduceOp op) {
  REMAT_CHECK(op != ReduceOp::kAverage || is_floating(tensor.dtype()),
              "{} of {}: averages need a floating-point tensor", what,
              TensorMeta::of(tensor).str());
}

void check_root(const std::string& what, int root, int size) {
  REMAT_CHECK(root >= 0 && root < size, "{}: root {} is not a rank of a group of {}", what, root,
              size);
}

std::string describe(const char* what, const Tensor& tensor, int rank, int size) {
  return fmt::format("{} of {} (rank {} of {})", what, TensorMeta::of(tensor).str(), rank, size);
}

}  // namespace

ProcessGroup& ProcessGroup::world() {
  // Never destroyed: MPI's own static finalises.
  static ProcessGroup* group = new ProcessGroup(detail::mpi_world(), timeout_from_environment());
  return *group;
}

ProcessGroup::ProcessGroup(const detail::MpiMembership& membership,
                           std::chrono::milliseconds timeout)
    : rank_(membership.rank),
      size_(membership.size),
      timeout_(timeout),
      comms_(membership.comms),
      mpi_(detail::make_mpi_backend(membership)) {}

std::unique_ptr<ProcessGroup> ProcessGroup::split(int color, int key) {
  const detail::MpiMembership membership = detail::mpi_split(*comms_, color, key);
  if (membership.comms == nullptr) return nullptr;
  return std::unique_ptr<ProcessGroup>(new ProcessGroup(membership, timeout_));
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::set_timeout(std::chrono::milliseconds timeout) {
  REMAT_CHECK(timeout.count() > 0, "ProcessGroup::set_timeout: {} ms is not positive",
              timeout.count());
  timeout_ = timeout;
}

detail::Backend& ProcessGroup::backend_for(const Tensor& tensor, const char* what) {
  REMAT_CHECK(tensor.defined(), "{}: undefined tensor", what);
  REMAT_CHECK(tensor.is_contiguous(), "{}: the tensor {} must be contiguous", what,
              TensorMeta::of(tensor).str());
  if (tensor.device().is_cpu()) return *mpi_;
  REMAT_CHECK(!nccl_ || nccl_device_ == tensor.device(),
              "{} of a {} tensor: this group's NCCL communicator is on {} (one CUDA device per "
              "process)",
              what, tensor.device().str(), nccl_device_.str());
  if (!nccl_) {
    nccl_ = detail::make_nccl_backend(*this, tensor.device());
    if (!nccl_) {
      throw NotImplementedError(fmt::format(
          "{} of a {} tensor: this remat was built without NCCL (it needs CUDA and MPI)", what,
          tensor.device().str()));
    }
    nccl_device_ = tensor.device();
  }
  return *nccl_;
}

void ProcessGroup::check_agreement(const char* what, const Tensor& tensor, int64_t extra) {
  if (size_ == 1) return;
  int64_t values[2] = {tensor.numel(), static_cast<int64_t>(fingerprint(what, tensor, extra))};
  int64_t min[2];
  int64_t max[2];
  const std::string name = describe(what, tensor, rank_, size_);
  detail::mpi_min_max(*comms_, values, min, max, 2, timeout_, name);
  if (min[1] != max[1]) {
    throw Error(fmt::format(
        "{}: the ranks disagree on the call: this rank passes {} ({} elements), the ranks pass "
        "between {} and {} elements (or a different dtype, shape, device, root or collective)",
        name, TensorMeta::of(tensor).str(), values[0], min[0], max[0]));
  }
}

Work ProcessGroup::all_reduce_async(const Tensor& tensor, ReduceOp op) {
  detail::Backend& backend = backend_for(tensor, "all_reduce");
  const std::string what = fmt::format("all_reduce({})", op_name(op));
  check_reduce_op(what, tensor, op);
  tensor.bump_version();
  return Work(backend.all_reduce(tensor, op, describe(what.c_str(), tensor, rank_, size_)), *this);
}

void ProcessGroup::all_reduce(const Tensor& tensor, ReduceOp op) {
  const std::string what = fmt::format("all_reduce({})", op_name(op));
  backend_for(tensor, what.c_str());
  check_agreement(what.c_str(), tensor, 0);
  all_reduce_async(tensor, op).wait();
}

Work ProcessGroup::reduce_async(const Tensor& tensor, int root, ReduceOp op) {
  const std::string what = fmt::format("reduce({}) to rank {}", op_name(op), root);
  detail::Backend& backend = backend_for(tensor, what.c_str());
  check_root(what, root, size_);
  check_reduce_op(what, tensor, op);
  if (rank_ == root) tensor.bump_version();
  return Work(backend.reduce(tensor, op, root, describe(what.c_str(), tensor, rank_, size_)),
              *this);
}

void ProcessGroup::reduce(const Tensor& tensor, int root, ReduceOp op) {
  const std::string what = fmt::format("reduce({}) to rank {}", op_name(op), root);
  backend_for(tensor, what.c_str());
  check_agreement(what.c_str(), tensor, root);
  reduce_async(tensor, root, op).wait();
}

Work ProcessGroup::broadcast_async(const Tensor& tensor, int root) {
  detail::Backend& backend = backend_for(tensor, "broadcast");
  check_root("broadcast", root, size_);
  tensor.bump_version();
  return Work(backend.broadcast(tensor, root, describe("broadcast", tensor, rank_, size_)), *this);
}

void ProcessGroup::broadcast(const Tensor& tensor, int root) {
  backend_for(tensor, "broadcast");
  check_agreement("broadcast", tensor, root);
  broadcast_async(tensor, root).wait();
}

Tensor ProcessGroup::all_gather(const Tensor& tensor) {
  detail::Backend& backend = backend_for(tensor, "all_gather");
  check_agreement("all_gather", tensor, 0);
  Shape shape;
  shape.push_back(size_);
  for (int64_t d : tensor.shape()) shape.push_back(d);
  Tensor out = Tensor::empty(shape, tensor.dtype(), tensor.device());
  Work(backend.all_gather(tensor, out, describe("all_gather", tensor, rank_, size_)), *this).wait();
  return out;
}

Tensor ProcessGroup::reduce_scatter(const Tensor& tensor, ReduceOp op) {
  const std::string what = fmt::format("reduce_scatter({})", op_name(op));
  detail::Backend& backend = backend_for(tensor, what.c_str());
  REMAT_CHECK_SHAPE(tensor.dim() >= 1 && tensor.size(0) % size_ == 0,
                    "{} of {}: the leading dimension must split into {} equal parts", what,
                    TensorMeta::of(tensor).str(), size_);
  check_reduce_op(what, tensor, op);
  check_agreement(what.c_str(), tensor, 0);
  Shape shape{tensor.size(0) / size_};
  for (int64_t d = 1; d < tensor.dim(); ++d) shape.push_back(tensor.size(d));
  Tensor out = Tensor::empty(shape, tensor.dtype(), tensor.device());
  Work(backend.reduce_scatter(tensor, out, op, describe(what.c_str(), tensor, rank_, size_)), *this)
      .wait();
  return out;
}

namespace detail {

void check_same_parameters(ProcessGroup& group, const std::vector<Tensor>& params,
                           const char* who) {
  uint64_t h = 1469598103934665603ULL;
  for (const Tensor& p : params) h ^= fingerprint("parameter", p, 0) + (h << 6) + (h >> 2);
  Tensor layout = from_vector(
      std::vector<int64_t>{static_cast<int64_t>(params.size()), static_cast<int64_t>(h >> 1)}, {2});
  const std::vector<int64_t> all = group.all_gather(layout).to_vector<int64_t>();
  for (int r = 1; r < group.size(); ++r) {
    REMAT_CHECK(all[2 * r] == all[0] && all[2 * r + 1] == all[1],
                "{}: rank {} has {} parameters and rank 0 has {}, or their shapes or dtypes "
                "differ: every rank must pass the same model",
                who, r, all[2 * r], all[0]);
  }
}

}  // namespace detail

void ProcessGroup::barrier() { detail::mpi_barrier(*comms_, timeout_); }

}  // namespace remat::distributed
