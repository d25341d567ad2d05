/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

/*
 * vub-switch's configuration: an ini file (iniparser), the embedded config/default.ini, and
 * the command line, all into one SwitchConfig. Plain logic, no DPDK: unit-tested alone.
 */
namespace vub::sw {

enum class ForwardMode { L2Switch, Io, Mac, MacSwap, RxOnly, TxOnly };

/** \brief "l2switch", "io", "mac", "macswap", "rxonly", "txonly". */
const char *forwardModeName(ForwardMode mode);
/** \brief The mode named \a name (lower case, as forwardModeName()). \return nullopt if none */
std::optional<ForwardMode> parseForwardMode(std::string_view name);

enum class PortType { VhostUser, Ethdev };

/** \brief Lcore ids are below this: RTE_MAX_LCORE of Debian's DPDK. */
inline constexpr unsigned kMaxLcores = 128;

/** \brief Rx queue \a queue of a port is polled by lcore \a lcore (OVS's pmd-rxq-affinity). */
struct RxqAffinity {
	unsigned queue;
	unsigned lcore;
};

struct PortConfig {
	std::string name; /**< the ini section's name after "port.", or "portN" */
	PortType type = PortType::VhostUser;
	unsigned queues = 1; /**< vhost-user: queue pairs (1-8); ethdev: rx and tx queues */
	std::vector<RxqAffinity> rxqAffinity;

	/* vhost-user */
	std::string path;    /**< the socket; a relative path is under SwitchConfig::runtimeDir */
	bool client = false; /**< connect to the front-end's socket, reconnecting with back-off */
	/** offer VIRTIO_F_IOMMU_PLATFORM: guests behind a vIOMMU (DPDK's iommu-support) */
	bool iommuSupport = false;

	/* ethdev */
	std::string devargs; /**< a PCI address or a vdev: "net_ring0", "net_tap0,iface=vub0" */
	unsigned rxDescriptors = 1024;
	unsigned txDescriptors = 1024;
	bool promiscuous = true;
};

struct SwitchConfig {
	ForwardMode mode = ForwardMode::L2Switch;
	unsigned burst = 32;	   /**< 1-512 */
	unsigned statsPeriodS = 0; /**< 0: no periodic stats */
	unsigned macAgingS = 300;  /**< a MAC not seen for this long is forgotten (OVS's default) */
	unsigned macTableSize = 8192;
	unsigned mbufsPerNode = 16383;
	std::vector<unsigned> txSegmentBytes{ 64 }; /**< txonly frames: `set txpkts` */
	std::string runtimeDir;			    /**< where relative socket paths live */
	bool interactive = false;		    /**< -i: the vub> prompt on stdin */
	bool autoStart = false; /**< forward from the start even with -i (always without) */
	std::vector<PortConfig> ports;
};

/**
 * \brief Where a configuration problem is and why; empty fields do not apply. For the command
 * line \a file and \a section are empty and \a key is the option ("--burst").
 */
struct ConfigError {
	std::string file;
	std::string section;
	std::string key;
	std::string reason;

	/** \brief "FILE: [SECTION] KEY: REASON", leaving out what is empty. */
	std::string message() const;
};

/** \brief The runtime directory: /run/vub as root, else $XDG_RUNTIME_DIR/vub or /tmp/vub. */
std::string defaultRuntimeDir();

/** \brief The text of config/default.ini, compiled in. */
std::string_view embeddedDefaultConfig();

/**
 * \brief Read the ini file \a path into \a config (which keeps what the file does not set).
 * The file's ports, [port.NAME] sections in file order, are appended to config.ports; socket
 * paths stay as written (parseCommandLine() resolves them).
 * Any unknown section or key, bad value or missing required key is an error: nothing is
 * half-applied that a caller could start with.
 * \return nullopt on success; else the error, and \a config is left unchanged
 *
 * Not reentrant: iniparser's error callback is process-wide (one control thread calls this).
 */
std::optional<ConfigError> loadConfigFile(const std::string &path, SwitchConfig &config);
/** \brief The same from ini text; \a name stands for the file in errors. */
std::optional<ConfigError> loadConfigText(std::string_view text, const std::string &name,
					  SwitchConfig &config);

/**
 * \brief Parse a --port argument: "vhost-user:path=SOCK[,queues=N][,client=1]" or
 * "ethdev:DEVARGS" (the devargs verbatim, commas included).
 * \return nullopt on success, and \a port holds the spec with defaults for the rest, its name
 * untouched; else the error (key "--port") and \a port is unchanged
 */
std::optional<ConfigError> parsePortSpec(std::string_view spec, PortConfig &port);

/**
 * \brief Parse testpmd's `set txpkts` list, "LEN[,LEN...]" (at most 8 segments, 60 to 9728
 * bytes in all), into \a bytes. \return the reason when it is not one.
 */
std::optional<std::string> parseTxSegments(std::string_view text, std::vector<unsigned> &bytes);

/**
 * \brief Parse a --rxq-affinity argument, "PORT:QUEUE:LCORE[,...]" with PORT a port's name or
 * index in \a config, into the ports' rxqAffinity. Each port the spec names gets the spec's
 * list for it in place of its own; the others keep theirs.
 * \return nullopt on success; else the error (key "--rxq-affinity") and \a config is unchanged
 */
std::optional<ConfigError> parseRxqAffinity(std::string_view spec, SwitchConfig &config);

/**
 * \brief Parse the application's arguments (after EAL's; argv[0] is the program) into \a config:
 * -f FILE first, then the other options over it in order (--rxq-affinity after every --port);
 * with neither -f nor --port, the embedded default. Then runtimeDir is set (defaultRuntimeDir()
 * unless given) and relative socket paths are resolved against it; at least one port is needed.
 * Sets \a help for -h/--help and returns at once, \a config unchanged.
 * \return nullopt on success; else the error and \a config is unchanged
 *
 * Not reentrant: getopt's state and iniparser's error callback are process-wide.
 */
std::optional<ConfigError> parseCommandLine(int argc, char **argv, SwitchConfig &config,
					    bool &help);

/** \brief The --help text. */
std::string usageText();

} /* namespace vub::sw */
