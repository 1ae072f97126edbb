#pragma once
// The process-wide registry of this process's attachments (private to src/sync).
//
// participant_table.cc registers each Participant here; liveness.cc answers
// this_process_owner_record() and owner_known_dead() from it and closes the attachments'
// descriptions in a fork child. Every function except fork_epoch() must be called with the
// registry locked (RegistryLock), which also keeps fork() out while a description is being
// created: a fork child then never inherits a description the registry does not know of.

#include <sys/types.h>

#include <cstdint>

#include "xproc/sync/participant_table.h"

namespace xproc::sync::detail {

struct Attachment {
  std::uint64_t serial;     // unique in this process
  ParticipantTable* table;  // the table's memory in this process
  int fd;                   // the attachment's own open file description
  off_t lock_base;
  std::uint32_t capacity;  // validated at attach
  std::uint32_t tag;
  ParticipantId id;
};

// Locks the registry for its lifetime (a std::mutex; also held across fork() by the atfork
// prepare handler). Lock it before creating an attachment's description.
class RegistryLock {
 public:
  RegistryLock();
  ~RegistryLock();
  RegistryLock(const RegistryLock&) = delete;
  RegistryLock& operator=(const RegistryLock&) = delete;
};

// Increments in every fork child: a Participant whose fork_epoch differs belongs to a parent,
// and its description was closed by the child handler.
std::uint64_t fork_epoch() noexcept;

// Registers an attachment (appended: attach order) and returns its serial; updates the owner
// record when it is the first. Throws std::bad_alloc only.
std::uint64_t register_attachment(const Attachment& attachment);

// Removes the attachment with `serial`; the owner record moves to the next attachment, or to
// {0, 0}. Does nothing for an unknown serial.
void unregister_attachment(std::uint64_t serial) noexcept;

}  // namespace xproc::sync::detail
