// The MPI backend: CPU tensors, nonblocking collectives on a communicator of
// remat's own (a duplicate of MPI_COMM_WORLD, so a program's own MPI traffic
// never matches ours, or a split of one), and a second one for the agreement
// checks.
#include <climits>
#include <functional>
#include <thread>

#include <fmt/format.h>

#include "distributed/backend.h"
#include "remat/core/grad_mode.h"

#ifdef REMAT_WITH_MPI
#include <mpi.h>
#endif

namespace remat::distributed {

bool mpi_available() {
#ifdef REMAT_WITH_MPI
  return true;
#else
  return false;
#endif
}

namespace detail {

void wait_for(WorkState& work, std::chrono::milliseconds timeout) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  // Poll without sleeping, as MPI_Wait does: MPI moves a large message in
  // fragments, each only when both sides poll. A 50 us nap between polls made
  // a 32 MiB all-reduce take 200 ms, and even a yield hands the core to any
  // other runnable process for a time slice (a 4 MiB all-reduce: 25 ms with
  // yields on a busy 2-core machine, 10 ms without). Past 50 ms the peer is
  // late, not slow: yield then, so a wait for it does not hog a core.
  for (auto now = start; !work.poll(); now = std::chrono::steady_clock::now()) {
    if (now > deadline) {
      throw Error(fmt::format(
          "{}: not complete after {} ms: a peer has not joined it (stuck, dead, or calling "
          "another collective); it stays in flight and may be waited again",
          work.what(), timeout.count()));
    }
    if (now - start > std::chrono::milliseconds(50)) std::this_thread::yield();
  }
}

#ifdef REMAT_WITH_MPI
namespace {

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  throw Error(fmt::format("MPI: {} failed: {}", call, std::string(text, length)));
}
#define REMAT_MPI_CHECK(call) check_mpi((call), #call)

// A request with the tensors it reads and writes, kept until it completes.
struct Pending {
  MPI_Request request = MPI_REQUEST_NULL;
  std::vector<Tensor> tensors;
};

}  // namespace

class MpiComms {
 public:
  MpiComms(MPI_Comm data, MPI_Comm control) : data_(data), control_(control) {}
  ~MpiComms() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;  // MPI freed them
    MPI_Comm_free(&data_);
    MPI_Comm_free(&control_);
  }
  MpiComms(const MpiComms&) = delete;
  MpiComms& operator=(const MpiComms&) = delete;
  MPI_Comm data() const { return data_; }
  MPI_Comm control() const { return control_; }

 private:
  MPI_Comm data_;
  MPI_Comm control_;
};

namespace {

// MPI for the process. Finalised by this static's destructor when remat
// initialised it; requests dropped before completing are finished there first.
struct Environment {
  bool initialised_here = false;
  MpiMembership world;
  std::vector<Pending> abandoned;

  Environment() {
    int initialised = 0;
    REMAT_MPI_CHECK(MPI_Initialized(&initialised));
    if (!initialised) {
      int provided = 0;
      REMAT_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided));
      initialised_here = true;
    }
    // Errors come back as codes (then exceptions), not as MPI's abort.
    REMAT_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_Comm data = MPI_COMM_NULL;
    MPI_Comm control = MPI_COMM_NULL;
    REMAT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &data));
    REMAT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &control));
    world.comms = std::make_shared<MpiComms>(data, control);
    REMAT_MPI_CHECK(MPI_Comm_rank(data, &world.rank));
    REMAT_MPI_CHECK(MPI_Comm_size(data, &world.size));
  }
  ~Environment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    for (Pending& p : abandoned) MPI_Wait(&p.request, MPI_STATUS_IGNORE);
    // Communicators a live group still holds (the world's, which is never
    // destroyed) are released by MPI_Finalize.
    world.comms.reset();
    if (initialised_here) MPI_Finalize();
  }
};

Environment& environment() {
  static Environment env;
  return env;
}

