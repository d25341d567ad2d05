/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

using namespace vub::sw;

namespace vub::sw {

/* gtest prints an error as its message. */
void PrintTo(const ConfigError &error, std::ostream *os)
{
	*os << error.message();
}

} /* namespace vub::sw */

namespace {

const std::string kSourceDir = VUB_SOURCE_DIR;

std::string readFile(const std::string &path)
{
	std::ifstream in(path);
	std::stringstream text;
	text << in.rdbuf();
	return text.str();
}

/** Each test gets its own directory for the ini files it writes. */
class SwitchConfigTest : public ::testing::Test
{
protected:
	void SetUp() override
	{
		std::string pattern =
			(std::filesystem::temp_directory_path() / "vub-config-XXXXXX");
		ASSERT_NE(mkdtemp(pattern.data()), nullptr);
		dir_ = pattern;
	}
	void TearDown() override { std::filesystem::remove_all(dir_); }

	std::string write(const std::string &name, const std::string &text)
	{
		std::string path = dir_ + "/" + name;
		std::ofstream(path) << text;
		return path;
	}

	/** Load \a text as a file; expect an error and return it. */
	ConfigError loadBad(const std::string &text)
	{
		SwitchConfig config;
		std::string path = write("bad.ini", text);
		std::optional<ConfigError> error = loadConfigFile(path, config);
		EXPECT_TRUE(error) << text;
		return error.value_or(ConfigError{});
	}

	std::string dir_;
};

/** parseCommandLine over "vub-switch" + \a args. */
std::optional<ConfigError> parseArgs(std::vector<std::string> args, SwitchConfig &config,
				     bool &help)
{
	args.insert(args.begin(), "vub-switch");
	std::vector<char *> argv;
	for (std::string &arg : args)
		argv.push_back(arg.data());
	argv.push_back(nullptr);
	return parseCommandLine(static_cast<int>(args.size()), argv.data(), config, help);
}

std::optional<ConfigError> parseArgs(std::vector<std::string> args, SwitchConfig &config)
{
	bool help = false;
	return parseArgs(std::move(args), config, help);
}

ConfigError parseBad(std::vector<std::string> args)
{
	SwitchConfig config;
	std::optional<ConfigError> error = parseArgs(args, config);
	EXPECT_TRUE(error);
	return error.value_or(ConfigError{});
}

PortConfig vhostPort(const std::string &name, const std::string &path)
{
	PortConfig port;
	port.name = name;
	port.path = path;
	return port;
}

const std::string kTwoPorts = "[port.a]\ntype = vhost-user\npath = a.sock\n"
			      "[port.b]\ntype = vhost-user\npath = b.sock\n";

} /* namespace */

/* ---- good files ---- */

TEST_F(SwitchConfigTest, DefaultIniHasTwoVhostUserServerPortsAndL2Switch)
{
	SwitchConfig config;
	ASSERT_EQ(loadConfigFile(kSourceDir + "/config/default.ini", config), std::nullopt);
	EXPECT_EQ(config.mode, ForwardMode::L2Switch);
	ASSERT_EQ(config.ports.size(), 2u);
	EXPECT_EQ(config.ports[0].name, "vm1");
	EXPECT_EQ(config.ports[0].type, PortType::VhostUser);
	EXPECT_EQ(config.ports[0].path, "vm1.sock");
	EXPECT_FALSE(config.ports[0].client);
	EXPECT_EQ(config.ports[0].queues, 1u);
	EXPECT_EQ(config.ports[1].name, "vm2");
	EXPECT_EQ(config.ports[1].path, "vm2.sock");
	/* What the file leaves commented out keeps the defaults. */
	EXPECT_EQ(config.burst, SwitchConfig{}.burst);
	EXPECT_EQ(config.macAgingS, SwitchConfig{}.macAgingS);
}

TEST(SwitchConfig, EmbeddedDefaultIsDefaultIni)
{
	EXPECT_EQ(embeddedDefaultConfig(), readFile(kSourceDir + "/config/default.ini"));
}

TEST(SwitchConfig, NoConfigFileAndNoPortGiveTheEmbeddedDefaultUnderTheRuntimeDir)
{
	SwitchConfig config;
	ASSERT_EQ(parseArgs({}, config), std::nullopt);
	EXPECT_EQ(config.mode, ForwardMode::L2Switch);
	EXPECT_EQ(config.runtimeDir, defaultRuntimeDir());
	ASSERT_EQ(config.ports.size(), 2u);
	EXPECT_EQ(config.ports[0].path, defaultRuntimeDir() + "/vm1.sock");
	EXPECT_EQ(config.ports[1].path, defaultRuntimeDir() + "/vm2.sock");
}

TEST(SwitchConfig, RuntimeDirOptionPlacesRelativeSockets)
{
	SwitchConfig config;
	ASSERT_EQ(parseArgs({ "--runtime-dir", "/srv/vub/", "--port", "vhost-user:path=./x.sock",
			      "--port", "vhost-user:path=/tmp/y.sock" },
			    config),
		  std::nullopt);
	EXPECT_EQ(config.runtimeDir, "/srv/vub/");
	ASSERT_EQ(config.ports.size(), 2u);
	EXPECT_EQ(config.ports[0].path, "/srv/vub/x.sock");
	EXPECT_EQ(config.ports[1].path, "/tmp/y.sock");
}

