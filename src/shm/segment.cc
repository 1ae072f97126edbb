#include "xproc/shm/segment.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <fstream>
#include <limits>
#include <new>
#include <thread>
#include <utility>

#include "segment_internal.h"
#include "xproc/sys/error.h"
#include "xproc/sys/futex.h"
#include "xproc/sys/memory.h"
#include "xproc/sys/ofd_lock.h"
#include "xproc/sys/shared_memory.h"

namespace xproc::shm {
namespace {

using Clock = std::chrono::steady_clock;

// How long an opener sleeps on an unready `ready` word before it re-checks that the creator is
// still alive (the creator's death does not wake the futex).
constexpr std::chrono::milliseconds kReadyRecheck{10};
// Pause between tries of the shared gc lock while an unlinker holds it (for microseconds).
constexpr std::chrono::microseconds kGcRetry{50};
// How long a last detacher waits for the gc byte (held for microseconds by an opener or another
// detacher) before it leaves the name for remove_stale().
constexpr std::chrono::milliseconds kLastDetachPatience{100};

bool valid_kind(std::uint32_t kind) noexcept {
  return kind >= static_cast<std::uint32_t>(SegmentKind::raw) &&
         kind <= static_cast<std::uint32_t>(SegmentKind::rpc);
}

std::error_code validate_create(SegmentKind kind, std::size_t body_size,
                                const SegmentOptions& options) noexcept {
  std::uint32_t capacity = options.participant_capacity;
  if (!valid_kind(static_cast<std::uint32_t>(kind))) return errc::invalid_argument;
  if (capacity == 0 || capacity > sync::ParticipantTable::kMaxCapacity) {
    return errc::invalid_argument;
  }
  if ((options.mode & ~mode_t{07777}) != 0) return errc::invalid_argument;
  // The whole file must end below the lock region (1 TiB).
  if (body_size >= kLockRegion - body_offset_for(capacity)) return errc::invalid_argument;
  return {};
}

// Huge pages and mlock on a fresh mapping (create and open alike).
std::error_code apply_mapping_options(void* base, std::size_t size, const SegmentOptions& options,
                                      std::string& reason) {
  if (options.huge_pages) {
    std::string setting;
    std::ifstream file("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
    std::getline(file, setting);
    if (setting.find("[never]") != std::string::npos ||
        setting.find("[deny]") != std::string::npos) {
      reason += "huge pages: shmem transparent huge pages are off (shmem_enabled: " + setting + ")";
    } else if (std::error_code error = sys::advise_huge_pages(base, size)) {
      reason += "huge pages: madvise(MADV_HUGEPAGE): " + error.message();
    }
  }
  if (options.lock_memory) {
    if (std::error_code error = sys::lock_memory(base, size)) {
      if (error == std::errc::not_enough_memory || error == std::errc::operation_not_permitted ||
          error == std::errc::resource_unavailable_try_again) {
        return errc::limit_reached;
      }
      return error;
    }
  }
  return {};
}

// The header's fields, copied once (a peer may change the shared ones; only the copy is used).
struct HeaderCopy {
  std::uint64_t magic = 0;
  std::uint32_t layout_version = 0;
  std::uint32_t signature = 0;
  std::uint32_t kind = 0;
  std::uint32_t flags = 0;
  std::uint64_t total_size = 0;
  std::uint64_t body_offset = 0;
  std::uint64_t body_size = 0;
  std::uint64_t table_offset = 0;
  std::uint32_t table_capacity = 0;
  std::uint32_t creator_uid = 0;
  std::uint32_t creator_pid = 0;
  std::uint32_t creator = 0;
  std::int64_t created_at_ns = 0;
  std::uint64_t lock_region = 0;
};

std::error_code validate_header(const HeaderCopy& copy, std::size_t file_size,
                                std::optional<SegmentKind> kind) noexcept {
  if (copy.magic != SegmentHeader::kMagic) return errc::corrupt_segment;
  if (copy.layout_version != SegmentHeader::kLayoutVersion || copy.signature != kSignature ||
      copy.lock_region != kLockRegion || (copy.flags & ~kKnownFlags) != 0) {
    return errc::layout_mismatch;
  }
  if (!valid_kind(copy.kind) || copy.table_offset != kHeaderSize || copy.table_capacity == 0 ||
      copy.table_capacity > sync::ParticipantTable::kMaxCapacity ||
      copy.body_offset != body_offset_for(copy.table_capacity) || copy.body_size > kLockRegion ||
      copy.total_size != copy.body_offset + copy.body_size || copy.total_size > file_size) {
    return errc::corrupt_segment;
  }
  if (kind && static_cast<std::uint32_t>(*kind) != copy.kind) return errc::wrong_kind;
  return {};
}

HeaderCopy copy_header(const SegmentHeader& header) noexcept {
  HeaderCopy copy;
  copy.magic = header.magic;
  copy.layout_version = header.layout_version;
  copy.signature = header.signature;
  copy.kind = header.kind;
  copy.flags = header.flags;
  copy.total_size = header.total_size;
  copy.body_offset = header.body_offset;
  copy.body_size = header.body_size;
  copy.table_offset = header.table_offset;
  copy.table_capacity = header.table_capacity;
  copy.creator_uid = header.creator_uid;
  copy.creator_pid = header.creator_pid;
  copy.creator = header.creator;
  copy.created_at_ns = header.created_at_ns;
  copy.lock_region = header.lock_region;
  return copy;
}

SegmentInfo info_from(const HeaderCopy& copy, bool sealed) noexcept {
  SegmentInfo info;
  info.kind = static_cast<SegmentKind>(copy.kind);
  info.layout_version = copy.layout_version;
  info.flags = copy.flags;
  info.total_size = static_cast<std::size_t>(copy.total_size);
  info.body_offset = static_cast<std::size_t>(copy.body_offset);
  info.body_size = static_cast<std::size_t>(copy.body_size);
  info.participant_capacity = copy.table_capacity;
  info.creator_uid = copy.creator_uid;
  info.creator_pid = static_cast<pid_t>(copy.creator_pid);
  info.creator = sync::ParticipantId::unpack(copy.creator);
  info.created_at = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(copy.created_at_ns)));
  info.size_sealed = sealed;
  return info;
}

// Waits until the creator publishes `ready`. Creator alive = somebody else holds the init byte
// (the creator locks it through a description of its own before writing anything).
std::error_code wait_ready(SegmentHeader& header, int fd, Clock::time_point deadline) noexcept {
  for (;;) {
    // acquire: pairs with the creator's release exchange in build(): the header, the table and
    // the body's initialization happen-before everything this opener does next.
    std::uint32_t word = header.ready.load(std::memory_order_acquire);
    if (SegmentHeader::is_ready(word)) return {};
    if (!SegmentHeader::is_initializing(word)) return errc::corrupt_segment;
    Result<bool> creating = sys::ofd_locked_by_other(fd, static_cast<off_t>(kInitLockByte), 1);
    if (!creating) return creating.error();
    if (!*creating) {
      // The creator unlocks only after publishing ready: re-read (acquire, as above).
      word = header.ready.load(std::memory_order_acquire);
      if (SegmentHeader::is_ready(word)) return {};
      if (header.magic != SegmentHeader::kMagic) return errc::corrupt_segment;  // foreign file
      return errc::peer_dead;  // the creator died before the segment was ready
    }
    Clock::time_point now = Clock::now();
    if (now >= deadline) return errc::timed_out;
    if (word == 0) {
      // relaxed: announces a sleeper. Both this CAS and the creator's exchange are RMWs of one
      // word: whichever comes second sees the other (kWaiting -> the creator wakes; kReady ->
      // this CAS fails and the loop sees it). No store-load ordering is involved.
      if (!header.ready.compare_exchange_strong(word, SegmentHeader::kWaiting,
                                                std::memory_order_relaxed)) {
        continue;
      }
    }
    Clock::time_point slice = std::min(deadline, now + kReadyRecheck);
    std::error_code error = sys::futex_wait(header.ready, SegmentHeader::kWaiting,
                                            sys::FutexScope::process_shared, slice);
    if (error && error != errc::timed_out && error != errc::would_block) return error;
  }
}

}  // namespace

