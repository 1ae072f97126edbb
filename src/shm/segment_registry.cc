#include "xproc/shm/segment_registry.h"

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <filesystem>
#include <new>

#include "segment_internal.h"
#include "xproc/sys/error.h"
#include "xproc/sys/ofd_lock.h"
#include "xproc/sys/shared_memory.h"

namespace xproc::shm {
namespace {

Result<sys::FileDescriptor> open_by_name(std::string_view name) {
  if (!valid_segment_name(name)) return make_error_code(errc::invalid_argument);
  Result<sys::FileDescriptor> fd = sys::open_shared_memory(detail::shm_name(name), O_RDWR, 0);
  if (!fd) return detail::translate_open_error(fd.error());
  return fd;
}

}  // namespace

Result<std::vector<std::string>> list_segments() {
  std::vector<std::string> names;
  std::error_code error;
  std::filesystem::directory_iterator entries(sys::kSharedMemoryDirectory, error);
  if (error) return error;
  for (const std::filesystem::directory_entry& entry : entries) {
    std::string file = entry.path().filename().string();
    if (file.size() <= kNamePrefix.size() ||
        file.compare(0, kNamePrefix.size(), kNamePrefix) != 0) {
      continue;
    }
    std::string name = file.substr(kNamePrefix.size());
    if (valid_segment_name(name)) names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  return names;
}

namespace {

// Reports the participants of `segment` (opened, not attached): the slot words as
// ParticipantTable documents them (layout version 1, checked by open: 16-byte header, then one
// generation word per slot), and each id's liveness asked through the segment's descriptor,
// which holds no participant lock.
std::error_code report_participants(const Segment& segment, SegmentReport& report) {
  std::uint32_t capacity = report.info.participant_capacity;  // validated by open
  const auto* slots = reinterpret_cast<const std::atomic<std::uint32_t>*>(
      reinterpret_cast<const std::byte*>(&segment.participants()) + sizeof(sync::ParticipantTable));
  for (std::uint32_t slot = 0; slot < capacity; ++slot) {
    // relaxed: only compared and reported; liveness comes from the kernel's lock state.
    std::uint32_t generation = slots[slot].load(std::memory_order_relaxed);
    if (generation == 0) continue;  // never used
    sync::ParticipantId id{slot, generation};
    if (!id.valid()) return make_error_code(errc::corrupt_segment);
    Result<bool> alive = segment.participants().is_alive(
        segment.fd(), static_cast<off_t>(kParticipantLockBase), capacity, id);
    if (!alive) {
      if (alive.error() == errc::corrupt_state) return make_error_code(errc::corrupt_segment);
      return alive.error();
    }
    report.participants.push_back(ParticipantState{id, *alive});
  }
  return {};
}

}  // namespace

Result<SegmentReport> inspect(std::string_view name, const SegmentOptions& options) {
  Result<Segment> segment = SegmentAccess::open_named(name, std::nullopt, options, false);
  if (!segment) return segment.error();
  SegmentReport report;
  report.name = std::string(name);
  report.info = segment->info();
  if (std::error_code error = report_participants(*segment, report)) return error;
  return report;
}

Result<InspectedSegment> inspect_mapped(std::string_view name, const SegmentOptions& options) {
  Result<Segment> segment = SegmentAccess::open_named(name, std::nullopt, options, false);
  if (!segment) return segment.error();
  InspectedSegment view;
  view.report.name = std::string(name);
  view.report.info = segment->info();
  if (std::error_code error = report_participants(*segment, view.report)) return error;
  // open_named released its shared gc lock: every lock seen now is somebody else's.
  const int fd = segment->fd();
  Result<bool> gc = sys::ofd_locked_by_other(fd, static_cast<off_t>(kGcLockByte), 1);
  if (!gc) return gc.error();
  Result<bool> init = sys::ofd_locked_by_other(fd, static_cast<off_t>(kInitLockByte), 1);
  if (!init) return init.error();
  Result<bool> busy = detail::in_use(fd);
  if (!busy) return busy.error();
  view.locks = LockBytes{*gc, *init};
  view.stale = !*busy;
  view.segment = std::move(*segment);
  return view;
}

Result<bool> participant_alive(const Segment& segment, sync::ParticipantId id) {
  if (!segment.valid()) return make_error_code(errc::invalid_argument);
  const std::uint32_t capacity = segment.info().participant_capacity;  // validated by open
  if (!id.valid() || id.slot >= capacity) return make_error_code(errc::invalid_argument);
  Result<bool> alive = segment.participants().is_alive(
      segment.fd(), static_cast<off_t>(kParticipantLockBase), capacity, id);
  if (!alive && alive.error() == errc::corrupt_state) {
    return make_error_code(errc::corrupt_segment);
  }
  return alive;
}

Result<bool> is_stale(std::string_view name) {
  Result<sys::FileDescriptor> fd = open_by_name(name);
  if (!fd) return fd.error();
  Result<bool> busy = detail::in_use(fd->get());
  if (!busy) return busy.error();
  return !*busy;
}

Result<bool> remove_stale(std::string_view name) {
  Result<sys::FileDescriptor> fd = open_by_name(name);
  if (!fd) return fd.error();
  return detail::unlink_if_unused(fd->get(), name);
}

}  // namespace xproc::shm