TEST(SwitchConfig, EverySampleLoads)
{
	unsigned samples = 0;
	for (const auto &entry :
	     std::filesystem::directory_iterator(kSourceDir + "/config/samples")) {
		if (entry.path().extension() != ".ini")
			continue;
		samples++;
		SwitchConfig config;
		std::optional<ConfigError> error =
			parseArgs({ "-f", entry.path().string() }, config);
		EXPECT_EQ(error, std::nullopt) << (error ? error->message() : "");
		EXPECT_FALSE(config.ports.empty()) << entry.path();
	}
	EXPECT_GE(samples, 4u);
}

TEST(SwitchConfig, SamplesShowWhatTheirNamesSay)
{
	std::string samples = kSourceDir + "/config/samples/";
	SwitchConfig client, multiqueue, placement, ethdev;
	ASSERT_EQ(loadConfigFile(samples + "client-ports.ini", client), std::nullopt);
	ASSERT_EQ(loadConfigFile(samples + "multiqueue.ini", multiqueue), std::nullopt);
	ASSERT_EQ(loadConfigFile(samples + "core-placement.ini", placement), std::nullopt);
	ASSERT_EQ(loadConfigFile(samples + "ethdev.ini", ethdev), std::nullopt);

	ASSERT_EQ(client.ports.size(), 2u);
	EXPECT_TRUE(client.ports[0].client && client.ports[1].client);
	ASSERT_EQ(multiqueue.ports.size(), 2u);
	EXPECT_EQ(multiqueue.ports[0].queues, 4u);
	ASSERT_FALSE(placement.ports.empty());
	EXPECT_FALSE(placement.ports[0].rxqAffinity.empty());
	ASSERT_EQ(ethdev.ports.size(), 2u);
	EXPECT_EQ(ethdev.ports[0].type, PortType::VhostUser);
	EXPECT_EQ(ethdev.ports[1].type, PortType::Ethdev);
	EXPECT_EQ(ethdev.ports[1].devargs, "net_tap0,iface=vub-tap0");
}

TEST_F(SwitchConfigTest, ReadsEveryKey)
{
	std::string path = write("all.ini", R"([Switch]
Forward-Mode = macswap
burst = 64
stats-period = 5 ; a comment after the value
mac-aging-time = 60
mac-table-size = 4096
mbufs = 32768
txpkts = 2000, 2000
runtime-dir = /srv/vub
auto-start = On

[port.guest-1]
type = vhost-user
path = "g1.sock"
queues = 8
client = TRUE
iommu-support = yes
rxq-affinity = 0:1, 7:127

[port.nic_0]
type = ethdev
devargs = net_tap0,iface=vub-tap0
queues = 64
rxd = 64
txd = 32768
promiscuous = 0
)");
	SwitchConfig config;
	ASSERT_EQ(loadConfigFile(path, config), std::nullopt);
	EXPECT_EQ(config.mode, ForwardMode::MacSwap);
	EXPECT_EQ(config.burst, 64u);
	EXPECT_EQ(config.statsPeriodS, 5u);
	EXPECT_EQ(config.macAgingS, 60u);
	EXPECT_EQ(config.macTableSize, 4096u);
	EXPECT_EQ(config.mbufsPerNode, 32768u);
	EXPECT_EQ(config.txSegmentBytes, (std::vector<unsigned>{ 2000, 2000 }));
	EXPECT_EQ(config.runtimeDir, "/srv/vub");
	EXPECT_TRUE(config.autoStart);
	ASSERT_EQ(config.ports.size(), 2u);

	const PortConfig &guest = config.ports[0];
	EXPECT_EQ(guest.name, "guest-1");
	EXPECT_EQ(guest.type, PortType::VhostUser);
	EXPECT_EQ(guest.path, "g1.sock");
	EXPECT_EQ(guest.queues, 8u);
	EXPECT_TRUE(guest.client);
	EXPECT_TRUE(guest.iommuSupport);
	ASSERT_EQ(guest.rxqAffinity.size(), 2u);
	EXPECT_EQ(guest.rxqAffinity[1].queue, 7u);
	EXPECT_EQ(guest.rxqAffinity[1].lcore, 127u);

	const PortConfig &nic = config.ports[1];
	EXPECT_EQ(nic.name, "nic_0");
	EXPECT_EQ(nic.type, PortType::Ethdev);
	EXPECT_EQ(nic.devargs, "net_tap0,iface=vub-tap0");
	EXPECT_EQ(nic.queues, 64u);
	EXPECT_EQ(nic.rxDescriptors, 64u);
	EXPECT_EQ(nic.txDescriptors, 32768u);
	EXPECT_FALSE(nic.promiscuous);
}

