/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/vring.h"

namespace vub::vhost {

bool VringState::signalUsedQueue()
{
	if (call_.isValid())
		return call_.notify();
	if (inband_)
		return static_cast<bool>(inband_->vringCall(index_));
	return false;
}

bool VringState::signalError()
{
	if (err_.isValid())
		return err_.notify();
	if (inband_)
		return static_cast<bool>(inband_->vringErr(index_));
	return false;
}

} /* namespace vub::vhost */
