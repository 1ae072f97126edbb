#pragma once
// Helpers for the channel tests: a zero-filled region (private or MAP_SHARED), message payloads
// that carry (producer, sequence) and a checksum, and their verification.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "xproc/channel/endpoint.h"
#include "xproc/sync/participant_table.h"
#include "xproc/sys/file.h"
#include "xproc/sys/memory.h"

namespace xproc::channel::test {

// A formatted channel in anonymous MAP_SHARED memory (zero-filled by the kernel; 64-aligned).
struct SharedRegion {
  explicit SharedRegion(const ChannelConfig& config)
      : mapping(sys::SharedMapping::anonymous(region_size_for(config)).value()) {
    std::error_code error = format(bytes(), config);
    if (error) throw std::system_error(error);
  }
  std::span<std::byte> bytes() const {
    return {static_cast<std::byte*>(mapping.data()), mapping.size()};
  }
  sys::SharedMapping mapping;
};

// A participant table on a memfd (the process registry every channel user attaches to); fork
// children inherit the descriptor and attach themselves.
struct Registry {
  explicit Registry(std::uint32_t capacity = 64)
      : file(sys::create_memory_file("channel_test_registry",
                                     sync::ParticipantTable::size_for(capacity))
                 .value()),
        mapping(sys::SharedMapping::of_file(file.get(), sync::ParticipantTable::size_for(capacity))
                    .value()),
        table(sync::ParticipantTable::create(mapping.data(), mapping.size(), capacity).value()) {}
  Result<sync::Participant> attach() const { return sync::Participant::attach(*table, file.get()); }

  sys::FileDescriptor file;
  sys::SharedMapping mapping;
  sync::ParticipantTable* table;
};

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
