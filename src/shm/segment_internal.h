#pragma once
// Private helpers shared by segment.cc, segment_registry.cc and segment_transfer.cc.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "xproc/shm/segment.h"
#include "xproc/sys/file.h"
#include "xproc/sys/result.h"

namespace xproc::shm {

struct SegmentAccess {
  // Builds a new segment in the empty file `fd` (unnamed or anonymous); see segment.cc.
  static Result<Segment> build(sys::FileDescriptor fd, SegmentKind kind, std::size_t body_size,
                               const SegmentOptions& options, const Segment::Init& init,
                               bool anonymous);
  // Validates the segment file `fd` refers to and, if `attach`, attaches this process
  // (open/adopt; inspect does not attach). `kind` empty: any kind (inspect).
  static Result<Segment> attach_file(sys::FileDescriptor fd, std::optional<SegmentKind> kind,
                                     const SegmentOptions& options, std::string name,
                                     bool attach = true);
  // open() by name, with the gc protocol; `kind` empty: any kind.
  static Result<Segment> open_named(std::string_view name, std::optional<SegmentKind> kind,
                                    const SegmentOptions& options, bool attach = true);
};

namespace detail {

// "/xproc.<name>" (the shm_open name) and "/dev/shm/xproc.<name>" (its path).
std::string shm_name(std::string_view name);
std::string shm_path(std::string_view name);

// The descriptor's open errors in segment terms (ENOENT -> not_found, EACCES -> permission_denied).
std::error_code translate_open_error(std::error_code error) noexcept;

// True when `name` (shm path) still refers to the file `fd` refers to.
Result<bool> names_same_file(int fd, std::string_view name) noexcept;

// True when some other open file description holds a participant, init or gc lock byte of the
// file: somebody is attached, creating, or attaching.
Result<bool> in_use(int fd) noexcept;

// The gc protocol's unlinker side (see segment.h): through `fd` (an open description of the
// segment that holds no participant lock), takes the gc byte exclusively, and unlinks `name` if
// nobody is in use and the name still refers to this file. True when it unlinked.
// `patience`: how long to retry while the gc byte is held by someone else (an opener in its
// attach window, or another unlinker); zero: give up at once (false).
Result<bool> unlink_if_unused(int fd, std::string_view name,
                              std::chrono::steady_clock::duration patience = {}) noexcept;

}  // namespace detail
}  // namespace xproc::shm
