/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <unistd.h>

#include <utility>

namespace vub {

/**
 * \brief Sole owner of a file descriptor; closes it on destruction. Move-only.
 *
 * Not thread-safe; a UniqueFd is owned by one thread at a time.
 */
class UniqueFd
{
public:
	UniqueFd() = default;
	explicit UniqueFd(int fd) : fd_(fd) {}
	UniqueFd(const UniqueFd &) = delete;
	UniqueFd &operator=(const UniqueFd &) = delete;
	UniqueFd(UniqueFd &&other) noexcept : fd_(other.release()) {}
	UniqueFd &operator=(UniqueFd &&other) noexcept
	{
		reset(other.release());
		return *this;
	}
	~UniqueFd() { reset(); }

	int get() const { return fd_; }
	bool isValid() const { return fd_ >= 0; }
	explicit operator bool() const { return isValid(); }

	/** \brief Give up ownership without closing. \return the fd, -1 if none. */
	int release() { return std::exchange(fd_, -1); }
	/** \brief Close the owned fd, if any, and own \a fd instead. */
	void reset(int fd = -1)
	{
		if (fd_ >= 0)
			::close(fd_);
		fd_ = fd;
	}

private:
	int fd_ = -1;
};

} /* namespace vub */
