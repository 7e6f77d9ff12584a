// Offload and compression (Policy::Placement): a segment whose policy keeps
// activations off the device hands each one here as it is kept. The slot
// then holds a stand-in: a view, with the tensor's offset, shape and
// strides, of a ghost storage whose bytes wait in the offload pool or
// compressed (PackedStorage). Reads go through autograd::ensure_resident,
// which brings them back; the segment prefetches them in backward.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>

#include "autograd/node.h"
#include "ops/quantize.h"
#include "remat/checkpoint.h"

namespace remat::checkpointing {

// Whether compression to `format` stores values of `dtype` in fewer bytes:
// floating-point ones wider than the format (others stay as they are).
bool compresses(DType dtype, DType format);
// What compression to `format` keeps of `bytes` of `dtype` on the device:
// the codes and, for the 8-bit formats, one float32 scale per block
// (kernels/quantize.h); `bytes` where it leaves them alone.
int64_t compressed_bytes(int64_t bytes, DType dtype, DType format);

// What compression must keep of a storage's values: a property of the bytes
// (the producing op's OpDef says it), which every reader passes alike.
enum class ValueRule {
  Rounded,     // any value may round
  ExactZeros,  // zeros stay exact (OpDef::zero_mask_outputs)
  Exact,       // not compressed at all (OpDef::exact_outputs)
};

class Packer {
 public:
  Packer(const Policy& policy, std::string tag);

  // The stand-in for `saved`, kept by the tape entry at position `reader`.
  // One ghost serves every view and every slot of a storage while its
  // version is unchanged. Values the placement leaves alone (empty ones;
  // for compression those not wider than the format) come back as they are.
  // `rule`, for compression: what of the storage's values must stay exact.
  autograd::SavedTensor pack(const autograd::SavedTensor& saved, uint64_t reader, ValueRule rule);
  // Offload: starts bringing back every stand-in still away, latest reader
  // first: the order backward reads them in. (Compressed ones are
  // decompressed when read.)
  void prefetch();
  // After a backward that kept the graph: frees the device bytes of the
  // stand-ins it brought back, so the next backward's peak is this one's.
  void repack();
  // At the segment's end: an original changed in place since it was packed
  // marks its stand-in changed too, so backward throws as for a plain tensor.
  void sync_versions();

 private:
  struct Packed {
    std::weak_ptr<Storage> original;
    std::weak_ptr<Storage> ghost;
    uint64_t last_reader = 0;
    uint64_t order = 0;  // packs before this one, in this segment
  };
  bool leaves_alone(const Tensor& t, ValueRule rule) const;
  std::unique_ptr<PackedStorage> pack_bytes(const Tensor& t, ValueRule rule) const;

  Policy::Placement placement_;
  DType format_;
  std::string tag_;
  std::unordered_map<const Storage*, Packed> by_original_;
  uint64_t packed_count_ = 0;
};

}  // namespace remat::checkpointing
