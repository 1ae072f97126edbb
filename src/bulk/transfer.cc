// Transfers: registration (owner), pull/push (claimer), completion (owner's handle).
// The slot protocol, step by step, with what survivors do after a death at each step, is in
// docs/layout/transfer.md; the comments here name the step.

#include "xproc/bulk/transfer.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <limits>
#include <new>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "transfer_internal.h"
#include "xproc/sync/detail/spin.h"
#include "xproc/sys/cross_memory.h"
#include "xproc/sys/error.h"

namespace xproc::bulk {

using namespace detail;

namespace {

// Rounds of Transfer::wait_until's spin before it announces itself and parks (spin.h: pauses
// doubling to 64 per round, some tens of microseconds in all).
constexpr std::uint32_t kWaitSpinRounds = 64;
// Then yields before it parks (spin.h, yield_until).
constexpr std::uint32_t kWaitYieldRounds = 4;

// pull() and push() without a split: one share on the calling thread.
constexpr PullSplit kOneThread{1, 1};

// Appends to `out` the part [begin, end) of the byte sequence that `ranges` describe.
void slice(std::span<const iovec> ranges, std::uint64_t begin, std::uint64_t end,
           std::vector<iovec>& out) {
  std::uint64_t at = 0;
  for (const iovec& range : ranges) {
    const std::uint64_t range_begin = at;
    const std::uint64_t range_end = at + range.iov_len;  // no overflow: total_of() checked
    at = range_end;
    if (range_end <= begin || range.iov_len == 0) continue;
    if (range_begin >= end) break;
    const std::uint64_t from = std::max(begin, range_begin);
    const std::uint64_t to = std::min(end, range_end);
    out.push_back(iovec{static_cast<char*>(range.iov_base) + (from - range_begin),
                        static_cast<std::size_t>(to - from)});
  }
}

// Step 5 of a pull: the first `total` bytes of `remote` (the owner's ranges) into `local`, cut
// into up to split.threads contiguous shares of at least split.min_share bytes, page-aligned
// cuts; share 0 on this thread, one std::thread per other share (one that cannot start runs
// here). Bytes are summed over the shares; the error is the first share's (in order) that failed.
// The caller claimed the transfer and completes it only after every share has returned.
sys::CrossMemoryResult read_split(pid_t pid, std::span<const iovec> local,
                                  std::span<const iovec> remote, std::uint64_t total,
                                  const PullSplit& split) noexcept {
  const std::uint64_t by_size = total / split.min_share;
  const auto shares =
      static_cast<std::uint32_t>(std::clamp<std::uint64_t>(by_size, 1, split.threads));
  if (shares == 1) return sys::read_from(pid, local, remote);
  constexpr std::uint64_t kPage = 4096;
  std::array<sys::CrossMemoryResult, kMaxPullThreads> results{};
  try {
    std::array<std::vector<iovec>, kMaxPullThreads> local_parts;
    std::array<std::vector<iovec>, kMaxPullThreads> remote_parts;
    for (std::uint32_t i = 0; i < shares; ++i) {
      const std::uint64_t begin = i == 0 ? 0 : total / shares * i / kPage * kPage;
      const std::uint64_t end = i + 1 == shares ? total : total / shares * (i + 1) / kPage * kPage;
      slice(local, begin, end, local_parts[i]);
      slice(remote, begin, end, remote_parts[i]);
    }
    auto run = [&](std::uint32_t i) noexcept {
      results[i] = sys::read_from(pid, local_parts[i], remote_parts[i]);
    };
    std::array<std::thread, kMaxPullThreads> helpers;
    for (std::uint32_t i = 1; i < shares; ++i) {
      try {
        helpers[i] = std::thread(run, i);
      } catch (...) {  // std::system_error (no thread to be had) or std::bad_alloc
        run(i);        // copy that share here
      }
    }
    run(0);
    for (std::uint32_t i = 1; i < shares; ++i) {
      if (helpers[i].joinable()) helpers[i].join();
    }
  } catch (const std::bad_alloc&) {
    // Before any helper started (only the slicing allocates): copy it all on this thread.
    return sys::read_from(pid, local, remote);
  }
  sys::CrossMemoryResult moved;
  for (std::uint32_t i = 0; i < shares; ++i) {
    moved.bytes += results[i].bytes;
    if (!moved.error && results[i].error) moved.error = results[i].error;
  }
  return moved;
}

// Sum of the lengths; false on overflow or on a range whose addresses wrap.
bool total_of(std::span<const iovec> ranges, std::uint64_t& total) noexcept {
  total = 0;
  for (const iovec& range : ranges) {
    const auto address = reinterpret_cast<std::uintptr_t>(range.iov_base);
    if (range.iov_len > std::numeric_limits<std::uintptr_t>::max() - address) return false;
    if (range.iov_len > std::numeric_limits<std::uint64_t>::max() - total) return false;
    total += range.iov_len;
  }
  return true;
}

// A word read from a slot, as the error a pull/push of a descriptor of generation `generation`
// sees when the slot is not `open` at that generation.
std::error_code not_open_error(std::uint64_t word, std::uint32_t generation) noexcept {
  if (!state_valid(word)) return errc::corrupt_segment;
  if (state_generation(word) != generation) return errc::bad_descriptor;
  switch (state_of(word)) {
    case SlotState::claimed:
    case SlotState::complete:
    case SlotState::failed:
    case SlotState::retired:
      return errc::already_returned;
    case SlotState::withdrawn:
      return errc::not_found;
    default:  // free, registering: the owner never sent a descriptor of this generation yet
      return errc::bad_descriptor;
  }
}

// Whether a registration may take over a slot that is not reusable: its owner (and, when
// claimed, its claimer) is dead. Errors (a corrupt id) count as "no".
bool abandoned(const EndpointState& endpoint, const TransferSlot& slot, std::uint64_t word) {
  if (!state_valid(word)) return false;
  const SlotState state = state_of(word);
  // registering: the owner has not written `owner` yet, the state word names it.
  // relaxed: the field was published with the open store we may not have seen; a stale value
  // names an earlier (dead) owner or 0, and the take-over CAS on `word` settles it.
  const std::uint32_t owner = state == SlotState::registering
                                  ? state_value(word)
                                  : slot.owner.load(std::memory_order_relaxed);
  Result<bool> owner_alive = endpoint.alive(owner);
  if (!owner_alive || *owner_alive) return false;
  if (state == SlotState::claimed) {
    Result<bool> claimer_alive = endpoint.alive(state_value(word));
    if (!claimer_alive || *claimer_alive) return false;
  }
  return true;
}

}  // namespace

namespace detail {

Result<std::shared_ptr<const sys::FileDescriptor>> EndpointState::owner_pidfd(std::uint32_t owner,
                                                                              pid_t pid) {
  {
    std::lock_guard lock(pidfd_mutex);
    for (CachedPidfd& entry : pidfds) {
      if (entry.owner == owner && entry.pid == pid) {
        entry.last_use = ++pidfd_clock;
        return entry.fd;
      }
    }
  }
  // pid safety (sys/cross_memory.h): the pidfd first, then the owner's liveness, so the pidfd is
  // the owner's process (a reused pid needs the owner reaped, and a reaped owner reads dead).
  Result<sys::FileDescriptor> opened = sys::pidfd_open(pid);
  if (!opened) return opened.error();
  Result<bool> owner_alive = alive(owner);
  if (!owner_alive) return owner_alive.error();
  if (!*owner_alive) return make_error_code(errc::peer_dead);
  auto fd = std::make_shared<const sys::FileDescriptor>(std::move(*opened));
  std::lock_guard lock(pidfd_mutex);
  if (pidfds.size() >= kPidfdCacheSize) {
    auto oldest = std::min_element(pidfds.begin(), pidfds.end(), [](const auto& a, const auto& b) {
      return a.last_use < b.last_use;
    });
    pidfds.erase(oldest);
  }
  pidfds.push_back(CachedPidfd{owner, pid, ++pidfd_clock, fd});
  return fd;
}

void EndpointState::forget_pidfd(std::uint32_t owner) noexcept {
  std::lock_guard lock(pidfd_mutex);
  std::erase_if(pidfds, [owner](const CachedPidfd& entry) { return entry.owner == owner; });
}

}  // namespace detail

Result<Transfer> TransferEndpoint::register_source(std::span<const iovec> ranges) {
  return register_ranges(ranges, Direction::source);
}
Result<Transfer> TransferEndpoint::register_source(std::span<const std::byte> bytes) {
  const iovec range{const_cast<std::byte*>(bytes.data()), bytes.size()};
  return register_ranges(std::span<const iovec>(&range, 1), Direction::source);
}
Result<Transfer> TransferEndpoint::register_destination(std::span<const iovec> ranges) {
  return register_ranges(ranges, Direction::destination);
}
Result<Transfer> TransferEndpoint::register_destination(std::span<std::byte> bytes) {
  const iovec range{bytes.data(), bytes.size()};
  return register_ranges(std::span<const iovec>(&range, 1), Direction::destination);
}

Result<Transfer> TransferEndpoint::register_ranges(std::span<const iovec> ranges,
                                                   Direction direction) {
  if (!state_ || !state_->usable()) return make_error_code(errc::invalid_argument);
  if (ranges.size() > kMaxRanges) return make_error_code(errc::limit_reached);
  std::uint64_t total = 0;
  if (ranges.empty() || !total_of(ranges, total) || total == 0) {
    return make_error_code(errc::invalid_argument);
  }
  EndpointState& endpoint = *state_;
  const std::uint32_t me = endpoint.self_id();
  const std::uint32_t count = endpoint.slot_count;
  // relaxed: only spreads registrations over the slots; correctness comes from the CAS below.
  const std::uint32_t start = endpoint.next_slot.fetch_add(1, std::memory_order_relaxed) % count;
  std::uint32_t index = count;
  std::uint32_t generation = 0;
  // Step 1 (take a slot): a reusable slot first; then one abandoned by dead processes.
  for (int pass = 0; pass < 2 && index == count; ++pass) {
    for (std::uint32_t i = 0; i < count; ++i) {
      const std::uint32_t candidate = (start + i) % count;
      TransferSlot& slot = endpoint.slot(candidate);
      // relaxed: a hint; the CAS below re-reads with acquire.
      std::uint64_t word = slot.state.load(std::memory_order_relaxed);
      if (!state_valid(word)) continue;  // corrupt: leave it alone
      if (pass == 0 ? !state_reusable(word) : !abandoned(endpoint, slot, word)) continue;
      const std::uint32_t next = next_generation(state_generation(word));
      // acq_rel: acquire pairs with the release transitions of the slot's previous users (their
      // last reads of it happen before our writes); release is not needed (registering
      // publishes nothing) but costs nothing on a RMW.
      if (slot.state.compare_exchange_strong(word, make_state(next, SlotState::registering, me),
                                             std::memory_order_acq_rel,
                                             std::memory_order_relaxed)) {
        index = candidate;
        generation = next;
        break;
      }
    }
  }
  if (index == count) return make_error_code(errc::limit_reached);
  // Step 2 (write the ranges): nobody else writes a registering slot whose owner is alive.
  TransferSlot& slot = endpoint.slot(index);
  // relaxed (all): published by the release store of `open` below.
  slot.owner.store(me, std::memory_order_relaxed);
  slot.pid.store(static_cast<std::uint32_t>(endpoint.self_pid), std::memory_order_relaxed);
  slot.direction.store(static_cast<std::uint32_t>(direction), std::memory_order_relaxed);
  slot.range_count.store(static_cast<std::uint32_t>(ranges.size()), std::memory_order_relaxed);
  slot.total_length.store(total, std::memory_order_relaxed);
  slot.transferred.store(0, std::memory_order_relaxed);
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    slot.ranges[i].address.store(reinterpret_cast<std::uintptr_t>(ranges[i].iov_base),
                                 std::memory_order_relaxed);
    slot.ranges[i].length.store(ranges[i].iov_len, std::memory_order_relaxed);
  }
  // Step 3 (open): release publishes the fields above; pairs with the acquire load in copy().
  slot.state.store(make_state(generation, SlotState::open, me), std::memory_order_release);
  Transfer transfer;
  transfer.endpoint_ = state_.get();
  transfer.descriptor_ = TransferDescriptor{
      endpoint.tag, index, generation, me, total, static_cast<std::uint32_t>(direction), 0};
  return transfer;
}

