/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cerrno>
#include <new>
#include <type_traits>
#include <utility>

namespace vub {

/**
 * \brief An error: an errno-style code and a static description.
 *
 * Holds no heap memory: \a what points to a string literal. \a code is a positive errno value.
 */
struct Error {
	int code = EINVAL;
	const char *what = "";
};

/**
 * \brief The value of a fallible control-plane call, or the Error that stopped it.
 *
 * Shaped like std::expected: has_value(), operator bool, value(), error(), operator*,
 * operator->. A Result must be looked at ([[nodiscard]]).
 */
template <typename T>
class [[nodiscard]] Result
{
public:
	Result(T value) : hasValue_(true) { new (&value_) T(std::move(value)); }
	Result(Error error) : hasValue_(false), error_(error) {}
	Result(const Result &other) : hasValue_(other.hasValue_), error_(other.error_)
	{
		if (hasValue_)
			new (&value_) T(other.value_);
	}
	Result(Result &&other) noexcept : hasValue_(other.hasValue_), error_(other.error_)
	{
		if (hasValue_)
			new (&value_) T(std::move(other.value_));
	}
	Result &operator=(Result other) noexcept
	{
		reset();
		hasValue_ = other.hasValue_;
		error_ = other.error_;
		if (hasValue_)
			new (&value_) T(std::move(other.value_));
		return *this;
	}
	~Result() { reset(); }

	bool has_value() const { return hasValue_; }
	explicit operator bool() const { return hasValue_; }
	T &value() & { return value_; }
	const T &value() const & { return value_; }
	T &&value() && { return std::move(value_); }
	const Error &error() const { return error_; }
	T &operator*() & { return value_; }
	const T &operator*() const & { return value_; }
	T &&operator*() && { return std::move(value_); }
	T *operator->() { return &value_; }
	const T *operator->() const { return &value_; }

private:
	void reset()
	{
		if (hasValue_)
			value_.~T();
		hasValue_ = false;
	}

	bool hasValue_;
	Error error_{};
	union {
		T value_;
	};
};

/** \brief Result of a call that returns nothing on success. */
template <>
class [[nodiscard]] Result<void>
{
public:
	Result() = default;
	Result(Error error) : hasValue_(false), error_(error) {}

	bool has_value() const { return hasValue_; }
	explicit operator bool() const { return hasValue_; }
	void value() const {}
	const Error &error() const { return error_; }

private:
	bool hasValue_ = true;
	Error error_{};
};

/** \brief Error from the current errno, with a static description. */
inline Error errnoError(const char *what)
{
	return Error{ errno != 0 ? errno : EIO, what };
}

} /* namespace vub */

/** Return the error of \a expr (a Result) from the calling function when it failed. */
#define VUB_TRY(expr)                                    \
	do {                                             \
		auto vubTryResult_ = (expr);             \
		if (!vubTryResult_)                      \
			return vubTryResult_.error();    \
	} while (0)
