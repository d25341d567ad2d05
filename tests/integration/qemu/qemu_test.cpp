/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Real virtual machines on vub-switch: QEMU (qemu-system-x86_64) boots a Debian kernel and a
 * busybox initramfs (make-guest, built once in the build directory) whose virtio-net driver is
 * the guest's; QEMU's vhost-user front-end talks to the switch. The tests drive each guest's
 * shell on its serial console and check traffic on both sides: what the guests' ping says and
 * what the switch's counters say (a QEMU that fell back to its own virtio would fool the
 * guests, not the switch).
 *
 * TCG by default (VUB_QEMU_ACCEL=kvm where KVM can boot a guest); under TCG QEMU 7.2 needs
 * vectors=0 on a vhost-user NIC (it crashes with MSI-X), and guest memory is a shared memfd.
 *
 * Environment (meson sets the first three): VUB_SWITCH, VUB_QEMU_MAKE_GUEST (the make-guest
 * script), VUB_QEMU_GUEST_DIR (where it caches the guest); VUB_QEMU (default
 * qemu-system-x86_64), VUB_GUEST_KERNEL_DEB (a linux-image .deb instead of apt-get download).
 * Without QEMU, the guest or vub-switch the tests skip with the reason.
 */
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "../switch_harness.h"

namespace vub::test {
namespace {

using namespace std::chrono_literals;

/** A TCG guest boots in about 5 s alone; two of them beside a spinning switch take longer. */
constexpr int kBootTimeoutMs = 120000;
constexpr int kCommandTimeoutMs = 30000;

/** The guest image, or why there is none. */
struct GuestImage {
	std::string kernel;
	std::string initrd;
	std::string skip;
};

/** QEMU: $VUB_QEMU (a path or a name in $PATH), else qemu-system-x86_64. */
std::optional<std::string> qemuBinary()
{
	const char *env = std::getenv("VUB_QEMU");
	std::string name = env && *env ? env : "qemu-system-x86_64";
	if (name.find('/') != std::string::npos)
		return ::access(name.c_str(), X_OK) == 0 ? std::optional(name) : std::nullopt;
	return findInPath(name);
}

/** Run make-guest once per test program. */
const GuestImage &guestImage()
{
	static const GuestImage image = [] {
		GuestImage g;
		const char *script = std::getenv("VUB_QEMU_MAKE_GUEST");
		const char *dir = std::getenv("VUB_QEMU_GUEST_DIR");
		if (!script || !dir) {
			g.skip =
				"VUB_QEMU_MAKE_GUEST or VUB_QEMU_GUEST_DIR not set (run through meson)";
			return g;
		}
		TempDir logs("vub-make-guest-");
		ProcessOptions p;
		p.argv = { script, dir };
		p.logPath = logs.file("make-guest.log");
		std::string error;
		auto child = Process::create(p, &error);
		if (!child || !child->waitForExit(600000)) {
			g.skip = "make-guest did not run: " + error;
			return g;
		}
		auto status = child->exitStatus();
		std::string out = child->output();
		if (!status || !status->success()) {
			g.skip = "no guest image: " + out;
			while (!g.skip.empty() && g.skip.back() == '\n')
				g.skip.pop_back();
			return g;
		}
		std::stringstream lines(out);
		std::getline(lines, g.kernel);
		std::getline(lines, g.initrd);
		return g;
	}();
	return image;
}

/** How a guest is started. */
struct GuestOptions {
	std::string socket;
	std::string mac;
	std::string ip;
	bool packed = false;
	unsigned queues = 1;
	/** QEMU listens on the socket (server=on), the switch's port connects. */
	bool qemuServer = false;
	/** QEMU reconnects to a switch that went away (reconnect=1). */
	bool reconnect = false;
	/** A guest reboot restarts the guest instead of ending QEMU. */
	bool mayReboot = false;
	/** QEMU's human monitor on this Unix socket (empty: none). */
	std::string monitor;
	/** Wait for a migration on this Unix socket (-incoming unix:PATH) instead of booting. */
	std::string incoming;
	/**
	 * Behind a vIOMMU: a q35 machine with QEMU's intel-iommu (device IOTLB, interrupt
	 * remapping), the NIC on a PCIe root port with iommu_platform and ATS, the guest's
	 * intel_iommu=on. Its DMA addresses are then I/O virtual.
	 */
	bool iommu = false;
};

/**
 * One QEMU guest: its serial console is the child's stdin and stdout, a busybox shell once
 * "vub-guest: ready" was printed.
 */
class QemuGuest
{
public:
	static std::unique_ptr<QemuGuest> start(const GuestOptions &o, const std::string &log,
						std::string *error)
	{
		const GuestImage &image = guestImage();
		auto qemu = qemuBinary();
		if (!qemu) {
			*error = "QEMU not found";
			return nullptr;
		}
		const char *accelEnv = std::getenv("VUB_QEMU_ACCEL");
		std::string accel = accelEnv && *accelEnv ? accelEnv : "tcg";
		std::string chardev = "socket,id=c0,path=" + o.socket;
		if (o.qemuServer)
			chardev += ",server=on,wait=off";
		if (o.reconnect)
			chardev += ",reconnect=1";
		std::string netdev = "vhost-user,id=n0,chardev=c0";
		std::string device =
			"virtio-net-pci,netdev=n0,mac=" + o.mac + ",romfile=,vectors=0";
		if (o.queues > 1) {
			netdev += ",queues=" + std::to_string(o.queues);
			device += ",mq=on";
		}
		if (o.packed)
			device += ",packed=on";
		std::string append = "console=ttyS0 panic=-1 quiet vub.ip=" + o.ip;
		if (o.iommu) {
			device += ",bus=rp0,iommu_platform=on,ats=on,disable-legacy=on";
			append += " intel_iommu=on";
		}
		auto guest = std::unique_ptr<QemuGuest>(new QemuGuest());
		ProcessOptions p;
		p.argv = { *qemu,      "-machine",
			   o.iommu ? "q35,kernel-irqchip=split" : "pc", "-accel",
			   accel,      "-nodefaults",
			   "-smp",     std::to_string(o.queues),
			   "-m",       "256M",
			   "-object",  "memory-backend-memfd,id=mem,size=256M,share=on",
			   "-numa",    "node,memdev=mem",
			   "-chardev", chardev,
			   "-netdev",  netdev,
			   "-kernel",  image.kernel,
			   "-initrd",  image.initrd,
			   "-append",  append,
			   "-serial",  "stdio",
			   "-display", "none" };
		/* The IOMMU first, then the root port, then the NIC behind it. */
		if (o.iommu)
			p.argv.insert(p.argv.end(),
				      { "-device", "intel-iommu,device-iotlb=on,intremap=on", "-device",
					"pcie-root-port,id=rp0,bus=pcie.0,chassis=1" });
		p.argv.insert(p.argv.end(), { "-device", device });
		if (!o.mayReboot)
			p.argv.push_back("-no-reboot");
		if (!o.monitor.empty())
			p.argv.insert(p.argv.end(),
				      { "-monitor", "unix:" + o.monitor + ",server=on,wait=off" });
		if (!o.incoming.empty())
			p.argv.insert(p.argv.end(), { "-incoming", "unix:" + o.incoming });
		p.logPath = log;
		guest->process_ = Process::create(p, error);
		if (!guest->process_)
			return nullptr;
		return guest;
	}