bool valid_segment_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > kMaxNameLength || name.front() == '.') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// The magic spells "XPROCSEG" in memory (little-endian), as docs/layout/segment.md says.
static_assert([] {
  constexpr char kSpelling[] = "XPROCSEG";
  std::uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = value << 8 | static_cast<unsigned char>(kSpelling[i]);
  return value;
}() == SegmentHeader::kMagic);

namespace detail {

std::string shm_name(std::string_view name) {
  // Appended piece by piece: g++ 12 at -O3 reports a false -Wrestrict for "/" + std::string.
  std::string result;
  result.reserve(1 + kNamePrefix.size() + name.size());
  result += '/';
  result += kNamePrefix;
  result += name;
  return result;
}

std::string shm_path(std::string_view name) {
  return std::string(sys::kSharedMemoryDirectory) + shm_name(name);
}

std::error_code translate_open_error(std::error_code error) noexcept {
  if (error == std::errc::no_such_file_or_directory) return errc::not_found;
  if (error == std::errc::permission_denied || error == std::errc::operation_not_permitted) {
    return errc::permission_denied;
  }
  return error;
}

Result<bool> names_same_file(int fd, std::string_view name) noexcept {
  try {
    Result<sys::FileInfo> mine = sys::file_info(fd);
    if (!mine) return mine.error();
    Result<sys::FileInfo> named = sys::path_info(shm_path(name));
    if (!named) {
      if (named.error() == std::errc::no_such_file_or_directory) return false;
      return named.error();
    }
    return mine->device == named->device && mine->inode == named->inode;
  } catch (const std::bad_alloc&) {
    return std::make_error_code(std::errc::not_enough_memory);
  }
}

Result<bool> in_use(int fd) noexcept {
  // One F_OFD_GETLK over the gc and init bytes, one over every possible participant slot.
  Result<bool> busy = sys::ofd_locked_by_other(fd, static_cast<off_t>(kGcLockByte), 2);
  if (!busy || *busy) return busy;
  return sys::ofd_locked_by_other(fd, static_cast<off_t>(kParticipantLockBase),
                                  off_t{sync::ParticipantTable::kMaxCapacity});
}

Result<bool> unlink_if_unused(int fd, std::string_view name, Clock::duration patience) noexcept {
  Clock::time_point give_up = Clock::now() + patience;
  std::error_code error;
  for (;;) {
    error = sys::ofd_try_lock(fd, static_cast<off_t>(kGcLockByte), 1);
    if (error != errc::would_block) break;
    // An opener is attaching (it will be a live participant, so: in use), or another unlinker
    // is checking (it may have seen us alive before we detached: wait for it, then check).
    if (Clock::now() >= give_up) return false;
    std::this_thread::sleep_for(kGcRetry);
  }
  if (error) return error;
  Result<bool> result = false;
  Result<bool> busy = in_use(fd);
  if (!busy) {
    result = busy.error();
  } else if (!*busy) {
    Result<bool> same = names_same_file(fd, name);
    if (!same) {
      result = same.error();
    } else if (*same) {
      try {
        error = sys::unlink_shared_memory(shm_name(name));
        result = error ? Result<bool>(error) : Result<bool>(true);
      } catch (const std::bad_alloc&) {
        result = std::make_error_code(std::errc::not_enough_memory);
      }
    }
  }
  (void)sys::ofd_unlock(fd, static_cast<off_t>(kGcLockByte), 1);  // closing would drop it too
  return result;
}

}  // namespace detail

