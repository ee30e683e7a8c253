// Counter-based random numbers (Philox 4x32-10): element i of a draw at generator offset o is a pure
// function of (seed, o + i), so CPU and GPU kernels produce the same numbers for the same seed and
// a draw can be split across threads without changing it.
#pragma once

#include <cmath>
#include <cstdint>
#include <mutex>

namespace kasmina {

#if defined(__CUDACC__)
#define KASMINA_HOST_DEVICE __host__ __device__
#else
#define KASMINA_HOST_DEVICE
#endif

struct PhiloxWords {
    uint32_t word[4];
};

// Philox 4x32 with 10 rounds on counter (c0..c3) and key (k0, k1).
KASMINA_HOST_DEVICE inline PhiloxWords philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                                  uint32_t k0, uint32_t k1) {
    constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
    constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
    for (int round = 0; round < 10; ++round) {
        const uint64_t product0 = static_cast<uint64_t>(kMul0) * c0;
        const uint64_t product1 = static_cast<uint64_t>(kMul1) * c2;
        const uint32_t hi0 = static_cast<uint32_t>(product0 >> 32), lo0 = static_cast<uint32_t>(product0);
        const uint32_t hi1 = static_cast<uint32_t>(product1 >> 32), lo1 = static_cast<uint32_t>(product1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += kWeyl0;
        k1 += kWeyl1;
    }
    return {{c0, c1, c2, c3}};
}

// The four words for stream position `index` of generator `seed`.
KASMINA_HOST_DEVICE inline PhiloxWords philox_at(uint64_t seed, uint64_t index) {
    return philox4x32(static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), 0x6B61736Du,
                      0x696E6121u, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Uniform in [0, 1) with 24 random bits (exactly representable in float32).
KASMINA_HOST_DEVICE inline double uniform_from(const PhiloxWords& words) {
    return static_cast<double>(words.word[0] >> 8) * (1.0 / 16777216.0);
}

// Standard normal by Box-Muller from words 1 and 2 (u1 in (0, 1], so log is finite).
KASMINA_HOST_DEVICE inline double normal_from(const PhiloxWords& words) {
    const double u1 = (static_cast<double>(words.word[1] >> 8) + 1.0) * (1.0 / 16777216.0);
    const double u2 = static_cast<double>(words.word[2] >> 8) * (1.0 / 16777216.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// A seed plus a running offset. Each draw of n values reserves positions [offset, offset + n).
class Generator {
public:
    explicit Generator(uint64_t seed = 0x5EED) : seed_(seed) {}
    uint64_t seed() const { return seed_; }
    uint64_t offset() const;
    void manual_seed(uint64_t seed);
    void set_offset(uint64_t offset);
    // Reserves `count` positions and returns the first; thread-safe.
    uint64_t reserve(uint64_t count);

private:
    mutable std::mutex mutex_;
    uint64_t seed_;
    uint64_t offset_ = 0;
};

// The process-wide generator used when none is passed (init, dropout, rand/randn), unless this thread
// has a ScopedDefaultGenerator in force.
Generator& default_generator();
void manual_seed(uint64_t seed);

// Makes default_generator() return `generator` on this thread while it lives, so code that must draw
// throw-away values (wrap() builds variants whose weights it then overwrites) neither consumes nor
// rewinds the stream that other threads are drawing from.
class ScopedDefaultGenerator {
public:
    explicit ScopedDefaultGenerator(Generator& generator);
    ~ScopedDefaultGenerator();
    ScopedDefaultGenerator(const ScopedDefaultGenerator&) = delete;
    ScopedDefaultGenerator& operator=(const ScopedDefaultGenerator&) = delete;

private:
    Generator* previous_;
};

}  // namespace kasmina