	/** Wait for the shell after the \a nth boot (1: the first). */
	::testing::AssertionResult waitReady(int nth = 1)
	{
		size_t from = 0;
		for (int i = 0; i < nth; i++) {
			auto m = process_->waitForOutput("vub-guest: ready", kBootTimeoutMs, from);
			if (!m)
				return ::testing::AssertionFailure()
				       << "the guest did not boot (" << i + 1
				       << "): " << tail(process_->output(), 20);
			from = m->end;
		}
		consumed_ = from;
		return ::testing::AssertionSuccess();
	}

	/**
	 * Run \a command in the guest's shell. \return its exit status and what it printed, or
	 * std::nullopt when it did not finish in time.
	 */
	std::optional<std::pair<int, std::string>> run(const std::string &command,
						       int timeoutMs = kCommandTimeoutMs)
	{
		std::string tag = "vub-done-" + std::to_string(++commands_);
		/* On a line of its own: the command may end with '&'. */
		if (!process_->writeStdin(command + "\necho " + tag + " $?\n"))
			return std::nullopt;
		auto m = process_->waitForOutput(std::regex(tag + " ([0-9]+)"), timeoutMs,
						 consumed_);
		if (!m)
			return std::nullopt;
		std::string text = process_->output().substr(consumed_, m->end - consumed_);
		consumed_ = m->end;
		return std::make_pair(std::stoi(m->groups[1]), text);
	}

