// Whether ops are recorded on the tape (thread-local, on by default).
#pragma once

namespace remat {

struct GradMode {
  static bool is_enabled();
  static void set_enabled(bool on);
};

// Turns recording off for its scope: inference, optimizer updates.
class NoGradGuard {
 public:
  NoGradGuard() : previous_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace remat