class MpiWork : public WorkState {
 public:
  MpiWork(std::string what, std::vector<Tensor> tensors, std::function<void()> finish = {})
      : WorkState(std::move(what)), finish_(std::move(finish)) {
    pending_.tensors = std::move(tensors);
  }
  ~MpiWork() override {
    if (pending_.request != MPI_REQUEST_NULL)
      environment().abandoned.push_back(std::move(pending_));
  }
  MPI_Request* request() { return &pending_.request; }
  bool poll() override {
    if (pending_.request == MPI_REQUEST_NULL) return true;
    int flag = 0;
    REMAT_MPI_CHECK(MPI_Test(&pending_.request, &flag, MPI_STATUS_IGNORE));
    if (!flag) return false;
    pending_.tensors.clear();
    if (finish_) finish_();
    return true;
  }

 private:
  Pending pending_;
  std::function<void()> finish_;
};

MPI_Datatype mpi_type(DType dtype, const std::string& what) {
  switch (dtype) {
    case kFloat32: return MPI_FLOAT;
    case kFloat64: return MPI_DOUBLE;
    case kInt32: return MPI_INT32_T;
    case kInt64: return MPI_INT64_T;
    default:
      throw NotImplementedError(fmt::format(
          "{}: MPI reductions take float32, float64, int32 and int64, not {} (reduce a float32 "
          "copy)",
          what, dtype_name(dtype)));
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAverage: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

int mpi_count(int64_t n, const std::string& what) {
  if (n > INT_MAX) {
    throw NotImplementedError(
        fmt::format("{}: {} elements in one MPI message (MPI counts are int)", what, n));
  }
  return static_cast<int>(n);
}

// MPI has no average: sum, then divide once the sum is in place.
std::function<void()> average_on_completion(ReduceOp op, const Tensor& result, int size) {
  if (op != ReduceOp::kAverage || size == 1) return {};
  return [result, size] {
    NoGradGuard no_grad;
    result.detach().mul_(1.0 / size);
  };
}

class MpiBackend : public Backend {
 public:
  explicit MpiBackend(MpiMembership membership) : group_(std::move(membership)) {}

  std::shared_ptr<WorkState> all_reduce(const Tensor& tensor, ReduceOp op,
                                        std::string what) override {
    const MPI_Datatype type = mpi_type(tensor.dtype(), what);
    const int count = mpi_count(tensor.numel(), what);
    auto work = std::make_shared<MpiWork>(std::move(what), std::vector<Tensor>{tensor},
                                          average_on_completion(op, tensor, group_.size));
    REMAT_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, tensor.data_ptr(), count, type, mpi_op(op),
                                   group_.comms->data(), work->request()));
    return work;
  }

  std::shared_ptr<WorkState> reduce(const Tensor& tensor, ReduceOp op, int root,
                                    std::string what) override {
    const MPI_Datatype type = mpi_type(tensor.dtype(), what);
    const int count = mpi_count(tensor.numel(), what);
    const bool at_root = group_.rank == root;
    auto work = std::make_shared<MpiWork>(
        std::move(what), std::vector<Tensor>{tensor},
        average_on_completion(at_root ? op : ReduceOp::kSum, tensor, group_.size));
    // The root reduces into its own tensor; the others only send theirs.
    REMAT_MPI_CHECK(MPI_Ireduce(at_root ? MPI_IN_PLACE : tensor.data_ptr(),
                                at_root ? tensor.data_ptr() : nullptr, count, type, mpi_op(op),
                                root, group_.comms->data(), work->request()));
    return work;
  }

  std::shared_ptr<WorkState> broadcast(const Tensor& tensor, int root, std::string what) override {
    const int count = mpi_count(tensor.nbytes(), what);
    auto work = std::make_shared<MpiWork>(std::move(what), std::vector<Tensor>{tensor});
    REMAT_MPI_CHECK(MPI_Ibcast(tensor.data_ptr(), count, MPI_BYTE, root, group_.comms->data(),
                               work->request()));
    return work;
  }

  std::shared_ptr<WorkState> all_gather(const Tensor& tensor, const Tensor& out,
                                        std::string what) override {
    const int count = mpi_count(tensor.nbytes(), what);
    mpi_count(out.nbytes(), what);
    auto work = std::make_shared<MpiWork>(std::move(what), std::vector<Tensor>{tensor, out});
    REMAT_MPI_CHECK(MPI_Iallgather(tensor.data_ptr(), count, MPI_BYTE, out.data_ptr(), count,
                                   MPI_BYTE, group_.comms->data(), work->request()));
    return work;
  }

  std::shared_ptr<WorkState> reduce_scatter(const Tensor& tensor, const Tensor& out, ReduceOp op,
                                            std::string what) override {
    const MPI_Datatype type = mpi_type(tensor.dtype(), what);
    const int count = mpi_count(out.numel(), what);
    mpi_count(tensor.numel(), what);
    auto work = std::make_shared<MpiWork>(std::move(what), std::vector<Tensor>{tensor, out},
                                          average_on_completion(op, out, group_.size));
    REMAT_MPI_CHECK(MPI_Ireduce_scatter_block(tensor.data_ptr(), out.data_ptr(), count, type,
                                              mpi_op(op), group_.comms->data(), work->request()));
    return work;
  }

 private:
  MpiMembership group_;
};

}  // namespace

