#pragma once
// Helpers of the rpc tests: unique segment names, byte/string conversions, an echo handler.

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "xproc/rpc/client.h"
#include "xproc/rpc/server.h"

namespace xproc::rpc::test {

// A segment name no other test (or concurrent test process) uses.
inline std::string unique_name(std::string_view what) {
  static std::atomic<int> counter{0};
  return "rpc-test-" + std::string(what) + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
}

inline std::span<const std::byte> bytes(std::string_view text) {
  return std::as_bytes(std::span<const char>(text.data(), text.size()));
}

inline std::string text(std::span<const std::byte> body) {
  return {reinterpret_cast<const char*>(body.data()), body.size()};
}

inline sync::Deadline in(std::chrono::milliseconds timeout) {
  return sync::Clock::now() + timeout;
}

inline constexpr std::chrono::seconds kLong{30};  // a deadline no passing test reaches

// Responds "<method>:<body>" at once.
inline void echo(const Request& request, Responder responder) {
  const std::string reply = std::to_string(request.method) + ":" + text(request.body);
  (void)responder.respond(bytes(reply));
}

inline ServerOptions small_options(std::uint32_t max_clients = 8) {
  ServerOptions options;
  options.config.max_clients = max_clients;
  options.config.request_capacity = 1u << 16;
  options.config.response_capacity = 1u << 14;
  options.config.max_request_body = 1024;
  options.config.max_response_body = 1024;
  options.segment.participant_capacity = max_clients + 8;
  return options;
}

}  // namespace xproc::rpc::test