TEST_F(SwitchConfigTest, PortsKeepTheFilesOrderAfterThoseAlreadyThere)
{
	SwitchConfig config;
	config.ports.push_back(vhostPort("first", "first.sock"));
	std::string path = write("order.ini", "[port.zed]\ntype = vhost-user\npath = z\n"
					      "[port.alpha]\ntype = vhost-user\npath = a\n"
					      "[port.mid]\ntype = ethdev\ndevargs = net_ring0\n");
	ASSERT_EQ(loadConfigFile(path, config), std::nullopt);
	ASSERT_EQ(config.ports.size(), 4u);
	EXPECT_EQ(config.ports[1].name, "zed");
	EXPECT_EQ(config.ports[2].name, "alpha");
	EXPECT_EQ(config.ports[3].name, "mid");
}

TEST(SwitchConfig, LoadsTextUnderTheNameGiven)
{
	SwitchConfig config;
	ASSERT_EQ(loadConfigText("[switch]\nburst = 7\n", "inline", config), std::nullopt);
	EXPECT_EQ(config.burst, 7u);
	std::optional<ConfigError> error =
		loadConfigText("[switch]\nburst = 0\n", "inline", config);
	ASSERT_TRUE(error);
	EXPECT_EQ(error->file, "inline");
}

/* ---- bad files ---- */

TEST_F(SwitchConfigTest, RejectsUnknownKeyNamingFileSectionAndKey)
{
	std::string path = write("bad.ini", "[switch]\nburst = 32\nbrust = 32\n");
	SwitchConfig config;
	std::optional<ConfigError> error = loadConfigFile(path, config);
	ASSERT_TRUE(error);
	EXPECT_EQ(error->file, path);
	EXPECT_EQ(error->section, "switch");
	EXPECT_EQ(error->key, "brust");
	EXPECT_NE(error->reason.find("unknown key"), std::string::npos);
	EXPECT_NE(error->reason.find("burst"), std::string::npos) << "names the keys allowed";
	EXPECT_EQ(error->message().rfind(path + ": [switch] brust: unknown key", 0), 0u)
		<< error->message();

	ConfigError port = loadBad(kTwoPorts + "speed = 10\n");
	EXPECT_EQ(port.section, "port.b");
	EXPECT_EQ(port.key, "speed");
}

TEST_F(SwitchConfigTest, RejectsUnknownSection)
{
	ConfigError error = loadBad("[switch]\n[ports.a]\ntype = vhost-user\n");
	EXPECT_EQ(error.section, "ports.a");
	EXPECT_EQ(error.key, "");
	EXPECT_NE(error.reason.find("unknown section"), std::string::npos);
}

TEST_F(SwitchConfigTest, RejectsBadPortNames)
{
	EXPECT_EQ(loadBad("[port.]\ntype = ethdev\ndevargs = x\n").section, "port.");
	EXPECT_EQ(loadBad("[port.a.b]\ntype = ethdev\ndevargs = x\n").section, "port.a.b");
	EXPECT_EQ(loadBad("[port.a b]\ntype = ethdev\ndevargs = x\n").section, "port.a b");
}

TEST_F(SwitchConfigTest, RejectsKeyAboveEverySection)
{
	ConfigError error = loadBad("burst = 32\n[switch]\n");
	EXPECT_EQ(error.section, "");
	EXPECT_EQ(error.key, "burst");
}

TEST_F(SwitchConfigTest, RejectsNumbersThatAreNotDecimal)
{
	for (const char *value : { "12x", "-1", "+1", "0x10", "", "1.5", "99999999999999999999" }) {
		ConfigError error = loadBad(std::string("[switch]\nburst = ") + value + "\n");
		EXPECT_EQ(error.key, "burst") << value;
		EXPECT_EQ(error.reason, std::string("burst must be 1 to 512, not '") + value + "'");
	}
}

TEST_F(SwitchConfigTest, RejectsNumbersOutOfRange)
{
	EXPECT_EQ(loadBad("[switch]\nburst = 0\n").reason, "burst must be 1 to 512, not '0'");
	EXPECT_EQ(loadBad("[switch]\nburst = 513\n").key, "burst");
	EXPECT_EQ(loadBad("[switch]\nstats-period = 3601\n").key, "stats-period");
	EXPECT_EQ(loadBad("[switch]\nmac-aging-time = 9\n").key, "mac-aging-time");
	EXPECT_EQ(loadBad("[switch]\nmac-table-size = 15\n").key, "mac-table-size");
	EXPECT_EQ(loadBad("[switch]\nmbufs = 1023\n").key, "mbufs");
	EXPECT_EQ(loadBad("[switch]\nmbufs = 1048577\n").key, "mbufs");
	ConfigError rxd = loadBad("[port.n]\ntype = ethdev\ndevargs = x\nrxd = 63\n");
	EXPECT_EQ(rxd.section, "port.n");
	EXPECT_EQ(rxd.key, "rxd");
	EXPECT_EQ(loadBad("[port.n]\ntype = ethdev\ndevargs = x\ntxd = 32769\n").key, "txd");
}

