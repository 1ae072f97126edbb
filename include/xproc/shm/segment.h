#pragma once
// Segment: a shared-memory region with a validated header and an embedded process registry
// (sync::ParticipantTable). Named segments are POSIX shared memory files /dev/shm/xproc.<name>;
// anonymous ones are memfds that travel as descriptors (segment_transfer.h).
// Layout: segment_header.h and docs/layout/segment.md. Decisions: docs/decisions/0030-segments.md.
//
// Thread-safety: a Segment is a value (move-only); its const methods may run concurrently. The
// static functions are thread-safe. Process-safety: any number of processes may create/open/
// adopt one segment concurrently; what they do with body() is the body owner's business.
// Blocking: create never blocks on another process. open/adopt wait (bounded by
// options.ready_timeout) only for a segment whose creator has not published `ready` yet (never
// the case for a named segment, whose name appears only after ready) and, for named segments,
// for a concurrent remove_stale() / last-detach unlink to finish its check (microseconds).
// Failures (Result / std::error_code of xproc::errc, or the OS's errno for other I/O errors):
//   invalid_argument   a bad name, body_size, participant_capacity, mode or kind
//   not_found          open: no segment of that name
//   already_exists     create with IfExists::fail: the name is taken (exactly one creator wins)
//   permission_denied  open(2) refused (EACCES), or the file belongs to another uid (unless
//                      options.allow_other_owner)
//   corrupt_segment    not a regular file, smaller than its header or its header's total_size,
//                      bad magic (a foreign file), inconsistent offsets/sizes/capacity, an
//                      impossible ready word, a broken participant table
//   layout_mismatch    another layout version or signature (an incompatible xproc build), or
//                      flags this build does not know
//   wrong_kind         a valid segment of another kind
//   timed_out          the creator is alive but did not publish ready before ready_timeout
//   peer_dead          the creator died before publishing ready: the segment never becomes ready
//   limit_reached      every participant slot is held by a live process; or mlock refused
//                      (RLIMIT_MEMLOCK) when options.lock_memory asked for it
//   the OS error       of shm_open, ftruncate, mmap, ... (e.g. ENOSPC, ENOMEM)
// No open ever faults: the file size (fstat) is checked against the header before the body is
// mapped. A file truncated by a same-uid peer AFTER open can still make accesses fault (SIGBUS)
// for named segments; anonymous segments are size-sealed (F_SEAL_SHRINK|GROW), which rules it out.
//
// Deaths:
//   creator dies before publish: an anonymous segment nobody received vanishes with its last fd;
//     a named segment was never visible (O_TMPFILE, linked only when ready): nothing is left.
//   creator dies after publish: the segment stays (name and contents); is_stale() reports it
//     stale once no attacher is alive; remove_stale() (xproc-inspect --gc) unlinks it.
//   an attacher dies: its participant slot reads dead (kernel drops the OFD lock); survivors
//     continue; the next attach may reuse the slot with a new generation.
//   a process dies inside open/close: it holds at most a shared "gc" lock byte and its slot
//     lock, both dropped by the kernel; nothing else in the segment is written by open/close.
// Lifetime of the name: explicit unlink(), or the unlink_when_last_detaches option: the process
// whose Segment destructor finds no other live participant unlinks the name (the gc protocol
// below makes this race-free against a concurrent open: the opener either attaches before the
// check, which then sees it, or finds the name gone and gets not_found). The destructor waits up
// to 100 ms for the gc byte (other openers/detachers hold it for microseconds); past that it
// leaves the name, which is_stale() then reports. A participant killed by a signal unlinks
// nothing: its segment stays, stale, for remove_stale().
// gc protocol (named segments, byte kGcLockByte of the file): an opener holds a shared OFD lock
// on it from its open(2) until its participant slot is locked, and checks that the name still
// refers to its file; an unlinker (remove_stale, last detach) takes it exclusively, checks that
// no participant is alive, checks the name still refers to the same file, unlinks, releases.
// fork(): a child inherits the mapping, and the Segment object, whose self() becomes detached
// (sync::Participant's atfork rule): the child is no participant until it opens the segment
// again (open(name), or adopt(sys::reopen(fd()))). The child's copy unmaps and closes its
// descriptor on destruction and never unlinks the name.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "xproc/shm/segment_header.h"
#include "xproc/sync/participant_table.h"
#include "xproc/sys/file.h"
#include "xproc/sys/result.h"

