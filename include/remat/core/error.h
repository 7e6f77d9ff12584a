// Exceptions thrown by remat. Every failure is an exception carrying context
// (op, shapes, dtypes, devices); the library never aborts.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace remat {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A request the allocator could not satisfy even after freeing its cache.
class OutOfMemoryError : public Error {
 public:
  using Error::Error;
};

// Operands whose shapes do not fit the op.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// A feature that is designed but not built yet; the docs say which.
class NotImplementedError : public Error {
 public:
  explicit NotImplementedError(const std::string& what) : Error("not implemented: " + what) {}
};

}  // namespace remat

// Throws ErrorType with a fmt-formatted message when cond is false.
#define REMAT_CHECK_AS(ErrorType, cond, ...)                \
  do {                                                      \
    if (!(cond)) throw ErrorType(fmt::format(__VA_ARGS__)); \
  } while (0)
#define REMAT_CHECK(cond, ...) REMAT_CHECK_AS(::remat::Error, cond, __VA_ARGS__)
#define REMAT_CHECK_SHAPE(cond, ...) REMAT_CHECK_AS(::remat::ShapeError, cond, __VA_ARGS__)