TEST_F(SwitchConfigTest, RejectsBadBool)
{
	ConfigError error = loadBad("[switch]\nauto-start = maybe\n");
	EXPECT_EQ(error.key, "auto-start");
	EXPECT_NE(error.reason.find("yes/no"), std::string::npos);
	EXPECT_EQ(loadBad(kTwoPorts + "client = 2\n").key, "client");
	EXPECT_EQ(loadBad(kTwoPorts + "iommu-support = maybe\n").key, "iommu-support");
}

TEST_F(SwitchConfigTest, RejectsBadForwardMode)
{
	ConfigError error = loadBad("[switch]\nforward-mode = bridge\n");
	EXPECT_EQ(error.key, "forward-mode");
	EXPECT_NE(error.reason.find("l2switch"), std::string::npos);
	EXPECT_NE(error.reason.find("'bridge'"), std::string::npos);
}

TEST_F(SwitchConfigTest, RejectsBadTxpkts)
{
	EXPECT_EQ(loadBad("[switch]\ntxpkts = 59\n").key, "txpkts");
	EXPECT_EQ(loadBad("[switch]\ntxpkts = 9729\n").key, "txpkts");
	EXPECT_EQ(loadBad("[switch]\ntxpkts = 5000,5000\n").key, "txpkts");
	EXPECT_EQ(loadBad("[switch]\ntxpkts = 64,0\n").key, "txpkts");
	EXPECT_EQ(loadBad("[switch]\ntxpkts = 64,\n").key, "txpkts");
	EXPECT_EQ(loadBad("[switch]\ntxpkts = 8,8,8,8,8,8,8,8,8\n").key, "txpkts");
}

TEST_F(SwitchConfigTest, RejectsPortWithoutTypePathOrDevargs)
{
	ConfigError type = loadBad("[port.a]\npath = a.sock\n");
	EXPECT_EQ(type.section, "port.a");
	EXPECT_EQ(type.key, "type");
	EXPECT_EQ(loadBad("[port.a]\ntype = tap\n").key, "type");
	EXPECT_EQ(loadBad("[port.a]\ntype = vhost-user\nqueues = 2\n").key, "path");
	EXPECT_EQ(loadBad("[port.a]\ntype = vhost-user\npath =\n").key, "path");
	EXPECT_EQ(loadBad("[port.a]\ntype = ethdev\nqueues = 2\n").key, "devargs");
}

TEST_F(SwitchConfigTest, RejectsKeysOfTheOtherPortType)
{
	ConfigError devargs = loadBad("[port.a]\ntype = vhost-user\npath = a\ndevargs = x\n");
	EXPECT_EQ(devargs.key, "devargs");
	EXPECT_NE(devargs.reason.find("ethdev"), std::string::npos);
	EXPECT_EQ(loadBad("[port.a]\ntype = ethdev\ndevargs = x\npath = a\n").key, "path");
	EXPECT_EQ(loadBad("[port.a]\ntype = ethdev\ndevargs = x\nclient = yes\n").key, "client");
	EXPECT_EQ(loadBad("[port.a]\ntype = vhost-user\npath = a\nrxd = 512\n").key, "rxd");
}

TEST_F(SwitchConfigTest, RejectsTwoPortsOnOneSocket)
{
	ConfigError error = loadBad("[port.a]\ntype = vhost-user\npath = vm.sock\n"
				    "[port.b]\ntype = vhost-user\npath = ./vm.sock\n");
	EXPECT_EQ(error.section, "port.b");
	EXPECT_EQ(error.key, "path");
	EXPECT_NE(error.reason.find("port a"), std::string::npos);

	/* The same socket, once relative to the runtime dir and once absolute. */
	EXPECT_EQ(loadBad("[switch]\nruntime-dir = /srv/vub\n"
			  "[port.a]\ntype = vhost-user\npath = vm.sock\n"
			  "[port.b]\ntype = vhost-user\npath = /srv/vub/vm.sock\n")
			  .key,
		  "path");
}

TEST_F(SwitchConfigTest, RejectsQueuesBeyondThePortType)
{
	ConfigError nine = loadBad("[port.a]\ntype = vhost-user\npath = a\nqueues = 9\n");
	EXPECT_EQ(nine.key, "queues");
	EXPECT_EQ(nine.reason, "queues must be 1 to 8, not '9'");
	EXPECT_EQ(loadBad("[port.a]\ntype = ethdev\ndevargs = x\nqueues = 65\n").key, "queues");
	EXPECT_EQ(loadBad("[port.a]\ntype = ethdev\ndevargs = x\nqueues = 0\n").key, "queues");

	SwitchConfig config;
	ASSERT_EQ(
		loadConfigText("[port.a]\ntype = ethdev\ndevargs = x\nqueues = 64\n", "t", config),
		std::nullopt);
}