// Crash protocol of a creator (what an observer sees if it dies after step n):
//  1) lock the init byte through a description of its own. (nothing exists yet)
//  2) size the file (anonymous: seal its size), map it, write the header and the table.
//     (an observer holding the fd sees "initializing, init byte free": peer_dead)
//  3) attach itself to the table and record its id in the header. (same)
//  4) init(body); an error returns here and the file is dropped unpublished. (same)
//  5) ready <- kReady (release); wake a sleeper that announced itself. (a valid segment)
//  6) unlock the init byte (closing its description). Named: link the name (create()).
Result<Segment> SegmentAccess::build(sys::FileDescriptor fd, SegmentKind kind,
                                     std::size_t body_size, const SegmentOptions& options,
                                     const Segment::Init& init, bool anonymous) {
  std::uint32_t capacity = options.participant_capacity;
  std::uint64_t body_offset = body_offset_for(capacity);
  std::size_t total = static_cast<std::size_t>(body_offset) + body_size;

  Result<sys::FileDescriptor> creating = sys::reopen(fd.get());  // 1)
  if (!creating) return creating.error();
  if (std::error_code error =
          sys::ofd_try_lock(creating->get(), static_cast<off_t>(kInitLockByte), 1)) {
    return error;
  }
  if (std::error_code error = sys::set_mode(fd.get(), options.mode)) return error;  // 2)
  if (std::error_code error = sys::resize_file(fd.get(), total)) return error;
  if (anonymous) {
    if (std::error_code error = sys::seal_size(fd.get())) return error;
  }
  Result<void*> mapped = sys::map_shared(fd.get(), total, options.populate);
  if (!mapped) return mapped.error();
  Segment segment;
  segment.fd_ = std::move(fd);
  segment.base_ = *mapped;
  segment.mapped_size_ = total;
  if (std::error_code error =
          apply_mapping_options(segment.base_, total, options, segment.fallback_reason_)) {
    return error;
  }

  auto* bytes = static_cast<std::byte*>(segment.base_);
  auto* header = new (bytes) SegmentHeader{};  // the file is zero-filled; this starts lifetimes
  header->magic = SegmentHeader::kMagic;
  header->layout_version = SegmentHeader::kLayoutVersion;
  header->signature = kSignature;
  header->kind = static_cast<std::uint32_t>(kind);
  header->flags =
      (anonymous ? kFlagAnonymous : 0u) |
      (options.unlink_when_last_detaches && !anonymous ? kFlagUnlinkWhenLastDetaches : 0u);
  header->total_size = total;
  header->body_offset = body_offset;
  header->body_size = body_size;
  header->table_offset = kHeaderSize;
  header->table_capacity = capacity;
  header->creator_uid = static_cast<std::uint32_t>(geteuid());
  header->creator_pid = static_cast<std::uint32_t>(getpid());
  header->created_at_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  header->lock_region = kLockRegion;
  Result<sync::ParticipantTable*> table = sync::ParticipantTable::create(
      bytes + kHeaderSize, static_cast<std::size_t>(body_offset) - kHeaderSize, capacity);
  if (!table) return table.error();
  segment.table_ = *table;

  Result<sync::Participant> self =  // 3)
      sync::Participant::attach(**table, segment.fd_.get(),
                                static_cast<off_t>(kParticipantLockBase));
  if (!self) return self.error();
  segment.self_ = std::move(*self);
  header->creator = segment.self_.id().pack();
  Result<bool> sealed = sys::size_sealed(segment.fd_.get());
  segment.info_ = info_from(copy_header(*header), sealed && *sealed);

  if (init) {  // 4)
    if (std::error_code error = init(segment.body())) return error;
  }
  // 5) release: publishes the header, the table and init's writes to the body; pairs with the
  // acquire load in wait_ready(). An RMW, so an opener's kWaiting announcement is never missed.
  std::uint32_t previous = header->ready.exchange(SegmentHeader::kReady, std::memory_order_release);
  if (previous == SegmentHeader::kWaiting) {
    (void)sys::futex_wake(header->ready, INT_MAX, sys::FutexScope::process_shared);
  }
  return segment;  // 6) `creating` closes here: the init byte is free
}

