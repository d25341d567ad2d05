/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <fcntl.h>
#include <getopt.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <utility>

#include <iniparser/iniparser.h>

#include "vub/base/unique_fd.h"

#include "default_config.h"

namespace vub::sw {

namespace {

constexpr const char *kDefaultConfigName = "default.ini (embedded)";

constexpr unsigned kMaxVhostQueues = 8;
constexpr unsigned kMaxEthdevQueues = 64;
constexpr unsigned kMaxTxSegments = 8;
constexpr unsigned kMinFrameBytes = 60;
constexpr unsigned kMaxFrameBytes = 9728;

struct ModeName {
	ForwardMode mode;
	const char *name;
};

constexpr std::array<ModeName, 6> kForwardModes = { {
	{ ForwardMode::L2Switch, "l2switch" },
	{ ForwardMode::Io, "io" },
	{ ForwardMode::Mac, "mac" },
	{ ForwardMode::MacSwap, "macswap" },
	{ ForwardMode::RxOnly, "rxonly" },
	{ ForwardMode::TxOnly, "txonly" },
} };

constexpr const char *kForwardModeList = "l2switch, io, mac, macswap, rxonly or txonly";

/** Reasons name the value as the user wrote it: an ini key ("burst") or an option ("--burst"). */
std::string inQuotes(std::string_view text)
{
	return "'" + std::string(text) + "'";
}

std::string_view trim(std::string_view text)
{
	while (!text.empty() && (text.front() == ' ' || text.front() == '\t'))
		text.remove_prefix(1);
	while (!text.empty() && (text.back() == ' ' || text.back() == '\t'))
		text.remove_suffix(1);
	return text;
}

/** Split at every \a sep; "" gives one empty field. */
std::vector<std::string_view> split(std::string_view text, char sep)
{
	std::vector<std::string_view> fields;
	for (;;) {
		size_t at = text.find(sep);
		fields.push_back(text.substr(0, at));
		if (at == std::string_view::npos)
			return fields;
		text.remove_prefix(at + 1);
	}
}

bool equalsIgnoreCase(std::string_view a, std::string_view b)
{
	return a.size() == b.size() &&
	       std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
		       return std::tolower(static_cast<unsigned char>(x)) ==
			      std::tolower(static_cast<unsigned char>(y));
	       });
}

/** Decimal digits only: no sign, space, base prefix or trailing junk. */
bool parseDecimal(std::string_view text, unsigned long &value)
{
	value = 0;
	if (text.empty() || text.front() < '0' || text.front() > '9')
		return false;
	auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
	return ec == std::errc() && end == text.data() + text.size();
}

/** \return nullopt, or why \a text is not a number from \a min to \a max */
std::optional<std::string> parseNumber(std::string_view what, std::string_view text, unsigned min,
				       unsigned max, unsigned &out)
{
	unsigned long value;
	if (!parseDecimal(text, value) || value < min || value > max)
		return std::string(what) + " must be " + std::to_string(min) + " to " +
		       std::to_string(max) + ", not " + inQuotes(text);
	out = static_cast<unsigned>(value);
	return std::nullopt;
}

std::optional<bool> parseBoolText(std::string_view text)
{
	for (const char *yes : { "yes", "true", "on", "1" })
		if (equalsIgnoreCase(text, yes))
			return true;
	for (const char *no : { "no", "false", "off", "0" })
		if (equalsIgnoreCase(text, no))
			return false;
	return std::nullopt;
}

std::optional<std::string> parseBool(std::string_view what, std::string_view text, bool &out)
{
	std::optional<bool> value = parseBoolText(text);
	if (!value)
		return std::string(what) + " must be yes/no, true/false, on/off or 1/0, not " +
		       inQuotes(text);
	out = *value;
	return std::nullopt;
}

std::optional<std::string> parseMode(std::string_view what, std::string_view text, ForwardMode &out)
{
	std::optional<ForwardMode> mode = parseForwardMode(text);
	if (!mode)
		return std::string(what) + " must be " + kForwardModeList + ", not " +
		       inQuotes(text);
	out = *mode;
	return std::nullopt;
}

/** testpmd's "set txpkts": segment lengths, comma-separated. */
std::optional<std::string> parseTxSegments(std::string_view what, std::string_view text,
					   std::vector<unsigned> &out)
{
	std::vector<std::string_view> fields = split(text, ',');
	if (fields.size() > kMaxTxSegments)
		return std::string(what) + " has " + std::to_string(fields.size()) +
		       " segments, at most " + std::to_string(kMaxTxSegments) + ": " +
		       inQuotes(text);
	std::vector<unsigned> segments;
	unsigned long total = 0;
	for (std::string_view field : fields) {
		unsigned long bytes;
		if (!parseDecimal(trim(field), bytes) || bytes < 1 || bytes > kMaxFrameBytes)
			return std::string(what) +
			       " must be comma-separated segment lengths of 1 to " +
			       std::to_string(kMaxFrameBytes) + " bytes, not " + inQuotes(text);
		segments.push_back(static_cast<unsigned>(bytes));
		total += bytes;
	}
	if (total < kMinFrameBytes || total > kMaxFrameBytes)
		return std::string(what) + " adds up to " + std::to_string(total) +
		       " bytes; a frame is " + std::to_string(kMinFrameBytes) + " to " +
		       std::to_string(kMaxFrameBytes) + ": " + inQuotes(text);
	out = std::move(segments);
	return std::nullopt;
}

