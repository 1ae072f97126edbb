#include "xproc/shm/segment_registry.h"

#include <fcntl.h>

#include <algorithm>
#include <filesystem>
#include <new>

#include "segment_internal.h"
#include "xproc/sys/error.h"
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

Result<SegmentReport> inspect(std::string_view name, const SegmentOptions& options) {
  Result<Segment> segment = SegmentAccess::open_named(name, std::nullopt, options);
  if (!segment) return segment.error();
  SegmentReport report;
  report.name = std::string(name);
  report.info = segment->info();
  sync::ParticipantId me = segment->self().id();
  std::error_code error =
      segment->self().for_each_participant([&](sync::ParticipantId id, bool alive) {
        if (id != me) report.participants.push_back(ParticipantState{id, alive});
      });
  if (error) {
    if (error == errc::corrupt_state) return make_error_code(errc::corrupt_segment);
    return error;
  }
  return report;
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
