// The safetensors reader on arbitrary files: what it accepts must save and
// load again to the same names, dtypes, shapes, bytes and metadata.
#include <cstring>

#include "fuzz.h"
#include "remat/nn/state.h"

using remat::fuzz::expect;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const remat::fuzz::InputFile file(".safetensors");
  static const remat::fuzz::InputFile copy(".copy.safetensors");
  const std::string path = file.write(data, size).string();
  remat::nn::Metadata metadata;
  const auto loaded =
      remat::fuzz::accepted([&] { return remat::nn::load_safetensors(path, &metadata); });
  if (!loaded) return 0;
  const remat::nn::NamedTensors& tensors = *loaded;
  const std::string copy_path = copy.path().string();
  remat::nn::save_safetensors(tensors, copy_path, metadata);
  remat::nn::Metadata metadata_again;
  const remat::nn::NamedTensors again = remat::nn::load_safetensors(copy_path, &metadata_again);
  expect(metadata_again == metadata, "the metadata changed on a round trip");
  expect(again.size() == tensors.size(), "{} tensors came back as {}", tensors.size(),
         again.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    const auto& [name_again, t_again] = again[i];
    expect(name_again == name && t_again.dtype() == t.dtype() && t_again.shape() == t.shape() &&
               (t.nbytes() == 0 || std::memcmp(t_again.data_ptr(), t.data_ptr(), t.nbytes()) == 0),
           "tensor '{}' changed on a round trip", name);
  }
  return 0;
}