std::optional<std::string> parseNonEmpty(std::string_view what, std::string_view text,
					 std::string &out)
{
	if (text.empty())
		return std::string(what) + " must not be empty";
	out = text;
	return std::nullopt;
}

/** Checks an affinity entry against its port; \a prefix names where it came from. */
std::optional<std::string> checkAffinity(const std::string &prefix,
					 const std::vector<RxqAffinity> &list, RxqAffinity entry,
					 unsigned queues)
{
	if (entry.queue >= queues)
		return prefix + "queue " + std::to_string(entry.queue) +
		       " does not exist: the port has " +
		       (queues == 1 ? std::string("1 queue, queue 0")
				    : std::to_string(queues) + " queues, 0 to " +
					      std::to_string(queues - 1));
	if (entry.lcore >= kMaxLcores)
		return prefix + "lcore " + std::to_string(entry.lcore) + " must be below " +
		       std::to_string(kMaxLcores);
	for (const RxqAffinity &other : list)
		if (other.queue == entry.queue)
			return prefix + "queue " + std::to_string(entry.queue) +
			       " is given more than once";
	return std::nullopt;
}

/** The ini form of rxq-affinity: "QUEUE:LCORE,QUEUE:LCORE". */
std::optional<std::string> parseQueueAffinity(std::string_view what, std::string_view text,
					      unsigned queues, std::vector<RxqAffinity> &out)
{
	std::vector<RxqAffinity> list;
	for (std::string_view field : split(text, ',')) {
		std::vector<std::string_view> parts = split(trim(field), ':');
		unsigned long queue, lcore;
		if (parts.size() != 2 || !parseDecimal(parts[0], queue) ||
		    !parseDecimal(parts[1], lcore) || queue > UINT32_MAX || lcore > UINT32_MAX)
			return std::string(what) +
			       " must be QUEUE:LCORE pairs, comma-separated (\"0:2,1:3\"), not " +
			       inQuotes(text);
		RxqAffinity entry{ static_cast<unsigned>(queue), static_cast<unsigned>(lcore) };
		if (auto why = checkAffinity("", list, entry, queues))
			return why;
		list.push_back(entry);
	}
	out = std::move(list);
	return std::nullopt;
}

std::string resolveSocketPath(const std::string &path, const std::string &dir)
{
	std::filesystem::path resolved(path);
	if (resolved.is_relative())
		resolved = std::filesystem::path(dir) / resolved;
	return resolved.lexically_normal().string();
}

/** \return the index of the first vhost-user port whose socket an earlier one has, with it */
std::optional<std::pair<size_t, size_t>> findSharedSocket(const SwitchConfig &config,
							  const std::string &dir)
{
	std::vector<std::string> paths(config.ports.size());
	for (size_t i = 0; i < config.ports.size(); i++) {
		if (config.ports[i].type != PortType::VhostUser)
			continue;
		paths[i] = resolveSocketPath(config.ports[i].path, dir);
		for (size_t j = 0; j < i; j++)
			if (config.ports[j].type == PortType::VhostUser && paths[j] == paths[i])
				return std::pair{ i, j };
	}
	return std::nullopt;
}

std::string effectiveRuntimeDir(const SwitchConfig &config)
{
	return config.runtimeDir.empty() ? defaultRuntimeDir() : config.runtimeDir;
}

bool isPortName(std::string_view name)
{
	return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
		return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
	});
}

bool hasPort(const SwitchConfig &config, std::string_view name)
{
	return std::any_of(config.ports.begin(), config.ports.end(),
			   [&](const PortConfig &p) { return p.name == name; });
}

/* ---- ini files ---- */

struct IniKey {
	std::string name;
	std::string value;
};

struct IniSection {
	std::string name;
	std::vector<IniKey> keys;
};

/** iniparser reports through a process-wide printf-like callback: collect it during a load. */
std::string *gIniMessages = nullptr;

__attribute__((format(printf, 1, 2))) int collectIniMessage(const char *format, ...)
{
	char buffer[2048];
	va_list args;
	va_start(args, format);
	int n = std::vsnprintf(buffer, sizeof(buffer), format, args);
	va_end(args);
	if (gIniMessages && gIniMessages->empty())
		*gIniMessages = buffer;
	return n;
}

/**
 * iniparser's "iniparser: WHAT in PATH (LINE)[:\n-> TEXT]\n" into something for people, without
 * the /proc path it was given.
 */
