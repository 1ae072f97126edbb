#include "xproc/sync/participant_table.h"

#include <cstdint>
#include <limits>
#include <new>
#include <utility>

#include "liveness_internal.h"
#include "xproc/sys/error.h"
#include "xproc/sys/file.h"
#include "xproc/sys/ofd_lock.h"
#include "xproc/sys/random.h"

namespace xproc::sync {
namespace {

constexpr std::uint32_t kMaxGeneration = ParticipantId::kMaxGeneration;

bool aligned_for_table(const void* memory) noexcept {
  return reinterpret_cast<std::uintptr_t>(memory) % alignof(ParticipantTable) == 0;
}

// True when [lock_base, lock_base + capacity) is a valid byte range of a file.
bool valid_lock_range(off_t lock_base, std::uint32_t capacity) noexcept {
  return lock_base >= 0 && lock_base <= std::numeric_limits<off_t>::max() - off_t{capacity};
}

// The generation an attach writes over `current` (1..kMaxGeneration, 0 skipped on wrap).
constexpr std::uint32_t next_generation(std::uint32_t current) noexcept {
  return current >= kMaxGeneration ? 1 : current + 1;
}

// True when `current` lies after `issued` on the ring of generations 1..kMaxGeneration by at
// most half the ring: some attach after the one that issued `issued` took the slot.
constexpr bool generation_moved_past(std::uint32_t current, std::uint32_t issued) noexcept {
  std::uint32_t distance = (current + kMaxGeneration - issued) % kMaxGeneration;
  return distance != 0 && distance <= kMaxGeneration / 2;
}
static_assert(generation_moved_past(2, 1) && !generation_moved_past(1, 2));
static_assert(generation_moved_past(1, kMaxGeneration) && !generation_moved_past(5, 5));

}  // namespace

ParticipantTable::ParticipantTable(std::uint32_t capacity, std::uint32_t tag) noexcept
    : magic_(0), version_(kLayoutVersion), capacity_(capacity), tag_(tag) {}

std::atomic<std::uint32_t>& ParticipantTable::slot_word(std::uint32_t slot) noexcept {
  auto* first = reinterpret_cast<std::atomic<std::uint32_t>*>(
      reinterpret_cast<unsigned char*>(this) + sizeof(ParticipantTable));
  return first[slot];
}

const std::atomic<std::uint32_t>& ParticipantTable::slot_word(std::uint32_t slot) const noexcept {
  return const_cast<ParticipantTable*>(this)->slot_word(slot);
}

Result<ParticipantTable*> ParticipantTable::create(void* memory, std::size_t size,
                                                   std::uint32_t capacity) noexcept {
  if (memory == nullptr || !aligned_for_table(memory))
    return make_error_code(errc::invalid_argument);
  if (capacity == 0 || capacity > kMaxCapacity || size < size_for(capacity)) {
    return make_error_code(errc::invalid_argument);
  }
  std::uint32_t tag = 0;
  while (tag == 0) {  // 0 means "no table" in an owner record
    Result<std::uint32_t> drawn = sys::random_u32();
    if (!drawn) return drawn.error();
    tag = *drawn;
  }
  auto* table = new (memory) ParticipantTable(capacity, tag);
  for (std::uint32_t slot = 0; slot < capacity; ++slot) {
    new (&table->slot_word(slot)) std::atomic<std::uint32_t>(0);
  }
  // release: publishes the header fields and zeroed slots; pairs with the acquire in open().
  table->magic_.store(kMagic, std::memory_order_release);
  return table;
}

Result<ParticipantTable*> ParticipantTable::open(void* memory, std::size_t size) noexcept {
  if (memory == nullptr || !aligned_for_table(memory) || size < sizeof(ParticipantTable)) {
    return make_error_code(errc::invalid_argument);
  }
  auto* table = std::launder(static_cast<ParticipantTable*>(memory));
  // acquire: pairs with the release in create(), so the header read below is the creator's.
  if (table->magic_.load(std::memory_order_acquire) != kMagic) {
    return make_error_code(errc::corrupt_state);
  }
  std::uint32_t capacity = table->capacity_;
  if (table->version_ != kLayoutVersion || capacity == 0 || capacity > kMaxCapacity ||
      size_for(capacity) > size) {
    return make_error_code(errc::corrupt_state);
  }
  return table;
}

Result<bool> ParticipantTable::is_alive(int fd, off_t lock_base, std::uint32_t capacity,
                                        ParticipantId id) const noexcept {
  if (!id.valid() || capacity > kMaxCapacity || id.slot >= capacity ||
      !valid_lock_range(lock_base, capacity)) {
    return make_error_code(errc::invalid_argument);
  }
  // 1) Ask the kernel first. Its lock state is current: a holder locked its byte before its id
  //    existed, so an id whose byte nobody (else) holds belongs to a participant that is gone.
  Result<bool> held = sys::ofd_locked_by_other(fd, lock_base + off_t{id.slot}, 1);
  if (!held) return held.error();
  if (!*held) return false;
  // 2) Someone holds the byte: the id's owner, or a later attacher. relaxed: the word is only
  //    compared; what matters is its modification order (bumps are RMWs by lock holders), not
  //    data published with it. A stale read errs towards "alive" (the id looks ahead of it).
  std::uint32_t current = slot_word(id.slot).load(std::memory_order_relaxed);
  if (current > kMaxGeneration) return make_error_code(errc::corrupt_state);
  if (current == 0) return true;  // a first attacher between its lock and its bump
  // A generation past the id's was written by an attach that could lock the byte only after the
  // id's owner released it: dead. Equal, or behind (the bump of a new attacher not yet seen, or
  // the holder between lock and bump): alive, the conservative answer.
  return !generation_moved_past(current, id.generation);
}

Participant::Participant(Participant&& other) noexcept
    : table_(other.table_),
      fd_(other.fd_),
      lock_base_(other.lock_base_),
      capacity_(other.capacity_),
      tag_(other.tag_),
      id_(other.id_),
      serial_(other.serial_),
      fork_epoch_(other.fork_epoch_) {
  other.forget();
}

Participant& Participant::operator=(Participant&& other) noexcept {
  if (this != &other) {
    (void)detach();  // an unlock error leaves nothing to do: the description is closed anyway
    table_ = other.table_;
    fd_ = other.fd_;
    lock_base_ = other.lock_base_;
    capacity_ = other.capacity_;
    tag_ = other.tag_;
    id_ = other.id_;
    serial_ = other.serial_;
    fork_epoch_ = other.fork_epoch_;
    other.forget();
  }
  return *this;
}

Participant::~Participant() {
  (void)detach();
}

void Participant::forget() noexcept {
  table_ = nullptr;
  fd_ = -1;
  lock_base_ = 0;
  capacity_ = 0;
  tag_ = 0;
  id_ = ParticipantId{};
  serial_ = 0;
  fork_epoch_ = 0;
}

Result<Participant> Participant::attach(ParticipantTable& table, int fd, off_t lock_base) noexcept {
  std::uint32_t capacity = table.capacity_;  // read once; open() or create() validated it
  if (fd < 0 || capacity == 0 || capacity > ParticipantTable::kMaxCapacity ||
      !valid_lock_range(lock_base, capacity)) {
    return make_error_code(errc::invalid_argument);
  }
  try {
    // Held until the description is registered: fork() (prepare handler) waits, so no child
    // inherits a description that its child handler would not close.
    detail::RegistryLock registry_lock;
    Result<sys::FileDescriptor> own = sys::reopen(fd);
    if (!own) return own.error();
    int own_fd = own->get();

    // Take the first slot whose byte can be locked: a lockable byte belongs to nobody alive.
    std::uint32_t slot = 0;
    for (;; ++slot) {
      if (slot == capacity) return make_error_code(errc::limit_reached);
      std::error_code error = sys::ofd_try_lock(own_fd, lock_base + off_t{slot}, 1);
      if (!error) break;
      if (error != errc::would_block) return error;
    }

    // Bump the generation. RMW: it reads the latest value in the word's modification order, so
    // no bump is lost even though the previous holder ran in another (dead) process. relaxed:
    // the word carries no other data; readers only compare (see ParticipantTable::is_alive).
    std::atomic<std::uint32_t>& word = table.slot_word(slot);
    std::uint32_t current = word.load(std::memory_order_relaxed);  // relaxed: CAS re-checks
    std::uint32_t next = 0;
    do {
      if (current > kMaxGeneration) {
        // The description closes on return (the lock goes with it).
        return make_error_code(errc::corrupt_state);
      }
      next = next_generation(current);
    } while (!word.compare_exchange_weak(current, next, std::memory_order_relaxed,
                                         std::memory_order_relaxed));

    Participant participant;
    participant.table_ = &table;
    participant.lock_base_ = lock_base;
    participant.capacity_ = capacity;
    participant.tag_ = table.tag_;
    participant.id_ = ParticipantId{slot, next};
    participant.fork_epoch_ = detail::fork_epoch();
    participant.serial_ = detail::register_attachment(detail::Attachment{
        0, &table, own_fd, lock_base, capacity, participant.tag_, participant.id_});
    participant.fd_ = own->release();
    return participant;
  } catch (const std::bad_alloc&) {
    return std::make_error_code(std::errc::not_enough_memory);
  } catch (const std::system_error& error) {  // std::mutex::lock
    return error.code();
  }
}

bool Participant::attached() const noexcept {
  return fd_ >= 0 && fork_epoch_ == detail::fork_epoch();
}

ParticipantId Participant::id() const noexcept {
  return attached() ? id_ : ParticipantId{};
}

std::uint32_t Participant::table_tag() const noexcept {
  return attached() ? tag_ : 0;
}

std::error_code Participant::detach() noexcept {
  if (fd_ < 0) return {};
  if (fork_epoch_ != detail::fork_epoch()) {
    // A fork child's copy: the child handler already closed the descriptor (its number may be
    // reused by now), and the registry entry belongs to the parent.
    forget();
    return {};
  }
  std::error_code error;
  try {
    // Under the registry lock, so that fork() sees either the registered, locked description or
    // neither.
    detail::RegistryLock registry_lock;
    detail::unregister_attachment(serial_);
    // Unlock explicitly: closing drops the lock only with the description's last descriptor.
    error = sys::ofd_unlock(fd_, lock_base_ + off_t{id_.slot}, 1);
    sys::FileDescriptor closing(fd_);
  } catch (const std::system_error& failure) {  // std::mutex::lock
    // Close anyway: the lock goes with the description, the registry entry stays stale but its
    // slot reads dead, which is the truth.
    error = failure.code();
    sys::FileDescriptor closing(fd_);
  }
  forget();
  return error;
}

Result<bool> Participant::is_alive(ParticipantId other) const noexcept {
  if (!attached()) return make_error_code(errc::invalid_argument);
  if (other == id_) return true;  // my own lock is invisible through my own description
  return table_->is_alive(fd_, lock_base_, capacity_, other);
}

std::error_code Participant::for_each_participant(
    const std::function<void(ParticipantId id, bool alive)>& visit) const {
  if (!attached()) return errc::invalid_argument;
  for (std::uint32_t slot = 0; slot < capacity_; ++slot) {
    // relaxed: only compared and passed on; is_alive decides with the kernel's lock state.
    std::uint32_t generation = table_->slot_word(slot).load(std::memory_order_relaxed);
    if (generation == 0) continue;  // never used
    if (generation > kMaxGeneration) return errc::corrupt_state;
    ParticipantId id{slot, generation};
    Result<bool> alive = is_alive(id);
    if (!alive) return alive.error();
    visit(id, *alive);
  }
  return {};
}

}  // namespace xproc::sync