Result<Segment> SegmentAccess::attach_file(sys::FileDescriptor fd, std::optional<SegmentKind> kind,
                                           const SegmentOptions& options, std::string name,
                                           bool attach) {
  Clock::time_point deadline = Clock::now() + options.ready_timeout;
  Result<sys::FileInfo> file = sys::file_info(fd.get());
  if (!file) return file.error();
  if (!file->regular) return make_error_code(errc::corrupt_segment);
  if (file->owner != geteuid() && !options.allow_other_owner) {
    return make_error_code(errc::permission_denied);
  }
  // Map only what fstat proves exists: the header first, the rest once the header says how much.
  if (file->size < kHeaderSize) return make_error_code(errc::corrupt_segment);
  HeaderCopy copy;
  {
    Result<sys::SharedMapping> head = sys::SharedMapping::of_file(fd.get(), kHeaderSize);
    if (!head) return head.error();
    auto* header = std::launder(static_cast<SegmentHeader*>(head->data()));
    if (std::error_code error = wait_ready(*header, fd.get(), deadline)) return error;
    copy = copy_header(*header);
  }
  if (std::error_code error = validate_header(copy, file->size, kind)) return error;

  std::size_t total = static_cast<std::size_t>(copy.total_size);
  Result<void*> mapped = sys::map_shared(fd.get(), total, options.populate);
  if (!mapped) return mapped.error();
  Segment segment;
  segment.fd_ = std::move(fd);
  segment.base_ = *mapped;
  segment.mapped_size_ = total;
  segment.name_ = std::move(name);
  if (std::error_code error =
          apply_mapping_options(segment.base_, total, options, segment.fallback_reason_)) {
    return error;
  }
  auto* bytes = static_cast<std::byte*>(segment.base_);
  Result<sync::ParticipantTable*> table = sync::ParticipantTable::open(
      bytes + kHeaderSize, static_cast<std::size_t>(copy.body_offset) - kHeaderSize);
  if (!table) {
    if (table.error() == errc::corrupt_state) return make_error_code(errc::corrupt_segment);
    return table.error();
  }
  if ((*table)->capacity() != copy.table_capacity) return make_error_code(errc::corrupt_segment);
  segment.table_ = *table;
  Result<bool> sealed = sys::size_sealed(segment.fd_.get());
  segment.info_ = info_from(copy, sealed && *sealed);
  if (!attach) return segment;
  Result<sync::Participant> self = sync::Participant::attach(
      **table, segment.fd_.get(), static_cast<off_t>(kParticipantLockBase));
  if (!self) {
    if (self.error() == errc::corrupt_state) return make_error_code(errc::corrupt_segment);
    return self.error();
  }
  segment.self_ = std::move(*self);
  return segment;
}

