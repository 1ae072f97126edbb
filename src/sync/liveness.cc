// The process-wide liveness registry: this process's attachments, its owner record, and the
// fork child handler that closes inherited attachment descriptions.

#include "xproc/sync/detail/liveness.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <vector>

#include "liveness_internal.h"

namespace xproc::sync::detail {

constinit std::atomic<std::uint64_t> process_owner_record_word{0};

namespace {

constexpr std::uint64_t encode(OwnerRecord record) noexcept {
  return std::uint64_t{record.table_tag} << 32 | record.participant;
}

// Incremented in every fork child (fork_epoch()).
constinit std::atomic<std::uint64_t> fork_epoch_word{0};

void fork_prepare() noexcept;
void fork_parent() noexcept;
void fork_child() noexcept;

struct Registry {
  Registry() {
    // Handlers are registered once, before the first attachment exists. pthread_atfork fails
    // only with ENOMEM; then attach would be unsafe across fork, so the program is not allowed
    // to continue silently.
    if (pthread_atfork(fork_prepare, fork_parent, fork_child) != 0) std::terminate();
  }
  std::mutex mutex;
  std::vector<Attachment> attachments;  // in attach order; the first names the owner record
  std::uint64_t next_serial = 1;
};

// Never destroyed: Participants with static storage may detach during exit, after function-local
// statics would have been destroyed.
Registry& registry() {
  static Registry* const instance = new Registry;
  return *instance;
}

// Called with the mutex held.
void publish_owner_record(const Registry& state) noexcept {
  std::uint64_t word = 0;
  if (!state.attachments.empty()) {
    const Attachment& first = state.attachments.front();
    word = encode(OwnerRecord{first.tag, first.id.pack()});
  }
  // relaxed: an identity, not a publication; see this_process_owner_record().
  process_owner_record_word.store(word, std::memory_order_relaxed);
}

void fork_prepare() noexcept {
  // Keeps attach/detach/owner_known_dead out of the fork, so the child sees a consistent list
  // and inherits no description that is not in it. The mutex is a leaf: nothing is called with
  // it held that could wait for the forking thread.
  registry().mutex.lock();
}

void fork_parent() noexcept {
  registry().mutex.unlock();
}

void fork_child() noexcept {
  Registry& state = registry();
  // The child's copies of the parent's descriptions would keep the parent's slot locks alive
  // after the parent dies: close them (close() is async-signal-safe). The parent's locks stay,
  // held by its own descriptors.
  for (const Attachment& attachment : state.attachments) close(attachment.fd);
  state.attachments.clear();  // keeps the capacity: no allocation here
  // relaxed: single-threaded here (the child has only this thread).
  process_owner_record_word.store(0, std::memory_order_relaxed);
  // relaxed: single-threaded here; later reads are on this thread or after thread creation.
  fork_epoch_word.fetch_add(1, std::memory_order_relaxed);
  // The forking thread locked it in fork_prepare and is the child's only thread: unlock is legal.
  state.mutex.unlock();
}

}  // namespace

RegistryLock::RegistryLock() {
  registry().mutex.lock();
}
RegistryLock::~RegistryLock() {
  registry().mutex.unlock();
}

std::uint64_t fork_epoch() noexcept {
  // relaxed: changes only in a fork child before any other thread exists there.
  return fork_epoch_word.load(std::memory_order_relaxed);
}

std::uint64_t register_attachment(const Attachment& attachment) {
  Registry& state = registry();
  Attachment entry = attachment;
  entry.serial = state.next_serial++;
  state.attachments.push_back(entry);
  if (state.attachments.size() == 1) publish_owner_record(state);
  return entry.serial;
}

void unregister_attachment(std::uint64_t serial) noexcept {
  Registry& state = registry();
  auto found = std::find_if(state.attachments.begin(), state.attachments.end(),
                            [serial](const Attachment& a) { return a.serial == serial; });
  if (found == state.attachments.end()) return;
  bool was_first = found == state.attachments.begin();
  state.attachments.erase(found);
  if (was_first) publish_owner_record(state);
}

bool owner_known_dead(OwnerRecord record) noexcept {
  ParticipantId id = ParticipantId::unpack(record.participant);
  if (record.table_tag == 0 || !id.valid()) return false;
  try {
    Registry& state = registry();
    std::lock_guard lock(state.mutex);
    const Attachment* probe = nullptr;
    for (const Attachment& attachment : state.attachments) {
      if (attachment.tag != record.table_tag) continue;
      if (attachment.id == id) return false;  // one of this process's own live attachments
      if (probe == nullptr) probe = &attachment;
    }
    if (probe == nullptr || id.slot >= probe->capacity) return false;
    Result<bool> alive = probe->table->is_alive(probe->fd, probe->lock_base, probe->capacity, id);
    return alive.has_value() && !*alive;
  } catch (...) {  // std::system_error from mutex::lock: unknown, so not known dead
    return false;
  }
}

}  // namespace xproc::sync::detail
