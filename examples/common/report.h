// What every example reports: a progress bar while training, then a summary
// table (final loss, accuracy where it applies, median step time, peak
// allocated and reserved memory from the allocator) and the same figures as
// a metrics JSON file.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "remat/remat.h"

namespace examples {

// Per-step losses and times, and a progress bar on stderr.
class StepLog {
 public:
  // `unit` names what items counts ("img" or "tok") for the throughput.
  StepLog(int64_t total_steps, std::string unit, bool show_progress);
  void record(double loss, double seconds, int64_t items);
  // Ends the progress line; call before printing anything else.
  void finish();

  const std::vector<double>& losses() const { return losses_; }
  double median_step_seconds() const;
  double items_per_second() const;  // over all recorded steps
  const std::string& unit() const { return unit_; }

 private:
  void draw(bool final_line);

  int64_t total_steps_;
  std::string unit_;
  bool show_progress_;
  bool interactive_;
  std::vector<double> losses_, seconds_;
  int64_t items_ = 0;
  int64_t last_drawn_percent_ = -1;
};

// Wall-clock seconds of a training step, synchronising the device first so
// that asynchronous CUDA work is counted in its step.
class StepTimer {
 public:
  explicit StepTimer(remat::Device device);
  double seconds() const;

 private:
  remat::Device device_;
  std::chrono::steady_clock::time_point start_;
};

// The final figures, in the order added, printed as a table and written as
// JSON ({"key": value, ...}).
class Summary {
 public:
  explicit Summary(std::string title) : title_(std::move(title)) {}
  void add(const std::string& key, const std::string& label, double value,
           const std::string& shown);
  void add(const std::string& key, const std::string& label, const std::string& value);
  // Extra JSON only (e.g. the loss history), not shown in the table.
  void add_json(const std::string& key, nlohmann::json value);

  // Median step time, throughput, and the device's peak allocated/reserved
  // bytes, with the peak above `baseline_bytes` (what was allocated before
  // training: data and model), i.e. activations, gradients and optimizer state.
  void add_steps_and_memory(const StepLog& log, remat::Device device, int64_t baseline_bytes);

  void print() const;
  void write_json(const std::string& path) const;

 private:
  std::string title_;
  std::vector<std::pair<std::string, std::string>> rows_;  // label, shown value
  nlohmann::ordered_json json_ = nlohmann::ordered_json::object();
};

std::string format_bytes(int64_t bytes);

}  // namespace examples