TEST_F(SwitchConfigTest, RejectsBadRxqAffinity)
{
	std::string port = "[port.a]\ntype = vhost-user\npath = a\nqueues = 2\n";
	for (const char *value : { "2:1", "0:128", "0:1,0:2", "0-1", "0:1:2", "a:1", "0:", "" }) {
		ConfigError error = loadBad(port + "rxq-affinity = " + value + "\n");
		EXPECT_EQ(error.section, "port.a") << value;
		EXPECT_EQ(error.key, "rxq-affinity") << value;
	}
	/* Checked against queues wherever queues appears in the section. */
	SwitchConfig config;
	ASSERT_EQ(loadConfigText("[port.a]\ntype = vhost-user\nrxq-affinity = 1:3\npath = a\n"
				 "queues = 2\n",
				 "t", config),
		  std::nullopt);
	ASSERT_EQ(config.ports[0].rxqAffinity.size(), 1u);
	EXPECT_EQ(config.ports[0].rxqAffinity[0].lcore, 3u);
}

TEST_F(SwitchConfigTest, RejectsMissingFile)
{
	SwitchConfig config;
	std::optional<ConfigError> error = loadConfigFile(dir_ + "/nothing.ini", config);
	ASSERT_TRUE(error);
	EXPECT_EQ(error->file, dir_ + "/nothing.ini");
	EXPECT_NE(error->reason.find("No such file"), std::string::npos) << error->reason;

	EXPECT_TRUE(loadConfigFile(dir_, config)) << "a directory";
}

TEST_F(SwitchConfigTest, RejectsSyntaxErrorNamingTheLine)
{
	std::string path = write("syntax.ini", "[switch]\nburst = 32\njust words\n");
	SwitchConfig config;
	std::optional<ConfigError> error = loadConfigFile(path, config);
	ASSERT_TRUE(error);
	EXPECT_EQ(error->file, path);
	EXPECT_NE(error->reason.find("line 3"), std::string::npos) << error->reason;
	EXPECT_NE(error->reason.find("just words"), std::string::npos) << error->reason;

	EXPECT_TRUE(loadConfigText("[switch\n", "t", config));

	/* iniparser's own words, without the /proc path the text was read through. */
	std::optional<ConfigError> tooLong = loadConfigText(
		"[switch]\nruntime-dir = /" + std::string(2000, 'd') + "\n", "t", config);
	ASSERT_TRUE(tooLong);
	EXPECT_NE(tooLong->reason.find("line 2"), std::string::npos) << tooLong->reason;
	EXPECT_EQ(tooLong->reason.find("/proc"), std::string::npos) << tooLong->reason;
}

TEST_F(SwitchConfigTest, FailedLoadLeavesTheConfigUnchanged)
{
	SwitchConfig config;
	std::string path = write("half.ini", "[switch]\nburst = 64\n[port.a]\ntype = vhost-user\n"
					     "path = a\n[port.b]\ntype = vhost-user\n");
	ASSERT_TRUE(loadConfigFile(path, config));
	EXPECT_EQ(config.burst, SwitchConfig{}.burst);
	EXPECT_TRUE(config.ports.empty());
}

/* ---- the command line ---- */

TEST(SwitchConfig, PortSpecVhostUser)
{
	PortConfig port;
	port.name = "kept";
	ASSERT_EQ(parsePortSpec("vhost-user:path=/tmp/a.sock,queues=4,client=1", port),
		  std::nullopt);
	EXPECT_EQ(port.name, "kept");
	EXPECT_EQ(port.type, PortType::VhostUser);
	EXPECT_EQ(port.path, "/tmp/a.sock");
	EXPECT_EQ(port.queues, 4u);
	EXPECT_TRUE(port.client);
	EXPECT_FALSE(port.iommuSupport);

	ASSERT_EQ(parsePortSpec("vhost-user:path=b.sock,iommu-support=1", port), std::nullopt);
	EXPECT_EQ(port.queues, 1u);
	EXPECT_FALSE(port.client);
	EXPECT_TRUE(port.iommuSupport);
}

TEST(SwitchConfig, PortSpecEthdevKeepsDevargsVerbatim)
{
	PortConfig port;
	ASSERT_EQ(parsePortSpec("ethdev:net_tap0,iface=vub-tap0,mac=fixed", port), std::nullopt);
	EXPECT_EQ(port.type, PortType::Ethdev);
	EXPECT_EQ(port.devargs, "net_tap0,iface=vub-tap0,mac=fixed");
	EXPECT_EQ(port.queues, 1u);
	ASSERT_EQ(parsePortSpec("ethdev:0000:3b:00.0", port), std::nullopt);
	EXPECT_EQ(port.devargs, "0000:3b:00.0");
}

TEST(SwitchConfig, RejectsBadPortSpecs)
{
	for (const char *spec : { "", "vhost-user", "vhost-user:", "vhost-user:queues=2",
				  "vhost-user:path=", "vhost-user:path=a,foo=1",
				  "vhost-user:path=a,queues=9", "vhost-user:path=a,queues=0",
				  "vhost-user:path=a,client=maybe", "vhost-user:path=a,path=b",
				  "vhost-user:path=a,", "ethdev:", "tap:x", "/tmp/a.sock" }) {
		PortConfig port;
		port.path = "untouched";
		std::optional<ConfigError> error = parsePortSpec(spec, port);
		ASSERT_TRUE(error) << spec;
		EXPECT_EQ(error->key, "--port");
		EXPECT_EQ(port.path, "untouched");
	}
	PortConfig port;
	std::optional<ConfigError> error = parsePortSpec("vhost-user:path=a,speed=1", port);
	ASSERT_TRUE(error);
	EXPECT_NE(error->reason.find("speed"), std::string::npos);
}