namespace xproc::shm {

enum class SegmentKind : std::uint32_t { raw = 1, channel = 2, pool = 3, rpc = 4 };

enum class IfExists { fail, open };  // create() of a name that exists already

inline constexpr std::string_view kNamePrefix = "xproc.";  // /dev/shm/xproc.<name>
inline constexpr std::size_t kMaxNameLength = 200;

struct SegmentOptions {
  mode_t mode = 0600;  // create: permissions, exactly (fchmod: the umask does not apply)
  bool allow_other_owner = false;       // open/adopt: accept a file owned by another uid (then only
                                        // the permission bits decide, e.g. a 0660 group segment)
  IfExists if_exists = IfExists::fail;  // create(): already_exists, or open the existing one
  bool populate = false;                // MAP_POPULATE: prefault every page at create/open
  bool huge_pages = false;   // transparent huge pages for shmem (madvise); a refusal is reported
                             // by fallback_reason(), never an error
  bool lock_memory = false;  // mlock the mapping; refused -> errc::limit_reached
  bool unlink_when_last_detaches = false;   // create(): recorded in the header's flags
  std::uint32_t participant_capacity = 64;  // create(): slots of the participant table
  std::chrono::steady_clock::duration ready_timeout = std::chrono::seconds(2);  // open/adopt
};

// Facts from the header, copied and validated at open (for tools and for peers' checks).
struct SegmentInfo {
  SegmentKind kind = SegmentKind::raw;
  std::uint32_t layout_version = 0;
  std::uint32_t flags = 0;  // kFlag* of segment_header.h
  std::size_t total_size = 0;
  std::size_t body_offset = 0;
  std::size_t body_size = 0;
  std::uint32_t participant_capacity = 0;
  uid_t creator_uid = 0;
  pid_t creator_pid = 0;  // informational: PIDs are reused and namespace-relative
  sync::ParticipantId creator{};
  std::chrono::system_clock::time_point created_at{};  // informational (wall clock)
  bool size_sealed = false;  // the file cannot shrink (anonymous segments): no SIGBUS possible
};

// True for a valid segment name: 1..kMaxNameLength of [A-Za-z0-9._-], not starting with '.'.
bool valid_segment_name(std::string_view name) noexcept;

class Segment {
 public:
  using Init = std::function<std::error_code(std::span<std::byte> body)>;

  Segment() noexcept = default;  // empty: no mapping, not attached
  Segment(Segment&& other) noexcept;
  Segment& operator=(Segment&& other) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();  // detaches, unlinks when the option says so and nobody else is alive, unmaps

  // Creates /dev/shm/xproc.<name>. The file is built unnamed (O_TMPFILE): header, participant
  // table, the creator's attachment, then init(body) on the zero-filled body, then `ready`
  // (release), and only then the name (link(2), atomic: of concurrent creators exactly one wins).
  // An error from init aborts the create (nothing is ever published) and is returned.
  static Result<Segment> create(std::string_view name, SegmentKind kind, std::size_t body_size,
                                const SegmentOptions& options = {}, const Init& init = {});
  // Opens and validates an existing named segment, attaches this process.
  static Result<Segment> open(std::string_view name, SegmentKind kind,
                              const SegmentOptions& options = {});
  // A memfd segment (size-sealed). Travels with send_segment() (segment_transfer.h).
  static Result<Segment> create_anonymous(SegmentKind kind, std::size_t body_size,
                                          const SegmentOptions& options = {},
                                          const Init& init = {});
  // Validates and attaches the segment file `fd` refers to (received from a peer). The Segment
  // owns `fd` afterwards. name() is empty even if the file has a name.
  static Result<Segment> adopt(sys::FileDescriptor fd, SegmentKind kind,
                               const SegmentOptions& options = {});

  bool valid() const noexcept { return base_ != nullptr; }
  // The body: kBodyAlignment-aligned, body_size() bytes, zero-filled at create.
  std::span<std::byte> body() const noexcept;
  SegmentKind kind() const noexcept { return info_.kind; }
  std::size_t body_size() const noexcept { return info_.body_size; }
  int fd() const noexcept { return fd_.get(); }
  std::string_view name() const noexcept { return name_; }  // empty for anonymous/adopted
  const SegmentInfo& info() const noexcept { return info_; }
  // The embedded registry, and this process's attachment to it (made by create/open/adopt).
  // Liveness of a peer: self().is_alive(id).
  sync::ParticipantTable& participants() const noexcept { return *table_; }
  const sync::Participant& self() const noexcept { return self_; }
  // Why an option was not honoured ("" when all were): huge pages refused, ...
  std::string_view fallback_reason() const noexcept { return fallback_reason_; }

  // Removes the name now (the mapping and every attachment keep working). errc::invalid_argument
  // for an anonymous/adopted segment; not_found when the name is gone or names another file now.
  [[nodiscard]] std::error_code unlink();

 private:
  friend struct SegmentAccess;
  void reset() noexcept;

  sys::FileDescriptor fd_;
  void* base_ = nullptr;
  std::size_t mapped_size_ = 0;
  sync::ParticipantTable* table_ = nullptr;
  sync::Participant self_;
  SegmentInfo info_;
  std::string name_;
  std::string fallback_reason_;
};

}  // namespace xproc::shm
