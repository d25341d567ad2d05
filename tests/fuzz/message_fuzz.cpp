/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Message decoding and dispatch: a hostile front-end on a real connection. Each input is one
 * connection to a VhostUserDaemon serving the sample back-end (its workers run, so a ring the
 * input sets up and kicks is walked over the input's bytes too). The input is a list of
 * messages, each sent with whatever fds it asks for; then the front-end hangs up.
 *
 * After every connection the daemon must be listening again with exactly the fds and guest
 * memory mappings it had before: a request it refused or a connection it dropped leaks nothing
 * (hostile-inputs.md, bad-input list 1-8). A crash, a hang or a leak stops the fuzzer.
 *
 * A message: [request] [flags] [fds] [size lo] [size hi] [payload: size bytes, or what is left].
 * request % 48; flags: bit 7 sends the byte as it is, else VERSION plus NEED_REPLY for bit 3;
 * fds: bits 0-1 how many, then 2 bits each for what: a 64 KiB memfd holding the input, an
 * eventfd already signalled, a 4 KiB memfd, one end of a socket pair.
 */
#include <dirent.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "vub/base/log.h"
#include "vub/vhost/daemon.h"
#include "vub/vhost/message.h"

#include "sample_backend.h"

using namespace vub;
using namespace vub::vhost;

namespace {

constexpr size_t kGuestBytes = 64 << 10;

[[noreturn]] void fail(const char *what)
{
	std::fprintf(stderr, "message fuzz: %s\n", what);
	std::abort();
}

struct Served {
	std::string path;
	std::shared_ptr<sample::SampleBackend> backend;
	std::unique_ptr<VhostUserDaemon> daemon;
	Listener listener;
	unsigned fds = 0;
	unsigned guestMappings = 0;
	uint64_t connections = 0;
};

/*
 * The fds a daemon could leak: sockets, eventfds, epolls and memfds (libFuzzer opens pipes and
 * /dev/null of its own now and then).
 */
unsigned countFds(bool print = false)
{
	unsigned n = 0;
	DIR *dir = ::opendir("/proc/self/fd");
	if (!dir)
		fail("opendir /proc/self/fd");
	while (const dirent *e = ::readdir(dir)) {
		char link[256]{};
		std::string path = std::string("/proc/self/fd/") + e->d_name;
		if (e->d_name[0] == '.' || ::readlink(path.c_str(), link, sizeof(link) - 1) <= 0)
			continue;
		std::string_view target(link);
		if (target.starts_with("socket:") || target.starts_with("anon_inode:") ||
		    target.starts_with("/memfd:")) {
			n++;
			if (print)
				std::fprintf(stderr, "fd %s: %s\n", e->d_name, link);
		}
	}
	::closedir(dir);
	return n;
}

/* Mappings of memfds: guest memory (the fuzzer maps none of its own). */
unsigned countGuestMappings()
{
	std::ifstream maps("/proc/self/maps");
	unsigned n = 0;
	for (std::string line; std::getline(maps, line);)
		n += line.find("/memfd:") != std::string::npos;
	return n;
}

/* Wait until the daemon has dropped connection \a count and holds what it held before. */
/* Whether \a done() came true within 5 s. */
template <typename Done>
bool within5s(Done &&done)
{
	auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
	while (!done()) {
		if (std::chrono::steady_clock::now() > deadline)
			return false;
		std::this_thread::sleep_for(std::chrono::microseconds(200));
	}
	return true;
}

bool dropped(const Served &s, uint64_t count)
{
	return s.daemon->connectionCount() >= count && !s.daemon->isConnected();
}

void waitIdle(Served &s, uint64_t count)
{
	if (within5s([&] {
		    return dropped(s, count) && countFds() == s.fds &&
			   countGuestMappings() == s.guestMappings;
	    }))
		return;
	std::fprintf(stderr,
		     "connections %llu (want %llu), connected %d, fds %u (had %u), guest "
		     "mappings %u (had %u)\n",
		     static_cast<unsigned long long>(s.daemon->connectionCount()),
		     static_cast<unsigned long long>(count), s.daemon->isConnected(), countFds(),
		     s.fds, countGuestMappings(), s.guestMappings);
	countFds(true);
	fail("the daemon did not drop the connection, or leaked an fd or a mapping");
}

int connectTo(const std::string &path)
{
	int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
	if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) < 0)
		fail("connect");
	return fd;
}

