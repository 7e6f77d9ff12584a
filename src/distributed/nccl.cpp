// The NCCL backend: CUDA tensors, collectives on a stream of the backend's
// own, ordered after the work the calling thread's current stream has
// queued. Built where CUDA, NCCL and MPI are; this repository's CI has no GPU,
// so it is compiled there but runs only on a CUDA machine (docs/distributed.md).
#include "distributed/backend.h"

#ifdef REMAT_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#include <cstring>

#include <fmt/format.h>

#include "core/cuda_check.h"
#include "remat/core/stream.h"
#endif

namespace remat::distributed {

bool nccl_available() {
#ifdef REMAT_WITH_NCCL
  return true;
#else
  return false;
#endif
}

namespace detail {

#ifdef REMAT_WITH_NCCL
namespace {

void check_nccl(ncclResult_t rc, const char* call, const char* file, int line) {
  if (rc == ncclSuccess || rc == ncclInProgress) return;
  throw Error(
      fmt::format("NCCL: {} failed at {}:{}: {}", call, file, line, ncclGetErrorString(rc)));
}
#define REMAT_NCCL_CHECK(call) check_nccl((call), #call, __FILE__, __LINE__)

ncclDataType_t nccl_type(DType dtype, const std::string& what) {
  switch (dtype) {
    case kFloat32: return ncclFloat32;
    case kFloat64: return ncclFloat64;
    case kBFloat16: return ncclBfloat16;
    case kFloat16: return ncclFloat16;
    case kInt32: return ncclInt32;
    case kInt64: return ncclInt64;
    default:
      throw NotImplementedError(
          fmt::format("{}: NCCL does not reduce {}", what, dtype_name(dtype)));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAverage: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

// Done when the event recorded after the collective has passed; a failed
// communicator (a dead peer) shows as its asynchronous error.
class NcclWork : public WorkState {
 public:
  NcclWork(std::string what, ncclComm_t comm, std::vector<Tensor> tensors)
      : WorkState(std::move(what)), comm_(comm), tensors_(std::move(tensors)) {
    REMAT_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  ~NcclWork() override { cudaEventDestroy(done_); }
  cudaEvent_t event() const { return done_; }
  bool poll() override {
    const cudaError_t state = cudaEventQuery(done_);
    if (state == cudaSuccess) {
      tensors_.clear();
      return true;
    }
    if (state != cudaErrorNotReady) REMAT_CUDA_CHECK(state);
    ncclResult_t async = ncclSuccess;
    REMAT_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
    REMAT_NCCL_CHECK(async);
    return false;
  }

 private:
  ncclComm_t comm_;
  std::vector<Tensor> tensors_;
  cudaEvent_t done_ = nullptr;
};

class NcclBackend : public Backend {
 public:
  NcclBackend(ProcessGroup& group, Device device) : device_(device) {
    REMAT_CUDA_CHECK(cudaSetDevice(device.index));
    Tensor id = zeros({static_cast<int64_t>(sizeof(ncclUniqueId))}, kInt8);
    if (group.rank() == 0) {
      ncclUniqueId unique;
      REMAT_NCCL_CHECK(ncclGetUniqueId(&unique));
      std::memcpy(id.data_ptr(), &unique, sizeof unique);
    }
    group.broadcast(id, 0);
    ncclUniqueId unique;
    std::memcpy(&unique, id.data_ptr(), sizeof unique);
    REMAT_NCCL_CHECK(ncclCommInitRank(&comm_, group.size(), unique, group.rank()));
    REMAT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    REMAT_CUDA_CHECK(cudaEventCreateWithFlags(&queued_, cudaEventDisableTiming));
  }
  ~NcclBackend() override {
    ncclCommDestroy(comm_);
    cudaEventDestroy(queued_);
    cudaStreamDestroy(stream_);
  }

  std::shared_ptr<WorkState> all_reduce(const Tensor& tensor, ReduceOp op,
                                        std::string what) override {
    const ncclDataType_t type = nccl_type(tensor.dtype(), what);
    return launch(std::move(what), {tensor}, [&] {
      return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(),
                           static_cast<size_t>(tensor.numel()), type, nccl_op(op), comm_, stream_);
    });
  }
  std::shared_ptr<WorkState> reduce(const Tensor& tensor, ReduceOp op, int root,
                                    std::string what) override {
    const ncclDataType_t type = nccl_type(tensor.dtype(), what);
    return launch(std::move(what), {tensor}, [&] {
      return ncclReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                        type, nccl_op(op), root, comm_, stream_);
    });
  }
  std::shared_ptr<WorkState> broadcast(const Tensor& tensor, int root, std::string what) override {
    return launch(std::move(what), {tensor}, [&] {
      return ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(),
                           static_cast<size_t>(tensor.nbytes()), ncclUint8, root, comm_, stream_);
    });
  }
  std::shared_ptr<WorkState> all_gather(const Tensor& tensor, const Tensor& out,
                                        std::string what) override {
    return launch(std::move(what), {tensor, out}, [&] {
      return ncclAllGather(tensor.data_ptr(), out.data_ptr(), static_cast<size_t>(tensor.nbytes()),
                           ncclUint8, comm_, stream_);
    });
  }
  std::shared_ptr<WorkState> reduce_scatter(const Tensor& tensor, const Tensor& out, ReduceOp op,
                                            std::string what) override {
    const ncclDataType_t type = nccl_type(tensor.dtype(), what);
    return launch(std::move(what), {tensor, out}, [&] {
      return ncclReduceScatter(tensor.data_ptr(), out.data_ptr(), static_cast<size_t>(out.numel()),
                               type, nccl_op(op), comm_, stream_);
    });
  }

 private:
  // The collective waits for what the current stream queued before it (the
  // kernels that computed its operands).
  template <typename Call>
  std::shared_ptr<WorkState> launch(std::string what, std::vector<Tensor> tensors, Call call) {
    REMAT_CUDA_CHECK(cudaSetDevice(device_.index));
    auto current = static_cast<cudaStream_t>(current_stream(device_).handle());
    REMAT_CUDA_CHECK(cudaEventRecord(queued_, current));
    REMAT_CUDA_CHECK(cudaStreamWaitEvent(stream_, queued_, 0));
    auto work = std::make_shared<NcclWork>(std::move(what), comm_, std::move(tensors));
    REMAT_NCCL_CHECK(call());
    REMAT_CUDA_CHECK(cudaEventRecord(work->event(), stream_));
    return work;
  }

  Device device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t queued_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> make_nccl_backend(ProcessGroup& group, Device device) {
  return std::make_unique<NcclBackend>(group, device);
}

#else

std::unique_ptr<Backend> make_nccl_backend(ProcessGroup&, Device) { return nullptr; }

#endif

}  // namespace detail
}  // namespace remat::distributed