std::string iniFailure(const std::string &message, const std::string &path)
{
	std::string text = message;
	if (text.rfind("iniparser: ", 0) == 0)
		text.erase(0, 11);
	while (!text.empty() && (text.back() == '\n' || text.back() == ':'))
		text.pop_back();
	std::string where = " in " + path + " (";
	size_t at = text.find(where);
	if (at == std::string::npos)
		return text.empty() ? "cannot be read" : text;
	std::string what = text.substr(0, at);
	size_t close = text.find(')', at);
	std::string line = text.substr(at + where.size(), close - at - where.size());
	std::string rest = close == std::string::npos ? "" : text.substr(close + 1);
	if (what == "syntax error" && rest.rfind(":\n-> ", 0) == 0)
		return "syntax error on line " + line + ": " + inQuotes(rest.substr(5)) +
		       " is neither [section], key = value nor a comment";
	return what + " on line " + line;
}

using Dictionary = std::unique_ptr<dictionary, decltype(&iniparser_freedict)>;

/** Parse the ini text behind \a fd (read from its start) into \a sections, in file order. */
std::optional<ConfigError> readIni(int fd, const std::string &file,
				   std::vector<IniSection> &sections)
{
	std::string messages;
	gIniMessages = &messages;
	iniparser_set_error_callback(collectIniMessage);
	std::string procPath = "/proc/self/fd/" + std::to_string(fd);
	Dictionary dict(iniparser_load(procPath.c_str()), iniparser_freedict);
	iniparser_set_error_callback(nullptr);
	gIniMessages = nullptr;
	if (!dict)
		return ConfigError{ file, "", "", iniFailure(messages, procPath) };

	/*
	 * Walk the dictionary itself: its entries are in file order, a section as "name" with no
	 * value, a key as "section:key" ("" for the section of a key above any section).
	 * A section given twice is merged; a key given twice keeps its last value.
	 */
	for (ssize_t i = 0; i < dict->size; i++) {
		const char *entry = dict->key[i];
		if (!entry)
			continue;
		if (!dict->val[i]) {
			std::string_view name = entry;
			bool known = name == "switch" ||
				     (name.substr(0, 5) == "port." && isPortName(name.substr(5)));
			if (!known)
				return ConfigError{
					file, entry, "",
					name.substr(0, 5) == "port."
						? "a port's name is letters, digits, '-' and '_'"
						: "unknown section: the sections are [switch] "
						  "and [port.NAME]"
				};
			sections.push_back(IniSection{ entry, {} });
			continue;
		}
		std::string_view key = entry;
		size_t colon = key.find(':');
		std::string_view section = key.substr(0, colon);
		std::string_view name = key.substr(colon + 1);
		if (section.empty())
			return ConfigError{ file, "", std::string(name),
					    "a key above every section: put it under [switch] or "
					    "[port.NAME]" };
		auto owner = std::find_if(sections.begin(), sections.end(),
					  [&](const IniSection &s) { return s.name == section; });
		if (owner == sections.end()) /* cannot happen: a section precedes its keys */
			return ConfigError{ file, std::string(section), std::string(name),
					    "a key outside its section" };
		owner->keys.push_back(IniKey{ std::string(name), dict->val[i] });
	}
	return std::nullopt;
}

std::optional<ConfigError> applySwitchSection(const std::string &file, const IniSection &section,
					      SwitchConfig &config)
{
	for (const IniKey &key : section.keys) {
		const std::string &k = key.name;
		const std::string &v = key.value;
		std::optional<std::string> why;
		if (k == "forward-mode")
			why = parseMode(k, v, config.mode);
		else if (k == "burst")
			why = parseNumber(k, v, 1, 512, config.burst);
		else if (k == "stats-period")
			why = parseNumber(k, v, 0, 3600, config.statsPeriodS);
		else if (k == "mac-aging-time")
			why = parseNumber(k, v, 10, 86400, config.macAgingS);
		else if (k == "mac-table-size")
			why = parseNumber(k, v, 16, 1048576, config.macTableSize);
		else if (k == "mbufs")
			why = parseNumber(k, v, 1024, 1048576, config.mbufsPerNode);
		else if (k == "txpkts")
			why = parseTxSegments(k, v, config.txSegmentBytes);
		else if (k == "runtime-dir")
			why = parseNonEmpty(k, v, config.runtimeDir);
		else if (k == "auto-start")
			why = parseBool(k, v, config.autoStart);
		else
			why = "unknown key: [switch] has forward-mode, burst, stats-period, "
			      "mac-aging-time, mac-table-size, mbufs, txpkts, runtime-dir and "
			      "auto-start";
		if (why)
			return ConfigError{ file, section.name, k, std::move(*why) };
	}
	return std::nullopt;
}