/* Read and drop whatever the daemon replied; \return false once it has hung up. */
bool drain(int fd, int timeoutMs)
{
	char buf[4096];
	pollfd p{ fd, POLLIN, 0 };
	while (::poll(&p, 1, timeoutMs) > 0) {
		ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0)
			return false;
		if (n < 0)
			return errno == EAGAIN || errno == EINTR;
		/* Any fd the daemon sends back (GET_INFLIGHT_FD) would come with recvmsg: none
		 * is asked for, and recv() drops them. */
	}
	return true;
}

int makeFd(unsigned kind, const uint8_t *input, size_t size)
{
	switch (kind) {
	case 0:
	case 2: {
		int fd = ::memfd_create("vub-message-fuzz", MFD_CLOEXEC);
		size_t bytes = kind == 0 ? kGuestBytes : 4096;
		if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) < 0 ||
		    ::pwrite(fd, input, std::min(size, bytes), 0) < 0)
			fail("memfd");
		return fd;
	}
	case 1: {
		int fd = ::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
		if (fd < 0)
			fail("eventfd");
		return fd;
	}
	default: {
		int pair[2];
		if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
			fail("socketpair");
		::close(pair[1]); /* the daemon's requests on it find nobody */
		return pair[0];
	}
	}
}

/* \return false when the daemon has closed the connection. */
bool sendMessage(int sock, const MessageHeader &header, const uint8_t *payload, size_t bytes,
		 const int *fds, unsigned nfds)
{
	iovec iov[2] = { { const_cast<MessageHeader *>(&header), sizeof(header) },
			 { const_cast<uint8_t *>(payload), bytes } };
	alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)]{};
	msghdr msg{};
	msg.msg_iov = iov;
	msg.msg_iovlen = bytes ? 2 : 1;
	if (nfds) {
		msg.msg_control = control;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
	return n == static_cast<ssize_t>(sizeof(header) + bytes);
}

Served &served()
{
	static Served *s = [] {
		auto *made = new Served;
		made->path = "/tmp/vub-message-fuzz-" + std::to_string(::getpid()) + ".sock";
		made->backend = std::make_shared<sample::SampleBackend>(2, 256, 1);
		auto daemon = VhostUserDaemon::create<VringMutex>("fuzz", made->backend);
		auto listener = Listener::create(made->path);
		if (!daemon || !listener)
			fail("daemon");
		made->daemon = std::move(*daemon);
		made->listener = std::move(*listener);
		if (!made->daemon->start(made->listener))
			fail("daemon start");
		/* One connection first: what it allocates for good is in the baseline. */
		::close(connectTo(made->path));
		made->connections = 1;
		if (!within5s([&] { return dropped(*made, 1); }))
			fail("the first connection was not dropped");
		made->fds = countFds();
		made->guestMappings = countGuestMappings();
		return made;
	}();
	return *s;
}

} /* namespace */

extern "C" int LLVMFuzzerInitialize(int *, char ***)
{
	Log::setLevelAll(getenv("VUB_FUZZ_LOG") ? LogLevel::Debug : LogLevel::Error);
	return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Served &s = served();
	int sock = connectTo(s.path);
	const uint8_t *p = data;
	size_t left = size;
	bool open = true;
	while (open && left >= 5) {
		MessageHeader header{};
		header.request = p[0] % 48;
		header.flags = p[1] & 0x80 ? p[1] : (kVersion | (p[1] & 8 ? kFlagNeedReply : 0));
		unsigned nfds = p[2] & 3;
		int fds[3];
		for (unsigned i = 0; i < nfds; i++)
			fds[i] = makeFd((p[2] >> (2 + 2 * i)) & 3, data, size);
		header.size = static_cast<uint32_t>(p[3] | p[4] << 8);
		p += 5;
		left -= 5;
		size_t bytes = std::min<size_t>(header.size, left);
		open = sendMessage(sock, header, p, bytes, fds, nfds);
		for (unsigned i = 0; i < nfds; i++)
			::close(fds[i]);
		p += bytes;
		left -= bytes;
		open = open && drain(sock, 0);
	}
	/* Hang up, as a front-end that goes away does; read what is still coming. */
	::shutdown(sock, SHUT_WR);
	while (drain(sock, 2000)) {
	}
	::close(sock);
	waitIdle(s, ++s.connections);
	return 0;
}
