#pragma once
// Test helper for RobustRwLock's tests: a participant table in a memfd, to which the test process
// and its fork children attach, so that the lock names them by participant id (its default).

#include <cstdint>
#include <string>

#include "xproc/sync/participant_table.h"
#include "xproc/sys/file.h"
#include "xproc/sys/memory.h"

namespace xproc::sync::test_support {

struct RwLockTableFile {
  static constexpr std::uint32_t kCapacity = 8;

  RwLockTableFile()
      : file(sys::create_memory_file("robust_rw_lock_test", ParticipantTable::size_for(kCapacity))
                 .value()),
        mapping(
            sys::SharedMapping::of_file(file.get(), ParticipantTable::size_for(kCapacity)).value()),
        table(ParticipantTable::create(mapping.data(), mapping.size(), kCapacity).value()) {}

  Result<Participant> attach() { return Participant::attach(*table, file.get()); }

  sys::FileDescriptor file;
  sys::SharedMapping mapping;
  ParticipantTable* table;
};

}  // namespace xproc::sync::test_support
