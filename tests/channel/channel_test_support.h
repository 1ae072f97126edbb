#pragma once
// Helpers for the channel tests: a formatted region in MAP_SHARED memory, a registry, message
// payloads that carry (producer, sequence) and a checksum, and their verification.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "shared_region.h"
#include "xproc/channel/endpoint.h"

namespace xproc::channel::test {

// SharedRegion (a formatted channel in MAP_SHARED memory) and Registry (a participant table on
// a memfd): tests/support/shared_region.h.
using xproc::test::Registry;
using xproc::test::SharedRegion;

inline ChannelConfig small_config(std::uint32_t capacity = 4096, std::uint32_t max = 512) {
  ChannelConfig config;
  config.capacity_bytes = capacity;
  config.max_message = max;
  return config;
}

// Payload: [producer u32][sequence u32][checksum u32][filler...]; size >= 12.
inline std::uint32_t fill_byte(std::uint32_t producer, std::uint32_t sequence, std::size_t i) {
  return (producer * 131u + sequence * 7u + static_cast<std::uint32_t>(i)) & 0xffu;
}

inline std::size_t message_size(std::uint32_t producer, std::uint32_t sequence, std::size_t max) {
  return 12 + (producer * 37u + sequence * 13u) % (max - 11);
}

inline std::vector<std::byte> make_message(std::uint32_t producer, std::uint32_t sequence,
                                           std::size_t size) {
  std::vector<std::byte> message(size);
  std::uint32_t checksum = 0;
  for (std::size_t i = 12; i < size; ++i) {
    const std::uint32_t b = fill_byte(producer, sequence, i);
    message[i] = static_cast<std::byte>(b);
    checksum = checksum * 31u + b;
  }
  std::memcpy(message.data(), &producer, 4);
  std::memcpy(message.data() + 4, &sequence, 4);
  std::memcpy(message.data() + 8, &checksum, 4);
  return message;
}

struct Decoded {
  bool ok = false;
  std::uint32_t producer = 0;
  std::uint32_t sequence = 0;
};

inline Decoded check_message(std::span<const std::byte> message) {
  Decoded d;
  if (message.size() < 12) return d;
  std::uint32_t checksum_stored = 0;
  std::memcpy(&d.producer, message.data(), 4);
  std::memcpy(&d.sequence, message.data() + 4, 4);
  std::memcpy(&checksum_stored, message.data() + 8, 4);
  std::uint32_t checksum = 0;
  for (std::size_t i = 12; i < message.size(); ++i) {
    const std::uint32_t b = static_cast<std::uint32_t>(message[i]);
    if (b != fill_byte(d.producer, d.sequence, i)) return d;
    checksum = checksum * 31u + b;
  }
  d.ok = checksum == checksum_stored;
  return d;
}

inline std::span<const std::byte> as_bytes(const char* text) {
  return {reinterpret_cast<const std::byte*>(text), std::strlen(text)};
}

}  // namespace xproc::channel::test
