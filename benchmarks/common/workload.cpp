#include "workload.h"

#include <cmath>
#include <random>

#include "models.h"

namespace bench {
namespace {

using remat::Tensor;
namespace nn = remat::nn;

// A stack of blocks under the name "blocks", as the PyTorch side names it.
class BlockStack : public nn::Module {
 public:
  BlockStack() : Module("BlockStack") {
    blocks_ = register_module("blocks", std::make_shared<nn::Sequential>());
  }
  Tensor forward(const Tensor& x) override { return blocks_->forward(x); }
  nn::Sequential& blocks() { return *blocks_; }

 private:
  std::shared_ptr<nn::Sequential> blocks_;
};

}  // namespace

void ModelConfig::validate() const {
  REMAT_CHECK(model == "mlp" || model == "resnet" || model == "transformer",
              "--model: expected mlp, resnet or transformer, got '{}'", model);
  REMAT_CHECK(depth >= 1 && batch >= 1 && width >= 1,
              "--depth, --batch and --width must be positive (got {}, {}, {})", depth, batch,
              width);
  if (model == "transformer") {
    REMAT_CHECK(seq >= 1 && heads >= 1 && width % heads == 0,
                "--seq must be positive and --width ({}) a multiple of --heads ({})", width, heads);
    REMAT_CHECK(activation == "gelu" || activation == "relu",
                "--activation: expected gelu or relu, got '{}'", activation);
    REMAT_CHECK(attention == "fused" || attention == "math",
                "--attention: expected fused or math, got '{}'", attention);
  }
  if (model == "resnet") {
    REMAT_CHECK(depth % 2 == 0, "--depth: the resnet's two stages need an even block count, got {}",
                depth);
    REMAT_CHECK(image >= 2, "--image must be at least 2, got {}", image);
  }
}

nlohmann::ordered_json ModelConfig::to_json() const {
  nlohmann::ordered_json j = {{"depth", depth}, {"batch", batch}};
  if (model == "transformer") j["seq"] = seq;
  j["width"] = width;
  if (model == "transformer") {
    j["heads"] = heads;
    j["activation"] = activation;
    j["attention"] = attention;
  }
  if (model == "resnet") j["image"] = image;
  return j;
}

namespace {
std::string key_of(const std::string& model, const nlohmann::ordered_json& fields) {
  std::string key = model;
  for (const auto& [name, value] : fields.items()) {
    key += fmt::format(" {}={}", name, value.is_string() ? value.get<std::string>() : value.dump());
  }
  return key;
}
}  // namespace

std::string ModelConfig::key() const {
  nlohmann::ordered_json fields = to_json();
  if (attention == "math") fields.erase("attention");
  return key_of(model, fields);
}

std::string ModelConfig::weights_key() const {
  nlohmann::ordered_json fields = to_json();
  fields.erase("attention");
  return key_of(model, fields);
}

Plan Plan::parse(const std::string& name, const std::string& model) {
  Plan plan{name};
  if (name == "attn" || name == "mlp" || name == "attn+mlp") {
    REMAT_CHECK(model == "transformer",
                "plan '{}' checkpoints transformer sublayers; the {} has none", name, model);
    plan.attention_segment = name != "mlp";
    plan.mlp_segment = name != "attn";
    return plan;
  }
  plan.blocks = remat::CheckpointPlan::parse(name);
  return plan;
}

Workload::Workload(const ModelConfig& config, remat::DType dtype, remat::Device device,
                   uint64_t seed)
    : config_(config) {
  config.validate();
  remat::manual_seed(seed);
  const ModelConfig& c = config;
  if (c.model == "resnet") {
    auto resnet = std::make_shared<examples::SmallResNet>(3, c.width, 2, c.depth / 2, 10);
    model_ = resnet;
    input_ = remat::randn({c.batch, 3, c.image, c.image});
    std::mt19937_64 engine(seed);
    std::vector<int64_t> labels(static_cast<size_t>(c.batch));
    for (int64_t& label : labels) label = static_cast<int64_t>(engine() % 10);
    labels_ = remat::from_vector(labels, {c.batch});
  } else {
    auto stack = std::make_shared<BlockStack>();
    for (int64_t i = 0; i < c.depth; ++i) {
      if (c.model == "mlp") {
        stack->blocks().push_back(
            std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{
                std::make_shared<nn::Linear>(c.width, c.width), std::make_shared<nn::ReLU>()}));
      } else {
        transformer_blocks_.push_back(std::make_shared<nn::TransformerBlock>(
            c.width, c.heads, /*causal=*/true, /*dropout=*/0.0,
            c.activation == "relu" ? nn::MlpActivation::ReLU : nn::MlpActivation::GELU,
            c.attention == "math" ? remat::AttentionImpl::Math : remat::AttentionImpl::Fused));
        stack->blocks().push_back(transformer_blocks_.back());
      }
    }
    blocks_ = stack->blocks().functions();
    model_ = stack;
    input_ = c.model == "mlp" ? remat::randn({c.batch, c.width})
                              : remat::randn({c.batch, c.seq, c.width});
  }
  model_->to(dtype).to(device);
  input_ = input_.to(dtype).to(device);
  if (labels_.defined()) labels_ = labels_.to(device);
  optimizer_ = make_adamw(model_->parameters());
}

