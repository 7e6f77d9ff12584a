// Saving and loading tensors in the safetensors format
// (https://github.com/huggingface/safetensors), which PyTorch, JAX and the
// Hugging Face tools read and write:
//   8 bytes   N, the header length, unsigned little-endian
//   N bytes   JSON {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
//             ..., "__metadata__": {"<key>": "<value>"}}, padded with spaces to a multiple of 8
//   the rest  each tensor's raw little-endian bytes, contiguous, in order; offsets count from
//             the end of the header
// dtypes: F32 F64 BF16 F16 I64 I32 BOOL. docs/nn.md describes the checks a load makes.
#pragma once

#include <map>
#include <string>

#include "remat/nn/module.h"

namespace remat::nn {

using Metadata = std::map<std::string, std::string>;

// Writes tensors (from any device) in the order given. Names must be unique,
// non-empty and not "__metadata__". The file is written beside `path` and
// renamed into place, so a failed save leaves an earlier file intact.
void save_safetensors(const NamedTensors& tensors, const std::string& path,
                      const Metadata& metadata = {});
// Reads every tensor onto the CPU, in the order of their data in the file.
// Throws remat::Error naming the file and the problem when the file is not
// well-formed. When `metadata` is given it receives the header's __metadata__.
NamedTensors load_safetensors(const std::string& path, Metadata* metadata = nullptr);

// The module's state_dict(): parameters and buffers under their dotted names.
void save_state(const Module& module, const std::string& path);
// Copies a saved state into the module's tensors in place, on their devices.
// Every name of the module's state_dict must be in the file with the same
// shape and dtype, and the file must hold no other; otherwise it throws
// listing every problem and the module is left unchanged.
void load_state(Module& module, const std::string& path);

}  // namespace remat::nn
