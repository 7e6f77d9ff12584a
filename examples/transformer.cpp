// transformer: a GPT-style character-level language model trained on Debian's
// fortunes corpus (pre-norm causal blocks, AdamW, cosine schedule). Reports
// the validation loss in nats per character (the unigram baseline is about
// 3.3) and prints a sample of generated text. --compare runs several
// checkpoint plans one after the other from the same seed and prints their
// step time and memory side by side. --ddp trains data-parallel across the
// processes mpirun started (mpirun -np 2 transformer --ddp): each rank draws
// its own windows, gradients are averaged, rank 0 reports.
#include <algorithm>
#include <cmath>
#include <sstream>

#include "models.h"
#include "remat/data/data.h"
#include "remat/distributed.h"
#include "remat/optim/optim.h"
#include "report.h"
#include "run_options.h"

namespace {

using remat::Tensor;
namespace data = remat::data;

struct Config {
  int64_t steps = 1500;
  int64_t context = 128;
  int64_t d_model = 128;
  int64_t heads = 4;
  int64_t layers = 4;
  double dropout = 0.0;
  std::string attention = "fused";  // fused or math
  double lr = 2e-3;
  double weight_decay = 0.1;
  int64_t warmup_steps = 100;
  double val_fraction = 0.05;
  int64_t eval_batches = 20;
  int64_t sample_chars = 300;
  std::string corpus;   // empty: the fortunes directory
  std::string compare;  // comma-separated plans
};

struct Corpus {
  data::CharCorpus text;
  data::TokenSplit split;
};

// Mean cross-entropy over eval_batches random validation windows (fixed seed,
// so every evaluation and every plan sees the same windows).
double validation_loss(examples::CharTransformer& model, const Corpus& corpus, const Config& c,
                       int64_t batch, remat::Device device) {
  remat::NoGradGuard no_grad;
  model.eval();
  data::RandomStream windows(/*seed=*/1234, /*stream=*/7);
  double total = 0;
  for (int64_t i = 0; i < c.eval_batches; ++i) {
    const data::Batch b = data::sample_windows(corpus.split.val, batch, c.context, windows);
    const Tensor logits = model.forward(b.inputs.to(device));
    total += remat::cross_entropy(remat::reshape(logits, {-1, logits.size(2)}),
                                  remat::reshape(b.targets.to(device), {-1}))
                 .item<double>();
  }
  model.train();
  return total / static_cast<double>(c.eval_batches);
}

// Samples text one character at a time at temperature 0.8.
std::string generate(examples::CharTransformer& model, const data::Vocabulary& vocab,
                     const std::string& prompt, int64_t chars, uint64_t seed,
                     remat::Device device) {
  remat::NoGradGuard no_grad;
  model.eval();
  std::vector<int64_t> ids = vocab.encode(prompt);
  data::RandomStream stream(seed, /*stream=*/99);
  for (int64_t i = 0; i < chars; ++i) {
    const auto start = static_cast<ptrdiff_t>(
        std::max<int64_t>(0, static_cast<int64_t>(ids.size()) - model.context()));
    std::vector<int64_t> window(ids.begin() + start, ids.end());
    const auto length = static_cast<int64_t>(window.size());
    const Tensor tokens = remat::from_vector(window, {1, length}).to(device);
    const Tensor last = remat::slice(model.forward(tokens), 1, length - 1, length);
    const auto probs = remat::softmax(last * (1.0 / 0.8), -1).to(remat::kCPU).to_vector<float>();
    const double u = static_cast<double>(stream.next() >> 11) * 0x1.0p-53;
    double cumulative = 0;
    int64_t next = static_cast<int64_t>(probs.size()) - 1;
    for (size_t k = 0; k < probs.size(); ++k) {
      cumulative += probs[k];
      if (u < cumulative) {
        next = static_cast<int64_t>(k);
        break;
      }
    }
    ids.push_back(next);
  }
  model.train();
  return vocab.decode(ids);
}

struct RunResult {
  std::string plan;
  double final_loss = 0, val_loss = 0, median_step_ms = 0;
  int64_t peak_allocated = 0, peak_reserved = 0, peak_above_model = 0;
  std::vector<double> losses;
};

RunResult train(const Corpus& corpus, const Config& c, const examples::RunOptions& run,
                const remat::CheckpointPlan& plan, bool final_report) {
  const remat::Device device = run.parsed_device();
  remat::manual_seed(run.seed);
  auto owned = std::make_shared<examples::CharTransformer>(
      corpus.text.vocabulary().size(), c.context, c.d_model, c.heads, c.layers, c.dropout,
      c.attention == "math" ? remat::AttentionImpl::Math : remat::AttentionImpl::Fused);
  examples::CharTransformer& model = *owned;
  model.to(device);
  const auto optimizer = run.make_optimizer(model.parameters(), [&c](std::vector<Tensor> params) {
    return std::make_unique<remat::optim::AdamW>(
        std::move(params),
        remat::optim::AdamOptions{.lr = c.lr, .beta2 = 0.99, .weight_decay = c.weight_decay});
  });
  // Rank 0's weights on every rank; gradients averaged while backward runs.
  const auto ddp = run.make_ddp(model, *optimizer);
  const int rank = ddp ? ddp->group().rank() : 0;
  remat::optim::CosineWithWarmup schedule(*optimizer, std::min(c.warmup_steps, c.steps - 1),
                                          c.steps, c.lr / 10);
  data::RandomStream windows(run.seed, /*stream=*/1 + static_cast<uint64_t>(rank));

  remat::memory::empty_cache(device);
  remat::memory::reset_peak_stats(device);
  const int64_t baseline = remat::memory::stats(device).allocated_bytes.current;
  fmt::print("transformer: {} parameters, {} blocks, checkpoint {}{}\n", model.num_parameters(),
             c.layers, plan.name(),
             ddp ? fmt::format(", data-parallel over {} processes", ddp->group().size()) : "");
  const std::unique_ptr<remat::BudgetGuard> guard = run.memory_guard(device);
  examples::StepLog log(c.steps, "tok", !run.quiet);
  for (int64_t step = 0; step < c.steps; ++step) {
    const data::Batch b = data::sample_windows(corpus.split.train, run.batch, c.context, windows);
    examples::StepTimer timer(device);
    const Tensor logits = model.run(b.inputs.to(device), plan);
    const Tensor loss = remat::cross_entropy(remat::reshape(logits, {-1, logits.size(2)}),
                                             remat::reshape(b.targets.to(device), {-1}));
    loss.backward();
    run.clip_grad_norm(model.parameters(), 1.0);
    optimizer->step();
    optimizer->zero_grad();
    schedule.step();
    const double value = loss.item<double>();
    log.record(value, timer.seconds(), run.batch * c.context);
    if (step == 1 && plan.kind == remat::CheckpointPlan::Kind::Budget && !run.quiet) {
      fmt::print("{}", plan.describe());
    }
  }
  log.finish();

  const remat::memory::Stats stats = remat::memory::stats(device);
  RunResult r{plan.name(),
              log.losses().back(),
              validation_loss(model, corpus, c, run.batch, device),
              log.median_step_seconds() * 1e3,
              stats.allocated_bytes.peak,
              stats.reserved_bytes.peak,
              stats.allocated_bytes.peak - baseline,
              log.losses()};
  if (!final_report) return r;

  examples::Summary summary(
      fmt::format("transformer on fortunes ({}, checkpoint {})", device, plan.name()));
  summary.add("steps", "steps", static_cast<double>(c.steps), fmt::format("{}", c.steps));
  summary.add("final_loss", "final training loss", r.final_loss,
              fmt::format("{:.4f}", r.final_loss));
  summary.add("val_loss", "validation loss (nats/char)", r.val_loss,
              fmt::format("{:.4f}", r.val_loss));
  const double baseline_entropy = data::unigram_entropy(corpus.split.val);
  summary.add("unigram_entropy", "unigram baseline (nats/char)", baseline_entropy,
              fmt::format("{:.4f}", baseline_entropy));
  summary.add_steps_and_memory(log, device, baseline);
  summary.add("checkpoint", "checkpoint plan", plan.name());
  summary.add("memory_limit", "memory limit", run.memory_limit.empty() ? "none" : run.memory_limit);
  summary.print();
  summary.write_json(run.metrics_path);
  if (c.sample_chars > 0) {
    // The fortunes' question prompt, or the vocabulary's first symbol where
    // another corpus lacks one of its characters.
    const data::Vocabulary& vocabulary = corpus.text.vocabulary();
    std::string prompt = "Q: ";
    if (!std::ranges::all_of(prompt, [&](char ch) { return vocabulary.contains(ch); })) {
      prompt = vocabulary.symbols().substr(0, 1);
    }
    fmt::print("\nsample:\n{}\n",
               generate(model, vocabulary, prompt, c.sample_chars, run.seed, device));
  }
  return r;
}

// Runs each plan from the same seed and prints them side by side.
int compare(const Corpus& corpus, const Config& c, const examples::RunOptions& run) {
  std::vector<RunResult> results;
  std::stringstream names(c.compare);
  for (std::string name; std::getline(names, name, ',');) {
    results.push_back(train(corpus, c, run, remat::CheckpointPlan::parse(name), false));
  }
  const RunResult& base = results.front();
  fmt::print("\ncheckpoint plans side by side ({} steps, batch {}, context {}, {} blocks)\n",
             c.steps, run.batch, c.context, c.layers);
  fmt::print("{:<14} {:>11} {:>9} {:>14} {:>9} {:>15} {:>14} {:>10} {:>9}\n", "plan", "step (ms)",
             "time", "peak above", "memory", "peak allocated", "peak reserved", "losses",
             "val loss");
  fmt::print("{:<14} {:>11} {:>9} {:>14} {:>9} {:>15} {:>14} {:>10} {:>9}\n", "", "(median)",
             "vs first", "model", "vs first", "", "", "vs first", "nats");
  nlohmann::json json = nlohmann::json::array();
  for (const RunResult& r : results) {
    const bool same = r.losses == base.losses;
    fmt::print("{:<14} {:>11.2f} {:>8.2f}x {:>14} {:>8.1f}% {:>15} {:>14} {:>10} {:>9.4f}\n",
               r.plan, r.median_step_ms, r.median_step_ms / base.median_step_ms,
               examples::format_bytes(r.peak_above_model),
               100.0 * static_cast<double>(r.peak_above_model) /
                   static_cast<double>(base.peak_above_model),
               examples::format_bytes(r.peak_allocated), examples::format_bytes(r.peak_reserved),
               same ? "identical" : "DIFFER", r.val_loss);
    json.push_back({{"plan", r.plan},
                    {"median_step_ms", r.median_step_ms},
                    {"final_loss", r.final_loss},
                    {"val_loss", r.val_loss},
                    {"peak_allocated_bytes", r.peak_allocated},
                    {"peak_reserved_bytes", r.peak_reserved},
                    {"peak_above_model_bytes", r.peak_above_model},
                    {"losses_identical_to_first", same},
                    {"losses", r.losses}});
  }
  std::ofstream(run.metrics_path) << json.dump(2) << '\n';
  fmt::print("metrics written to {}\n", run.metrics_path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  CLI::App app("transformer: train a GPT-style character model on the fortunes corpus",
               "transformer");
  examples::RunOptions run{.batch = 32};
  Config c;
  examples::add_run_options(app, run, "transformer");
  app.add_option("--steps", c.steps, "training steps")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--context", c.context, "characters per training window")->capture_default_str();
  app.add_option("--d-model", c.d_model, "model width")->capture_default_str();
  app.add_option("--heads", c.heads, "attention heads")->capture_default_str();
  app.add_option("--layers", c.layers, "transformer blocks")->capture_default_str();
  app.add_option("--dropout", c.dropout, "dropout in the blocks")->capture_default_str();
  app.add_option("--attention", c.attention,
                 "fused (one op in O(context) memory) or math (matmul, softmax, matmul)")
      ->check(CLI::IsMember({"fused", "math"}))
      ->capture_default_str();
  app.add_option("--lr", c.lr, "peak AdamW learning rate")->capture_default_str();
  app.add_option("--weight-decay", c.weight_decay, "AdamW weight decay")->capture_default_str();
  app.add_option("--warmup", c.warmup_steps, "linear warmup steps")->capture_default_str();
  app.add_option("--sample-chars", c.sample_chars, "characters to generate at the end")
      ->capture_default_str();
  app.add_option("--corpus", c.corpus,
                 "a text file or a directory of them (default: /usr/share/games/fortunes)");
  app.add_option("--compare", c.compare,
                 "comma-separated checkpoint plans to run one after the other and compare "
                 "(e.g. none,block); overrides --checkpoint");
  if (int code = examples::parse_or_exit_code(app, argc, argv); code >= 0) return code;
  run.start_ranks();

  const std::filesystem::path source = c.corpus.empty() ? data::kFortunesDirectory : c.corpus;
  Corpus corpus{std::filesystem::is_directory(source) ? data::CharCorpus::from_directory(source)
                                                      : data::CharCorpus::from_file(source),
                {}};
  corpus.split = corpus.text.split(c.val_fraction);
  fmt::print("corpus {}: {} characters, vocabulary {}, unigram entropy {:.3f} nats/char\n",
             source.string(), corpus.text.size(), corpus.text.vocabulary().size(),
             data::unigram_entropy(corpus.text.tokens()));
  if (!c.compare.empty()) return compare(corpus, c, run);
  train(corpus, c, run, run.parsed_plan(), true);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "transformer: {}\n", e.what());
  return 1;
}