std::unique_ptr<remat::optim::AdamW> Workload::make_adamw(std::vector<Tensor> params) {
  return std::make_unique<remat::optim::AdamW>(std::move(params),
                                               remat::optim::AdamOptions{.lr = 1e-4});
}

void Workload::distribute(int zero_stage, bool bucket_views) {
  remat::distributed::DdpOptions options{.gradient_as_bucket_view = bucket_views};
  if (zero_stage >= 1) {
    auto zero = std::make_unique<remat::distributed::ZeroRedundancyOptimizer>(
        model_->parameters(),
        [](std::vector<Tensor> params) { return make_adamw(std::move(params)); });
    if (zero_stage == 2) options.gradient_owners = zero->owners();
    optimizer_ = std::move(zero);
  }
  ddp_ = std::make_unique<remat::distributed::DistributedDataParallel>(model_, options);
}

int64_t Workload::optimizer_state_bytes() const {
  return remat::distributed::optimizer_state_bytes(*optimizer_);
}

Workload::~Workload() = default;

Tensor Workload::forward(const Plan& plan) {
  if (config_.model == "resnet") {
    auto& resnet = static_cast<examples::SmallResNet&>(*model_);
    return remat::cross_entropy(resnet.run(input_, plan.blocks), labels_);
  }
  Tensor out;
  if (plan.attention_segment || plan.mlp_segment) {
    out = input_;
    for (const auto& block : transformer_blocks_) {
      auto attention = [&block](const Tensor& x) { return block->attention_residual(x); };
      auto mlp = [&block](const Tensor& h) { return block->mlp_residual(h); };
      out = plan.attention_segment ? remat::checkpoint(attention, out) : attention(out);
      out = plan.mlp_segment ? remat::checkpoint(mlp, out) : mlp(out);
    }
  } else {
    out = remat::checkpoint_blocks(blocks_, input_, plan.blocks);
  }
  return remat::mean(out * out);
}

Tensor Workload::step(const Plan& plan) {
  Tensor loss;
  {
    remat::memory::TagScope tag("forward");
    loss = forward(plan);
  }
  loss.backward();
  remat::memory::TagScope tag("optimizer");
  // Gradients stay allocated between steps, so the activation peak (the
  // step's peak minus what it started with) excludes them on both sides.
  optimizer_->step();
  optimizer_->zero_grad(/*set_to_none=*/false);
  return loss;
}

void Workload::save_state(const std::string& path) const {
  remat::nn::NamedTensors tensors = model_->state_dict();
  tensors.emplace_back("input", input_);
  if (labels_.defined()) tensors.emplace_back("labels", labels_);
  remat::nn::save_safetensors(tensors, path);
}

namespace {

// docs/checkpointing.md's memory model for the MLP. A block Linear -> ReLU
// keeps one tensor on the plain tape: the ReLU output (X bytes), which ReLU's
// backward and the next Linear's backward both read (the Linear output dies
// at once: ReLU saves its output). A plan is a list of segments in forward
// order (a remat::CheckpointSchedule level), each a block recorded plainly or
// a checkpointed segment of further items. Backward visits a level's segments last to
// first; inside segment j the outputs of the j segments before it are alive
// and segment j costs what its contents cost. On top comes backward's working
// set: one weight's gradient (W, before it is added into .grad) and two
// activation gradients.
double cost(const std::vector<remat::CheckpointSchedule::Item>& level, double x) {
  double worst = 0;
  for (size_t j = 0; j < level.size(); ++j) {
    const remat::CheckpointSchedule::Item& item = level[j];
    if (item.policy) return -1;  // not in this model
    const double inside = item.segment ? cost(item.children, x) : x;
    if (inside < 0) return -1;
    worst = std::max(worst, static_cast<double>(j) * x + inside);
  }
  return worst;
}

}  // namespace

std::optional<int64_t> predicted_activation_bytes(const ModelConfig& config, remat::DType dtype,
                                                  const Plan& plan) {
  if (config.model != "mlp" || plan.attention_segment || plan.mlp_segment) return std::nullopt;
  if (plan.blocks.kind == remat::CheckpointPlan::Kind::Budget) return std::nullopt;
  const double element = static_cast<double>(remat::element_size(dtype));
  const double x = static_cast<double>(config.batch * config.width) * element;
  const double w = static_cast<double>(config.width * config.width) * element;
  const double activations = cost(plan.blocks.schedule(config.depth).items, x);
  if (activations < 0) return std::nullopt;
  return static_cast<int64_t>(activations + w + 2 * x);
}

}  // namespace bench