std::optional<ConfigError> parsePortSection(const std::string &file, const IniSection &section,
					    PortConfig &port)
{
	auto fail = [&](const std::string &key, std::string reason) {
		return ConfigError{ file, section.name, key, std::move(reason) };
	};
	auto find = [&](std::string_view name) -> const IniKey * {
		for (const IniKey &key : section.keys)
			if (key.name == name)
				return &key;
		return nullptr;
	};

	port = PortConfig{};
	port.name = section.name.substr(5);
	const IniKey *type = find("type");
	if (!type)
		return fail("type", "type is required: vhost-user or ethdev");
	if (type->value == "vhost-user")
		port.type = PortType::VhostUser;
	else if (type->value == "ethdev")
		port.type = PortType::Ethdev;
	else
		return fail("type",
			    "type must be vhost-user or ethdev, not " + inQuotes(type->value));
	bool vhost = port.type == PortType::VhostUser;
	const char *typeName = vhost ? "vhost-user" : "ethdev";

	const IniKey *affinity = nullptr;
	for (const IniKey &key : section.keys) {
		const std::string &k = key.name;
		const std::string &v = key.value;
		bool vhostKey = k == "path" || k == "client" || k == "iommu-support";
		bool ethdevKey = k == "devargs" || k == "rxd" || k == "txd" || k == "promiscuous";
		std::optional<std::string> why;
		if ((vhostKey && !vhost) || (ethdevKey && vhost))
			why = k + " is a key of " + (vhost ? "ethdev" : "vhost-user") +
			      " ports; this port is " + typeName;
		else if (k == "type")
			continue;
		else if (k == "queues")
			why = parseNumber(k, v, 1, vhost ? kMaxVhostQueues : kMaxEthdevQueues,
					  port.queues);
		else if (k == "rxq-affinity")
			affinity = &key; /* once queues is known */
		else if (k == "path")
			why = parseNonEmpty(k, v, port.path);
		else if (k == "client")
			why = parseBool(k, v, port.client);
		else if (k == "iommu-support")
			why = parseBool(k, v, port.iommuSupport);
		else if (k == "devargs")
			why = parseNonEmpty(k, v, port.devargs);
		else if (k == "rxd")
			why = parseNumber(k, v, 64, 32768, port.rxDescriptors);
		else if (k == "txd")
			why = parseNumber(k, v, 64, 32768, port.txDescriptors);
		else if (k == "promiscuous")
			why = parseBool(k, v, port.promiscuous);
		else
			why = std::string("unknown key: ") + (vhost ? "a " : "an ") + typeName +
			      " port has type, queues, " + "rxq-affinity, " +
			      (vhost ? "path, client and iommu-support" : "devargs, rxd, txd and promiscuous");
		if (why)
			return fail(k, std::move(*why));
	}
	if (affinity) {
		if (auto why = parseQueueAffinity(affinity->name, affinity->value, port.queues,
						  port.rxqAffinity))
			return fail(affinity->name, std::move(*why));
	}
	if (vhost && port.path.empty())
		return fail("path", "a vhost-user port needs path, its unix socket");
	if (!vhost && port.devargs.empty())
		return fail("devargs", "an ethdev port needs devargs: a PCI address or a vdev");
	return std::nullopt;
}

std::optional<ConfigError> loadConfigFd(int fd, const std::string &file, SwitchConfig &config)
{
	std::vector<IniSection> sections;
	if (auto error = readIni(fd, file, sections))
		return error;

	SwitchConfig loaded = config;
	for (const IniSection &section : sections) {
		if (section.name == "switch") {
			if (auto error = applySwitchSection(file, section, loaded))
				return error;
			continue;
		}
		PortConfig port;
		if (auto error = parsePortSection(file, section, port))
			return error;
		if (hasPort(loaded, port.name))
			return ConfigError{ file, section.name, "",
					    "there is already a port named " +
						    inQuotes(port.name) };
		loaded.ports.push_back(std::move(port));
	}
	if (auto shared = findSharedSocket(loaded, effectiveRuntimeDir(loaded))) {
		const PortConfig &port = loaded.ports[shared->first];
		const PortConfig &first = loaded.ports[shared->second];
		return ConfigError{ file, "port." + port.name, "path",
				    "port " + port.name + " has the socket of port " + first.name +
					    ": " + inQuotes(port.path) };
	}
	config = std::move(loaded);
	return std::nullopt;
}

/* ---- the command line ---- */

enum LongOption : int {
	kOptPort = 256,
	kOptForwardMode,
	kOptAutoStart,
	kOptStatsPeriod,
	kOptBurst,
	kOptRxqAffinity,
	kOptMacAgingTime,
	kOptTxpkts,
	kOptRuntimeDir,
};