Result<Segment> SegmentAccess::open_named(std::string_view name, std::optional<SegmentKind> kind,
                                          const SegmentOptions& options, bool attach) {
  if (!valid_segment_name(name)) return make_error_code(errc::invalid_argument);
  Clock::time_point deadline = Clock::now() + options.ready_timeout;
  for (;;) {
    Result<sys::FileDescriptor> fd = sys::open_shared_memory(detail::shm_name(name), O_RDWR, 0);
    if (!fd) return detail::translate_open_error(fd.error());
    // gc protocol, opener side: a shared lock on the gc byte until attached (see segment.h).
    std::error_code error =
        sys::ofd_try_lock(fd->get(), static_cast<off_t>(kGcLockByte), 1, sys::OfdLockKind::read);
    if (error == errc::would_block) {  // an unlinker is checking; it holds the byte briefly
      if (Clock::now() >= deadline) return make_error_code(errc::timed_out);
      std::this_thread::sleep_for(kGcRetry);
      continue;
    }
    if (error) return error;
    Result<bool> same = detail::names_same_file(fd->get(), name);
    if (!same) return same.error();
    if (!*same) {  // unlinked (and maybe re-created) before our lock: start over
      if (Clock::now() >= deadline) return make_error_code(errc::not_found);
      continue;
    }
    Result<Segment> segment = attach_file(std::move(*fd), kind, options, std::string(name), attach);
    // Attached (or failed: the descriptor is closed, and the lock with it).
    if (segment) (void)sys::ofd_unlock(segment->fd(), static_cast<off_t>(kGcLockByte), 1);
    return segment;
  }
}

