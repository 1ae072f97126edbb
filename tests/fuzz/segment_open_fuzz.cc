// libFuzzer target: a segment file (docs/layout/segment.md) from untrusted bytes.
//
// The input bytes become the whole file of a segment, twice:
//   * an anonymous, size-sealed memfd adopted as each SegmentKind (a fresh copy of the bytes for
//     each kind: adopt attaches, which writes the participant table);
//   * a named file /dev/shm/xproc.fuzz-<pid>-<n> that inspect() reports on and Segment::open()
//     opens as the kind its header names (then unlinked).
// When a segment opens, the harness reads every body byte, info(), the participant table and
// the harness's own liveness, and, for a channel segment, opens a channel Endpoint on the body
// and tries a receive and a send (the channel layer's own target fuzzes that deeper; lock words
// naming a live owner are freed first, see free_live_locks).
// Must never crash, hang (the ready wait is bounded by a 1 ms ready_timeout and nobody holds the
// init byte, so an unready segment fails at once) or read outside the mapping; every error must
// be one of the documented codes. docs/design/fuzzing.md describes the targets and the corpus.

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "xproc/channel/endpoint.h"
#include "xproc/channel/layout.h"
#include "xproc/shm/segment.h"
#include "xproc/shm/segment_registry.h"
#include "xproc/sys/error.h"

namespace {

using xproc::errc;
namespace shm = xproc::shm;

constexpr shm::SegmentKind kKinds[] = {shm::SegmentKind::raw, shm::SegmentKind::channel,
                                       shm::SegmentKind::pool, shm::SegmentKind::rpc};

shm::SegmentOptions fuzz_options() {
  shm::SegmentOptions options;
  options.ready_timeout = std::chrono::milliseconds(1);
  return options;
}

// Errors an open/adopt/inspect of a damaged file may return (segment.h, Failures).
void check_open_error(std::error_code error) {
  if (error == errc::corrupt_segment || error == errc::layout_mismatch ||
      error == errc::wrong_kind || error == errc::peer_dead || error == errc::timed_out ||
      error == errc::limit_reached) {
    return;
  }
  std::abort();  // an undocumented error: a finding
}

bool write_all(int fd, const std::uint8_t* data, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t written = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (written <= 0) return false;
    done += static_cast<std::size_t>(written);
  }
  return true;
}

// A sealed memfd holding exactly `data`, as an anonymous segment's file is.
xproc::sys::FileDescriptor memory_file(const std::uint8_t* data, std::size_t size) {
  xproc::sys::FileDescriptor fd(::memfd_create("xproc-fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0 ||
      !write_all(fd.get(), data, size) ||
      ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    std::abort();  // the harness's environment, not a finding
  }
  return fd;
}

// A channel lock word naming an owner that the library must consider alive (this process's own
// id: another thread of ours could hold it; the local-owner id) makes even try_send wait for its
// release, which this single-threaded harness never does: such words are freed before the
// channel is used (the same rule as channel_region_fuzz.cc).
void free_live_locks(std::span<std::byte> body, const xproc::sync::Participant& self) {
  namespace detail = xproc::channel::detail;
  if (body.size() < sizeof(detail::ChannelHeader)) return;
  const std::size_t offsets[] = {
      offsetof(detail::ChannelHeader, producer) + offsetof(detail::ProducerLine, lock),
      offsetof(detail::ChannelHeader, consumer) + offsetof(detail::ConsumerLine, lock),
      offsetof(detail::ChannelHeader, reclaim) + offsetof(detail::ReclaimLine, lock)};
  for (std::size_t offset : offsets) {
    std::uint32_t word = 0;
    std::memcpy(&word, body.data() + offset, sizeof word);
    if (word == detail::kLocalOwner || word == self.id().pack()) {
      std::memset(body.data() + offset, 0, sizeof word);
    }
  }
}

void touch(const shm::Segment& segment) {
  const shm::SegmentInfo& info = segment.info();
  std::span<std::byte> body = segment.body();
  if (body.size() != info.body_size || body.size() != segment.body_size()) std::abort();
  if (reinterpret_cast<std::uintptr_t>(body.data()) % 64 != 0) std::abort();
  volatile std::uint8_t sum = 0;
  for (std::byte b : body) sum = static_cast<std::uint8_t>(sum + std::to_integer<std::uint8_t>(b));
  if (segment.participants().capacity() != info.participant_capacity) std::abort();
  if (segment.self().attached()) {
    auto alive = segment.self().is_alive(segment.self().id());
    if (!alive || !*alive) std::abort();  // we are alive
    auto creator = segment.self().is_alive(info.creator);
    (void)creator;  // any id from the file: alive, dead or invalid_argument
  }
  if (segment.kind() == shm::SegmentKind::channel) {
    free_live_locks(body, segment.self());
    auto endpoint = xproc::channel::Endpoint::open(body, &segment.self());
    if (endpoint) {
      std::byte buffer[64];
      (void)endpoint->try_receive(buffer);
      (void)endpoint->try_send(std::span<const std::byte>(buffer, 8));
      (void)endpoint->statistics();
    }
  }
}

void fuzz_adopt(const std::uint8_t* data, std::size_t size) {
  for (shm::SegmentKind kind : kKinds) {
    auto segment = shm::Segment::adopt(memory_file(data, size), kind, fuzz_options());
    if (!segment) {
      check_open_error(segment.error());
      continue;
    }
    if (segment->kind() != kind || !segment->info().size_sealed) std::abort();
    touch(*segment);
  }
}

void fuzz_named(const std::uint8_t* data, std::size_t size) {
  static unsigned counter = 0;
  const std::string name =
      "fuzz-" + std::to_string(::getpid()) + "-" + std::to_string(counter++ % 1000);
  const std::string path = "/dev/shm/xproc." + name;
  {
    xproc::sys::FileDescriptor fd(
        ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.valid() || !write_all(fd.get(), data, size)) std::abort();
  }
  auto report = shm::inspect(name, fuzz_options());
  if (!report) {
    check_open_error(report.error());
  } else {
    if (report->participants.size() > report->info.participant_capacity) std::abort();
  }
  std::uint32_t kind_word = 1;
  if (size >= 20) std::memcpy(&kind_word, data + 16, sizeof kind_word);
  const auto kind = static_cast<shm::SegmentKind>(kind_word >= 1 && kind_word <= 4 ? kind_word : 1);
  {
    auto segment = shm::Segment::open(name, kind, fuzz_options());
    if (!segment) {
      if (segment.error() != errc::not_found) check_open_error(segment.error());
    } else {
      touch(*segment);
      // The same bytes: where inspect() accepted them too, it read the same header facts.
      // (inspect() may refuse what open() accepts: it reads every participant slot, open()
      // only the slots it attaches through; an impossible generation in another slot is
      // corrupt_segment for inspect() only.)
      if (report && (report->info.kind != segment->info().kind ||
                     report->info.body_size != segment->info().body_size ||
                     report->info.total_size != segment->info().total_size ||
                     report->info.participant_capacity != segment->info().participant_capacity)) {
        std::abort();
      }
    }
  }  // may unlink the name itself (the unlink-when-last-detaches flag)
  (void)::unlink(path.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > (std::size_t{1} << 20)) return 0;
  fuzz_adopt(data, size);
  fuzz_named(data, size);
  return 0;
}
