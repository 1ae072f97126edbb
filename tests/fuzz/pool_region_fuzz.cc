// libFuzzer target: a buffer pool region (include/xproc/bulk/pool.h, docs/layout/pool.md) from
// untrusted bytes, and descriptors from untrusted bytes.
//
// Input: byte 0 = mode (bit 7: open with a real Participant, else with nullptr; bits 0..4: the
// number of op bytes that follow), then the op bytes, then the region (copied into an exactly
// sized, page-aligned heap buffer, as a mapping is: buffers of 4 KiB classes are page-aligned; ASan
// sees every out-of-bounds access). When
// PoolView::open accepts the region, each op byte drives one non-blocking call: try_loan (the
// buffer is written end to end), post, accept of a posted descriptor, of a descriptor with one
// field altered, or of raw bytes taken from the region (any length), give_back of a loan or a
// held buffer, recover, statistics, and writes of a peer into the region between ops.
// Must never crash, hang or touch memory outside the region; every error must be one the header
// documents. A pool has no lock a live owner could hold, so the harness changes no byte itself.
// docs/design/fuzzing.md describes the targets, the corpus and how to run them.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <span>

#include "fuzz_support.h"
#include "xproc/bulk/pool.h"
#include "xproc/shm/segment.h"
#include "xproc/sys/error.h"

namespace {

using xproc::errc;
namespace bulk = xproc::bulk;

// Allowed results: success or one of the errors pool.h documents for these calls.
void check(std::error_code error) {
  if (!error) return;
  if (error == errc::would_block || error == errc::message_too_large ||
      error == errc::bad_descriptor || error == errc::already_returned ||
      error == errc::corrupt_segment || error == errc::invalid_argument) {
    return;
  }
  std::abort();  // an undocumented error: a finding
}

using AlignedBuffer = xproc::fuzz::AlignedBuffer<4096>;
using xproc::fuzz::harness_participant;

// Handles kept across operations, as concurrent users of a pool interleave. Declared after the
// region buffer: destroyed (given back) before it.
struct State {
  std::array<bulk::Loan, 2> loans;
  std::array<bulk::Held, 2> helds;
  std::array<std::optional<bulk::Descriptor>, 2> posted;
};

void read_all(std::span<const std::byte> data) {
  volatile std::uint8_t sum = 0;
  for (std::byte b : data) sum = static_cast<std::uint8_t>(sum + std::to_integer<std::uint8_t>(b));
}

void accept_into(const bulk::PoolView& pool, const bulk::Descriptor& descriptor, State& state,
                 std::size_t slot) {
  auto held = pool.accept(descriptor);
  if (!held) {
    check(held.error());
    return;
  }
  if (held->size() != descriptor.length) std::abort();
  read_all(held->data());
  state.helds[slot] = std::move(*held);
}

void run_op(const bulk::PoolView& pool, std::uint8_t op, const AlignedBuffer& region,
            State& state) {
  const std::size_t slot = (op >> 3) & 1u;
  const std::size_t arg = op >> 4;  // 0..15
  switch (op & 7u) {
    case 0: {  // loan (sizes 0 .. ~64 KiB), fill it, keep it
      const std::size_t size = arg * arg * 291;
      auto loan = pool.try_loan(size);
      if (!loan) {
        check(loan.error());
        break;
      }
      if (loan->size() != size || loan->capacity() < size) std::abort();
      std::memset(loan->data().data(), op, loan->size());
      if (arg % 3 == 1) check(loan->resize(size / 2));
      state.loans[slot] = std::move(*loan);
      break;
    }
    case 1: {  // post a kept loan
      if (!state.loans[slot].active()) break;
      auto descriptor = pool.post(std::move(state.loans[slot]));
      if (!descriptor) {
        check(descriptor.error());
        break;
      }
      state.posted[slot] = *descriptor;
      break;
    }
    case 2: {  // accept a posted descriptor (a second accept of the same one must be refused)
      if (!state.posted[slot]) break;
      accept_into(pool, *state.posted[slot], state, slot);
      break;
    }
    case 3: {  // accept a forged descriptor: one field of a posted one changed
      bulk::Descriptor forged = state.posted[slot].value_or(bulk::Descriptor{});
      const auto delta = static_cast<std::uint32_t>(arg);
      switch (arg % 6) {
        case 0:
          forged.pool_tag ^= delta;
          break;
        case 1:
          forged.size_class += delta;
          break;
        case 2:
          forged.index += delta << 12;
          break;
        case 3:
          forged.generation += delta;
          break;
        case 4:
          forged.length += std::uint64_t{delta} << 28;
          break;
        default:
          forged.reserved = delta;
          break;
      }
      accept_into(pool, forged, state, slot);
      break;
    }
    case 4: {  // accept raw bytes from the region: any length, any content
      const std::size_t length = std::min<std::size_t>(arg * 4, region.size);
      auto held = pool.accept(std::span<const std::byte>(region.data, length));
      if (!held) {
        check(held.error());
        break;
      }
      read_all(held->data());
      state.helds[slot] = std::move(*held);
      break;
    }
    case 5: {  // give back what is kept in a slot
      if (state.loans[slot].active()) check(state.loans[slot].give_back());
      if (state.helds[slot].active()) check(state.helds[slot].give_back());
      break;
    }
    case 6: {
      auto freed = pool.recover();
      if (!freed) check(freed.error());
      break;
    }
    default: {
      const bulk::PoolStatistics statistics = pool.statistics();
      if (statistics.free + statistics.loaned + statistics.posted + statistics.held +
              statistics.corrupt !=
          statistics.total) {
        // A snapshot of words a peer may change is not atomic, but this harness is the only
        // writer between ops: the counts must add up.
        std::abort();
      }
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

  AlignedBuffer region(region_size);
  if (region_size != 0) std::memcpy(region.data, ops + op_count, region_size);
  auto pool = bulk::PoolView::open(std::span<std::byte>(region.data, region_size), self);
  if (!pool) {
    const std::error_code error = pool.error();
    if (error != errc::invalid_argument && error != errc::layout_mismatch &&
        error != errc::corrupt_segment) {
      std::abort();
    }
    return 0;
  }
  State state;
  for (std::size_t i = 0; i < op_count; ++i) {
    const std::uint8_t op = ops[i];
    if (op == 0xff && i + 3 < op_count) {
      // A peer writes the region between operations (after open validated it): byte
      // ((ops[i+1] << 8) | ops[i+2]) mod size := ops[i+3].
      const std::size_t offset = ((std::size_t{ops[i + 1]} << 8) | ops[i + 2]) % region_size;
      region.data[offset] = std::byte{ops[i + 3]};
      i += 3;
      continue;
    }
    run_op(*pool, op, region, state);
  }
  return 0;
}