Segment::Segment(Segment&& other) noexcept
    : fd_(std::move(other.fd_)),
      base_(std::exchange(other.base_, nullptr)),
      mapped_size_(std::exchange(other.mapped_size_, 0)),
      table_(std::exchange(other.table_, nullptr)),
      self_(std::move(other.self_)),
      info_(other.info_),
      name_(std::move(other.name_)),
      fallback_reason_(std::move(other.fallback_reason_)) {}

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = std::move(other.fd_);
    base_ = std::exchange(other.base_, nullptr);
    mapped_size_ = std::exchange(other.mapped_size_, 0);
    table_ = std::exchange(other.table_, nullptr);
    self_ = std::move(other.self_);
    info_ = other.info_;
    name_ = std::move(other.name_);
    fallback_reason_ = std::move(other.fallback_reason_);
  }
  return *this;
}

Segment::~Segment() {
  reset();
}

void Segment::reset() noexcept {
  // attached() is false in a fork child: a child's copy never unlinks.
  bool unlink_last =
      self_.attached() && !name_.empty() && (info_.flags & kFlagUnlinkWhenLastDetaches) != 0;
  (void)self_.detach();  // an unlink error changes nothing: the description closes anyway
  if (unlink_last) (void)detail::unlink_if_unused(fd_.get(), name_, kLastDetachPatience);
  sys::unmap_shared(base_, mapped_size_);
  base_ = nullptr;
  mapped_size_ = 0;
  table_ = nullptr;
  fd_ = sys::FileDescriptor();
  info_ = SegmentInfo{};
  name_.clear();
  fallback_reason_.clear();
}

std::span<std::byte> Segment::body() const noexcept {
  if (base_ == nullptr) return {};
  return {static_cast<std::byte*>(base_) + info_.body_offset, info_.body_size};
}

std::error_code Segment::unlink() {
  if (name_.empty() || !fd_.valid()) return errc::invalid_argument;
  Result<bool> same = detail::names_same_file(fd_.get(), name_);
  if (!same) return same.error();
  if (!*same) return errc::not_found;
  return detail::translate_open_error(sys::unlink_shared_memory(detail::shm_name(name_)));
}

Result<Segment> Segment::create(std::string_view name, SegmentKind kind, std::size_t body_size,
                                const SegmentOptions& options, const Init& init) {
  if (!valid_segment_name(name)) return make_error_code(errc::invalid_argument);
  if (std::error_code error = validate_create(kind, body_size, options)) return error;
  Result<sys::FileDescriptor> fd = sys::create_unpublished_shared_memory(options.mode);
  if (!fd) return fd.error();
  Result<Segment> segment =
      SegmentAccess::build(std::move(*fd), kind, body_size, options, init, false);
  if (!segment) return segment;
  std::error_code error = sys::publish_shared_memory(segment->fd(), detail::shm_name(name));
  if (error == std::errc::file_exists) {
    if (options.if_exists == IfExists::fail) return make_error_code(errc::already_exists);
    *segment = Segment();  // ours was never visible; it vanishes here
    return open(name, kind, options);
  }
  if (error) return detail::translate_open_error(error);
  segment->name_ = std::string(name);
  return segment;
}

Result<Segment> Segment::open(std::string_view name, SegmentKind kind,
                              const SegmentOptions& options) {
  return SegmentAccess::open_named(name, kind, options);
}

Result<Segment> Segment::create_anonymous(SegmentKind kind, std::size_t body_size,
                                          const SegmentOptions& options, const Init& init) {
  if (std::error_code error = validate_create(kind, body_size, options)) return error;
  Result<sys::FileDescriptor> fd = sys::create_sealable_memory_file("xproc-segment");
  if (!fd) return fd.error();
  return SegmentAccess::build(std::move(*fd), kind, body_size, options, init, true);
}

Result<Segment> Segment::adopt(sys::FileDescriptor fd, SegmentKind kind,
                               const SegmentOptions& options) {
  if (!fd.valid()) return make_error_code(errc::invalid_argument);
  return SegmentAccess::attach_file(std::move(fd), kind, options, std::string());
}

}  // namespace xproc::shm