constexpr std::array<option, 13> kLongOptions = { {
	{ "config", required_argument, nullptr, 'f' },
	{ "port", required_argument, nullptr, kOptPort },
	{ "forward-mode", required_argument, nullptr, kOptForwardMode },
	{ "interactive", no_argument, nullptr, 'i' },
	{ "auto-start", no_argument, nullptr, kOptAutoStart },
	{ "stats-period", required_argument, nullptr, kOptStatsPeriod },
	{ "burst", required_argument, nullptr, kOptBurst },
	{ "rxq-affinity", required_argument, nullptr, kOptRxqAffinity },
	{ "mac-aging-time", required_argument, nullptr, kOptMacAgingTime },
	{ "txpkts", required_argument, nullptr, kOptTxpkts },
	{ "runtime-dir", required_argument, nullptr, kOptRuntimeDir },
	{ "help", no_argument, nullptr, 'h' },
	{ nullptr, 0, nullptr, 0 },
} };

/** "-" + the option's short name, or "--" + its long name. */
std::string optionName(int val)
{
	for (const option &o : kLongOptions)
		if (o.name && o.val == val)
			return std::string("--") + o.name;
	return std::string("-") + static_cast<char>(val);
}

/** What getopt_long returned for an option the user misspelled, or gave without its value. */
ConfigError badOption(int result, int argc, char **argv)
{
	std::string text = optind >= 1 && optind - 1 < argc ? argv[optind - 1] : "";
	if (result == ':') {
		std::string name = optopt ? optionName(optopt) : text;
		return ConfigError{ "", "", name, name + " needs a value" };
	}
	std::string_view name = text;
	if (name.substr(0, 2) == "--") {
		std::string_view option = name.substr(0, name.find('='));
		if (option.size() < name.size())
			for (const struct option &o : kLongOptions)
				if (o.name && o.has_arg == no_argument &&
				    option.substr(2) == o.name)
					return ConfigError{ "", "", std::string(option),
							    std::string(option) +
								    " takes no value" };
		return ConfigError{ "", "", std::string(option),
				    "unknown option " + inQuotes(option) + " (see --help)" };
	}
	std::string option = optopt ? std::string("-") + static_cast<char>(optopt) : text;
	return ConfigError{ "", "", option,
			    "unknown option " + inQuotes(option) + " (see --help)" };
}

struct CommandLineOption {
	int val;
	std::string arg;
};

/** The first "portN" with N >= \a index that no port has. */
std::string commandLinePortName(const SwitchConfig &config, size_t index)
{
	for (;; index++) {
		std::string name = "port" + std::to_string(index);
		if (!hasPort(config, name))
			return name;
	}
}

std::optional<ConfigError> applyOption(const CommandLineOption &o, SwitchConfig &config)
{
	std::string what = optionName(o.val);
	std::optional<std::string> why;
	switch (o.val) {
	case kOptPort: {
		PortConfig port;
		if (auto error = parsePortSpec(o.arg, port))
			return error;
		port.name = commandLinePortName(config, config.ports.size());
		config.ports.push_back(std::move(port));
		break;
	}
	case kOptForwardMode:
		why = parseMode(what, o.arg, config.mode);
		break;
	case 'i':
		config.interactive = true;
		break;
	case kOptAutoStart:
		config.autoStart = true;
		break;
	case kOptStatsPeriod:
		why = parseNumber(what, o.arg, 0, 3600, config.statsPeriodS);
		break;
	case kOptBurst:
		why = parseNumber(what, o.arg, 1, 512, config.burst);
		break;
	case kOptRxqAffinity:
		return parseRxqAffinity(o.arg, config);
	case kOptMacAgingTime:
		why = parseNumber(what, o.arg, 10, 86400, config.macAgingS);
		break;
	case kOptTxpkts:
		why = parseTxSegments(what, o.arg, config.txSegmentBytes);
		break;
	case kOptRuntimeDir:
		why = parseNonEmpty(what, o.arg, config.runtimeDir);
		break;
	default: /* cannot happen: getopt_long returns the options of kLongOptions */
		why = "unhandled option";
		break;
	}
	if (why)
		return ConfigError{ "", "", what, std::move(*why) };
	return std::nullopt;
}

} /* namespace */

const char *forwardModeName(ForwardMode mode)
{
	for (const ModeName &m : kForwardModes)
		if (m.mode == mode)
			return m.name;
	return "?";
}

std::optional<ForwardMode> parseForwardMode(std::string_view name)
{
	for (const ModeName &m : kForwardModes)
		if (name == m.name)
			return m.mode;
	return std::nullopt;
}

std::string ConfigError::message() const
{
	std::string text;
	if (!file.empty())
		text += file + ": ";
	if (!section.empty())
		text += "[" + section + "] ";
	if (!key.empty())
		text += key + ": ";
	return text + reason;
}

std::string defaultRuntimeDir()
{
	if (geteuid() == 0)
		return "/run/vub";
	const char *xdg = std::getenv("XDG_RUNTIME_DIR");
	if (xdg && *xdg)
		return std::string(xdg) + "/vub";
	return "/tmp/vub";
}

std::string_view embeddedDefaultConfig()
{
	return { kDefaultConfigText, sizeof(kDefaultConfigText) - 1 };
}