Result<std::size_t> TransferEndpoint::pull(const TransferDescriptor& descriptor,
                                           std::span<std::byte> into) {
  const iovec range{into.data(), into.size()};
  return copy(descriptor, std::span<const iovec>(&range, 1), Direction::source, kOneThread);
}
Result<std::size_t> TransferEndpoint::pull(const TransferDescriptor& descriptor,
                                           std::span<const iovec> into) {
  return copy(descriptor, into, Direction::source, kOneThread);
}
Result<std::size_t> TransferEndpoint::pull(const TransferDescriptor& descriptor,
                                           std::span<std::byte> into, const PullSplit& split) {
  const iovec range{into.data(), into.size()};
  return copy(descriptor, std::span<const iovec>(&range, 1), Direction::source, split);
}
Result<std::size_t> TransferEndpoint::pull(const TransferDescriptor& descriptor,
                                           std::span<const iovec> into, const PullSplit& split) {
  return copy(descriptor, into, Direction::source, split);
}
Result<std::size_t> TransferEndpoint::push(const TransferDescriptor& descriptor,
                                           std::span<const std::byte> from) {
  const iovec range{const_cast<std::byte*>(from.data()), from.size()};
  return copy(descriptor, std::span<const iovec>(&range, 1), Direction::destination, kOneThread);
}
Result<std::size_t> TransferEndpoint::push(const TransferDescriptor& descriptor,
                                           std::span<const iovec> from) {
  return copy(descriptor, from, Direction::destination, kOneThread);
}