MpiMembership mpi_world() { return environment().world; }

MpiMembership mpi_split(const MpiComms& parent, int color, int key) {
  const int mpi_color = color < 0 ? MPI_UNDEFINED : color;
  MPI_Comm data = MPI_COMM_NULL;
  MPI_Comm control = MPI_COMM_NULL;
  REMAT_MPI_CHECK(MPI_Comm_split(parent.data(), mpi_color, key, &data));
  REMAT_MPI_CHECK(MPI_Comm_split(parent.control(), mpi_color, key, &control));
  MpiMembership m;
  if (data == MPI_COMM_NULL) return m;
  m.comms = std::make_shared<MpiComms>(data, control);
  REMAT_MPI_CHECK(MPI_Comm_rank(data, &m.rank));
  REMAT_MPI_CHECK(MPI_Comm_size(data, &m.size));
  return m;
}

std::unique_ptr<Backend> make_mpi_backend(const MpiMembership& membership) {
  return std::make_unique<MpiBackend>(membership);
}

void mpi_min_max(const MpiComms& comms, int64_t* values, int64_t* min, int64_t* max, int count,
                 std::chrono::milliseconds timeout, const std::string& what) {
  // One MAX reduction of (v, -v) gives both ends. The buffer is a tensor the
  // work keeps: after a timeout the exchange may still complete into it.
  Tensor both = Tensor::empty({2 * count}, kInt64);
  int64_t* b = both.data<int64_t>();
  for (int i = 0; i < count; ++i) {
    b[i] = values[i];
    b[count + i] = -values[i];
  }
  MpiWork work(what + " (agreement check)", {both});
  REMAT_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, b, 2 * count, MPI_INT64_T, MPI_MAX, comms.control(),
                                 work.request()));
  wait_for(work, timeout);
  for (int i = 0; i < count; ++i) {
    max[i] = b[i];
    min[i] = -b[count + i];
  }
}

void mpi_barrier(const MpiComms& comms, std::chrono::milliseconds timeout) {
  MpiWork work("barrier", {});
  REMAT_MPI_CHECK(MPI_Ibarrier(comms.control(), work.request()));
  wait_for(work, timeout);
}

#else  // no MPI

namespace {
[[noreturn]] void no_mpi() {
  throw NotImplementedError(
      "remat::distributed: this remat was built without MPI (configure with "
      "-DREMAT_ENABLE_MPI=ON and install libopenmpi-dev: scripts/deps.sh)");
}
}  // namespace

class MpiComms {};

MpiMembership mpi_world() { no_mpi(); }
MpiMembership mpi_split(const MpiComms&, int, int) { no_mpi(); }
std::unique_ptr<Backend> make_mpi_backend(const MpiMembership&) { no_mpi(); }
void mpi_min_max(const MpiComms&, int64_t*, int64_t*, int64_t*, int, std::chrono::milliseconds,
                 const std::string&) {
  no_mpi();
}
void mpi_barrier(const MpiComms&, std::chrono::milliseconds) { no_mpi(); }

#endif

}  // namespace detail
}  // namespace remat::distributed
