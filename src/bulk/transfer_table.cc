// The transfer table: formatting a segment body, opening (validating) it, and permission probes.

#include <unistd.h>

#include <new>
#include <string>

#include "transfer_internal.h"
#include "xproc/sys/cross_memory.h"
#include "xproc/sys/error.h"
#include "xproc/sys/random.h"

namespace xproc::bulk {
namespace detail {

std::uint32_t encode_error(std::error_code error) noexcept {
  if (error.category() == xproc::error_category()) return static_cast<std::uint32_t>(error.value());
  if (error.category() == std::system_category() && error.value() > 0) {
    return kSystemErrorBit | static_cast<std::uint32_t>(error.value());
  }
  return static_cast<std::uint32_t>(errc::corrupt_state);
}

std::error_code decode_error(std::uint32_t value) noexcept {
  if ((value & kSystemErrorBit) != 0) {
    return {static_cast<int>(value & ~kSystemErrorBit), std::system_category()};
  }
  const auto code = static_cast<errc>(value);
  if (value == 0 || value > 0xffff || errc_name(code) == nullptr) {
    return errc::corrupt_segment;  // no claimer writes this
  }
  return code;
}

}  // namespace detail

using namespace detail;

std::size_t transfer_table_size(const TransferTableOptions& options,
                                std::uint32_t participant_capacity) noexcept {
  return static_cast<std::size_t>(table_size_for(options.slots, participant_capacity));
}

shm::Segment::Init transfer_table_init(const TransferTableOptions& options,
                                       std::uint32_t participant_capacity) {
  return [slots = options.slots, peers = participant_capacity](std::span<std::byte> body) {
    if (slots == 0 || slots > kMaxSlots || peers == 0 ||
        peers > sync::ParticipantTable::kMaxCapacity) {
      return std::error_code(errc::invalid_argument);
    }
    if (body.size() < table_size_for(slots, peers) ||
        reinterpret_cast<std::uintptr_t>(body.data()) % alignof(TransferSlot) != 0) {
      return std::error_code(errc::invalid_argument);
    }
    std::uint32_t tag = 0;
    while (tag == 0) {
      Result<std::uint32_t> random = sys::random_u32();
      if (!random) return random.error();
      tag = *random;
    }
    // The body is zero-filled and nobody else sees it before the segment's ready flag (release)
    // publishes everything written here: plain stores suffice.
    auto* header = new (body.data()) TableHeader{};
    header->magic = TableHeader::kMagic;
    header->layout_version = TableHeader::kLayoutVersion;
    header->signature = kSignature;
    header->tag = tag;
    header->slot_count = slots;
    header->peer_count = peers;
    header->max_ranges = kMaxRanges;
    header->peers_offset = kHeaderBytes;
    header->slots_offset = slots_offset_for(peers);
    header->total_size = table_size_for(slots, peers);
    auto* slot_array = reinterpret_cast<TransferSlot*>(body.data() + header->slots_offset);
    for (std::uint32_t i = 0; i < slots; ++i) {
      // Only the event count has a nonzero initial state (its scope: process-shared futex).
      new (&slot_array[i].done) sync::EventCount(sync::Scope::process);
    }
    return std::error_code();
  };
}

TransferEndpoint::TransferEndpoint() noexcept = default;
TransferEndpoint::TransferEndpoint(TransferEndpoint&&) noexcept = default;
TransferEndpoint& TransferEndpoint::operator=(TransferEndpoint&& other) noexcept {
  if (this != &other) {
    TransferEndpoint gone(std::move(*this));
    state_ = std::move(other.state_);
  }
  return *this;
}

// The probe record stays: it names this process's participant id, which reads dead once the
// process detaches, and the probe word it points at lives as long as the process.
TransferEndpoint::~TransferEndpoint() = default;

namespace {

// The word peers read to probe their access to this process: one per process, never freed.
// Its value is random, so a pid that names another process cannot answer with it.
Result<const std::uint64_t*> process_probe_word() noexcept {
  static const Result<std::uint64_t> word = []() -> Result<std::uint64_t> {
    Result<std::uint32_t> high = sys::random_u32();
    Result<std::uint32_t> low = sys::random_u32();
    if (!high) return high.error();
    if (!low) return low.error();
    return std::uint64_t{*high} << 32 | *low | 1;
  }();
  if (!word) return word.error();
  return &*word;
}

}  // namespace

Result<TransferEndpoint> TransferEndpoint::open(const shm::Segment& segment,
                                                const TransferEndpointOptions& options) {
  if (!segment.valid() || !segment.self().attached()) {
    return make_error_code(errc::invalid_argument);
  }
  if (options.liveness_period <= std::chrono::milliseconds::zero()) {
    return make_error_code(errc::invalid_argument);
  }
  std::span<std::byte> body = segment.body();
  if (body.size() < sizeof(TableHeader)) return make_error_code(errc::wrong_kind);
  // Header fields were written before the segment's ready flag and never change; copy, then
  // validate the copy.
  const TableHeader header = *reinterpret_cast<const TableHeader*>(body.data());
  if (header.magic != TableHeader::kMagic) return make_error_code(errc::wrong_kind);
  if (header.layout_version != TableHeader::kLayoutVersion || header.signature != kSignature ||
      header.max_ranges != kMaxRanges) {
    return make_error_code(errc::layout_mismatch);
  }
  const std::uint32_t capacity = segment.info().participant_capacity;
  if (header.tag == 0 || header.slot_count == 0 || header.slot_count > kMaxSlots ||
      header.peer_count != capacity || header.peers_offset != kHeaderBytes ||
      header.slots_offset != slots_offset_for(header.peer_count) ||
      header.total_size != table_size_for(header.slot_count, header.peer_count) ||
      header.total_size > body.size() || header.reserved != 0) {
    return make_error_code(errc::corrupt_segment);
  }
  auto state = std::make_unique<EndpointState>();
  state->segment = &segment;
  state->table = body.data();
  state->tag = header.tag;
  state->slot_count = header.slot_count;
  state->peer_count = header.peer_count;
  state->slots_offset = header.slots_offset;
  state->self_pid = getpid();
  state->options = options;
  Result<const std::uint64_t*> probe_word = process_probe_word();
  if (!probe_word) return probe_word.error();
  Result<std::uint32_t> start = sys::random_u32();
  if (!start) return start.error();
  state->next_slot.store(*start % header.slot_count, std::memory_order_relaxed);
  if (options.allow_any_reader) {
    Result<int> scope = sys::yama_ptrace_scope();
    if (scope && *scope == 1) {
      if (std::error_code error = sys::allow_any_ptracer()) return error;
    }
  }
  // Publish this process in its peer record (indexed by its participant slot, which it holds
  // exclusively while alive).
  sync::ParticipantId self = segment.self().id();
  PeerRecord& record = state->peer(self.slot);
  // relaxed: published by the release store of `id` below.
  record.pid.store(static_cast<std::uint32_t>(state->self_pid), std::memory_order_relaxed);
  record.probe_address.store(reinterpret_cast<std::uintptr_t>(*probe_word),
                             std::memory_order_relaxed);
  record.probe_value.store(**probe_word, std::memory_order_relaxed);
  // release: publishes pid and probe fields; pairs with the acquire load of `id` in probe().
  record.id.store(self.pack(), std::memory_order_release);
  TransferEndpoint endpoint;
  endpoint.state_ = std::move(state);
  return endpoint;
}

sync::ParticipantId TransferEndpoint::self() const noexcept {
  return state_ ? state_->segment->self().id() : sync::ParticipantId{};
}
std::uint32_t TransferEndpoint::slot_count() const noexcept {
  return state_ ? state_->slot_count : 0;
}
std::uint32_t TransferEndpoint::table_tag() const noexcept {
  return state_ ? state_->tag : 0;
}

ProbeResult TransferEndpoint::probe(sync::ParticipantId peer) const {
  ProbeResult result;
  if (!state_ || !state_->usable() || !peer.valid() || peer.slot >= state_->peer_count) {
    result.error = errc::invalid_argument;
    result.reason = "not a participant id of this segment, or an unusable endpoint";
    return result;
  }
  PeerRecord& record = state_->peer(peer.slot);
  // acquire: pairs with the release store in open(); the fields below are the peer's.
  if (record.id.load(std::memory_order_acquire) != peer.pack()) {
    result.error = errc::not_found;
    result.reason = "the peer has not opened a transfer endpoint of this table";
    return result;
  }
  // acquire (each): keeps the re-check of `id` below after these loads.
  const auto pid = static_cast<pid_t>(record.pid.load(std::memory_order_acquire));
  const std::uint64_t address = record.probe_address.load(std::memory_order_acquire);
  const std::uint64_t value = record.probe_value.load(std::memory_order_acquire);
  // relaxed: ordered after the field loads by their acquire; a change means a new owner of the
  // participant slot (the peer is dead) is rewriting the record.
  if (record.id.load(std::memory_order_relaxed) != peer.pack() || pid <= 0) {
    result.error = errc::peer_dead;
    result.reason = "the peer's record changed while it was read (the peer left)";
    return result;
  }
  // The same pid-safe path as a copy: a pidfd known to be the peer's process, read, then check
  // that the pidfd has not exited.
  Result<std::shared_ptr<const sys::FileDescriptor>> pidfd = state_->owner_pidfd(peer.pack(), pid);
  if (!pidfd) {
    result.error = pidfd.error();
    result.reason =
        pidfd.error() == errc::peer_dead
            ? "the peer is not alive (participant table or pid " + std::to_string(pid) + ")"
            : "pidfd_open(" + std::to_string(pid) + "): " + pidfd.error().message();
    return result;
  }
  std::uint64_t word = 0;
  const iovec local[] = {iovec{&word, sizeof(word)}};
  // An address in the peer's memory, handed to the kernel, never dereferenced here.
  void* remote_word = reinterpret_cast<void*>(address);  // NOLINT(performance-no-int-to-ptr)
  const iovec remote[] = {iovec{remote_word, sizeof(word)}};
  sys::CrossMemoryResult read = sys::read_from(pid, local, remote);
  Result<bool> exited = sys::pidfd_exited((*pidfd)->get());
  if (exited && *exited) state_->forget_pidfd(peer.pack());
  if (!exited || *exited) {
    result.error = exited ? std::error_code(errc::peer_dead) : exited.error();
    result.reason = "the peer exited during the probe";
    return result;
  }
  if (read.error) {
    result.error = read.error;
    result.reason = "process_vm_readv of pid " + std::to_string(pid) + ": " + read.error.message() +
                    "; " + sys::describe_ptrace_permission(pid);
    return result;
  }
  if (word != value) {
    result.error = errc::bad_descriptor;
    result.reason = "pid " + std::to_string(pid) + " does not hold the peer's probe word";
  }
  return result;
}

}  // namespace xproc::bulk
