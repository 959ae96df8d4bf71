#include "log/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <memory>
#include <string>

namespace fabric::log {
namespace {

std::string pattern_for(int rank) { return "[fabric rank " + std::to_string(rank) + "] %^%l%$: %v"; }

std::shared_ptr<spdlog::logger> make_logger() {
  auto logger = spdlog::stderr_color_mt("fabric");
  const char* rank = std::getenv("RANK");
  logger->set_pattern(pattern_for(rank ? std::atoi(rank) : 0));
  const char* level = std::getenv("FABRIC_LOG_LEVEL");
  logger->set_level(level ? spdlog::level::from_str(level) : spdlog::level::info);
  return logger;
}

spdlog::logger& logger() {
  static const std::shared_ptr<spdlog::logger> instance = make_logger();
  return *instance;
}

}  // namespace

void debug(std::string_view message) { logger().debug(message); }
void info(std::string_view message) { logger().info(message); }
void warn(std::string_view message) { logger().warn(message); }
void set_rank(int global_rank) { logger().set_pattern(pattern_for(global_rank)); }

}  // namespace fabric::log
