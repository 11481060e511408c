// protattn server: structured logs, one JSON object per line on stderr.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace protattn::server {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3, off = 4 };
LogLevel parse_log_level(const std::string& s);  // throws Error on an unknown name
void set_log_level(LogLevel level);
bool log_enabled(LogLevel level);
// {"ts": ISO-8601 UTC, "level": ..., "event": ..., fields...}
void log_event(LogLevel level, const std::string& event, nlohmann::json fields = nlohmann::json::object());

}  // namespace protattn::server
