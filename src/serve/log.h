// Structured JSON logs of `medq serve`: one object per line with "ts" and "level" added.
// Callers pass only metadata (ids, paths, codes, timings): never pixel data, request bodies or
// DICOM header fields.
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

namespace medq::serve {

using LogSink = std::function<void(const std::string& line)>;

// Default sink: stderr. Tests install a capturing sink; nullptr restores the default.
void set_log_sink(LogSink sink);
void log_event(const std::string& level, const std::string& event, nlohmann::json fields = nlohmann::json::object());

}  // namespace medq::serve
