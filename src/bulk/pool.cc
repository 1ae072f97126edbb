// Pool: the layout computation, format/open validation, statistics, and the segment owner.
#include <cstring>
#include <new>
#include <utility>

#include "pool_internal.h"
#include "xproc/sys/random.h"

namespace xproc::bulk {
namespace detail {

namespace {

constexpr std::uint64_t round_up(std::uint64_t value, std::uint64_t alignment) noexcept {
  return (value + alignment - 1) / alignment * alignment;
}

// Rounds `offset` up so that misalignment + offset is a multiple of `alignment` (a power of two).
constexpr std::uint64_t align_absolute(std::uint64_t offset, std::uint64_t misalignment,
                                       std::uint64_t alignment) noexcept {
  return round_up(misalignment + offset, alignment) - misalignment;
}

}  // namespace

std::uint64_t positions_offset_for(std::uint32_t total) noexcept {
  return round_up(kStatesOffset + std::uint64_t{total} * sizeof(std::uint64_t), kAlign);
}

std::uint64_t compute_layout(const SizeClass* classes, std::uint32_t class_count,
                             std::uint64_t misalignment, PoolRef& out) noexcept {
  if (class_count == 0 || class_count > kMaxClasses || misalignment % kAlign != 0 ||
      misalignment >= kPage) {
    return 0;
  }
  std::uint64_t total = 0;
  for (std::uint32_t c = 0; c < class_count; ++c) {
    const SizeClass& size_class = classes[c];
    if (size_class.buffer_size == 0 || size_class.buffer_size > kMaxBufferSize ||
        size_class.count == 0 || size_class.count > kMaxBuffersPerClass) {
      return 0;
    }
    if (c > 0 && size_class.buffer_size <= classes[c - 1].buffer_size) return 0;
    total += size_class.count;
  }
  if (total > kMaxBuffers) return 0;
  out.class_count = class_count;
  out.total = static_cast<std::uint32_t>(total);
  const std::uint64_t positions = positions_offset_for(out.total);
  std::uint64_t offset = round_up(positions + total * sizeof(std::uint64_t), kAlign);
  std::uint32_t first = 0;
  for (std::uint32_t c = 0; c < class_count; ++c) {
    PoolRef::Class& entry = out.classes[c];
    entry.buffer_size = classes[c].buffer_size;
    entry.count = classes[c].count;
    entry.first = first;
    first += entry.count;
    const bool paged = entry.buffer_size >= kPage;
    entry.stride = round_up(entry.buffer_size, paged ? kPage : kAlign);
    entry.data_offset = paged ? align_absolute(offset, misalignment, kPage) : offset;
    // At most 2^30 * 2^22 bytes in all: no overflow of 64 bits.
    offset = entry.data_offset + entry.stride * entry.count;
  }
  return offset;
}

std::uint32_t descriptor_check(const Descriptor& descriptor) noexcept {
  // A 64-bit mix (splitmix64's finalizer constants) of every field, folded to 32 bits: random
  // bytes match with probability 2^-32 on top of the tag's 2^-32.
  std::uint64_t h = std::uint64_t{descriptor.pool_tag} << 32 ^ descriptor.size_class;
  const std::uint64_t parts[3] = {std::uint64_t{descriptor.index} << 32 | descriptor.generation,
                                  descriptor.length, 0x9e3779b97f4a7c15ull};
  for (std::uint64_t part : parts) {
    h ^= part;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
  }
  return static_cast<std::uint32_t>(h ^ h >> 32);
}

}  // namespace detail

namespace {

std::error_code code(errc e) noexcept {
  return make_error_code(e);
}

bool has_paged_class(const PoolConfig& config) noexcept {
  for (const SizeClass& size_class : config.classes) {
    if (size_class.buffer_size >= detail::kPage) return true;
  }
  return false;
}

std::uint64_t misalignment_of(const void* address) noexcept {
  return reinterpret_cast<std::uintptr_t>(address) % detail::kPage;
}

}  // namespace

std::size_t region_size_for(const PoolConfig& config) noexcept {
  if (config.classes.size() > kMaxClasses) return 0;
  detail::PoolRef ref;
  const std::uint64_t size = detail::compute_layout(
      config.classes.data(), static_cast<std::uint32_t>(config.classes.size()), 0, ref);
  if (size == 0) return 0;
  // Paged classes start at a page boundary: at another misalignment they shift by < 4096 (every
  // paged class follows the first one with a page-multiple stride, as sizes ascend).
  return static_cast<std::size_t>(size + (has_paged_class(config) ? detail::kPage : 0));
}

std::error_code format(std::span<std::byte> region, const PoolConfig& config) {
  if (config.classes.size() > kMaxClasses || region.data() == nullptr ||
      misalignment_of(region.data()) % detail::kAlign != 0) {
    return code(errc::invalid_argument);
  }
  detail::PoolRef ref;
  const std::uint64_t size = detail::compute_layout(
      config.classes.data(), static_cast<std::uint32_t>(config.classes.size()),
      misalignment_of(region.data()), ref);
  if (size == 0 || size > region.size()) return code(errc::invalid_argument);
  Result<std::uint32_t> tag = sys::random_u32();
  if (!tag) return tag.error();
  auto* header = new (region.data()) detail::PoolHeader{};
  detail::Identity& identity = header->identity;
  identity.version = detail::kLayoutVersion;
  identity.signature = detail::kSignature;
  identity.tag = *tag == 0 ? 1 : *tag;
  identity.class_count = ref.class_count;
  identity.total = ref.total;
  identity.flags = 0;
  identity.positions_offset = detail::positions_offset_for(ref.total);
  identity.region_size = size;
  for (std::uint32_t c = 0; c < ref.class_count; ++c) {
    const detail::PoolRef::Class& entry = ref.classes[c];
    header->classes[c] = detail::ClassInfo{entry.buffer_size, entry.count,      entry.first, 0,
                                           entry.stride,      entry.data_offset};
  }
  new (&header->wait.returned) sync::EventCount(sync::Scope::process);
  // The state and position words are zero (zero-filled region): every buffer free, generation 0.
  // release: publishes every field above; pairs with the acquire load of the magic in open().
  identity.magic.store(detail::kMagic, std::memory_order_release);
  return {};
}

Result<PoolView> PoolView::open(std::span<std::byte> region,
                                const sync::Participant* self) noexcept {
  if (region.data() == nullptr || misalignment_of(region.data()) % detail::kAlign != 0 ||
      region.size() < sizeof(detail::PoolHeader)) {
    return code(errc::invalid_argument);
  }
  auto* header = reinterpret_cast<detail::PoolHeader*>(region.data());
  const detail::Identity& identity = header->identity;
  // acquire: pairs with format()'s release store: the fields below are complete.
  if (identity.magic.load(std::memory_order_acquire) != detail::kMagic ||
      identity.version != detail::kLayoutVersion || identity.signature != detail::kSignature) {
    return code(errc::layout_mismatch);
  }
  if (identity.flags != 0) return code(errc::layout_mismatch);
  // Recompute the whole layout from the class sizes and counts alone, and require the stored
  // values to equal it: nothing later read from the header sizes an access unchecked.
  const std::uint32_t class_count = identity.class_count;
  if (class_count == 0 || class_count > kMaxClasses) return code(errc::corrupt_segment);
  SizeClass classes[kMaxClasses];
  for (std::uint32_t c = 0; c < class_count; ++c) {
    classes[c] = SizeClass{header->classes[c].buffer_size, header->classes[c].count};
  }
  PoolView view;
  detail::PoolRef& ref = view.ref_;
  const std::uint64_t size =
      detail::compute_layout(classes, class_count, misalignment_of(region.data()), ref);
  if (size == 0 || size != identity.region_size || size > region.size() ||
      ref.total != identity.total ||
      identity.positions_offset != detail::positions_offset_for(ref.total) || identity.tag == 0) {
    return code(errc::corrupt_segment);
  }
  for (std::uint32_t c = 0; c < class_count; ++c) {
    const detail::ClassInfo& stored = header->classes[c];
    const detail::PoolRef::Class& entry = ref.classes[c];
    if (stored.first != entry.first || stored.stride != entry.stride ||
        stored.data_offset != entry.data_offset) {
      return code(errc::corrupt_segment);
    }
  }
  ref.header = header;
  ref.base = region.data();
  ref.states = reinterpret_cast<std::atomic<std::uint64_t>*>(region.data() + detail::kStatesOffset);
  ref.positions =
      reinterpret_cast<std::atomic<std::uint64_t>*>(region.data() + identity.positions_offset);
  ref.tag = identity.tag;
  ref.self = self;
  ref.self_owner = detail::kLocalOwner;
  if (self != nullptr && self->attached()) ref.self_owner = self->id().pack();
  return view;
}

SizeClass PoolView::size_class(std::uint32_t index) const noexcept {
  if (index >= ref_.class_count) return {};
  return SizeClass{ref_.classes[index].buffer_size, ref_.classes[index].count};
}

std::size_t PoolView::max_loan() const noexcept {
  return ref_.class_count == 0 ? 0 : ref_.classes[ref_.class_count - 1].buffer_size;
}

PoolStatistics PoolView::statistics() const noexcept {
  PoolStatistics stats;
  if (ref_.header == nullptr) return stats;
  stats.total = ref_.total;
  for (std::uint32_t i = 0; i < ref_.total; ++i) {
    // relaxed: a snapshot for diagnostics and tests; nothing is read through it.
    const std::uint64_t word = ref_.states[i].load(std::memory_order_relaxed);
    if (!detail::word_valid(word)) {
      ++stats.corrupt;
      continue;
    }
    switch (detail::word_state(word)) {
      case detail::BufferState::free:
        ++stats.free;
        break;
      case detail::BufferState::loaned:
        ++stats.loaned;
        break;
      case detail::BufferState::posted:
        ++stats.posted;
        break;
      case detail::BufferState::held:
        ++stats.held;
        break;
    }
  }
  const detail::CounterLine& counters = ref_.header->counters;
  // relaxed: statistics only.
  stats.loans_total = counters.loans_total.load(std::memory_order_relaxed);
  stats.reclaimed_dead = counters.reclaimed_dead.load(std::memory_order_relaxed);
  stats.reclaimed_posted = counters.reclaimed_posted.load(std::memory_order_relaxed);
  stats.waiters = ref_.header->wait.returned.waiters();
  return stats;
}

Result<Pool> Pool::wrap(Result<shm::Segment> segment) {
  if (!segment) return segment.error();
  Pool pool;
  pool.segment_ = std::make_unique<shm::Segment>(std::move(*segment));
  Result<PoolView> view = PoolView::open(pool.segment_->body(), &pool.segment_->self());
  if (!view) return view.error();
  pool.view_ = *view;
  return pool;
}

Result<Pool> Pool::create(std::string_view name, const PoolConfig& config,
                          const shm::SegmentOptions& options) {
  const std::size_t size = region_size_for(config);
  if (size == 0) return code(errc::invalid_argument);
  return wrap(
      shm::Segment::create(name, shm::SegmentKind::pool, size, options,
                           [&config](std::span<std::byte> body) { return format(body, config); }));
}

Result<Pool> Pool::open(std::string_view name, const shm::SegmentOptions& options) {
  return wrap(shm::Segment::open(name, shm::SegmentKind::pool, options));
}

Result<Pool> Pool::create_anonymous(const PoolConfig& config, const shm::SegmentOptions& options) {
  const std::size_t size = region_size_for(config);
  if (size == 0) return code(errc::invalid_argument);
  return wrap(shm::Segment::create_anonymous(
      shm::SegmentKind::pool, size, options,
      [&config](std::span<std::byte> body) { return format(body, config); }));
}

Result<Pool> Pool::adopt(sys::FileDescriptor fd, const shm::SegmentOptions& options) {
  return wrap(shm::Segment::adopt(std::move(fd), shm::SegmentKind::pool, options));
}

}  // namespace xproc::bulk
