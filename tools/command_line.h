// Reading a tool's command line flag by flag: each flag, the value after it, and numbers checked
// against a range, with errors (kasmina::Error) that name the flag. Shared by the tools in tools/.
#pragma once

#include <cstdlib>
#include <string>

#include "runtime/error.h"

namespace kasmina::tools {

class CommandLine {
public:
    CommandLine(int argc, char** argv) : argc_(argc), argv_(argv) {}
    // Moves to the next flag; false once they are all read.
    bool next() {
        if (++index_ >= argc_) return false;
        flag_ = argv_[index_];
        return true;
    }
    const std::string& flag() const { return flag_; }
    // The argument after the current flag (consumed).
    std::string value() {
        if (index_ + 1 >= argc_) throw Error("missing value after " + flag_);
        return argv_[++index_];
    }
    // value() as a number in [low, high].
    double number(double low, double high) {
        const std::string text = value();
        char* end = nullptr;
        const double parsed = std::strtod(text.c_str(), &end);
        if (end == text.c_str() || *end != '\0' || !(parsed >= low && parsed <= high))
            throw Error(make_message(flag_, " expects a number in [", low, ", ", high, "], got '", text, "'"));
        return parsed;
    }

private:
    int argc_;
    char** argv_;
    int index_ = 0;
    std::string flag_;
};

}  // namespace kasmina::tools