TEST(SwitchConfig, CommandLinePortsComeAfterTheFilesNamedByIndex)
{
	SwitchConfig config;
	ASSERT_EQ(
		parseArgs({ "--port", "ethdev:net_ring0", "-f", kSourceDir + "/config/default.ini",
			    "--port", "vhost-user:path=c.sock" },
			  config),
		std::nullopt);
	ASSERT_EQ(config.ports.size(), 4u);
	EXPECT_EQ(config.ports[0].name, "vm1");
	EXPECT_EQ(config.ports[1].name, "vm2");
	EXPECT_EQ(config.ports[2].name, "port2");
	EXPECT_EQ(config.ports[2].devargs, "net_ring0");
	EXPECT_EQ(config.ports[3].name, "port3");
	EXPECT_EQ(config.ports[3].path, config.runtimeDir + "/c.sock");
}

TEST_F(SwitchConfigTest, CommandLinePortSkipsATakenName)
{
	std::string path = write("taken.ini", "[port.port1]\ntype = ethdev\ndevargs = net_ring0\n");
	SwitchConfig config;
	ASSERT_EQ(parseArgs({ "-f", path, "--port", "ethdev:net_ring1", "--port", "ethdev:x" },
			    config),
		  std::nullopt);
	ASSERT_EQ(config.ports.size(), 3u);
	EXPECT_EQ(config.ports[1].name, "port2") << "port1 is taken";
	EXPECT_EQ(config.ports[2].name, "port3");
}

TEST(SwitchConfig, CommandLinePortsAloneReplaceTheDefault)
{
	SwitchConfig config;
	ASSERT_EQ(parseArgs({ "--port", "vhost-user:path=/tmp/only.sock" }, config), std::nullopt);
	ASSERT_EQ(config.ports.size(), 1u);
	EXPECT_EQ(config.ports[0].name, "port0");
}

TEST_F(SwitchConfigTest, ConfigFileAppliesFirstThenOptionsOverride)
{
	std::string path =
		write("over.ini", "[switch]\nburst = 16\nforward-mode = io\n" + kTwoPorts);
	SwitchConfig config;
	ASSERT_EQ(parseArgs({ "--burst", "64", "--burst=128", "--config", path }, config),
		  std::nullopt);
	EXPECT_EQ(config.burst, 128u);
	EXPECT_EQ(config.mode, ForwardMode::Io) << "what the options do not set";
	EXPECT_EQ(config.ports.size(), 2u);
}

TEST(SwitchConfig, ForwardModeOption)
{
	SwitchConfig config;
	ASSERT_EQ(parseArgs({ "--forward-mode=macswap" }, config), std::nullopt);
	EXPECT_EQ(config.mode, ForwardMode::MacSwap);
	SwitchConfig txonly;
	ASSERT_EQ(parseArgs({ "--forward-mode", "txonly", "--txpkts", "2000,2000" }, txonly),
		  std::nullopt);
	EXPECT_EQ(txonly.mode, ForwardMode::TxOnly);
	EXPECT_EQ(txonly.txSegmentBytes, (std::vector<unsigned>{ 2000, 2000 }));

	ConfigError error = parseBad({ "--forward-mode", "csum" });
	EXPECT_EQ(error.key, "--forward-mode");
	EXPECT_EQ(error.file, "");
	EXPECT_EQ(parseBad({ "--txpkts", "20" }).key, "--txpkts");
}

TEST(SwitchConfig, BurstOptionRange)
{
	EXPECT_EQ(parseBad({ "--burst", "0" }).reason, "--burst must be 1 to 512, not '0'");
	EXPECT_EQ(parseBad({ "--burst", "513" }).key, "--burst");
	EXPECT_EQ(parseBad({ "--burst", "32k" }).key, "--burst");
	SwitchConfig config;
	ASSERT_EQ(parseArgs({ "--burst", "512" }, config), std::nullopt);
	EXPECT_EQ(config.burst, 512u);
}

TEST(SwitchConfig, StatsPeriodAndMacAgingOptions)
{
	SwitchConfig config;
	ASSERT_EQ(parseArgs({ "--stats-period", "10", "--mac-aging-time", "10" }, config),
		  std::nullopt);
	EXPECT_EQ(config.statsPeriodS, 10u);
	EXPECT_EQ(config.macAgingS, 10u);
	EXPECT_EQ(parseBad({ "--stats-period", "3601" }).key, "--stats-period");
	EXPECT_EQ(parseBad({ "--mac-aging-time", "9" }).key, "--mac-aging-time");
}

TEST(SwitchConfig, InteractiveAndAutoStartOptions)
{
	SwitchConfig config;
	ASSERT_EQ(parseArgs({}, config), std::nullopt);
	EXPECT_FALSE(config.interactive);
	EXPECT_FALSE(config.autoStart);
	SwitchConfig shortForm;
	ASSERT_EQ(parseArgs({ "-i" }, shortForm), std::nullopt);
	EXPECT_TRUE(shortForm.interactive);
	SwitchConfig longForm;
	ASSERT_EQ(parseArgs({ "--interactive", "--auto-start" }, longForm), std::nullopt);
	EXPECT_TRUE(longForm.interactive);
	EXPECT_TRUE(longForm.autoStart);
}

