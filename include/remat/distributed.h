// remat::distributed: data parallelism across processes (docs/distributed.md).
// A ProcessGroup runs collectives over the processes `mpirun -np N` started:
// through MPI for CPU tensors and through NCCL for CUDA tensors (the backend
// follows the tensor's device). DistributedDataParallel averages a module's
// gradients across the group while backward runs; ZeroRedundancyOptimizer
// shards an optimizer's state across it (ZeRO stage 1; stage 2 with
// DdpOptions::gradient_owners).
//
// Not part of remat.h: this header needs no MPI to compile, but a remat built
// without MPI (REMAT_ENABLE_MPI=OFF, or no libopenmpi-dev) throws from
// ProcessGroup::world().
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "remat/autograd.h"
#include "remat/core/tensor.h"
#include "remat/nn/module.h"
#include "remat/optim/optimizer.h"

namespace remat::distributed {

// Whether this remat was built with MPI, and with NCCL (needs CUDA too).
bool mpi_available();
bool nccl_available();

enum class ReduceOp { kSum, kAverage, kMax, kMin };

namespace detail {
class WorkState;
class Backend;
class MpiComms;
struct MpiMembership;
}  // namespace detail
class ProcessGroup;

// A collective in flight. Its tensors must stay alive and untouched until it
// completes.
class Work {
 public:
  Work() = default;
  Work(std::shared_ptr<detail::WorkState> state, const ProcessGroup& group)
      : state_(std::move(state)), group_(&group) {}
  // Progresses the operation without blocking; true once it is complete and
  // its result is in place. MPI moves data only inside MPI calls, so calling
  // this now and then is what overlaps communication with computation.
  bool test();
  // Blocks until complete. After the group's timeout (as it is when wait()
  // is called) it throws an Error that names the operation; the operation
  // stays in flight and may be waited again (a late peer completes it).
  void wait();
  bool defined() const { return state_ != nullptr; }

 private:
  std::shared_ptr<detail::WorkState> state_;
  const ProcessGroup* group_ = nullptr;
};

// The processes of one job. Blocking collectives first check that every
// rank called the same collective on the same shape and dtype (one small
// exchange on a separate communicator) and otherwise throw, on every rank,
// an Error naming this rank's call and the element counts over the ranks;
// the group keeps working after it. The _async variants skip the
// check (it would make every rank wait for the others at launch, which is
// what they exist to avoid): DistributedDataParallel and
// ZeroRedundancyOptimizer check their layouts once, when constructed.
// Tensors must be contiguous. Reductions take float32, float64, int32 and
// int64 (NCCL also bfloat16 and float16; kAverage floating point only);
// broadcast and all_gather any dtype.
class ProcessGroup {
 public:
  // Every process of the job. The first call initialises MPI (unless the
  // program already did; then the program also finalises it) and remat
  // finalises it at exit. Without mpirun it is a group of one.
  static ProcessGroup& world();

  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // How long wait() waits before it throws; also from the environment
  // variable REMAT_DIST_TIMEOUT_MS. Default 300 s.
  std::chrono::milliseconds timeout() const { return timeout_; }
  void set_timeout(std::chrono::milliseconds timeout);

