// What the fuzz targets share: the input as a file, for the readers that take
// a path, the call that tells acceptance from refusal, and the check that
// turns a broken invariant into a crash libFuzzer records. A remat::Error is a
// reader's proper answer to bad input; any other exception escapes the target
// and libFuzzer reports it as a crash too.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <system_error>

#include <fmt/format.h>

#include "remat/core/error.h"

namespace remat::fuzz {

// What `read` returns, or nothing where it refuses the input with a remat::Error.
template <typename Read>
auto accepted(Read&& read) -> std::optional<decltype(read())> {
  try {
    return read();
  } catch (const remat::Error&) {
    return std::nullopt;
  }
}

// Prints the broken invariant and aborts.
template <typename... Args>
void expect(bool condition, fmt::format_string<Args...> format, Args&&... args) {
  if (condition) return;
  fmt::print(stderr, "fuzz invariant broken: {}\n",
             fmt::format(format, std::forward<Args>(args)...));
  std::abort();
}

// One file per process, rewritten for each input, in /dev/shm where it exists
// (the file system then costs little); parallel fuzzing jobs do not clash.
class InputFile {
 public:
  explicit InputFile(const std::string& suffix)
      : path_(directory() / fmt::format("remat_fuzz_{}{}", ::getpid(), suffix)) {}
  ~InputFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Replaces the file's contents with `size` bytes from `data`.
  const std::filesystem::path& write(const uint8_t* data, size_t size) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    out.close();
    expect(!out.fail(), "cannot write {}", path_.string());
    return path_;
  }

 private:
  static std::filesystem::path directory() {
    std::error_code ec;
    if (std::filesystem::is_directory("/dev/shm", ec)) return "/dev/shm";
    return std::filesystem::temp_directory_path();
  }

  std::filesystem::path path_;
};

}  // namespace remat::fuzz