TEST(SwitchConfig, RxqAffinityOptionByNameOrIndex)
{
	SwitchConfig config;
	ASSERT_EQ(parseArgs({ "--rxq-affinity", "vm1:0:3,1:0:4" }, config), std::nullopt);
	ASSERT_EQ(config.ports.size(), 2u);
	ASSERT_EQ(config.ports[0].rxqAffinity.size(), 1u);
	EXPECT_EQ(config.ports[0].rxqAffinity[0].queue, 0u);
	EXPECT_EQ(config.ports[0].rxqAffinity[0].lcore, 3u);
	ASSERT_EQ(config.ports[1].rxqAffinity.size(), 1u);
	EXPECT_EQ(config.ports[1].rxqAffinity[0].lcore, 4u);
}

TEST(SwitchConfig, RxqAffinityOptionMayNameALaterPort)
{
	SwitchConfig config;
	ASSERT_EQ(parseArgs({ "--rxq-affinity", "port0:1:2", "--port",
			      "vhost-user:path=/tmp/a.sock,queues=2" },
			    config),
		  std::nullopt);
	ASSERT_EQ(config.ports[0].rxqAffinity.size(), 1u);
	EXPECT_EQ(config.ports[0].rxqAffinity[0].queue, 1u);
}

TEST_F(SwitchConfigTest, RxqAffinityOptionReplacesTheFilesForThePortsItNames)
{
	std::string path = write("aff.ini", "[port.a]\ntype = vhost-user\npath = a\nqueues = 2\n"
					    "rxq-affinity = 0:1,1:2\n"
					    "[port.b]\ntype = vhost-user\npath = b\n"
					    "rxq-affinity = 0:5\n");
	SwitchConfig config;
	ASSERT_EQ(parseArgs({ "-f", path, "--rxq-affinity", "a:1:7" }, config), std::nullopt);
	ASSERT_EQ(config.ports[0].rxqAffinity.size(), 1u);
	EXPECT_EQ(config.ports[0].rxqAffinity[0].lcore, 7u);
	ASSERT_EQ(config.ports[1].rxqAffinity.size(), 1u);
	EXPECT_EQ(config.ports[1].rxqAffinity[0].lcore, 5u);
}

TEST(SwitchConfig, RejectsBadRxqAffinityOption)
{
	for (const char *spec : { "vm3:0:1", "2:0:1", "vm1:1:1", "vm1:0:128", "vm1:0:1,vm1:0:2",
				  "vm1:0", "vm1:0:1:2", "vm1:x:1", "" }) {
		ConfigError error = parseBad({ "--rxq-affinity", spec });
		EXPECT_EQ(error.key, "--rxq-affinity") << spec;
	}
	SwitchConfig config;
	config.ports.push_back(vhostPort("a", "a"));
	EXPECT_TRUE(parseRxqAffinity("a:0:1,b:0:1", config));
	EXPECT_TRUE(config.ports[0].rxqAffinity.empty()) << "unchanged on error";
}

TEST(SwitchConfig, HelpSetsHelpAndChangesNothing)
{
	for (const char *option : { "-h", "--help" }) {
		SwitchConfig config;
		bool help = false;
		ASSERT_EQ(parseArgs({ "--burst", "64", option }, config, help), std::nullopt);
		EXPECT_TRUE(help);
		EXPECT_EQ(config.burst, SwitchConfig{}.burst);
		EXPECT_TRUE(config.ports.empty());
	}
	SwitchConfig config;
	bool help = true;
	ASSERT_EQ(parseArgs({}, config, help), std::nullopt);
	EXPECT_FALSE(help);
}

TEST(SwitchConfig, RejectsUnknownOptions)
{
	ConfigError longOption = parseBad({ "--bogus", "1" });
	EXPECT_EQ(longOption.key, "--bogus");
	EXPECT_NE(longOption.reason.find("unknown option"), std::string::npos);
	EXPECT_EQ(parseBad({ "-x" }).key, "-x");
	EXPECT_EQ(parseBad({ "--bogus=1" }).key, "--bogus");
	ConfigError value = parseBad({ "--auto-start=yes" });
	EXPECT_EQ(value.key, "--auto-start");
	EXPECT_NE(value.reason.find("takes no value"), std::string::npos);
}

TEST(SwitchConfig, RejectsOptionsWithoutTheirValue)
{
	ConfigError burst = parseBad({ "--burst" });
	EXPECT_EQ(burst.key, "--burst");
	EXPECT_EQ(burst.reason, "--burst needs a value");
	EXPECT_EQ(parseBad({ "-i", "-f" }).key, "--config");
}

TEST(SwitchConfig, RejectsPositionalArguments)
{
	EXPECT_NE(parseBad({ "-i", "extra" }).reason.find("'extra'"), std::string::npos);
	EXPECT_NE(parseBad({ "-i", "--", "extra" }).reason.find("'extra'"), std::string::npos);
}

