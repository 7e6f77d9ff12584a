// DistributedDataParallel: gradient buckets reduced while backward runs
// (the design of PyTorch's DDP Reducer, on remat's gradient-ready hooks).
#include <chrono>

#include <fmt/format.h>

#include "distributed/backend.h"
#include "remat/core/grad_mode.h"
#include "remat/distributed.h"
#include "remat/ops.h"

namespace remat::distributed {

// Parameters of one dtype and device whose gradients travel in one message.
// The buffer holds each gradient flattened, in the bucket's reduce dtype
// (float64 for float64 parameters, float32 otherwise), then one flag per
// parameter: 1 where this rank has a gradient for it. Summed, the flags say
// whether any rank had one, so a parameter no rank touched keeps no gradient,
// as in single-process training, without a second message.
struct DistributedDataParallel::Bucket {
  int owner = -1;  // the rank the mean is reduced to; -1: every rank (all-reduce)
  std::vector<size_t> params;
  std::vector<int64_t> offsets;  // of each parameter's gradient in buffer
  int64_t elements = 0;          // gradient elements, before the flags
  Tensor buffer;
  size_t ready = 0;  // parameters whose gradient is final this pass
  Work work;
  bool launched = false;
};

namespace {

DType reduce_dtype(DType dtype) { return dtype == kFloat64 ? kFloat64 : kFloat32; }

// Broadcasts rank 0's values into t (through a contiguous copy if need be).
void broadcast_from_rank0(ProcessGroup& group, const Tensor& t) {
  NoGradGuard no_grad;
  Tensor target = t.detach();
  Tensor buffer = target.is_contiguous() ? target : target.contiguous();
  group.broadcast(buffer, 0);
  if (!buffer.is_alias_of(target)) target.copy_(buffer);
}

}  // namespace

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<nn::Module> module,
                                                 DdpOptions options)
    : DistributedDataParallel(std::move(module), ProcessGroup::world(), options) {}

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<nn::Module> module,
                                                 ProcessGroup& group, DdpOptions options)
    : module_(std::move(module)), group_(group) {
  REMAT_CHECK(module_ != nullptr, "DistributedDataParallel: null module");
  REMAT_CHECK(options.bucket_cap_bytes > 0, "DistributedDataParallel: bucket_cap_bytes {} <= 0",
              options.bucket_cap_bytes);
  for (const Tensor& p : module_->parameters()) {
    if (p.requires_grad()) params_.push_back(p);
  }
  REMAT_CHECK(!params_.empty(), "DistributedDataParallel: the {} has no parameter to train",
              module_->type_name());

  detail::check_same_parameters(group_, params_, "DistributedDataParallel");
  const std::vector<int>& owners = options.gradient_owners;
  REMAT_CHECK(owners.empty() || owners.size() == params_.size(),
              "DistributedDataParallel: {} gradient owners for {} parameters that require a "
              "gradient",
              owners.size(), params_.size());
  for (int owner : owners) {
    REMAT_CHECK(owner >= 0 && owner < group_.size(),
                "DistributedDataParallel: gradient owner {} is not a rank of a group of {}", owner,
                group_.size());
  }
  sharded_ = !owners.empty();
  bucket_views_ = options.gradient_as_bucket_view;
  if (sharded_ && bucket_views_) {
    throw NotImplementedError(
        "DistributedDataParallel: gradient_as_bucket_view with gradient_owners (ZeRO-2's buckets "
        "live only while they are reduced)");
  }
  if (options.broadcast_parameters) {
    for (const Tensor& p : params_) broadcast_from_rank0(group_, p);
    for (const auto& [name, buffer] : module_->named_buffers()) {
      broadcast_from_rank0(group_, buffer);
    }
  }

  // Reverse registration order approximates the order backward finishes the
  // gradients, so the first bucket fills first.
  bucket_of_.resize(params_.size());
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k];
    const DType dtype = reduce_dtype(p.dtype());
    const int64_t bytes = p.numel() * static_cast<int64_t>(element_size(dtype));
    Bucket* last = buckets_.empty() ? nullptr : buckets_.back().get();
    const int owner = sharded_ ? owners[k] : -1;
    const bool fits = last != nullptr && last->buffer.dtype() == dtype &&
                      last->buffer.device() == p.device() && last->owner == owner &&
                      (last->elements * static_cast<int64_t>(element_size(dtype)) + bytes <=
                       options.bucket_cap_bytes);
    if (!fits) {
      buckets_.push_back(std::make_unique<Bucket>());
      last = buckets_.back().get();
      last->owner = owner;
      last->buffer =
          Tensor::empty({0}, dtype, p.device());  // sized below; records dtype and device
    }
    last->params.push_back(k);
    last->offsets.push_back(last->elements);
    last->elements += p.numel();
    bucket_of_[k] = buckets_.size() - 1;
  }
  // Sharded buckets are allocated when launched and released after.
  if (!sharded_) {
    for (auto& bucket : buckets_) allocate(*bucket);
  }
  stats_.buckets = static_cast<int64_t>(buckets_.size());

  hooks_.reserve(params_.size());
  for (size_t k = 0; k < params_.size(); ++k) {
    hooks_.push_back(
        register_grad_ready_hook(params_[k], [this, k](const Tensor&) { on_grad_ready(k); }));
  }
}

DistributedDataParallel::~DistributedDataParallel() = default;

bool DistributedDataParallel::views_bucket(const Tensor& param, const Bucket& bucket) const {
  return bucket_views_ && param.dtype() == bucket.buffer.dtype();
}

