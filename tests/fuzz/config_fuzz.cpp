/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vub-switch's configuration parsers on any text: the ini file (through iniparser), a --port
 * spec, a --rxq-affinity spec and a txpkts list. Each either accepts the text or returns an
 * error; on an error the configuration it was given must be unchanged.
 *
 * Input: [which] [text...]; which % 4: 0 ini file, 1 --port, 2 --rxq-affinity, 3 txpkts.
 */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "config.h"

using namespace vub::sw;

namespace {

[[noreturn]] void fail(const char *what)
{
	std::fprintf(stderr, "config fuzz: %s\n", what);
	std::abort();
}

/* What a caller could observe of a configuration, to compare before and after an error. */
std::string summary(const SwitchConfig &c)
{
	std::string s = std::to_string(c.ports.size()) + ":" + std::to_string(c.burst) + ":" +
			std::to_string(static_cast<int>(c.mode)) + ":" + c.runtimeDir;
	for (const PortConfig &p : c.ports) {
		s += "|" + p.name + "," + p.path + "," + p.devargs + "," +
		     std::to_string(p.queues) + "," + std::to_string(p.rxqAffinity.size());
	}
	return s;
}

/* A configuration with two ports, as the rxq-affinity parser needs. */
SwitchConfig twoPorts()
{
	SwitchConfig c;
	PortConfig a;
	if (parsePortSpec("vhost-user:path=a.sock,queues=2", a))
		fail("the seed port spec is refused");
	a.name = "vm1";
	PortConfig b = a;
	b.name = "vm2";
	c.ports = { a, b };
	return c;
}

} /* namespace */

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	std::string_view text(reinterpret_cast<const char *>(data + 1), size - 1);
	switch (data[0] % 4) {
	case 0: {
		SwitchConfig c = twoPorts();
		std::string before = summary(c);
		if (loadConfigText(text, "fuzz.ini", c) && summary(c) != before)
			fail("a refused ini file changed the configuration");
		break;
	}
	case 1: {
		PortConfig p;
		p.name = "keep";
		if (parsePortSpec(text, p) && (p.name != "keep" || !p.path.empty()))
			fail("a refused --port changed the port");
		break;
	}
	case 2: {
		SwitchConfig c = twoPorts();
		std::string before = summary(c);
		if (parseRxqAffinity(text, c) && summary(c) != before)
			fail("a refused --rxq-affinity changed the configuration");
		break;
	}
	default: {
		std::vector<unsigned> bytes{ 64 };
		if (parseTxSegments(text, bytes) && bytes != std::vector<unsigned>{ 64 })
			fail("a refused txpkts list changed the list");
		break;
	}
	}
	return 0;
}