std::optional<ConfigError> loadConfigFile(const std::string &path, SwitchConfig &config)
{
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd)
		return ConfigError{ path, "", "", std::string("cannot open: ") + strerror(errno) };
	struct stat st;
	if (fstat(fd.get(), &st) < 0)
		return ConfigError{ path, "", "", std::string("cannot stat: ") + strerror(errno) };
	if (S_ISDIR(st.st_mode))
		return ConfigError{ path, "", "", "is a directory, not an ini file" };
	return loadConfigFd(fd.get(), path, config);
}

std::optional<ConfigError> loadConfigText(std::string_view text, const std::string &name,
					  SwitchConfig &config)
{
	/* iniparser 4.1 reads files only: hand it the text as one in memory. */
	UniqueFd fd(memfd_create("vub-config", MFD_CLOEXEC));
	if (!fd)
		return ConfigError{ name, "", "", std::string("memfd_create: ") + strerror(errno) };
	while (!text.empty()) {
		ssize_t n = ::write(fd.get(), text.data(), text.size());
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return ConfigError{ name, "", "",
					    std::string("write: ") + strerror(errno) };
		text.remove_prefix(static_cast<size_t>(n));
	}
	return loadConfigFd(fd.get(), name, config);
}

std::optional<std::string> parseTxSegments(std::string_view text, std::vector<unsigned> &bytes)
{
	return parseTxSegments("txpkts", text, bytes);
}

std::optional<ConfigError> parsePortSpec(std::string_view spec, PortConfig &port)
{
	static constexpr const char *kWhat = "--port";
	auto fail = [&](std::string reason) {
		return ConfigError{ "", "", kWhat, std::move(reason) };
	};
	static constexpr std::string_view kVhost = "vhost-user:";
	static constexpr std::string_view kEthdev = "ethdev:";

	PortConfig parsed;
	parsed.name = port.name;
	if (spec.substr(0, kEthdev.size()) == kEthdev) {
		parsed.type = PortType::Ethdev;
		parsed.devargs = spec.substr(kEthdev.size());
		if (parsed.devargs.empty())
			return fail("ethdev: needs devargs, a PCI address or a vdev "
				    "(\"ethdev:net_tap0,iface=vub0\")");
		port = std::move(parsed);
		return std::nullopt;
	}
	if (spec.substr(0, kVhost.size()) != kVhost)
		return fail("--port must be vhost-user:path=SOCK[,queues=N][,client=0|1][,iommu-support=0|1] or "
			    "ethdev:DEVARGS, not " +
			    inQuotes(spec));

	parsed.type = PortType::VhostUser;
	std::vector<std::string_view> seen;
	for (std::string_view field : split(spec.substr(kVhost.size()), ',')) {
		size_t eq = field.find('=');
		if (eq == std::string_view::npos)
			return fail("vhost-user: takes key=value settings, not " + inQuotes(field) +
				    " in " + inQuotes(spec));
		std::string_view key = field.substr(0, eq);
		std::string_view value = field.substr(eq + 1);
		if (std::find(seen.begin(), seen.end(), key) != seen.end())
			return fail(std::string(key) + " is given twice in " + inQuotes(spec));
		seen.push_back(key);
		std::optional<std::string> why;
		if (key == "path")
			why = parseNonEmpty("path", value, parsed.path);
		else if (key == "queues")
			why = parseNumber("queues", value, 1, kMaxVhostQueues, parsed.queues);
		else if (key == "client")
			why = parseBool("client", value, parsed.client);
		else if (key == "iommu-support")
			why = parseBool("iommu-support", value, parsed.iommuSupport);
		else
			why = "unknown key " + inQuotes(key) +
			      ": vhost-user: takes path, queues, client and iommu-support";
		if (why)
			return fail(std::move(*why) + " in " + inQuotes(spec));
	}
	if (parsed.path.empty())
		return fail("vhost-user: needs path=SOCK: " + inQuotes(spec));
	port = std::move(parsed);
	return std::nullopt;
}

std::optional<ConfigError> parseRxqAffinity(std::string_view spec, SwitchConfig &config)
{
	static constexpr const char *kWhat = "--rxq-affinity";
	auto fail = [&](std::string reason) {
		return ConfigError{ "", "", kWhat, std::move(reason) };
	};

	/* Per port, the spec's list; the ports named get it in place of theirs. */
	std::vector<std::optional<std::vector<RxqAffinity>>> lists(config.ports.size());
	for (std::string_view field : split(spec, ',')) {
		std::vector<std::string_view> parts = split(trim(field), ':');
		unsigned long queue, lcore;
		if (parts.size() != 3 || !parseDecimal(parts[1], queue) ||
		    !parseDecimal(parts[2], lcore) || queue > UINT32_MAX || lcore > UINT32_MAX)
			return fail("--rxq-affinity must be PORT:QUEUE:LCORE, comma-separated "
				    "(\"vm1:0:2,vm1:1:3\"), not " +
				    inQuotes(spec));
		std::string_view portText = parts[0];
		size_t index = config.ports.size();
		for (size_t i = 0; i < config.ports.size(); i++)
			if (equalsIgnoreCase(config.ports[i].name, portText))
				index = i;
		if (index == config.ports.size()) {
			unsigned long number;
			if (parseDecimal(portText, number) && number < config.ports.size())
				index = number;
		}
		if (index == config.ports.size())
			return fail("no port is named or numbered " + inQuotes(portText) + " in " +
				    inQuotes(field));
		const PortConfig &port = config.ports[index];
		if (!lists[index])
			lists[index].emplace();
		std::vector<RxqAffinity> &list = *lists[index];
		RxqAffinity entry{ static_cast<unsigned>(queue), static_cast<unsigned>(lcore) };
		if (auto why = checkAffinity("port " + port.name + ": ", list, entry, port.queues))
			return fail(std::move(*why));
		list.push_back(entry);
	}
	for (size_t i = 0; i < lists.size(); i++)
		if (lists[i])
			config.ports[i].rxqAffinity = std::move(*lists[i]);
	return std::nullopt;
}