  // In place: every rank ends with the reduction of every rank's tensor.
  void all_reduce(const Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  Work all_reduce_async(const Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  // In place on root: root's tensor ends with the reduction of every rank's
  // tensor; the other ranks' stay as they are.
  void reduce(const Tensor& tensor, int root, ReduceOp op = ReduceOp::kSum);
  Work reduce_async(const Tensor& tensor, int root, ReduceOp op = ReduceOp::kSum);
  // In place: every rank ends with root's tensor.
  void broadcast(const Tensor& tensor, int root);
  Work broadcast_async(const Tensor& tensor, int root);
  // Every rank's tensor stacked along a new leading dimension: [size(), ...].
  Tensor all_gather(const Tensor& tensor);
  // tensor's leading dimension, of size() * k rows, reduced over ranks; this
  // rank gets rows [rank() * k, (rank() + 1) * k).
  Tensor reduce_scatter(const Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  void barrier();

  // A sub-group (MPI_Comm_split): the ranks of this group that pass the same
  // color >= 0 form one group, ranked by key, then by their rank here. Every
  // rank of this group must call it; a negative color joins no group and gets
  // null. The new group has this group's timeout, and its own
  // communicators: its collectives never match this group's.
  std::unique_ptr<ProcessGroup> split(int color, int key = 0);

 private:
  explicit ProcessGroup(const detail::MpiMembership& membership, std::chrono::milliseconds timeout);
  // The backend for a tensor's device (NCCL's is made on first use).
  detail::Backend& backend_for(const Tensor& tensor, const char* what);
  // Throws unless every rank passes the same fingerprint for a collective.
  void check_agreement(const char* what, const Tensor& tensor, int64_t extra);

  int rank_ = 0;
  int size_ = 1;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<detail::MpiComms> comms_;
  std::unique_ptr<detail::Backend> mpi_;
  std::unique_ptr<detail::Backend> nccl_;
  Device nccl_device_;
};

struct DdpOptions {
  // Gradients are reduced in buckets of about this many bytes (PyTorch's
  // default): fewer, larger messages than one per parameter, and the first
  // bucket is ready long before backward ends.
  int64_t bucket_cap_bytes = int64_t{25} << 20;
  // Copy rank 0's parameters and buffers to every rank at construction.
  bool broadcast_parameters = true;
  // ZeRO stage 2, with a ZeroRedundancyOptimizer over the same parameters:
  // DdpOptions{.gradient_owners = zero.owners()}. Entry k is the rank that
  // keeps the gradient of the module's k-th parameter (in parameters()
  // order, those that require a gradient): it alone receives the mean (a
  // reduce instead of an all-reduce), and every other rank drops the
  // gradient as soon as it is copied into its bucket. Buckets then hold one
  // owner's parameters and are allocated only while a backward reduces them.
  // Empty: every rank gets every mean (all-reduce).
  std::vector<int> gradient_owners;
  // PyTorch's gradient_as_bucket_view: once a gradient is copied into its
  // bucket, the parameter's .grad becomes that slice of the bucket, and the
  // bucket's mean is computed in place, so gradients and buckets are one
  // copy instead of two and no copy back is made. For float32 and float64
  // parameters (16-bit ones travel in float32 buckets and keep their own
  // gradients); not with gradient_owners, whose buckets are transient. The
  // next backward adds into the views when zero_grad keeps them
  // (set_to_none = false); after set_to_none a fresh gradient is copied in
  // again.
  bool gradient_as_bucket_view = false;
};

// Averages the gradients of a module's parameters across the group during
// each backward that reaches them, so that every rank's .grad holds the mean
// of the ranks' gradients when backward returns (with the loss a mean over
// each rank's batch: the gradient of the concatenated batch). Parameters are
// bucketed in reverse registration order (roughly the order backward
// finishes them); a bucket's all-reduce starts as soon as each of its
// parameters' gradients is final, while the rest of backward runs, and
// buckets start in the same order on every rank. A parameter the backward
// does not reach counts as a zero gradient; one that no rank gave a gradient
// keeps none. Checkpointed models work unchanged (replays deliver no
// gradients). One backward per step outside no_sync(): a second one would
// average again. With DdpOptions::gradient_owners (ZeRO-2) only a
// parameter's owner holds its mean when backward returns; on the other ranks
// its .grad is undefined.
class DistributedDataParallel {
 public:
  explicit DistributedDataParallel(std::shared_ptr<nn::Module> module, DdpOptions options = {});
  DistributedDataParallel(std::shared_ptr<nn::Module> module, ProcessGroup& group,
                          DdpOptions options = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  Tensor forward(const Tensor& input) { return module_->forward(input); }
  Tensor operator()(const Tensor& input) { return forward(input); }
  nn::Module& module() { return *module_; }
  ProcessGroup& group() { return group_; }

  // Gradient accumulation: while the guard lives, backward only accumulates
  // local gradients; the first backward after it averages the total.
  class NoSync {
   public:
    explicit NoSync(DistributedDataParallel& ddp) : ddp_(ddp) { ++ddp_.no_sync_depth_; }
    ~NoSync() { --ddp_.no_sync_depth_; }
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;

   private:
    DistributedDataParallel& ddp_;
  };
  [[nodiscard]] NoSync no_sync() { return NoSync(*this); }

  struct Stats {
    int64_t buckets = 0;
    // All-reduces started while backward still ran, and those started once it
    // had finished (buckets holding a parameter it never reached).
    int64_t started_during_backward = 0;
    int64_t started_at_end = 0;
    int64_t bytes_reduced = 0;
    // Time backward spent at its end waiting for all-reduces to complete:
    // the communication that did not overlap with computation.
    int64_t wait_ns = 0;
  };
  const Stats& stats() const { return stats_; }
  // Sizes in bytes of the buckets, in the order they are reduced.
  std::vector<int64_t> bucket_bytes() const;

 private:
  struct Bucket;
  void on_grad_ready(size_t param);
  void launch_ready_buckets();
  void finish_backward();
  void reset_pass();
  void allocate(Bucket& bucket);
  // Whether param's .grad is kept as a view into its bucket.
  bool views_bucket(const Tensor& param, const Bucket& bucket) const;
  void release(Bucket& bucket);

  std::shared_ptr<nn::Module> module_;
  ProcessGroup& group_;
  std::vector<Tensor> params_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<size_t> bucket_of_;  // by parameter
  bool sharded_ = false;           // DdpOptions::gradient_owners given
  bool bucket_views_ = false;      // DdpOptions::gradient_as_bucket_view
  std::vector<GradReadyHandle> hooks_;
  int no_sync_depth_ = 0;
  bool pass_open_ = false;           // a backward marked a parameter ready and has not finished
  std::shared_ptr<int> pass_token_;  // shared with the open pass's queued callback
  bool finishing_ = false;           // inside finish_backward()
  size_t next_bucket_ = 0;           // buckets start in order
  Stats stats_;
};

// optim::clip_grad_norm for gradients sharded across the group, each held by
// one rank (as ZeRO-2 leaves them): the norm is taken over every rank's
// gradients together and each rank scales its own. On one rank's shard
// optim::clip_grad_norm would clip by that shard's norm alone. Collective:
// every rank calls it. The same total as one process holding every gradient,
// up to float64 rounding (the ranks' partial norms are added).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, ProcessGroup& group,
                      double norm_type = 2.0);

// Bytes of the state tensors an optimizer holds (for a ZeroRedundancyOptimizer:
// those this rank holds): what ZeRO-1 divides.
int64_t optimizer_state_bytes(const optim::Optimizer& optimizer);

// ZeRO stage 1: the optimizer's state is split across the ranks. Each
// parameter belongs to one rank (whole parameters, assigned largest first to
// the least loaded rank, as PyTorch's ZeroRedundancyOptimizer does); each rank
// keeps an optimizer, made by `make`, over its own parameters only, and after
// its update every parameter is broadcast from its owner. Gradients must be
// the same on every rank (DistributedDataParallel's), so the parameters equal
// those of the unsharded optimizer, bitwise. It is an optim::Optimizer: the
// learning-rate schedulers drive it as they drive the optimizer it wraps,
// starting from rank 0's rate (every rank's local optimizer steps at lr()).
// An error in one rank's step (out of memory) leaves the others waiting in
// the broadcasts until the group's timeout.
class ZeroRedundancyOptimizer : public optim::Optimizer {
 public:
  using Factory = std::function<std::unique_ptr<optim::Optimizer>(std::vector<Tensor>)>;
  ZeroRedundancyOptimizer(std::vector<Tensor> params, Factory make,
                          ProcessGroup& group = ProcessGroup::world());

  void step() override;
  // This rank's state of parameters()[i]; empty where another rank owns it.
  const optim::ParamState& state(size_t i) const override;

  // The rank that updates parameters()[i].
  int owner(size_t i) const { return owner_.at(i); }
  // owner(i) for every parameter: DdpOptions::gradient_owners for ZeRO-2.
  const std::vector<int>& owners() const { return owner_; }
  // This rank's optimizer (null when it owns no parameter).
  optim::Optimizer* local() { return local_.get(); }

 private:
  ProcessGroup& group_;
  std::vector<int> owner_;
  std::vector<size_t> local_index_;  // of each owned parameter in local_'s list
  std::unique_ptr<optim::Optimizer> local_;
};

}  // namespace remat::distributed