void DistributedDataParallel::allocate(Bucket& bucket) {
  bucket.buffer = Tensor::empty({bucket.elements + static_cast<int64_t>(bucket.params.size())},
                                bucket.buffer.dtype(), bucket.buffer.device());
}

void DistributedDataParallel::release(Bucket& bucket) {
  bucket.buffer = Tensor::empty({0}, bucket.buffer.dtype(), bucket.buffer.device());
}

std::vector<int64_t> DistributedDataParallel::bucket_bytes() const {
  std::vector<int64_t> out;
  for (const auto& bucket : buckets_)
    out.push_back(bucket->elements * bucket->buffer.element_size());
  return out;
}

void DistributedDataParallel::on_grad_ready(size_t param) {
  if (no_sync_depth_ > 0) return;
  // A pass whose backward threw before its end never ran its callback, which
  // the engine dropped with the token it held.
  if (pass_open_ && pass_token_.use_count() == 1) reset_pass();
  if (!pass_open_) {
    pass_open_ = true;
    pass_token_ = std::make_shared<int>(0);
    queue_backward_callback([this, token = pass_token_] { finish_backward(); });
  }
  Bucket& bucket = *buckets_[bucket_of_[param]];
  ++bucket.ready;
  launch_ready_buckets();
  // MPI moves data only inside its calls: give the buckets in flight a turn.
  for (size_t b = 0; b < next_bucket_; ++b) buckets_[b]->work.test();
}

void DistributedDataParallel::launch_ready_buckets() {
  NoGradGuard no_grad;
  while (next_bucket_ < buckets_.size() &&
         buckets_[next_bucket_]->ready == buckets_[next_bucket_]->params.size()) {
    Bucket& bucket = *buckets_[next_bucket_++];
    if (sharded_) allocate(bucket);
    const bool keeps_gradients = bucket.owner < 0 || bucket.owner == group_.rank();
    for (size_t j = 0; j < bucket.params.size(); ++j) {
      const Tensor& p = params_[bucket.params[j]];
      Tensor slot = bucket.buffer.slice(0, bucket.offsets[j], bucket.offsets[j] + p.numel());
      Tensor flag = bucket.buffer.slice(0, bucket.elements + static_cast<int64_t>(j),
                                        bucket.elements + static_cast<int64_t>(j) + 1);
      if (Tensor grad = p.grad(); grad.defined()) {
        // A gradient that is already this slot (a bucket view the backward
        // added into) is in place.
        if (grad.data_ptr() != slot.data_ptr()) {
          slot.copy_(grad.reshape({p.numel()}).to(bucket.buffer.dtype()));
          if (views_bucket(p, bucket)) p.set_grad(slot.view(p.shape()));
        }
        flag.fill_(1.0);
        if (!keeps_gradients) remat::zero_grad(p, /*set_to_none=*/true);
      } else {
        slot.zero_();
        flag.zero_();
      }
    }
    bucket.work = bucket.owner < 0 ? group_.all_reduce_async(bucket.buffer, ReduceOp::kSum)
                                   : group_.reduce_async(bucket.buffer, bucket.owner);
    bucket.launched = true;
    ++(finishing_ ? stats_.started_at_end : stats_.started_during_backward);
    stats_.bytes_reduced += bucket.buffer.nbytes();
  }
}

void DistributedDataParallel::finish_backward() {
  // Whatever is not ready now was not reached by this backward: a zero
  // contribution (or the gradient no_sync passes accumulated).
  finishing_ = true;
  for (auto& bucket : buckets_) bucket->ready = bucket->params.size();
  launch_ready_buckets();
  finishing_ = false;

  NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  for (auto& bucket : buckets_) bucket->work.wait();
  stats_.wait_ns +=
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count();
  for (auto& bucket : buckets_) {
    if (bucket->owner >= 0 && bucket->owner != group_.rank()) {
      release(*bucket);  // another rank's gradients: already dropped here
      continue;
    }
    std::vector<double> flags =
        bucket->buffer.slice(0, bucket->elements, bucket->buffer.numel()).to_vector<double>();
    // The mean in place: one pass over the bucket, no temporary.
    Tensor means = bucket->buffer.slice(0, 0, bucket->elements);
    means.mul_(1.0 / group_.size());
    for (size_t j = 0; j < bucket->params.size(); ++j) {
      const Tensor& p = params_[bucket->params[j]];
      if (flags[j] == 0) continue;  // no rank has a gradient for it
      Tensor slot = means.slice(0, bucket->offsets[j], bucket->offsets[j] + p.numel());
      if (views_bucket(p, *bucket)) {
        // The mean is in place in the view; a rank without a gradient of
        // its own gets the view now.
        if (!p.grad().defined()) p.set_grad(slot.view(p.shape()));
        continue;
      }
      Tensor mean = slot.reshape(p.shape()).to(p.dtype());
      if (Tensor grad = p.grad(); grad.defined()) {
        grad.copy_(mean);
      } else {
        p.set_grad(mean.clone());  // its own bytes: the bucket is reused next step
      }
    }
    if (sharded_) release(*bucket);
  }
  reset_pass();
}

void DistributedDataParallel::reset_pass() {
  // Buckets a failed pass left in flight still complete on the peers' side.
  for (auto& bucket : buckets_) {
    if (bucket->launched) bucket->work.wait();
    bucket->launched = false;
    bucket->ready = 0;
    bucket->work = Work();
  }
  next_bucket_ = 0;
  pass_open_ = false;
  pass_token_.reset();
}

}  // namespace remat::distributed
