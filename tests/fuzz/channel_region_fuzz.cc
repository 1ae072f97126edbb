// libFuzzer target: a channel region (include/xproc/channel/layout.h) from untrusted bytes.
//
// Input: byte 0 = mode (bit 7: open with a real Participant, else with nullptr; bit 6: also open
// a second endpoint with the other choice, which the odd-numbered ops use; bits 0..4: the number
// of op bytes that follow), then the op bytes, then the region (copied into an exactly sized,
// 64-byte aligned heap buffer, so ASan sees every out-of-bounds access). When Endpoint::open
// accepts the region, each op byte drives one try_* call (never a blocking one): try_send,
// try_send_batch, try_reserve + commit/abandon, try_receive (span, vector, string),
// try_receive_batch, try_peek + release/drop, recover, statistics and the role table's
// producers()/consumers(), and a reservation and a
// message held across later ops (committed/released by a later op, or dropped at the end), and
// writes of a peer into the region between ops (after open validated it).
// Must never crash, hang or read out of bounds; every error must be one of the documented codes.
//
// A live lock holder is a legitimate state in which try_* waits (spins) for its release, which a
// single-threaded harness cannot model: before opening, the harness frees every lock word that
// names an owner the library must consider alive (any owner when an endpoint has no
// Participant; else the local owner id and the harness's own id). Owners that are dead (every other
// id) stay: the takeover and repair paths are fuzzed. docs/design/fuzzing.md describes the targets,
// the corpus and how to run them.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "xproc/channel/endpoint.h"
#include "xproc/channel/layout.h"
#include "xproc/shm/segment.h"
#include "xproc/sys/error.h"

