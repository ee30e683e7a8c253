// Whether operations record the autograd graph on this thread, and the RAII guard that turns
// recording off (NoGradGuard) — used for inference, optimizer steps and weight initialization.
#pragma once

namespace kasmina {

class GradMode {
public:
    static bool is_enabled();
    static void set_enabled(bool enabled);
};

class NoGradGuard {
public:
    NoGradGuard() : previous_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
    ~NoGradGuard() { GradMode::set_enabled(previous_); }
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
    bool previous_;
};

}  // namespace kasmina
