// libFuzzer target: a cross-memory transfer table (include/xproc/bulk/transfer.h,
// docs/layout/transfer.md) from untrusted bytes, and descriptors from untrusted bytes.
//
// Input: byte 0 = bits 0..4: the number of op bytes that follow; then the op bytes, then the
// segment body (the table). The harness creates an anonymous segment with 4 participant slots
// whose body holds those bytes (the harness is its creator, slot 0), opens a TransferEndpoint on
// it and runs one call per op byte: register_source of its own memory (one or three ranges,
// kept), pull of a kept descriptor, of one with a field altered, or of 32 bytes taken from the
// input, pull into a buffer too small, poll and drop of a kept transfer, probe of an id.
// Must never crash, hang or touch memory outside what the table registered; every error must be
// one the header documents.
//
// What the harness keeps out, and why (the trust model of decision 0041): members of a segment
// trust the pid a member publishes, and a member may name any address of its own memory. So
// before opening, the harness writes its own pid into every slot's and every peer record's pid
// field (the one input it changes): a fuzzed pid would make pull read, and probe read, another
// process of the machine. Push is not driven: it writes into the owner's memory at the addresses
// the owner registered, and here every owner is the harness. Slot words are not rewritten between
// ops: a slot the harness registered and then saw as `claimed` by itself would make its
// Transfer's destructor wait for itself (a live claimer), a state no correct member creates.
// docs/design/fuzzing.md describes the targets, the corpus and how to run them.

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "xproc/bulk/transfer.h"
#include "xproc/bulk/transfer_layout.h"
#include "xproc/shm/segment.h"
#include "xproc/sys/error.h"