Result<std::size_t> TransferEndpoint::copy(const TransferDescriptor& descriptor,
                                           std::span<const iovec> local, Direction direction,
                                           const PullSplit& split) {
  if (!state_ || !state_->usable()) return make_error_code(errc::invalid_argument);
  if (split.threads == 0 || split.threads > kMaxPullThreads || split.min_share == 0) {
    return make_error_code(errc::invalid_argument);
  }
  EndpointState& endpoint = *state_;
  // Validate the descriptor against what this process knows (untrusted input).
  const sync::ParticipantId owner_id = sync::ParticipantId::unpack(descriptor.owner);
  if (descriptor.table_tag != endpoint.tag || descriptor.slot >= endpoint.slot_count ||
      descriptor.generation == 0 || descriptor.generation > kMaxGeneration ||
      descriptor.direction != static_cast<std::uint32_t>(direction) || descriptor.reserved != 0 ||
      !owner_id.valid() || owner_id.slot >= endpoint.peer_count || descriptor.total_length == 0) {
    return make_error_code(errc::bad_descriptor);
  }
  std::uint64_t local_total = 0;
  if (!total_of(local, local_total)) return make_error_code(errc::invalid_argument);
  // Pull: the whole transfer must fit. Push: what we write must fit the destination.
  if (direction == Direction::source ? local_total < descriptor.total_length
                                     : local_total > descriptor.total_length) {
    return make_error_code(errc::invalid_argument);
  }
  TransferSlot& slot = endpoint.slot(descriptor.slot);
  const std::uint32_t me = endpoint.self_id();
  std::uint64_t word = 0;
  pid_t pid = 0;
  std::uint32_t range_count = 0;
  // Step 4 (claim): validate the open slot against the descriptor, then one CAS.
  for (;;) {
    // acquire: pairs with the release store of `open` (step 3): the fields are the owner's.
    word = slot.state.load(std::memory_order_acquire);
    if (!state_valid(word) || state_generation(word) != descriptor.generation ||
        state_of(word) != SlotState::open) {
      return not_open_error(word, descriptor.generation);
    }
    // relaxed (all): ordered after the acquire load above; the CAS below proves they belong to
    // this generation (no transition happened in between).
    if (slot.owner.load(std::memory_order_relaxed) != descriptor.owner ||
        slot.direction.load(std::memory_order_relaxed) != descriptor.direction ||
        slot.total_length.load(std::memory_order_relaxed) != descriptor.total_length) {
      return make_error_code(errc::bad_descriptor);
    }
    pid = static_cast<pid_t>(slot.pid.load(std::memory_order_relaxed));
    range_count = slot.range_count.load(std::memory_order_relaxed);
    // acq_rel: acquire keeps the field loads above this generation's (a failed CAS re-reads);
    // release: nothing to publish, free on a RMW.
    if (slot.state.compare_exchange_strong(
            word, make_state(descriptor.generation, SlotState::claimed, me),
            std::memory_order_acq_rel, std::memory_order_acquire)) {
      break;
    }
  }
  // Step 5 (copy). The claim pins the slot: the owner can no longer withdraw it, and nobody
  // takes it over while we are alive. Anything wrong from here ends the transfer as failed.
  auto finish = [&](std::error_code error, std::size_t bytes) -> Result<std::size_t> {
    std::uint64_t claimed = make_state(descriptor.generation, SlotState::claimed, me);
    const std::uint64_t final_word =
        error ? make_state(descriptor.generation, SlotState::failed, encode_error(error))
              : make_state(descriptor.generation, SlotState::complete, me);
    // relaxed: published by the release CAS below.
    slot.transferred.store(bytes, std::memory_order_relaxed);
    // Step 6 (complete / failed). release: publishes `transferred` and (push) orders our
    // process_vm_writev before it; pairs with the acquire load in Transfer::check().
    if (!slot.state.compare_exchange_strong(claimed, final_word, std::memory_order_release,
                                            std::memory_order_relaxed)) {
      return make_error_code(errc::corrupt_segment);  // only we move a slot we claimed
    }
    slot.done.notify_all();  // a syscall only when the owner waits
    if (error) return error;
    return bytes;
  };
  if (range_count == 0 || range_count > kMaxRanges || pid <= 0) {
    return finish(errc::corrupt_segment, 0);
  }
  iovec remote[kMaxRanges];
  for (std::uint32_t i = 0; i < range_count; ++i) {
    // relaxed: stable while we hold the claim (written before open, acquired in step 4).
    const std::uint64_t address = slot.ranges[i].address.load(std::memory_order_relaxed);
    const std::uint64_t length = slot.ranges[i].length.load(std::memory_order_relaxed);
    // An address in the owner's memory, handed to the kernel, never dereferenced here.
    void* base = reinterpret_cast<void*>(  // NOLINT(performance-no-int-to-ptr)
        static_cast<std::uintptr_t>(address));
    remote[i] = iovec{base, static_cast<std::size_t>(length)};
  }
  std::uint64_t remote_total = 0;
  if (!total_of(std::span<const iovec>(remote, range_count), remote_total) ||
      remote_total != descriptor.total_length) {
    return finish(errc::corrupt_segment, 0);
  }
  // pid safety (sys/cross_memory.h): a pidfd known to be the owner's process (owner_pidfd());
  // after the copy, a pidfd that has not exited proves the pid named the owner all along.
  Result<std::shared_ptr<const sys::FileDescriptor>> pidfd =
      endpoint.owner_pidfd(descriptor.owner, pid);
  if (!pidfd) return finish(pidfd.error(), 0);
  const std::span<const iovec> remote_ranges(remote, range_count);
  sys::CrossMemoryResult moved =
      direction == Direction::source
          ? read_split(pid, local, remote_ranges, descriptor.total_length, split)
          : sys::write_to(pid, local, remote_ranges);
  Result<bool> exited = sys::pidfd_exited((*pidfd)->get());
  if (!exited) return finish(exited.error(), 0);
  if (*exited) {
    endpoint.forget_pidfd(descriptor.owner);
    return finish(errc::peer_dead, 0);  // the bytes may be a successor's: discard
  }
  if (moved.error) {
    // A fault in a dying owner's memory is its death, not a lie.
    Result<bool> still_alive = endpoint.alive(descriptor.owner);
    if (still_alive && !*still_alive) return finish(errc::peer_dead, 0);
    return finish(moved.error, moved.bytes);
  }
  const std::uint64_t expected = std::min(local_total, descriptor.total_length);
  if (moved.bytes != expected) return finish(errc::bad_descriptor, moved.bytes);
  return finish({}, moved.bytes);
}

