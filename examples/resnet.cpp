// resnet: a small ResNet of BasicBlocks with BatchNorm classifying
// Fashion-MNIST; the default run reaches about 91-92% test accuracy on the CPU
// (README states the time it took).
#include "image_classifier.h"
#include "models.h"

int main(int argc, char** argv) try {
  CLI::App app("resnet: train a small ResNet on Fashion-MNIST", "resnet");
  examples::RunOptions run{.batch = 128};
  examples::ClassifierTraining training{
      .epochs = 6, .optimizer = "sgd", .lr = 0.1, .weight_decay = 5e-4};
  int64_t width = 16, stages = 3, blocks_per_stage = 1;
  examples::add_run_options(app, run, "resnet");
  training.add_options(app);
  app.add_option("--width", width, "channels of the first stage (doubling per stage)")
      ->capture_default_str();
  app.add_option("--stages", stages, "stages (each after the first halves the resolution)")
      ->capture_default_str();
  app.add_option("--blocks-per-stage", blocks_per_stage, "BasicBlocks per stage")
      ->capture_default_str();
  if (int code = examples::parse_or_exit_code(app, argc, argv); code >= 0) return code;
  run.start_ranks();

  remat::manual_seed(run.seed);
  examples::SmallResNet model(1, width, stages, blocks_per_stage, 10);
  return examples::train_fashion_mnist(
      "resnet", model, [&](const remat::Tensor& x, const auto& plan) { return model.run(x, plan); },
      training, run);
} catch (const std::exception& e) {
  fmt::print(stderr, "resnet: {}\n", e.what());
  return 1;
}
