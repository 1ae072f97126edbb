#pragma once
// The reclaim pass of a pool whose posted buffers travel as records of a channel: LoanChannel's
// (loan_channel.h, "The reclaim pass"), which BulkChannel's pool_copy path follows exactly.

#include <cstdint>
#include <system_error>

#include "xproc/bulk/pool.h"
#include "xproc/channel/endpoint.h"
#include "xproc/sys/error.h"
#include "xproc/sys/result.h"

namespace xproc::bulk::detail {

// The channel's sweep of dead consumers' records, then the pool's frees of posted buffers below
// the reclaim position and of dead owners' buffers. The number of buffers freed.
inline Result<std::uint32_t> reclaim_posted(const channel::Endpoint& endpoint,
                                            const PoolView& pool) noexcept {
  if (std::error_code error = endpoint.recover()) return error;
  // reclaim_position() is an acquire load: every record below it is final (released or
  // reclaimed), and a consumer's accept CAS happens-before its release of the record, so the
  // buffer states read after it show every accept of those records.
  return pool.recover_posted_below(endpoint.reclaim_position());
}

// A waiting loaner's hook (PoolView::loan_with): {} to keep waiting; peer_dead when nothing was
// freed, every buffer is posted and no live participant receives any more
// (Endpoint::consumers_gone()): nobody will give a buffer back; or the pass's error.
inline std::error_code reclaim_or_give_up(const channel::Endpoint& endpoint,
                                          const PoolView& pool) noexcept {
  Result<std::uint32_t> freed = reclaim_posted(endpoint, pool);
  if (!freed) return freed.error();
  if (*freed != 0) return {};
  const PoolStatistics stats = pool.statistics();
  if (stats.posted == stats.total && endpoint.consumers_gone()) {
    return make_error_code(errc::peer_dead);
  }
  return {};
}

}  // namespace xproc::bulk::detail
