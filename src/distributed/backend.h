// What a ProcessGroup asks of a transport: MPI for CPU tensors (mpi.cpp),
// NCCL for CUDA tensors (nccl.cpp). The group checks operands and agreement;
// a backend only moves bytes.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "remat/distributed.h"

namespace remat::distributed::detail {

// One collective in flight.
class WorkState {
 public:
  explicit WorkState(std::string what) : what_(std::move(what)) {}
  virtual ~WorkState() = default;
  // Progresses the operation; true once its result is in place.
  virtual bool poll() = 0;
  const std::string& what() const { return what_; }

 private:
  std::string what_;  // e.g. "all_reduce(sum) of [1024] float32 on cpu (rank 0 of 2)"
};

class Backend {
 public:
  virtual ~Backend() = default;
  // `what` names the operation in errors; tensors are contiguous and checked.
  virtual std::shared_ptr<WorkState> all_reduce(const Tensor& tensor, ReduceOp op,
                                                std::string what) = 0;
  virtual std::shared_ptr<WorkState> broadcast(const Tensor& tensor, int root,
                                               std::string what) = 0;
  // In place on root; the other ranks' tensors stay as they are.
  virtual std::shared_ptr<WorkState> reduce(const Tensor& tensor, ReduceOp op, int root,
                                            std::string what) = 0;
  // out holds size() * tensor.numel() elements.
  virtual std::shared_ptr<WorkState> all_gather(const Tensor& tensor, const Tensor& out,
                                                std::string what) = 0;
  // tensor holds size() * out.numel() elements.
  virtual std::shared_ptr<WorkState> reduce_scatter(const Tensor& tensor, const Tensor& out,
                                                    ReduceOp op, std::string what) = 0;
};

// A group's two MPI communicators, one for the data and one for the
// agreement checks and barriers (defined in mpi.cpp, which alone sees MPI).
class MpiComms;
struct MpiMembership {
  int rank = 0;
  int size = 1;
  std::shared_ptr<MpiComms> comms;
};
// Every process, initialising MPI on first use. Throws in a build without MPI.
MpiMembership mpi_world();
// MPI_Comm_split of `parent` (collective over it): the ranks passing the
// same color >= 0, ordered by key, then by their rank in parent. A negative
// color joins no group: comms is then null.
MpiMembership mpi_split(const MpiComms& parent, int color, int key);
std::unique_ptr<Backend> make_mpi_backend(const MpiMembership& membership);
// Blocking barrier and fingerprint check on the control communicator: returns
// the minimum and maximum over ranks of each value.
void mpi_min_max(const MpiComms& comms, int64_t* values, int64_t* min, int64_t* max, int count,
                 std::chrono::milliseconds timeout, const std::string& what);
void mpi_barrier(const MpiComms& comms, std::chrono::milliseconds timeout);
// An NCCL communicator for `device`, bootstrapped through the group's MPI
// (rank 0's unique id broadcast): null in a build without NCCL.
std::unique_ptr<Backend> make_nccl_backend(ProcessGroup& group, Device device);

// Throws on every rank alike unless every rank passes as many parameters of
// the same shapes and dtypes, in the same order.
void check_same_parameters(ProcessGroup& group, const std::vector<Tensor>& params, const char* who);

// Polls until done or the timeout; throws an Error naming the work then.
void wait_for(WorkState& work, std::chrono::milliseconds timeout);

}  // namespace remat::distributed::detail
