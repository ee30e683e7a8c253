// Parsing JSON that comes from files (safetensors headers, kernel descriptions, checkpoint metadata)
// with bounds checked while parsing: a size limit, and a nesting limit that stops the parser before a
// deep document is built. Raises ArtifactError "<op>: <what> ..." naming the broken bound.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "runtime/error.h"

namespace kasmina {

struct JsonLimits {
    size_t max_bytes = 16u << 20;
    int max_depth = 32;
};

inline nlohmann::json parse_untrusted_json(std::string_view text, const char* op, const std::string& what,
                                           const JsonLimits& limits = {}) {
    if (text.size() > limits.max_bytes)
        raise<ArtifactError>(op, what, " is ", text.size(), " bytes of JSON, above the limit of ", limits.max_bytes);
    bool too_deep = false;
    nlohmann::json value = nlohmann::json::parse(
        text.begin(), text.end(),
        [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
            if (depth > limits.max_depth) too_deep = true;
            return !too_deep;
        },
        /*allow_exceptions=*/false);
    if (too_deep) raise<ArtifactError>(op, what, " nests deeper than ", limits.max_depth, " levels");
    if (value.is_discarded()) raise<ArtifactError>(op, what, " is not valid JSON");
    return value;
}

}  // namespace kasmina