std::optional<ConfigError> parseCommandLine(int argc, char **argv, SwitchConfig &config, bool &help)
{
	help = false;
	/* 0, not 1: glibc then forgets everything from an earlier parse (tests parse often). */
	optind = 0;
	opterr = 0;
	std::optional<std::string> file;
	std::vector<CommandLineOption> options;
	bool anyPort = false;
	for (;;) {
		/* '-': arguments in order, a positional one as 1; ':': a missing value as ':'. */
		int c = getopt_long(argc, argv, "-:f:ih", kLongOptions.data(), nullptr);
		if (c == -1)
			break;
		switch (c) {
		case 'h':
			help = true;
			return std::nullopt;
		case 1:
			return ConfigError{ "", "", "",
					    "unexpected argument " + inQuotes(optarg) +
						    ": options only (EAL's go before \"--\")" };
		case '?':
		case ':':
			return badOption(c, argc, argv);
		case 'f':
			if (file)
				return ConfigError{ "", "", "--config",
						    "-f/--config is given more than once" };
			file = optarg;
			break;
		default:
			anyPort |= c == kOptPort;
			options.push_back({ c, optarg ? optarg : "" });
			break;
		}
	}
	if (optind < argc)
		return ConfigError{ "", "", "",
				    "unexpected argument " + inQuotes(argv[optind]) +
					    ": options only (EAL's go before \"--\")" };

	SwitchConfig parsed = config;
	std::string source; /* where parsed's first ports came from */
	if (file) {
		if (auto error = loadConfigFile(*file, parsed))
			return error;
		source = *file;
	} else if (!anyPort) {
		if (auto error =
			    loadConfigText(embeddedDefaultConfig(), kDefaultConfigName, parsed))
			return error;
		source = kDefaultConfigName;
	}
	size_t sourcePorts = parsed.ports.size();

	/* --rxq-affinity may name a port that a later --port adds. */
	for (const CommandLineOption &o : options)
		if (o.val != kOptRxqAffinity)
			if (auto error = applyOption(o, parsed))
				return error;
	for (const CommandLineOption &o : options)
		if (o.val == kOptRxqAffinity)
			if (auto error = applyOption(o, parsed))
				return error;

	if (parsed.ports.empty())
		return ConfigError{ source, "", "",
				    "no ports: give [port.NAME] sections in the file, or --port" };
	parsed.runtimeDir = effectiveRuntimeDir(parsed);
	auto where = [&](size_t i) {
		return i < sourcePorts
			       ? ConfigError{ source, "port." + parsed.ports[i].name, "path", "" }
			       : ConfigError{ "", "", "--port", "" };
	};
	if (auto shared = findSharedSocket(parsed, parsed.runtimeDir)) {
		ConfigError error = where(shared->first);
		error.reason = "port " + parsed.ports[shared->first].name +
			       " has the socket of port " + parsed.ports[shared->second].name +
			       ": " +
			       inQuotes(resolveSocketPath(parsed.ports[shared->first].path,
							  parsed.runtimeDir));
		return error;
	}
	for (size_t i = 0; i < parsed.ports.size(); i++) {
		PortConfig &port = parsed.ports[i];
		if (port.type != PortType::VhostUser)
			continue;
		port.path = resolveSocketPath(port.path, parsed.runtimeDir);
		if (port.path.size() >= sizeof(sockaddr_un::sun_path)) {
			ConfigError error = where(i);
			error.reason = "port " + port.name + "'s socket " + inQuotes(port.path) +
				       " is longer than a unix socket path may be (" +
				       std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
				       " bytes): choose a shorter --runtime-dir or path";
			return error;
		}
	}
	config = std::move(parsed);
	return std::nullopt;
}

