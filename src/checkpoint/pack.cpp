#include "checkpoint/pack.h"

#include <algorithm>
#include <vector>

#include "memory/offload.h"
#include "ops/quantize.h"
#include "remat/core/grad_mode.h"

namespace remat::checkpointing {
namespace {

using autograd::SavedTensor;

// What both placements share: the original the bytes were packed from, and
// its version then, so that an in-place change made to it later reaches the
// stand-in's version counter and backward's check.
class PackedBytes : public PackedStorage {
 public:
  PackedBytes(const Tensor& flat, const std::shared_ptr<Storage>& original)
      : original_(original),
        packed_version_(original->version.load()),
        meta_(TensorMeta::of(flat)),
        bytes_(flat.nbytes()) {}

  void prepare_read(Storage& storage) final {
    if (std::shared_ptr<Storage> original = original_.lock()) {
      const uint32_t now = original->version.load();
      if (now != packed_version_) storage.version.store(now);
    }
    if (storage.evicted) unpack(storage);
    await_arrival();
  }

 protected:
  // Orders the caller's reads after the bytes unpack queued have arrived.
  virtual void await_arrival() {}

  std::weak_ptr<Storage> original_;
  uint32_t packed_version_;
  TensorMeta meta_;  // the original's bytes, as one flat tensor
  int64_t bytes_;
};

// The bytes in the device's offload pool: copied out when packed, copied
// back by unpack (on CUDA on the copy stream, which the compute stream then
// waits for before the first read).
class Offloaded final : public PackedBytes {
 public:
  Offloaded(const Tensor& flat, const std::shared_ptr<Storage>& original)
      : PackedBytes(flat, original),
        pool_(memory::OffloadPool::of(flat.device())),
        host_(pool_.allocate(bytes_)) {
    pool_.copy(memory::OffloadPool::Direction::ToHost, original->data, host_, bytes_);
  }
  void unpack(Storage& storage) override {
    storage.data = memory::allocate(meta_.device, bytes_);
    arrival_ = pool_.copy(memory::OffloadPool::Direction::ToDevice, host_, storage.data, bytes_);
    storage.evicted = false;
  }

 private:
  void await_arrival() override {
    if (!arrival_) return;
    pool_.order_after(arrival_);  // later reads are on the same stream, so once suffices
    arrival_.reset();
  }
  memory::OffloadPool& pool_;
  memory::Allocation host_;
  memory::CopyHandle arrival_;
};

// The bytes in fewer bits on the device (block codes and scales,
// kernels/quantize.h); unpack decompresses them.
class Compressed final : public PackedBytes {
 public:
  Compressed(const Tensor& flat, const std::shared_ptr<Storage>& original, DType format,
             kernels::QuantZeros zeros)
      : PackedBytes(flat, original),
        codes_(Tensor::empty(flat.shape(), format, flat.device())),
        scales_(format == kBFloat16 ? Tensor()
                                    : Tensor::empty({ops::quant_scale_count(flat.numel())},
                                                    kFloat32, flat.device())) {
    ops::quantize_blocks(flat, codes_, scales_, zeros);
  }
  void unpack(Storage& storage) override {
    Tensor values = Tensor::empty(meta_.shape, meta_.dtype, meta_.device);
    ops::dequantize_blocks(codes_, scales_, values);
    storage.data = std::move(values.impl().storage->data);
    storage.evicted = false;
  }

 private:
  Tensor codes_;
  Tensor scales_;  // one float32 per block; undefined for bfloat16 codes
};

// The whole of t's storage as one contiguous tensor: what is packed, so that
// every view of it is served by one stand-in.
Tensor flat_storage(const Tensor& t) {
  return t.as_strided({t.impl().storage->data.size() / static_cast<int64_t>(t.element_size())}, {1},
                      0);
}

// The ghosts of this thread's packers by original storage: a tensor two
// segments keep (one block's output that the next block's first op reads)
// is packed once, and both segments' slots share its stand-in's bytes.
struct SharedGhost {
  std::weak_ptr<Storage> original;
  std::weak_ptr<Storage> ghost;
  Policy::Placement placement;
  DType format;
};
class SharedGhosts {
 public:
  // The live ghost of `original` at `version` packed the same way, or null.
  std::shared_ptr<Storage> find(const std::shared_ptr<Storage>& original, uint32_t version,
                                Policy::Placement placement, DType format) {
    const auto it = by_original_.find(original.get());
    if (it == by_original_.end()) return nullptr;
    const SharedGhost& s = it->second;
    std::shared_ptr<Storage> ghost = s.ghost.lock();
    if (!ghost || s.original.lock() != original || s.placement != placement || s.format != format ||
        ghost->version.load() != version) {
      return nullptr;
    }
    return ghost;
  }
  void add(const std::shared_ptr<Storage>& original, const std::shared_ptr<Storage>& ghost,
           Policy::Placement placement, DType format) {
    by_original_[original.get()] = SharedGhost{original, ghost, placement, format};
    if (by_original_.size() < sweep_at_) return;
    std::erase_if(by_original_, [](const auto& entry) { return entry.second.ghost.expired(); });
    sweep_at_ = 2 * by_original_.size() + 64;  // amortised: the map stays near the live count
  }

