/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include "vub/base/event_loop.h"

#include "switch.h"

namespace vub::sw {

/**
 * \brief The switch's statistics through DPDK telemetry, for dpdk-telemetry.py:
 * /vub/ports, /vub/port_stats,PORT, /vub/port_xstats,PORT, /vub/port_info,PORT, /vub/lcores,
 * /vub/mac_table. Requests are answered on the control loop (they wait for it at most a
 * second). While an object lives the commands read \a sw; afterwards they answer nothing.
 */
class Telemetry
{
public:
	Telemetry(Switch &sw, EventLoop &control);
	~Telemetry();
	Telemetry(const Telemetry &) = delete;
	Telemetry &operator=(const Telemetry &) = delete;
};

} /* namespace vub::sw */
