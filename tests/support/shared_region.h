#pragma once
// Test scaffolding shared by the channel and bulk tests: a formatted layout in anonymous
// MAP_SHARED memory (SharedRegion) and a participant table on a memfd (Registry). Both are
// visible to fork() children: children inherit the mapping and the descriptor and attach
// themselves.

#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>

#include "xproc/sync/participant_table.h"
#include "xproc/sys/file.h"
#include "xproc/sys/memory.h"
#include "xproc/sys/result.h"

namespace xproc::test {

// A layout formatted in anonymous MAP_SHARED memory (zero-filled by the kernel, page-aligned).
// `Config` is any configuration whose namespace provides region_size_for(config) and
// format(region, config) (found by argument-dependent lookup): channel::ChannelConfig,
// bulk::PoolConfig. Throws std::system_error when format() refuses the config.
struct SharedRegion {
  template <class Config>
  explicit SharedRegion(const Config& config)
      : mapping(sys::SharedMapping::anonymous(region_size_for(config)).value()) {
    std::error_code error = format(bytes(), config);
    if (error) throw std::system_error(error);
  }
  std::span<std::byte> bytes() const {
    return {static_cast<std::byte*>(mapping.data()), mapping.size()};
  }

  sys::SharedMapping mapping;
};

// A participant table on a memfd (the process registry every user of a region attaches to);
// fork children inherit the descriptor and attach themselves.
struct Registry {
  explicit Registry(std::uint32_t capacity = 64)
      : file(sys::create_memory_file("test_registry", sync::ParticipantTable::size_for(capacity))
                 .value()),
        mapping(sys::SharedMapping::of_file(file.get(), sync::ParticipantTable::size_for(capacity))
                    .value()),
        table(sync::ParticipantTable::create(mapping.data(), mapping.size(), capacity).value()) {}
  Result<sync::Participant> attach() const { return sync::Participant::attach(*table, file.get()); }

  sys::FileDescriptor file;
  sys::SharedMapping mapping;
  sync::ParticipantTable* table;
};

}  // namespace xproc::test
