#pragma once
// Result<T>: a value or a std::error_code, for every fallible xproc call below the convenience
// layer (std::expected is C++23; this is the subset xproc needs).
//
// A Result must be looked at: the type is [[nodiscard]], so ignoring an error is a compile
// warning (an error in xproc's own builds). value() on an error throws std::system_error, so
// reading a value that is not there never goes unnoticed.

#include <system_error>
#include <type_traits>
#include <utility>

namespace xproc {

template <class T>
class [[nodiscard]] Result {
  static_assert(!std::is_reference_v<T>, "Result holds values, not references");

 public:
  Result(T value) : value_(std::move(value)) {}     // NOLINT(google-explicit-constructor)
  Result(std::error_code error) : error_(error) {}  // NOLINT(google-explicit-constructor)

  bool has_value() const noexcept { return !error_; }
  explicit operator bool() const noexcept { return has_value(); }
  std::error_code error() const noexcept { return error_; }

  T& value() & {
    if (error_) throw std::system_error(error_);
    return value_;
  }
  const T& value() const& {
    if (error_) throw std::system_error(error_);
    return value_;
  }
  T&& value() && {
    if (error_) throw std::system_error(error_);
    return std::move(value_);
  }
  T& operator*() & noexcept { return value_; }
  const T& operator*() const& noexcept { return value_; }
  T* operator->() noexcept { return &value_; }
  const T* operator->() const noexcept { return &value_; }

 private:
  T value_{};
  std::error_code error_;
};

}  // namespace xproc
