/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <string>
#include <vector>

#include "switch.h"

namespace vub::sw {

/**
 * \brief The `vub>` command line, in testpmd's words and output formats, so that what parses
 * testpmd's output parses vub-switch's. Thread-bound to the control loop's thread.
 */
class Cli
{
public:
	explicit Cli(Switch &sw) : sw_(sw) {}

	/**
	 * \brief Run one command line. \return what it prints; \a quit is set by quit/exit.
	 * An unknown or malformed command prints why and changes nothing.
	 */
	std::string execute(const std::string &line, bool &quit);

	/** \brief `show port stats all`: testpmd's NIC statistics blocks. */
	std::string portStats(const std::vector<unsigned> &ids);
	/** \brief One summary line a port, for the exit and for scripts. */
	std::string exitSummary() const;

private:
	/** \brief The ports "all" or a name or number stands for; empty and \a error when none. */
	std::vector<unsigned> selectPorts(const std::string &word, std::string &error) const;
	std::string portXstats(const std::vector<unsigned> &ids) const;
	std::string portInfo(const std::vector<unsigned> &ids) const;
	std::string lcores() const;
	std::string rxqs() const;
	std::string macTable() const;
	std::string mempools() const;
	std::string help() const;

	Switch &sw_;
};

} /* namespace vub::sw */
