/* SPDX-License-Identifier: Apache-2.0 */
#include <cerrno>
#include <memory>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "vub/base/result.h"

/*
 * GCC 12 with -fsanitize=address,undefined reports the unengaged value of a Result that holds
 * an error as "maybe used uninitialized" when such a Result is copied or moved (the false
 * positive of GCC bug 80635, which std::optional shows too). Result only reads the value when
 * hasValue_ is set.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace vub {
namespace {

/* Counts the live instances, to see that Result constructs and destroys its value exactly once. */
struct Tracked {
	static inline int live = 0;
	int value;

	explicit Tracked(int v) : value(v) { live++; }
	Tracked(const Tracked &other) : value(other.value) { live++; }
	Tracked(Tracked &&other) noexcept : value(other.value) { live++; }
	Tracked &operator=(const Tracked &) = default;
	Tracked &operator=(Tracked &&) = default;
	~Tracked() { live--; }
};

Result<int> parsePositive(int x)
{
	if (x <= 0)
		return Error{ ERANGE, "not positive" };
	return x;
}

Result<std::unique_ptr<int>> makeBox(int x)
{
	if (x < 0)
		return Error{ EINVAL, "negative" };
	return std::make_unique<int>(x);
}

Result<int> doubledPositive(int x, bool *reachedEnd)
{
	VUB_TRY(parsePositive(x));
	*reachedEnd = true;
	return 2 * x;
}

Result<void> boxAndCheck(int x, bool *reachedEnd)
{
	VUB_TRY(makeBox(x));
	*reachedEnd = true;
	return {};
}

TEST(Result, HoldsValue)
{
	Result<int> r = parsePositive(7);
	ASSERT_TRUE(r.has_value());
	EXPECT_TRUE(static_cast<bool>(r));
	EXPECT_EQ(r.value(), 7);
	EXPECT_EQ(*r, 7);
}

TEST(Result, HoldsError)
{
	Result<int> r = parsePositive(-1);
	ASSERT_FALSE(r.has_value());
	EXPECT_FALSE(static_cast<bool>(r));
	EXPECT_EQ(r.error().code, ERANGE);
	EXPECT_STREQ(r.error().what, "not positive");
}

TEST(Result, ArrowReachesMembersOfTheValue)
{
	Result<std::string> r = std::string("vhost");
	ASSERT_TRUE(r);
	EXPECT_EQ(r->size(), 5u);
	const Result<std::string> &cr = r;
	EXPECT_EQ(cr->front(), 'v');
	EXPECT_EQ(*cr, "vhost");
}

TEST(Result, HoldsMoveOnlyValue)
{
	Result<std::unique_ptr<int>> r = makeBox(42);
	ASSERT_TRUE(r);
	ASSERT_NE(r->get(), nullptr);
	EXPECT_EQ(**r, 42);

	std::unique_ptr<int> taken = std::move(r).value();
	ASSERT_NE(taken, nullptr);
	EXPECT_EQ(*taken, 42);
	// NOLINTNEXTLINE(bugprone-use-after-move): the moved-from state is the point
	EXPECT_EQ(r->get(), nullptr) << "the value was moved out, not copied";
}

TEST(Result, MovesMoveOnlyValueBetweenResults)
{
	Result<std::unique_ptr<int>> a = makeBox(5);
	Result<std::unique_ptr<int>> b(std::move(a));
	ASSERT_TRUE(b);
	EXPECT_EQ(**b, 5);

	Result<std::unique_ptr<int>> c = makeBox(-1);
	ASSERT_FALSE(c);
	c = std::move(b);
	ASSERT_TRUE(c);
	EXPECT_EQ(**c, 5);

	c = makeBox(-1);
	EXPECT_FALSE(c);
	EXPECT_EQ(c.error().code, EINVAL);
}

TEST(Result, DestroysItsValueExactlyOnce)
{
	Tracked::live = 0;
	{
		Result<Tracked> r = Tracked(3);
		EXPECT_EQ(Tracked::live, 1);
		Result<Tracked> copy = r;
		EXPECT_EQ(Tracked::live, 2);
		Result<Tracked> moved(std::move(copy));
		EXPECT_EQ(Tracked::live, 3);
		EXPECT_EQ(moved->value, 3);
	}
	EXPECT_EQ(Tracked::live, 0);
}

TEST(Result, AssigningReplacesTheOldValue)
{
	Tracked::live = 0;
	{
		Result<Tracked> r = Tracked(1);
		r = Result<Tracked>(Error{ EIO, "gone" });
		EXPECT_EQ(Tracked::live, 0) << "assigning an error destroys the held value";
		EXPECT_FALSE(r);
		EXPECT_EQ(r.error().code, EIO);

		r = Tracked(2);
		EXPECT_EQ(Tracked::live, 1);
		ASSERT_TRUE(r);
		EXPECT_EQ(r->value, 2);

		Result<Tracked> other = Tracked(9);
		r = other;
		EXPECT_EQ(Tracked::live, 2);
		EXPECT_EQ(r->value, 9);
	}
	EXPECT_EQ(Tracked::live, 0);
}

TEST(Result, VoidResultIsSuccessByDefault)
{
	Result<void> ok;
	EXPECT_TRUE(ok.has_value());
	EXPECT_TRUE(static_cast<bool>(ok));

	Result<void> failed = Error{ ENOENT, "missing" };
	EXPECT_FALSE(failed.has_value());
	EXPECT_EQ(failed.error().code, ENOENT);
	EXPECT_STREQ(failed.error().what, "missing");
}

TEST(Result, TryPropagatesTheError)
{
	bool reachedEnd = false;
	Result<int> r = doubledPositive(-3, &reachedEnd);
	ASSERT_FALSE(r);
	EXPECT_EQ(r.error().code, ERANGE);
	EXPECT_FALSE(reachedEnd);
}

TEST(Result, TryContinuesOnSuccess)
{
	bool reachedEnd = false;
	Result<int> r = doubledPositive(4, &reachedEnd);
	ASSERT_TRUE(r);
	EXPECT_EQ(*r, 8);
	EXPECT_TRUE(reachedEnd);
}

TEST(Result, TryWorksWithMoveOnlyValues)
{
	bool reachedEnd = false;
	Result<void> failed = boxAndCheck(-1, &reachedEnd);
	ASSERT_FALSE(failed);
	EXPECT_EQ(failed.error().code, EINVAL);
	EXPECT_FALSE(reachedEnd);

	Result<void> ok = boxAndCheck(1, &reachedEnd);
	EXPECT_TRUE(ok);
	EXPECT_TRUE(reachedEnd);
}

TEST(Result, ErrnoErrorTakesTheCurrentErrno)
{
	errno = EACCES;
	Error e = errnoError("open");
	EXPECT_EQ(e.code, EACCES);
	EXPECT_STREQ(e.what, "open");
}

TEST(Result, ErrnoErrorNeverReportsSuccess)
{
	errno = 0;
	Error e = errnoError("read");
	EXPECT_NE(e.code, 0) << "an Error with code 0 would read as success";
	EXPECT_EQ(e.code, EIO);
}

} /* namespace */
} /* namespace vub */