// --- Transfer: the owner's handle ---

Transfer::Transfer(Transfer&& other) noexcept
    : endpoint_(std::exchange(other.endpoint_, nullptr)),
      descriptor_(other.descriptor_),
      finished_(other.finished_),
      result_(other.result_),
      transferred_(other.transferred_),
      next_liveness_check_(other.next_liveness_check_) {}

Transfer& Transfer::operator=(Transfer&& other) noexcept {
  if (this != &other) {
    release();
    endpoint_ = std::exchange(other.endpoint_, nullptr);
    descriptor_ = other.descriptor_;
    finished_ = other.finished_;
    result_ = other.result_;
    transferred_ = other.transferred_;
    next_liveness_check_ = other.next_liveness_check_;
  }
  return *this;
}

Transfer::~Transfer() {
  release();
}

void Transfer::finish(std::uint64_t word, std::error_code result) noexcept {
  result_ = result;
  finished_ = true;
  // Step 7 (retire): the slot becomes reusable; keep the final value for late double pulls.
  // Only a final state is retired: a slot holding something impossible (corrupt) is left alone,
  // so nothing a live claimer may still use is ever handed to a new registration.
  const SlotState state = state_valid(word) ? state_of(word) : SlotState::free;
  if (state != SlotState::complete && state != SlotState::failed) return;
  // release: our reads of the slot happen before a new registration (its acquire CAS) reuses it.
  const std::uint64_t retired =
      make_state(state_generation(word), SlotState::retired, state_value(word));
  endpoint_->slot(descriptor_.slot)
      .state.compare_exchange_strong(word, retired, std::memory_order_release,
                                     std::memory_order_relaxed);
}