 private:
  std::unordered_map<const Storage*, SharedGhost> by_original_;
  size_t sweep_at_ = 64;
};
thread_local SharedGhosts shared_ghosts;

}  // namespace

Packer::Packer(const Policy& policy, std::string tag)
    : placement_(policy.placement()), format_(policy.format()), tag_(std::move(tag)) {}

// Compression leaves storages under this size as they are: it would save at
// most 3 KiB each, and the small tensors ops keep are statistics (batch
// norm's per-channel mean and inverse deviation) whose error scales the
// gradient of a whole channel: compressing them made a ResNet stack's
// float8 gradients 5.8% wrong instead of 1.6%.
namespace {
constexpr int64_t kSmallestCompressedBytes = 4096;
}  // namespace

bool compresses(DType dtype, DType format) {
  return is_floating(dtype) && element_size(dtype) > element_size(format);
}

int64_t compressed_bytes(int64_t bytes, DType dtype, DType format) {
  if (!compresses(dtype, format)) return bytes;
  const int64_t n = bytes / static_cast<int64_t>(element_size(dtype));
  const int64_t scales = format == kBFloat16 ? 0 : 4 * ops::quant_scale_count(n);
  return n * static_cast<int64_t>(element_size(format)) + scales;
}

bool Packer::leaves_alone(const Tensor& t, ValueRule rule) const {
  const int64_t bytes = t.impl().storage->data.size();
  if (bytes == 0) return true;
  if (placement_ == Policy::Placement::Compress) {
    return rule == ValueRule::Exact || !compresses(t.dtype(), format_) ||
           bytes < kSmallestCompressedBytes;
  }
  return false;
}

std::unique_ptr<PackedStorage> Packer::pack_bytes(const Tensor& t, ValueRule rule) const {
  NoGradGuard no_grad;  // packing runs inside the tape's record of an op
  const Tensor flat = flat_storage(t);
  const std::shared_ptr<Storage>& original = t.impl().storage;
  if (placement_ == Policy::Placement::Offload) return std::make_unique<Offloaded>(flat, original);
  memory::TagScope tag("compress:" + tag_);
  return std::make_unique<Compressed>(
      flat, original, format_,
      rule == ValueRule::ExactZeros ? kernels::QuantZeros::Exact : kernels::QuantZeros::Rounded);
}

SavedTensor Packer::pack(const SavedTensor& saved, uint64_t reader, ValueRule rule) {
  const Tensor& t = saved.value;
  if (!t.defined() || t.impl().storage->packed || leaves_alone(t, rule)) return saved;
  const std::shared_ptr<Storage>& original = t.impl().storage;
  Packed& packed = by_original_[original.get()];
  std::shared_ptr<Storage> ghost = packed.ghost.lock();
  if (ghost && packed.original.lock() != original) ghost.reset();  // an address used again
  if (ghost && ghost->version.load() != saved.version) {
    // Changed in place since it was packed: the stand-in's slots must fail
    // backward's version check as the original's would; this one gets its own.
    ghost->version.store(saved.version);
    ghost.reset();
  }
  if (!ghost) ghost = shared_ghosts.find(original, saved.version, placement_, format_);
  if (!ghost) {
    ghost = std::make_shared<Storage>(memory::Allocation{});
    ghost->version.store(saved.version);
    ghost->packed = pack_bytes(t, rule);
    ghost->evicted = true;
    shared_ghosts.add(original, ghost, placement_, format_);
  }
  if (packed.ghost.lock() != ghost) packed = Packed{original, ghost, reader, packed_count_++};
  packed.last_reader = std::max(packed.last_reader, reader);
  Tensor stand_in = t.as_strided(t.shape(), t.strides(), t.offset());
  stand_in.impl().storage = std::move(ghost);
  return SavedTensor{std::move(stand_in), saved.version};
}

void Packer::prefetch() {
  // Decompression is compute on the device's stream: nothing to overlap, so
  // each tensor is decompressed when read and freed after its last reader.
  if (placement_ != Policy::Placement::Offload) return;
  struct Away {
    const Packed* packed;
    std::shared_ptr<Storage> ghost;
  };
  std::vector<Away> away;
  for (const auto& [address, packed] : by_original_) {
    std::shared_ptr<Storage> ghost = packed.ghost.lock();
    if (ghost && ghost->evicted) away.push_back({&packed, std::move(ghost)});
  }
  if (away.empty()) return;
  // Latest reader first; among one reader's, the last packed first.
  std::sort(away.begin(), away.end(), [](const Away& a, const Away& b) {
    return std::tie(a.packed->last_reader, a.packed->order) >
           std::tie(b.packed->last_reader, b.packed->order);
  });
  NoGradGuard no_grad;
  memory::TagScope tag("prefetch:" + tag_);
  for (const Away& a : away) a.ghost->packed->unpack(*a.ghost);
}

void Packer::repack() {
  for (const auto& [address, packed] : by_original_) {
    std::shared_ptr<Storage> ghost = packed.ghost.lock();
    if (!ghost || ghost->evicted) continue;
    ghost->data = memory::Allocation{};
    ghost->evicted = true;
  }
}

void Packer::sync_versions() {
  for (const auto& [address, packed] : by_original_) {
    std::shared_ptr<Storage> original = packed.original.lock();
    std::shared_ptr<Storage> ghost = packed.ghost.lock();
    if (original && ghost) ghost->version.store(original->version.load());
  }
}

}  // namespace remat::checkpointing