	/** `ping -c N` to \a ip succeeds (every reply came). */
	::testing::AssertionResult pings(const std::string &ip, int count = 3,
					 const std::string &prefix = "")
	{
		auto r = run(prefix + "ping -c " + std::to_string(count) + " -W 5 " + ip,
			     kCommandTimeoutMs);
		if (!r)
			return ::testing::AssertionFailure() << "ping " << ip << " did not finish";
		std::string all = std::to_string(count) + " packets received";
		if (r->first != 0 || r->second.find(all) == std::string::npos)
			return ::testing::AssertionFailure() << "ping " << ip << ":\n" << r->second;
		return ::testing::AssertionSuccess();
	}

	Process &process() { return *process_; }

	/**
	 * Type \a line at QEMU's human monitor on \a socket and read until its next prompt.
	 * \return what it printed, std::nullopt on a timeout or error
	 */
	static std::optional<std::string>
	monitorCommand(const std::string &socket, const std::string &line, int timeoutMs = 10000)
	{
		UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
		sockaddr_un addr{};
		addr.sun_family = AF_UNIX;
		if (!fd.isValid() || socket.size() >= sizeof(addr.sun_path))
			return std::nullopt;
		std::memcpy(addr.sun_path, socket.c_str(), socket.size() + 1);
		if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) != 0)
			return std::nullopt;
		auto deadline =
			std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
		std::string text;
		auto readUntilPrompt = [&]() -> bool {
			for (;;) {
				size_t prompt = text.rfind("(qemu) ");
				if (prompt != std::string::npos && prompt + 7 == text.size())
					return true;
				auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
					deadline - std::chrono::steady_clock::now());
				pollfd p{ fd.get(), POLLIN, 0 };
				if (left.count() <= 0 ||
				    ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
					return false;
				char buf[4096];
				ssize_t n = ::read(fd.get(), buf, sizeof(buf));
				if (n <= 0)
					return false;
				text.append(buf, static_cast<size_t>(n));
			}
		};
		if (!readUntilPrompt())
			return std::nullopt;
		text.clear();
		std::string command = line + "\n";
		if (::write(fd.get(), command.data(), command.size()) !=
		    static_cast<ssize_t>(command.size()))
			return std::nullopt;
		if (!readUntilPrompt())
			return std::nullopt;
		return text;
	}

private:
	QemuGuest() = default;

	std::unique_ptr<Process> process_;
	size_t consumed_ = 0;
	unsigned commands_ = 0;
};

/** Skip unless vub-switch, QEMU and the guest image are there. */
void requireSwitchQemuAndGuest(std::string &binary)
{
	std::string why;
	auto found = switchBinary(&why);
	if (!found)
		GTEST_SKIP() << why;
	if (!findStdbuf())
		GTEST_SKIP() << "stdbuf not found (coreutils)";
	if (!qemuBinary())
		GTEST_SKIP() << "QEMU not found (apt-get install qemu-system-x86, or set VUB_QEMU)";
	const GuestImage &image = guestImage();
	if (!image.skip.empty())
		GTEST_SKIP() << image.skip;
	binary = *found;
}

constexpr const char *kMacA = "52:54:00:00:00:0a";
constexpr const char *kMacB = "52:54:00:00:00:0b";
constexpr const char *kIpA = "10.0.0.1";
constexpr const char *kIpB = "10.0.0.2";

