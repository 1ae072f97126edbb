#pragma once
// Helpers for the BulkChannel tests: payloads that carry (producer, sequence, size) and bytes
// derived from them, so a consumer checks every byte and knows which payload it got; configs.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "xproc/bulk/bulk_channel.h"

namespace xproc::bulk::test {

struct PayloadId {
  std::uint32_t producer = 0;
  std::uint32_t sequence = 0;
};

// Bytes 16.. (and all bytes of payloads below 16): xorshift of (producer, sequence, size).
inline void fill_tail(std::span<std::byte> out, std::size_t from, std::uint64_t seed) {
  std::uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  std::size_t i = from;
  for (; i + 8 <= out.size(); i += 8) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    std::memcpy(out.data() + i, &state, 8);
  }
  for (; i < out.size(); ++i) out[i] = static_cast<std::byte>(i * 31 + seed);
}

inline std::uint64_t seed_of(std::uint32_t producer, std::uint32_t sequence, std::size_t size) {
  return (std::uint64_t{producer} << 40) ^ (std::uint64_t{sequence} << 20) ^ size;
}

// Payloads of 16 bytes and more start with [producer u32][sequence u32][size u64].
inline std::vector<std::byte> make_payload(std::size_t size, std::uint32_t producer,
                                           std::uint32_t sequence) {
  std::vector<std::byte> out(size);
  if (size >= 16) {
    const std::uint64_t size64 = size;
    std::memcpy(out.data(), &producer, 4);
    std::memcpy(out.data() + 4, &sequence, 4);
    std::memcpy(out.data() + 8, &size64, 8);
    fill_tail(out, 16, seed_of(producer, sequence, size));
  } else {
    fill_tail(out, 0, seed_of(0, 0, size));
  }
  return out;
}

// The identity of a payload whose every byte is right; nullopt for a torn or foreign payload.
// Payloads below 16 bytes carry no identity: {0, 0} when their bytes are right.
inline std::optional<PayloadId> check_payload(std::span<const std::byte> bytes) {
  PayloadId id;
  std::vector<std::byte> expected;
  if (bytes.size() >= 16) {
    std::uint64_t size = 0;
    std::memcpy(&id.producer, bytes.data(), 4);
    std::memcpy(&id.sequence, bytes.data() + 4, 4);
    std::memcpy(&size, bytes.data() + 8, 8);
    if (size != bytes.size()) return std::nullopt;
    expected = make_payload(bytes.size(), id.producer, id.sequence);
  } else {
    expected = make_payload(bytes.size(), 0, 0);
  }
  if (!std::equal(bytes.begin(), bytes.end(), expected.begin())) return std::nullopt;
  return id;
}

// A config whose pool carries `max_payload` bytes; pull from `pull_min` (kPullNever: off).
inline BulkChannelConfig config_for(std::uint64_t max_payload, std::uint64_t pull_min,
                                    std::uint32_t pool_buffers = 4) {
  BulkChannelConfig config;
  config.max_payload = max_payload;
  config.pull_min = pull_min;
  config.pool_buffers = pool_buffers;
  config.channel_bytes = 1u << 16;
  config.inline_max = 4096;
  return config;
}

}  // namespace xproc::bulk::test
