#include "runtime/random.h"

namespace kasmina {

uint64_t Generator::offset() const {
    std::lock_guard lock(mutex_);
    return offset_;
}

void Generator::manual_seed(uint64_t seed) {
    std::lock_guard lock(mutex_);
    seed_ = seed;
    offset_ = 0;
}

void Generator::set_offset(uint64_t offset) {
    std::lock_guard lock(mutex_);
    offset_ = offset;
}

uint64_t Generator::reserve(uint64_t count) {
    std::lock_guard lock(mutex_);
    const uint64_t first = offset_;
    offset_ += count;
    return first;
}

namespace {
thread_local Generator* thread_default_generator = nullptr;  // set by ScopedDefaultGenerator
}  // namespace

Generator& default_generator() {
    if (thread_default_generator != nullptr) return *thread_default_generator;
    static Generator generator;
    return generator;
}

ScopedDefaultGenerator::ScopedDefaultGenerator(Generator& generator) : previous_(thread_default_generator) {
    thread_default_generator = &generator;
}

ScopedDefaultGenerator::~ScopedDefaultGenerator() { thread_default_generator = previous_; }

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

}  // namespace kasmina