std::string usageText()
{
	return R"(Usage: vub-switch [EAL options] -- [options]

A virtio-net switch between vhost-user ports (guests through QEMU, or DPDK's
net_virtio_user) and DPDK ethdev ports (NICs, net_tap, net_ring...). EAL's
main lcore serves the vhost-user sockets, the CLI and the statistics; every
other lcore (EAL's -l/--lcores) is a worker that polls rx queues and forwards.

Options:
  -f, --config FILE        read the ini FILE first, wherever -f appears; the
                           other options then apply over it, in order
      --port SPEC          add a port after the file's (repeatable), named
                           portN with N its index (0 is the first port)
      --forward-mode MODE  how packets are forwarded (see below); l2switch
      --burst N            packets per rx and tx burst, 1 to 512; 32
      --stats-period N     print the counters every N seconds, 0 to 3600;
                           0 (the default) prints none
      --mac-aging-time N   l2switch: forget a MAC unseen for N seconds,
                           10 to 86400; 300
      --txpkts LIST        txonly: segment lengths of each frame in bytes,
                           comma-separated, 1 to 8 of 1 to 9728 bytes, 60 to
                           9728 in all (as testpmd's "set txpkts"); 64
      --rxq-affinity SPEC  poll rx queues on chosen lcores:
                           PORT:QUEUE:LCORE[,PORT:QUEUE:LCORE...], PORT a
                           port's name or index, LCORE a worker lcore below
                           128; a port named here gets this list in place of
                           its file's rxq-affinity; queues not listed go to
                           the least loaded worker of their NUMA node
      --runtime-dir DIR    where relative socket paths live; the default is
                           /run/vub as root, else $XDG_RUNTIME_DIR/vub, else
                           /tmp/vub
  -i, --interactive        the vub> prompt on stdin; forwarding waits for
                           "start" unless --auto-start
      --auto-start         forward from the start also with -i (without -i
                           forwarding always starts at once)
  -h, --help               print this text and exit

Port specs (--port):
  vhost-user:path=SOCK[,queues=N][,client=0|1][,iommu-support=0|1]
        a vhost-user port on the unix socket SOCK (relative: in the runtime
        dir); queues: queue pairs, 1 to 8 (1); client=1: connect to the
        front-end's socket and reconnect after it goes away, instead of
        listening on SOCK (0); iommu-support=1: offer VIRTIO_F_IOMMU_PLATFORM
        for a guest behind a vIOMMU (0). SOCK cannot hold a ','.
  ethdev:DEVARGS
        a DPDK ethdev: DEVARGS verbatim, commas and all, a PCI address
        ("ethdev:0000:3b:00.0") or a vdev ("ethdev:net_tap0,iface=vub-tap0");
        one rx and one tx queue of 1024 descriptors, promiscuous. For more
        queues, other ring sizes or rxq-affinity by queue use an ini file
        ([port.NAME] with type = ethdev: queues, rxd, txd, promiscuous).

Forward modes (--forward-mode, forward-mode in the file):
  l2switch  learn source MACs; send each frame to the port that owns its
            destination MAC; flood broadcast, multicast and unknown
            destinations to every other port
  io        ports are paired as testpmd's: 0 with 1, 2 with 3...; what one
            receives the other sends, untouched; an odd last port (and a
            single port) sends back out of itself
  mac       as io, with the Ethernet source set to the tx port's MAC and the
            destination to testpmd's peer address 02:00:00:00:00:<tx port>
  macswap   as io, with the Ethernet source and destination swapped
  rxonly    receive and drop
  txonly    send generated frames (see --txpkts) to the paired port, from
            the queue of the same number; what is received is dropped

The ini file (-f):
  [switch]        forward-mode, burst, stats-period, mac-aging-time,
                  mac-table-size (16 to 1048576; 8192), mbufs (per NUMA node,
                  1024 to 1048576; 16383), txpkts, runtime-dir, auto-start
                  (yes/no)
  [port.NAME]     one per port, NAME of letters, digits, '-' and '_'; ports
                  are numbered in file order. type = vhost-user or ethdev
                  (required); queues (vhost-user 1 to 8, ethdev 1 to 64);
                  rxq-affinity = QUEUE:LCORE,...; vhost-user: path
                  (required), client (yes/no); ethdev: devargs (required),
                  rxd and txd (64 to 32768; 1024), promiscuous (yes/no; yes)
  Booleans are yes/no, true/false, on/off or 1/0; numbers are decimal. An
  unknown section or key, or a bad value, is an error naming the file,
  section and key. config/default.ini documents every key; config/samples/
  holds client-mode, multiqueue, core-placement and ethdev examples.

Default: with neither -f nor --port, the configuration compiled in from
config/default.ini: two vhost-user server ports, vm1 on vm1.sock and vm2 on
vm2.sock in the runtime dir, switched by l2switch. With --port and no -f,
only the --port ports.

Example:
  vub-switch -l 0-2 -n 4 --in-memory -- -i --port vhost-user:path=/tmp/a.sock \
        --port vhost-user:path=/tmp/b.sock,queues=2 --forward-mode=io
)";
}

} /* namespace vub::sw */