/** Two guests on two ports of a switch in l2switch mode. */
class QemuTest : public ::testing::Test
{
protected:
	void SetUp() override
	{
		requireSwitchQemuAndGuest(binary_);
		if (IsSkipped())
			return;
		sock_[0] = dir_.file("a.sock");
		sock_[1] = dir_.file("b.sock");
	}

	/** Start the switch with \a portOptions appended to each port. */
	::testing::AssertionResult startSwitch(const std::string &portOptions = "")
	{
		std::string error;
		sw_ = VubSwitchCli::start(
			binary_,
			{ "-i", "--runtime-dir", dir_.path(), "--forward-mode=l2switch",
			  "--auto-start", "--port", "vhost-user:path=" + sock_[0] + portOptions,
			  "--port", "vhost-user:path=" + sock_[1] + portOptions },
			dir_.file("switch" + std::to_string(++switches_) + ".log"), &error);
		if (!sw_)
			return ::testing::AssertionFailure() << "vub-switch: " << error;
		dump_.add("vub-switch", sw_->process().logPath());
		if (!sw_->waitForPrompt())
			return ::testing::AssertionFailure() << "no vub> prompt";
		return ::testing::AssertionSuccess();
	}

	/** Start QEMU for guest A on port 0 and guest B on port 1, without waiting. */
	::testing::AssertionResult launchGuests(GuestOptions a, GuestOptions b)
	{
		a.socket = sock_[0];
		a.mac = kMacA;
		a.ip = kIpA;
		b.socket = sock_[1];
		b.mac = kMacB;
		b.ip = kIpB;
		std::string error;
		a_ = QemuGuest::start(a, dir_.file("guestA.log"), &error);
		if (!a_)
			return ::testing::AssertionFailure() << "guest A: " << error;
		dump_.add("guest A (QEMU)", a_->process().logPath());
		b_ = QemuGuest::start(b, dir_.file("guestB.log"), &error);
		if (!b_)
			return ::testing::AssertionFailure() << "guest B: " << error;
		dump_.add("guest B (QEMU)", b_->process().logPath());
		return ::testing::AssertionSuccess();
	}

	/** Both guests booted and both ports up. */
	::testing::AssertionResult guestsReady()
	{
		if (auto r = a_->waitReady(); !r)
			return r << " (guest A)";
		if (auto r = b_->waitReady(); !r)
			return r << " (guest B)";
		return waitForLinks(*sw_, { { 0, true }, { 1, true } }, false, kSettleTimeoutMs);
	}

	::testing::AssertionResult startGuests(const GuestOptions &a, const GuestOptions &b)
	{
		if (auto r = launchGuests(a, b); !r)
			return r;
		return guestsReady();
	}

	/** A pings B and B pings A; the switch carried it (its own counters). */
	void expectPingsBothWays(const std::string &prefix = "")
	{
		auto before = sw_->showPortStats();
		ASSERT_TRUE(before);
		EXPECT_TRUE(a_->pings(kIpB, 3, prefix));
		EXPECT_TRUE(b_->pings(kIpA, 3, prefix));
		auto after = sw_->showPortStats();
		ASSERT_TRUE(after);
		for (unsigned port : { 0u, 1u }) {
			EXPECT_GE((*after)[port].rxPackets, (*before)[port].rxPackets + 6)
				<< "port " << port << ": the switch did not receive the pings\n"
				<< describe(*after);
			EXPECT_GE((*after)[port].txPackets, (*before)[port].txPackets + 6)
				<< "port " << port << ": the switch did not deliver the pings\n"
				<< describe(*after);
		}
	}

	std::string binary_;
	TempDir dir_{ "vub-qemu-" };
	LogDump dump_;
	std::string sock_[2];
	std::unique_ptr<VubSwitchCli> sw_;
	std::unique_ptr<QemuGuest> a_;
	std::unique_ptr<QemuGuest> b_;
	unsigned switches_ = 0;
};