std::error_code Transfer::check(bool check_liveness) noexcept {
  if (endpoint_ == nullptr) return errc::invalid_argument;
  if (finished_) return result_;
  if (!endpoint_->usable()) return errc::invalid_argument;  // a fork child's copy
  TransferSlot& slot = endpoint_->slot(descriptor_.slot);
  for (;;) {
    // acquire: pairs with the claimer's release CAS to complete/failed (step 6): `transferred`,
    // and in push mode the bytes written into our memory, are visible after it.
    std::uint64_t word = slot.state.load(std::memory_order_acquire);
    if (!state_valid(word) || state_generation(word) != descriptor_.generation) {
      finish(word, errc::corrupt_segment);  // nobody moves a live owner's slot
      return result_;
    }
    switch (state_of(word)) {
      case SlotState::open:
        return errc::would_block;
      case SlotState::claimed: {
        if (!check_liveness) return errc::would_block;
        // At most one liveness check (a system call) per period, however often we are polled.
        const sync::Clock::time_point now = sync::Clock::now();
        if (now < next_liveness_check_) return errc::would_block;
        next_liveness_check_ = now + endpoint_->options.liveness_period;
        Result<bool> alive = endpoint_->alive(state_value(word));
        if (!alive) {
          finish(word, alive.error());
          return result_;
        }
        if (*alive) return errc::would_block;
        // The claimer died mid-copy: fail the transfer (one CAS; it cannot race the dead).
        const std::uint64_t failed =
            make_state(descriptor_.generation, SlotState::failed, encode_error(errc::peer_dead));
        // acq_rel: as any transition; a failure means the word moved, so look again.
        if (slot.state.compare_exchange_strong(word, failed, std::memory_order_acq_rel,
                                               std::memory_order_relaxed)) {
          finish(failed, errc::peer_dead);
          return result_;
        }
        continue;
      }
      case SlotState::complete:
        // relaxed: ordered by the acquire load of `word` above.
        transferred_ = static_cast<std::size_t>(slot.transferred.load(std::memory_order_relaxed));
        finish(word, {});
        return result_;
      case SlotState::failed:
        transferred_ = static_cast<std::size_t>(slot.transferred.load(std::memory_order_relaxed));
        finish(word, decode_error(state_value(word)));
        return result_;
      default:  // free, registering, withdrawn, retired: not what a live owner's slot can hold
        finish(word, errc::corrupt_segment);
        return result_;
    }
  }
}

