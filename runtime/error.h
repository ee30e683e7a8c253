// Exceptions raised by the runtime: every message names the operation, the operands' shapes,
// dtypes or devices, and what was expected, so bad user input never aborts the process.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace kasmina {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A shape, rank or index that does not fit the operation.
class ShapeError : public Error {
public:
    using Error::Error;
};

// A dtype the operation does not accept, or operands whose dtypes disagree.
class DTypeError : public Error {
public:
    using Error::Error;
};

// A device the operation cannot run on, operands on different devices, or a failed device call.
class DeviceError : public Error {
public:
    using Error::Error;
};

// A file (safetensors, kernel artifact, checkpoint) that is malformed or inconsistent.
class ArtifactError : public Error {
public:
    using Error::Error;
};

// An operation used in a way the autograd engine cannot support (e.g. a saved tensor modified in place).
class AutogradError : public Error {
public:
    using Error::Error;
};

// Builds a message from streamable parts: make_message("op '", name, "': got ", shape).
template <typename... Parts>
std::string make_message(const Parts&... parts) {
    std::ostringstream stream;
    (stream << ... << parts);
    return stream.str();
}

// Throws ErrorType with a message prefixed by the op name: "<op>: <details>".
template <typename ErrorType = Error, typename... Parts>
[[noreturn]] void raise(const char* op, const Parts&... parts) {
    throw ErrorType(make_message(op, ": ", parts...));
}

}  // namespace kasmina