TEST_F(QemuTest, GuestsPingThroughTheSwitchOnSplitRings)
{
	if (IsSkipped())
		return;
	ASSERT_TRUE(startSwitch());
	ASSERT_TRUE(startGuests({}, {}));
	ASSERT_NO_FATAL_FAILURE(expectPingsBothWays());
	auto info = sw_->command("show port info 0");
	ASSERT_TRUE(info);
	EXPECT_NE(info->find("split ring"), std::string::npos) << *info;
}

TEST_F(QemuTest, GuestsPingThroughTheSwitchOnPackedRings)
{
	if (IsSkipped())
		return;
	ASSERT_TRUE(startSwitch());
	GuestOptions packed;
	packed.packed = true;
	ASSERT_TRUE(startGuests(packed, packed));
	ASSERT_NO_FATAL_FAILURE(expectPingsBothWays());
	auto info = sw_->command("show port info 0");
	ASSERT_TRUE(info);
	EXPECT_NE(info->find("packed ring"), std::string::npos) << *info;
}

/*
 * Guests behind QEMU's intel-iommu (VIRTIO_F_IOMMU_PLATFORM): their rings and buffers are I/O
 * virtual addresses, which vub translates through the device IOTLB that QEMU fills on vub's
 * misses. The guests' lazy IOTLB flushes empty it between pings, so every ping needs fresh
 * translations of RX buffers: a frame waits for its translation, it is not dropped.
 */
class QemuIommuTest : public QemuTest, public ::testing::WithParamInterface<bool>
{
};

TEST_P(QemuIommuTest, GuestsBehindAVirtualIommuPing)
{
	if (IsSkipped())
		return;
	ASSERT_TRUE(startSwitch(",iommu-support=1"));
	GuestOptions o;
	o.iommu = true;
	o.packed = GetParam();
	ASSERT_TRUE(startGuests(o, o));
	for (QemuGuest *guest : { a_.get(), b_.get() }) {
		/* The NIC's DMA goes through the guest's IOMMU (device: virtio0, its parent the PCI one). */
		auto r = guest->run("ls /sys/class/net/eth0/device/../iommu_group/devices");
		ASSERT_TRUE(r);
		EXPECT_EQ(r->first, 0) << "the NIC is in no IOMMU group:\n" << r->second;
	}
	std::map<std::string, uint64_t> before[2] = { sw_->showPortXstats(0),
						      sw_->showPortXstats(1) };
	ASSERT_NO_FATAL_FAILURE(expectPingsBothWays());
	for (unsigned port : { 0u, 1u }) {
		auto info = sw_->command("show port info " + std::to_string(port));
		ASSERT_TRUE(info);
		std::smatch m;
		ASSERT_TRUE(std::regex_search(*info, m, std::regex("features 0x([0-9a-f]+)"))) << *info;
		EXPECT_TRUE(std::stoull(m[1].str(), nullptr, 16) & (uint64_t{ 1 } << 33))
			<< "VIRTIO_F_IOMMU_PLATFORM not acked: " << *info;
		EXPECT_NE(info->find(GetParam() ? "packed ring" : "split ring"), std::string::npos)
			<< *info;
		/* Translated through the IOTLB: chains waited for translations, none dropped. */
		auto xstats = sw_->showPortXstats(port);
		EXPECT_GT(xstats["tx_q0_chain_iotlb_miss"] + xstats["rx_q0_chain_iotlb_miss"], 0u)
			<< "port " << port << " never missed in the IOTLB";
		EXPECT_EQ(xstats["tx_q0_drop_no_buffer"], before[port]["tx_q0_drop_no_buffer"])
			<< "port " << port << ": frames to the guest dropped while it pinged";
	}
}

INSTANTIATE_TEST_SUITE_P(Rings, QemuIommuTest, ::testing::Values(false, true),
			 [](const ::testing::TestParamInfo<bool> &info) {
				 return std::string(info.param ? "Packed" : "Split");
			 });