TEST(SwitchConfig, RejectsConfigFileTwice)
{
	std::string path = kSourceDir + "/config/default.ini";
	EXPECT_EQ(parseBad({ "-f", path, "--config", path }).key, "--config");
}

TEST(SwitchConfig, RejectsMissingConfigFileOnTheCommandLine)
{
	ConfigError error = parseBad({ "-f", "/nonexistent/vub.ini" });
	EXPECT_EQ(error.file, "/nonexistent/vub.ini");
}

TEST_F(SwitchConfigTest, RejectsAConfigurationWithoutPorts)
{
	std::string path = write("noports.ini", "[switch]\nburst = 32\n");
	ConfigError error = parseBad({ "-f", path });
	EXPECT_NE(error.reason.find("no ports"), std::string::npos);
}

TEST(SwitchConfig, RejectsACommandLinePortOnTheFilesSocket)
{
	ConfigError error = parseBad({ "-f", kSourceDir + "/config/default.ini", "--runtime-dir",
				       "/srv/vub", "--port", "vhost-user:path=/srv/vub/vm2.sock" });
	EXPECT_EQ(error.key, "--port");
	EXPECT_NE(error.reason.find("vm2"), std::string::npos);
}

TEST(SwitchConfig, RejectsASocketPathTooLongForUnixSockets)
{
	ConfigError error = parseBad({ "--runtime-dir", "/" + std::string(120, 'd'), "--port",
				       "vhost-user:path=a.sock" });
	EXPECT_EQ(error.key, "--port");
	EXPECT_NE(error.reason.find("longer"), std::string::npos);
}

TEST(SwitchConfig, ParsesTheCommandLineAgainAndAgain)
{
	for (int i = 0; i < 3; i++) {
		SwitchConfig config;
		ASSERT_EQ(parseArgs({ "-i", "--burst", "8" }, config), std::nullopt);
		EXPECT_EQ(config.burst, 8u);
		EXPECT_TRUE(parseBad({ "--burst", "0" }).reason.size());
	}
}

TEST(SwitchConfig, FailedParseLeavesTheConfigUnchanged)
{
	SwitchConfig config;
	config.burst = 3;
	ASSERT_TRUE(parseArgs({ "--burst", "64", "--stats-period", "x" }, config));
	EXPECT_EQ(config.burst, 3u);
	EXPECT_TRUE(config.ports.empty());
}

/* ---- the rest ---- */

TEST(SwitchConfig, ErrorMessageLeavesOutWhatIsEmpty)
{
	EXPECT_EQ((ConfigError{ "a.ini", "switch", "burst", "why" }).message(),
		  "a.ini: [switch] burst: why");
	EXPECT_EQ((ConfigError{ "a.ini", "port.x", "", "why" }).message(), "a.ini: [port.x] why");
	EXPECT_EQ((ConfigError{ "a.ini", "", "", "why" }).message(), "a.ini: why");
	EXPECT_EQ((ConfigError{ "", "", "--burst", "why" }).message(), "--burst: why");
}

TEST(SwitchConfig, ForwardModeNamesRoundTrip)
{
	for (ForwardMode mode : { ForwardMode::L2Switch, ForwardMode::Io, ForwardMode::Mac,
				  ForwardMode::MacSwap, ForwardMode::RxOnly, ForwardMode::TxOnly })
		EXPECT_EQ(parseForwardMode(forwardModeName(mode)), mode);
	EXPECT_EQ(parseForwardMode("5tuple"), std::nullopt);
}

TEST(SwitchConfig, DefaultRuntimeDirFollowsTheUser)
{
	if (geteuid() == 0) {
		EXPECT_EQ(defaultRuntimeDir(), "/run/vub");
		return;
	}
	const char *saved = std::getenv("XDG_RUNTIME_DIR");
	std::string savedValue = saved ? saved : "";
	setenv("XDG_RUNTIME_DIR", "/run/user/1234", 1);
	EXPECT_EQ(defaultRuntimeDir(), "/run/user/1234/vub");
	unsetenv("XDG_RUNTIME_DIR");
	EXPECT_EQ(defaultRuntimeDir(), "/tmp/vub");
	if (saved)
		setenv("XDG_RUNTIME_DIR", savedValue.c_str(), 1);
}

TEST(SwitchConfig, UsageDocumentsEveryOption)
{
	std::string usage = usageText();
	EXPECT_EQ(usage.rfind("Usage: vub-switch [EAL options] -- [options]", 0), 0u);
	for (const char *text :
	     { "-f, --config",	   "--port",	     "--forward-mode", "-i, --interactive",
	       "--auto-start",	   "--stats-period", "--burst",	       "--rxq-affinity",
	       "--mac-aging-time", "--txpkts",	     "--runtime-dir",  "-h, --help",
	       "vhost-user:path=", "ethdev:DEVARGS", "l2switch",       "macswap",
	       "rxonly",	   "txonly",	     "vm1.sock",       "main lcore" })
		EXPECT_NE(usage.find(text), std::string::npos) << text;
}
