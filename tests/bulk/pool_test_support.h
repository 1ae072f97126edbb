#pragma once
// Helpers for the pool and loan-channel tests: a formatted pool in anonymous MAP_SHARED memory,
// a participant table on a memfd (fork children attach themselves), payloads that carry
// (producer, sequence) and a checksum.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <system_error>
#include <utility>

#include "shared_region.h"
#include "xproc/bulk/loan_channel.h"
#include "xproc/bulk/pool.h"

namespace xproc::bulk::test {

// SharedRegion (a formatted pool in MAP_SHARED memory) and Registry (a participant table on a
// memfd): tests/support/shared_region.h.
using xproc::test::Registry;
using xproc::test::SharedRegion;

inline PoolConfig small_pool(std::uint32_t count = 4) {
  PoolConfig config;
  config.classes = {{256, count}, {4096, count}, {65536, count}};
  return config;
}

// Payload: [producer u32][sequence u32][checksum u32][filler]; sizes below 12 carry one byte
// derived from (producer, sequence) per byte and no header.
inline std::uint8_t fill_byte(std::uint32_t producer, std::uint32_t sequence, std::size_t i) {
  return static_cast<std::uint8_t>(producer * 131u + sequence * 7u + i * 13u + (i >> 8));
}

inline void write_payload(std::span<std::byte> out, std::uint32_t producer,
                          std::uint32_t sequence) {
  std::uint32_t checksum = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const std::uint8_t b = fill_byte(producer, sequence, i);
    out[i] = static_cast<std::byte>(b);
    if (i >= 12) checksum = checksum * 31u + b;
  }
  if (out.size() >= 12) {
    std::memcpy(out.data(), &producer, 4);
    std::memcpy(out.data() + 4, &sequence, 4);
    std::memcpy(out.data() + 8, &checksum, 4);
  }
}

// Loans `size` bytes (value(): a failed loan throws), writes payload (producer, sequence) into
// it and sends it: send's result.
inline std::error_code send_payload(const LoanChannel& channel, std::size_t size,
                                    std::uint32_t producer, std::uint32_t sequence) {
  Loan loan = channel.loan(size).value();
  write_payload(loan.data(), producer, sequence);
  return channel.send(std::move(loan));
}

// True when `in` is exactly what write_payload(producer, sequence) wrote; for payloads of 12
// bytes and more, the producer and sequence are read from the payload itself.
inline bool check_payload(std::span<const std::byte> in, std::uint32_t& producer,
                          std::uint32_t& sequence) {
  if (in.size() >= 12) {
    std::memcpy(&producer, in.data(), 4);
    std::memcpy(&sequence, in.data() + 4, 4);
    std::uint32_t stored = 0;
    std::memcpy(&stored, in.data() + 8, 4);
    std::uint32_t checksum = 0;
    for (std::size_t i = 12; i < in.size(); ++i) {
      const std::uint8_t b = fill_byte(producer, sequence, i);
      if (in[i] != static_cast<std::byte>(b)) return false;
      checksum = checksum * 31u + b;
    }
    return checksum == stored;
  }
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != static_cast<std::byte>(fill_byte(producer, sequence, i))) return false;
  }
  return true;
}

// True when `in` is exactly what write_payload(producer, sequence) wrote.
inline bool payload_is(std::span<const std::byte> in, std::uint32_t producer,
                       std::uint32_t sequence) {
  std::uint32_t read_producer = producer;
  std::uint32_t read_sequence = sequence;
  return check_payload(in, read_producer, read_sequence) && read_producer == producer &&
         read_sequence == sequence;
}

// For the stress tests that count deliveries in a table of producers * per_producer entries:
// the entry of an intact payload of 12 bytes or more (producer * per_producer + sequence), or
// nullopt when it is torn, shorter, or names a producer or sequence out of range.
inline std::optional<std::uint32_t> payload_index(std::span<const std::byte> in,
                                                  std::uint32_t producers,
                                                  std::uint32_t per_producer) {
  std::uint32_t producer = 0;
  std::uint32_t sequence = 0;
  if (in.size() < 12 || !check_payload(in, producer, sequence) || producer >= producers ||
      sequence >= per_producer) {
    return std::nullopt;
  }
  return producer * per_producer + sequence;
}

// Counts one delivery of a stress test: seen[payload_index(...)] += 1, or bad += 1 for a payload
// payload_index refuses. `seen` has producers * per_producer entries.
inline void count_delivery(std::span<const std::byte> in, std::uint32_t producers,
                           std::uint32_t per_producer, std::span<std::atomic<std::uint32_t>> seen,
                           std::atomic<std::uint32_t>& bad) {
  if (std::optional<std::uint32_t> i = payload_index(in, producers, per_producer)) {
    seen[*i].fetch_add(1);
  } else {
    bad.fetch_add(1);
  }
}

}  // namespace xproc::bulk::test