namespace {

using xproc::errc;
namespace bulk = xproc::bulk;
namespace detail = xproc::bulk::detail;

constexpr std::uint32_t kPeers = 4;

// Allowed results of pull (and of register_source, poll and probe): success or a documented error.
void check(std::error_code error) {
  if (!error) return;
  if (error == errc::bad_descriptor || error == errc::invalid_argument ||
      error == errc::already_returned || error == errc::not_found || error == errc::peer_dead ||
      error == errc::permission_denied || error == errc::corrupt_segment ||
      error == errc::limit_reached || error == errc::would_block) {
    return;
  }
  std::abort();  // an undocumented error: a finding
}

// Pid fields the harness pins to itself (see the banner): peer records and slots, wherever the
// header's (untrusted) sizes put them inside the body.
void pin_pids(std::span<std::byte> body) {
  if (body.size() < sizeof(detail::TableHeader)) return;
  detail::TableHeader header;
  std::memcpy(&header, body.data(), sizeof header);
  const auto pid = static_cast<std::uint32_t>(::getpid());
  auto put = [&](std::uint64_t offset) {
    if (offset <= body.size() && body.size() - offset >= sizeof pid)
      std::memcpy(body.data() + offset, &pid, sizeof pid);
  };
  for (std::uint32_t i = 0; i < kPeers; ++i)
    put(detail::kHeaderBytes + std::uint64_t{i} * sizeof(detail::PeerRecord) +
        offsetof(detail::PeerRecord, pid));
  const std::uint64_t slots = detail::slots_offset_for(kPeers);
  for (std::uint64_t offset = slots; offset < body.size(); offset += sizeof(detail::TransferSlot))
    put(offset + offsetof(detail::TransferSlot, pid));
}

struct State {
  std::vector<std::byte> source = std::vector<std::byte>(1 << 16, std::byte{0x3c});
  std::vector<std::byte> target = std::vector<std::byte>(1 << 16);
  std::array<bulk::Transfer, 2> kept;  // destroyed before the endpoint (declared after it)
};

void pull_into(bulk::TransferEndpoint& endpoint, const bulk::TransferDescriptor& descriptor,
               std::span<std::byte> into) {
  auto copied = endpoint.pull(descriptor, into);
  if (!copied) {
    check(copied.error());
  } else if (*copied != descriptor.total_length || *copied > into.size()) {
    std::abort();
  }
}

void run_op(bulk::TransferEndpoint& endpoint, std::uint8_t op, std::span<const std::uint8_t> input,
            State& state) {
  const std::size_t slot = (op >> 3) & 1u;
  const std::size_t arg = op >> 4;  // 0..15
  const std::span<std::byte> target(state.target);
  switch (op & 7u) {
    case 0: {  // register one range of arg^2 * 251 bytes (0 is refused)
      auto transfer =
          endpoint.register_source(std::span<const std::byte>(state.source)
                                       .first(std::min(arg * arg * 251, std::size_t{1} << 16)));
      if (!transfer) {
        check(transfer.error());
        break;
      }
      state.kept[slot] = std::move(*transfer);
      break;
    }
    case 1: {  // register three scattered ranges
      const std::size_t step = 1 + arg * 97;
      iovec ranges[3] = {{state.source.data(), step},
                         {state.source.data() + 2 * step, step / 2},
                         {state.source.data() + 5 * step, 1}};
      auto transfer = endpoint.register_source(std::span<const iovec>(ranges));
      if (!transfer) {
        check(transfer.error());
        break;
      }
      state.kept[slot] = std::move(*transfer);
      break;
    }
    case 2:  // pull a kept transfer (a second pull of the same one is refused)
      if (state.kept[slot].valid()) pull_into(endpoint, state.kept[slot].descriptor(), target);
      break;
    case 3: {  // pull a forged descriptor: one field of a kept one altered
      bulk::TransferDescriptor forged =
          state.kept[slot].valid() ? state.kept[slot].descriptor() : bulk::TransferDescriptor{};
      const auto delta = static_cast<std::uint32_t>(arg);
      switch (arg % 7) {
        case 0:
          forged.table_tag ^= delta;
          break;
        case 1:
          forged.slot += delta;
          break;
        case 2:
          forged.generation += delta;
          break;
        case 3:
          forged.owner += delta;
          break;
        case 4:
          forged.total_length += delta;
          break;
        case 5:
          forged.direction = delta;
          break;
        default:
          forged.reserved = delta;
          break;
      }
      pull_into(endpoint, forged, target);
      break;
    }
    case 4: {  // pull 32 bytes of the input taken as a descriptor
      bulk::TransferDescriptor raw{};
      const std::size_t offset = (arg * 61) % (input.size() + 1);
      const std::size_t length = std::min(sizeof raw, input.size() - offset);
      std::memcpy(&raw, input.data() + offset, length);
      pull_into(endpoint, raw, target);
      break;
    }
    case 5:  // pull into a buffer too small for a kept transfer: nothing is claimed
      if (state.kept[slot].valid() && state.kept[slot].descriptor().total_length > 0) {
        const std::size_t short_length = state.kept[slot].descriptor().total_length - 1;
        auto copied = endpoint.pull(state.kept[slot].descriptor(), target.first(short_length));
        if (copied) std::abort();
        check(copied.error());
      }
      break;
    case 6: {  // poll, then drop (withdraws an open transfer, retires a finished one)
      if (!state.kept[slot].valid()) break;
      check(state.kept[slot].poll());
      state.kept[slot] = bulk::Transfer();
      break;
    }
    default: {  // probe a peer id: any slot, any generation
      const bulk::ProbeResult result = endpoint.probe(xproc::sync::ParticipantId{
          static_cast<std::uint32_t>(arg % 6), static_cast<std::uint32_t>(arg / 6)});
      check(result.error);
      if (result.error && result.reason.empty() && result.error != errc::invalid_argument &&
          result.error != errc::not_found) {
        // A refusal must say why (the fallback report quotes it).
        std::abort();
      }
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > (std::size_t{1} << 20)) return 0;
  const std::size_t op_count = std::min<std::size_t>(data[0] & 31u, size - 1);
  const std::uint8_t* ops = data + 1;
  const std::span<const std::uint8_t> body_bytes(ops + op_count, size - 1 - op_count);

  xproc::shm::SegmentOptions options;
  options.participant_capacity = kPeers;
  auto segment = xproc::shm::Segment::create_anonymous(
      xproc::shm::SegmentKind::raw, body_bytes.size(), options,
      [body_bytes](std::span<std::byte> body) -> std::error_code {
        if (!body_bytes.empty()) std::memcpy(body.data(), body_bytes.data(), body_bytes.size());
        pin_pids(body);
        return {};
      });
  if (!segment) {
    if (body_bytes.empty()) return 0;  // a segment needs a body
    std::abort();
  }
  auto endpoint = bulk::TransferEndpoint::open(*segment);
  if (!endpoint) {
    const std::error_code error = endpoint.error();
    if (error != errc::wrong_kind && error != errc::layout_mismatch &&
        error != errc::corrupt_segment) {
      std::abort();
    }
    return 0;
  }
  State state;
  for (std::size_t i = 0; i < op_count; ++i)
    run_op(*endpoint, ops[i], std::span<const std::uint8_t>(data, size), state);
  return 0;
}