std::error_code Transfer::poll() noexcept {
  return check(true);
}

std::error_code Transfer::wait_until(sync::Deadline deadline) noexcept {
  if (endpoint_ == nullptr) return errc::invalid_argument;
  const auto period =
      std::chrono::duration_cast<sync::Clock::duration>(endpoint_->options.liveness_period);
  // First a bounded spin on loads, unannounced, then a few yields (a claimer sharing this CPU
  // gets it at once), as the channel's and the pool's waits do: a copy that ends within tens of
  // microseconds (payloads up to a few hundred KiB) is seen here, and the claimer's completion
  // then finds nobody announced and makes no futex wake (a system call on the claimer's path).
  // (No spin when the deadline has passed already: the loop below answers at once.)
  std::error_code spun = errc::would_block;
  auto settled = [&]() noexcept {
    spun = check(false);
    return spun != errc::would_block;
  };
  const sync::Clock::time_point started = sync::Clock::now();
  if (started < deadline && (sync::detail::spin_until(settled, kWaitSpinRounds) ||
                             sync::detail::yield_until(settled, kWaitYieldRounds))) {
    return spun;
  }
  // The first liveness check comes one period into the wait, not at its start: a claimer is
  // alive when it claims, and a check per wait would cost every transfer a system call
  // (F_OFD_GETLK). A dead claimer is still noticed within one period of the wait's start.
  if (next_liveness_check_ < started) next_liveness_check_ = started + period;
  sync::EventCount& done = endpoint_->slot(descriptor_.slot).done;
  for (;;) {
    std::error_code state = check(true);
    if (state != errc::would_block) return state;
    const sync::Clock::time_point now = sync::Clock::now();
    if (now >= deadline) return errc::timed_out;
    const sync::EventCount::Key key = done.prepare_wait();
    state = check(false);
    if (state != errc::would_block) {
      done.cancel_wait();
      return state;
    }
    // Wake at the deadline or after one liveness period, whichever comes first.
    const sync::Deadline wake = deadline - now > period ? now + period : deadline;
    (void)done.wait_until(key, wake);
  }
}

void Transfer::release() noexcept {
  if (endpoint_ == nullptr || finished_ || !endpoint_->usable()) return;
  TransferSlot& slot = endpoint_->slot(descriptor_.slot);
  // acquire: pairs with a claimer's release; the word decides withdraw vs wait.
  std::uint64_t word = slot.state.load(std::memory_order_acquire);
  if (state_valid(word) && state_generation(word) == descriptor_.generation &&
      state_of(word) == SlotState::open) {
    // Withdraw: the same CAS race as a claim (step 4): exactly one of them wins.
    // release: our last use of the slot happens before its reuse (acquire CAS in step 1).
    if (slot.state.compare_exchange_strong(
            word, make_state(descriptor_.generation, SlotState::withdrawn, state_value(word)),
            std::memory_order_release, std::memory_order_acquire)) {
      finished_ = true;
      endpoint_ = nullptr;
      return;
    }
  }
  // Claimed (or just completed): a counterpart is reading or writing our memory; wait for it to
  // finish or be seen dead (check() retires the slot).
  (void)wait();
  endpoint_ = nullptr;
}

}  // namespace xproc::bulk
