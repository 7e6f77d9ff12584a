#include "common/flags.h"

#include <sstream>

namespace bench {

void add_model_flags(CLI::App& app, ModelConfig& config) {
  app.add_option("--model", config.model, "mlp, resnet or transformer")->capture_default_str();
  app.add_option("--width", config.width,
                 "mlp: hidden size; resnet: first stage's channels; transformer: d_model")
      ->capture_default_str();
  app.add_option("--heads", config.heads, "transformer: attention heads")->capture_default_str();
  app.add_option("--activation", config.activation, "transformer MLP: gelu or relu")
      ->capture_default_str();
  app.add_option("--attention", config.attention,
                 "transformer: fused (one O(seq) op) or math (matmul, softmax, matmul)")
      ->capture_default_str();
  app.add_option("--image", config.image, "resnet: input height and width")->capture_default_str();
}

remat::Device parse_device(const std::string& name) {
  if (name == "cpu") return remat::kCPU;
  if (name == "cuda") return remat::Device::cuda(0);
  throw remat::Error(fmt::format("--device: expected cpu or cuda, got '{}'", name));
}

remat::DType parse_dtype(const std::string& name) {
  if (name == "float32") return remat::kFloat32;
  if (name == "bfloat16") return remat::kBFloat16;
  throw remat::Error(fmt::format("--dtype: expected float32 or bfloat16, got '{}'", name));
}

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> items;
  std::stringstream stream(list);
  for (std::string item; std::getline(stream, item, ',');) items.push_back(item);
  return items;
}

}  // namespace bench