/* Two queue pairs, two vCPUs: a ping pinned on vCPU 1 leaves on queue pair 1. */
TEST_F(QemuTest, GuestsPingOnBothQueuePairs)
{
	if (IsSkipped())
		return;
	ASSERT_TRUE(startSwitch(",queues=2"));
	GuestOptions mq;
	mq.queues = 2;
	ASSERT_TRUE(startGuests(mq, mq));
	ASSERT_NO_FATAL_FAILURE(expectPingsBothWays("taskset 1 "));
	auto before = sw_->showPortXstats(0);
	EXPECT_TRUE(a_->pings(kIpB, 3, "taskset 2 "));
	auto after = sw_->showPortXstats(0);
	EXPECT_GE(after["rx_q1_packets"], before["rx_q1_packets"] + 3)
		<< "guest A's pings from vCPU 1 did not come on queue pair 1";
}

/* QEMU owns the socket (server=on); the switch's port connects to it (client=1). */
TEST_F(QemuTest, SwitchConnectsToGuestsThatOwnTheSockets)
{
	if (IsSkipped())
		return;
	GuestOptions server;
	server.qemuServer = true;
	/* The guests first: QEMU listens before the switch connects. */
	ASSERT_TRUE(launchGuests(server, server));
	ASSERT_TRUE(startSwitch(",client=1"));
	ASSERT_TRUE(guestsReady());
	ASSERT_NO_FATAL_FAILURE(expectPingsBothWays());
}

/* Guest B reboots: its port goes down and up, guest A's link never drops. */
TEST_F(QemuTest, RebootedGuestComesBackWhileTheOtherKeepsItsLink)
{
	if (IsSkipped())
		return;
	ASSERT_TRUE(startSwitch());
	GuestOptions rebooting;
	rebooting.mayReboot = true;
	ASSERT_TRUE(startGuests({}, rebooting));
	ASSERT_NO_FATAL_FAILURE(expectPingsBothWays());
	ASSERT_TRUE(b_->process().writeStdin("reboot -f\n"));
	ASSERT_TRUE(b_->waitReady(2));
	auto info = sw_->showPortInfo();
	ASSERT_TRUE(info);
	EXPECT_TRUE((*info)[0].linkUp) << "guest A's port went down with guest B's reboot";
	ASSERT_TRUE(waitForLinks(*sw_, { { 0, true }, { 1, true } }, true, kSettleTimeoutMs));
	ASSERT_NO_FATAL_FAILURE(expectPingsBothWays());
	ASSERT_TRUE(a_->process().running());
}

/* The switch is killed and started again under running guests (QEMU reconnect=1). */
TEST_F(QemuTest, SwitchRestartedUnderRunningGuestsGetsTheLinkBack)
{
	if (IsSkipped())
		return;
	ASSERT_TRUE(startSwitch());
	GuestOptions reconnecting;
	reconnecting.reconnect = true;
	ASSERT_TRUE(startGuests(reconnecting, reconnecting));
	ASSERT_NO_FATAL_FAILURE(expectPingsBothWays());
	auto killed = sw_->process().terminate(SIGKILL, 5000);
	ASSERT_TRUE(killed && killed->signal == SIGKILL);
	sw_.reset();
	ASSERT_TRUE(startSwitch());
	ASSERT_TRUE(waitForLinks(*sw_, { { 0, true }, { 1, true } }, true, kBootTimeoutMs))
		<< "QEMU did not reconnect to the restarted switch";
	ASSERT_NO_FATAL_FAILURE(expectPingsBothWays());
}

/*
 * Live migration on one host: guest A moves from QEMU on port 0 to a QEMU waiting on port 2
 * (-incoming) while guest B pings it. The switch logs the pages it writes into A's memory
 * (LOG_SHMFD, VHOST_F_LOG_ALL), B's ping goes on once the switch's MAC table follows A to port 2
 * (RARP or the guest's announce), and the switch writes nothing more into the old A's memory.
 */
