// Where a tensor lives.
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

namespace remat {

enum class DeviceType : int8_t { CPU = 0, CUDA = 1 };
inline constexpr int kNumDeviceTypes = 2;

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static constexpr Device cpu() { return {DeviceType::CPU, 0}; }
  static constexpr Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  constexpr bool is_cpu() const { return type == DeviceType::CPU; }
  constexpr bool is_cuda() const { return type == DeviceType::CUDA; }
  friend constexpr bool operator==(Device a, Device b) = default;
  std::string str() const;
};

inline constexpr Device kCPU = Device::cpu();

// True when the library was built with CUDA and a device is present.
bool cuda_is_available();
int cuda_device_count();
// Waits until all work queued on the device has finished (no-op on the CPU):
// what a wall-clock timing of GPU work must call before reading the clock.
void synchronize(Device device);

}  // namespace remat

template <>
struct fmt::formatter<remat::Device> : fmt::formatter<std::string> {
  auto format(remat::Device d, format_context& ctx) const {
    return fmt::formatter<std::string>::format(d.str(), ctx);
  }
};