namespace {

using xproc::errc;
namespace channel = xproc::channel;
namespace detail = xproc::channel::detail;

// Allowed results of every operation: success or one of the documented errors.
void check(std::error_code error) {
  if (!error) return;
  if (error == errc::would_block || error == errc::message_too_large ||
      error == errc::corrupt_segment || error == errc::invalid_argument) {
    return;
  }
  std::abort();  // an undocumented error: a finding
}

using AlignedBuffer = xproc::fuzz::AlignedBuffer<64>;
using xproc::fuzz::harness_participant;

void free_live_lock(std::byte* region, std::size_t offset, const xproc::sync::Participant* self) {
  std::uint32_t word = 0;
  std::memcpy(&word, region + offset, sizeof word);
  const bool alive =
      word != 0 && (self == nullptr || word == detail::kLocalOwner || word == self->id().pack());
  if (alive) std::memset(region + offset, 0, sizeof word);
}

void free_live_locks(const AlignedBuffer& region, const xproc::sync::Participant* judge) {
  if (region.size < sizeof(detail::ChannelHeader)) return;
  free_live_lock(region.data,
                 offsetof(detail::ChannelHeader, producer) + offsetof(detail::ProducerLine, lock),
                 judge);
  free_live_lock(region.data,
                 offsetof(detail::ChannelHeader, consumer) + offsetof(detail::ConsumerLine, lock),
                 judge);
  free_live_lock(region.data,
                 offsetof(detail::ChannelHeader, reclaim) + offsetof(detail::ReclaimLine, lock),
                 judge);
}

// Handles kept across operations (a reservation in progress while others send, a message being
// read while others receive), as concurrent users of a channel interleave. Declared after the
// region buffer: destroyed (abandoned, released) before it.
struct Held {
  channel::Reservation reservation;
  channel::Message message;
};

void run_op(const channel::Endpoint& endpoint, std::uint8_t op, std::vector<std::byte>& scratch,
            Held& held) {
  const std::size_t size = static_cast<std::size_t>(op >> 4) * 9;  // payload sizes 0..135
  std::span<const std::byte> payload(scratch.data(), size);
  switch (op & 15u) {
    case 0:
    case 1:
      check(endpoint.try_send(payload));
      break;
    case 2: {
      const std::span<const std::byte> messages[2] = {payload, payload.first(size / 2)};
      auto sent = endpoint.try_send_batch(messages);
      if (!sent) check(sent.error());
      break;
    }
    case 3:
    case 4: {
      auto reservation = endpoint.try_reserve(size);
      if (!reservation) {
        check(reservation.error());
        break;
      }
      std::span<std::byte> data = reservation->data();
      if (data.size() != size) std::abort();
      std::memset(data.data(), op, data.size());
      if ((op & 15u) == 3) check(endpoint.commit(*reservation));  // else: abandoned
      break;
    }
    case 5:
    case 6: {
      std::span<std::byte> buffer(scratch.data(), size);
      auto received = endpoint.try_receive(buffer);
      if (!received) {
        check(received.error());
      } else if (*received > buffer.size()) {
        std::abort();
      }
      break;
    }
    case 7: {
      std::vector<std::byte> out;
      check(endpoint.try_receive(out));
      if (out.size() > endpoint.max_message()) std::abort();
      break;
    }
    case 8: {
      std::string out;
      check(endpoint.try_receive(out));
      break;
    }
    case 9: {
      std::vector<std::byte> out[3];
      auto received = endpoint.try_receive_batch(out);
      if (!received) check(received.error());
      break;
    }
    case 10:
    case 11: {
      auto message = endpoint.try_peek();
      if (!message) {
        check(message.error());
        break;
      }
      std::span<const std::byte> data = message->data();
      if (data.size() > endpoint.max_message()) std::abort();
      volatile std::uint8_t sum = 0;
      for (std::byte b : data)
        sum = static_cast<std::uint8_t>(sum + std::to_integer<std::uint8_t>(b));
      if ((op & 15u) == 10) check(endpoint.release(*message));  // else: the destructor releases
      break;
    }
    case 12:
      check(endpoint.recover());
      break;
    case 13: {  // hold a reservation (a previously held one is abandoned)
      auto reservation = endpoint.try_reserve(size);
      if (!reservation) {
        check(reservation.error());
        break;
      }
      held.reservation = std::move(*reservation);
      break;
    }
    case 14: {  // hold a message (a previously held one is released)
      auto message = endpoint.try_peek();
      if (!message) {
        check(message.error());
        break;
      }
      held.message = std::move(*message);
      break;
    }
    default: {  // commit / release what is held, then statistics
      if (held.reservation.active()) check(endpoint.commit(held.reservation));
      if (held.message.active()) check(endpoint.release(held.message));
      const channel::Statistics statistics = endpoint.statistics();
      // The role table's entries are untrusted ids: each is validated, then asked for liveness.
      volatile std::uint64_t sink = statistics.depth_bytes + statistics.depth_messages +
                                    static_cast<std::uint64_t>(endpoint.producers()) +
                                    static_cast<std::uint64_t>(endpoint.consumers());
      (void)sink;
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > (std::size_t{1} << 20)) return 0;
  const std::uint8_t mode = data[0];
  const std::size_t op_count = std::min<std::size_t>(mode & 31u, size - 1);
  const std::uint8_t* ops = data + 1;
  const std::size_t region_size = size - 1 - op_count;
  const xproc::sync::Participant* self = (mode & 0x80u) != 0 ? harness_participant() : nullptr;
  // Bit 6: a second endpoint with the other choice (a thread-only user beside a participant);
  // odd-numbered ops use it.
  const bool two = (mode & 0x40u) != 0;
  const xproc::sync::Participant* other = self == nullptr ? harness_participant() : nullptr;

  AlignedBuffer region(region_size);
  if (region_size != 0) std::memcpy(region.data, ops + op_count, region_size);
  const xproc::sync::Participant* judge = two ? nullptr : self;  // nullptr: every owner alive
  free_live_locks(region, judge);

  const std::span<std::byte> bytes(region.data, region_size);
  auto endpoint = channel::Endpoint::open(bytes, self);
  if (!endpoint) {
    const std::error_code error = endpoint.error();
    if (error != errc::invalid_argument && error != errc::layout_mismatch &&
        error != errc::corrupt_segment) {
      std::abort();
    }
    return 0;
  }
  auto second = two ? channel::Endpoint::open(bytes, other) : endpoint;
  if (!second) std::abort();  // the same bytes opened a moment ago: must open again
  std::vector<std::byte> scratch(256, std::byte{0x5a});
  Held held;
  for (std::size_t i = 0; i < op_count; ++i) {
    const std::uint8_t op = ops[i];
    if ((op & 15u) == 12 && (op >> 4) != 0 && i + 2 < op_count) {
      // A peer writes the region between operations (after open validated it): byte
      // ((ops[i+1] << 3) | (high nibble & 7)) mod size := ops[i+2]. Live locks freed again.
      const std::size_t offset = ((std::size_t{ops[i + 1]} << 3) | ((op >> 4) & 7u)) % region_size;
      region.data[offset] = std::byte{ops[i + 2]};
      free_live_locks(region, judge);
      i += 2;
      continue;
    }
    run_op(i % 2 == 1 ? *second : *endpoint, op, scratch, held);
  }
  (void)endpoint->statistics();
  return 0;
}