TEST_F(QemuTest, MigratedGuestKeepsBeingPinged)
{
	if (IsSkipped())
		return;
	const std::string sockC = dir_.file("c.sock");
	std::string error;
	sw_ = VubSwitchCli::start(binary_,
				  { "-i", "--runtime-dir", dir_.path(), "--forward-mode=l2switch",
				    "--auto-start", "--port", "vhost-user:path=" + sock_[0],
				    "--port", "vhost-user:path=" + sock_[1], "--port",
				    "vhost-user:path=" + sockC },
				  dir_.file("switch.log"), &error);
	ASSERT_TRUE(sw_) << error;
	dump_.add("vub-switch", sw_->process().logPath());
	ASSERT_TRUE(sw_->waitForPrompt());

	GuestOptions source;
	source.monitor = dir_.file("monitor-a.sock");
	ASSERT_TRUE(launchGuests(source, {}));
	GuestOptions target;
	target.socket = sockC;
	target.mac = kMacA;
	target.ip = kIpA;
	target.incoming = dir_.file("migrate.sock");
	target.monitor = dir_.file("monitor-c.sock");
	auto moved = QemuGuest::start(target, dir_.file("guestA-target.log"), &error);
	ASSERT_TRUE(moved) << error;
	dump_.add("guest A after the move (QEMU -incoming)", moved->process().logPath());
	ASSERT_TRUE(guestsReady());
	ASSERT_NO_FATAL_FAILURE(expectPingsBothWays());

	/* B pings A once a second through the move (20 s; the move takes about 1 s). */
	ASSERT_TRUE(b_->run("ping -c 20 " + std::string(kIpA) + " > /tmp/ping.log 2>&1 &"));
	std::this_thread::sleep_for(3s);
	auto started =
		QemuGuest::monitorCommand(source.monitor, "migrate -d unix:" + target.incoming);
	ASSERT_TRUE(started) << "the source's monitor does not answer";
	std::string status;
	auto deadline = std::chrono::steady_clock::now() + 90s;
	while (std::chrono::steady_clock::now() < deadline) {
		auto info = QemuGuest::monitorCommand(source.monitor, "info migrate");
		ASSERT_TRUE(info) << "the source's monitor does not answer";
		status = *info;
		if (status.find("Migration status: completed") != std::string::npos ||
		    status.find("Migration status: failed") != std::string::npos)
			break;
		std::this_thread::sleep_for(200ms);
	}
	ASSERT_NE(status.find("Migration status: completed"), std::string::npos) << status;
	auto atMove = sw_->showPortStats();
	ASSERT_TRUE(atMove);

	/* B's pings find A on port 2; the old A gets nothing more. */
	auto done = b_->run("wait; cat /tmp/ping.log", 90000);
	ASSERT_TRUE(done) << "B's ping did not end";
	int lastSeq = -1;
	static const std::regex kReply("seq=([0-9]+)");
	for (auto it = std::sregex_iterator(done->second.begin(), done->second.end(), kReply);
	     it != std::sregex_iterator(); ++it)
		lastSeq = std::max(lastSeq, std::stoi((*it)[1].str()));
	EXPECT_GE(lastSeq, 17) << "B's ping did not resume after the move:\n" << done->second;
	EXPECT_TRUE(b_->pings(kIpA)) << "B cannot ping A after the move";
	EXPECT_TRUE(moved->pings(kIpB)) << "A cannot ping B from its new QEMU";
	auto after = sw_->showPortStats();
	ASSERT_TRUE(after);
	EXPECT_EQ((*after)[0].txPackets, (*atMove)[0].txPackets)
		<< "the switch wrote into the old guest's memory after the switch-over\n"
		<< describe(*after);
	EXPECT_GT((*after)[2].rxPackets, (*atMove)[2].rxPackets) << describe(*after);
	EXPECT_GT((*after)[2].txPackets, (*atMove)[2].txPackets) << describe(*after);
	auto table = sw_->showMacTable();
	ASSERT_TRUE(table);
	EXPECT_EQ(table->entries[upper(kMacA)].port, 2u) << "A's MAC did not follow it to port 2";
	EXPECT_NE(sw_->process().output().find("port0: dirty logging on"), std::string::npos)
		<< "the source never turned dirty logging on";
	EXPECT_NE(sw_->process().output().find("port0: dirty log of"), std::string::npos)
		<< "the source never gave the switch a dirty log";
}

} /* namespace */
} /* namespace vub::test */
