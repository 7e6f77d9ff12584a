#include "report.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

namespace examples {

StepLog::StepLog(int64_t total_steps, std::string unit, bool show_progress)
    : total_steps_(std::max<int64_t>(total_steps, 1)),
      unit_(std::move(unit)),
      show_progress_(show_progress),
      interactive_(isatty(fileno(stderr)) != 0) {}

void StepLog::record(double loss, double seconds, int64_t items) {
  losses_.push_back(loss);
  seconds_.push_back(seconds);
  items_ += items;
  draw(false);
}

void StepLog::finish() {
  if (show_progress_ && interactive_ && !losses_.empty()) std::fputc('\n', stderr);
}

double StepLog::median_step_seconds() const {
  if (seconds_.empty()) return 0;
  std::vector<double> sorted = seconds_;
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<ptrdiff_t>(sorted.size() / 2),
                   sorted.end());
  return sorted[sorted.size() / 2];
}

double StepLog::items_per_second() const {
  double total = 0;
  for (double s : seconds_) total += s;
  return total > 0 ? static_cast<double>(items_) / total : 0;
}

void StepLog::draw(bool final_line) {
  if (!show_progress_) return;
  const auto done = static_cast<int64_t>(losses_.size());
  const int64_t percent = done * 100 / total_steps_;
  // A terminal gets a redrawn bar; a log file gets a line every 10%.
  if (!interactive_ && (percent / 10 == last_drawn_percent_ / 10) && !final_line) return;
  last_drawn_percent_ = percent;
  constexpr int kWidth = 30;
  const auto filled = static_cast<int>(std::min<int64_t>(kWidth, done * kWidth / total_steps_));
  std::string bar(static_cast<size_t>(filled), '=');
  bar.resize(kWidth, ' ');
  fmt::print(stderr, "{}[{}] {:>5}/{} loss {:.4f}  {:.0f} {}/s{}", interactive_ ? "\r" : "", bar,
             done, total_steps_, losses_.back(), items_per_second(), unit_,
             interactive_ ? "" : "\n");
  std::fflush(stderr);
}

StepTimer::StepTimer(remat::Device device)
    : device_(device), start_((remat::synchronize(device), std::chrono::steady_clock::now())) {}

double StepTimer::seconds() const {
  remat::synchronize(device_);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Summary::add(const std::string& key, const std::string& label, double value,
                  const std::string& shown) {
  rows_.emplace_back(label, shown);
  json_[key] = value;
}

void Summary::add(const std::string& key, const std::string& label, const std::string& value) {
  rows_.emplace_back(label, value);
  json_[key] = value;
}

void Summary::add_json(const std::string& key, nlohmann::json value) {
  json_[key] = std::move(value);
}

void Summary::add_steps_and_memory(const StepLog& log, remat::Device device,
                                   int64_t baseline_bytes) {
  const double step_ms = log.median_step_seconds() * 1e3;
  add("median_step_ms", "median step time", step_ms, fmt::format("{:.2f} ms", step_ms));
  const double rate = log.items_per_second();
  add(log.unit() + "_per_second", "throughput", rate, fmt::format("{:.0f} {}/s", rate, log.unit()));
  const remat::memory::Stats stats = remat::memory::stats(device);
  add("peak_allocated_bytes", "peak allocated", static_cast<double>(stats.allocated_bytes.peak),
      format_bytes(stats.allocated_bytes.peak));
  const int64_t above = stats.allocated_bytes.peak - baseline_bytes;
  add("peak_above_model_bytes", "peak above data and model", static_cast<double>(above),
      format_bytes(above));
  add("peak_reserved_bytes", "peak reserved", static_cast<double>(stats.reserved_bytes.peak),
      format_bytes(stats.reserved_bytes.peak));
  add("evictions", "evictions (--memory-limit)", static_cast<double>(stats.num_evictions),
      fmt::format("{} ({})", stats.num_evictions, format_bytes(stats.evicted_bytes)));
  add("regenerations", "regenerations", static_cast<double>(stats.num_regenerations),
      fmt::format("{} ({})", stats.num_regenerations, format_bytes(stats.regenerated_bytes)));
  add_json("losses", log.losses());
}

void Summary::print() const {
  size_t width = 0;
  for (const auto& [label, shown] : rows_) width = std::max(width, label.size());
  fmt::print("\n{}\n", title_);
  fmt::print("{:-<{}}\n", "", width + 24);
  for (const auto& [label, shown] : rows_) fmt::print("{:<{}}  {}\n", label, width, shown);
}

void Summary::write_json(const std::string& path) const {
  std::ofstream out(path);
  if (!out) throw remat::Error(fmt::format("cannot write the metrics file '{}'", path));
  out << json_.dump(2) << '\n';
  fmt::print("metrics written to {}\n", path);
}

std::string format_bytes(int64_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
}

}  // namespace examples
