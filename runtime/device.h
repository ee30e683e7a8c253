// Where a tensor's storage lives: the host (CPU) or CUDA device n.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace kasmina {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
    DeviceType type = DeviceType::cpu;
    int index = 0;

    static Device cpu() { return {DeviceType::cpu, 0}; }
    static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
    // Parses "cpu", "cuda", "cuda:1"; raises DeviceError otherwise.
    static Device parse(const std::string& text);

    bool is_cpu() const { return type == DeviceType::cpu; }
    bool is_cuda() const { return type == DeviceType::cuda; }
    std::string str() const;
    bool operator==(const Device&) const = default;
};

std::ostream& operator<<(std::ostream& stream, const Device& device);

// Number of CUDA devices usable by this process (0 when built without CUDA or without a GPU/driver).
int cuda_device_count();
inline bool cuda_is_available() { return cuda_device_count() > 0; }
// Waits until all work queued on `device` has finished (a no-op for the CPU). For timing and tests;
// the library itself never needs it.
void synchronize(Device device);

}  // namespace kasmina
